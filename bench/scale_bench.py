"""Benchmark (issue 10): the Kaggle MNIST case at 1x, 10x and 30x the training rows, evaluated on held-out
rows that are not copies of training rows; time per phase, peak RSS, training mode and macro-F1 per size.

    python bench/scale_bench.py                                  # --factors 1 10 30, --memory-limit 1GB
    python bench/scale_bench.py --factors 1 10 --mnist /work/mnist --memory-limit 2GB
    python bench/scale_bench.py --augment repeat                 # plain repetition instead of pixel shifts
    python bench/scale_bench.py --control-memory-limit none      # skip the in-memory control runs

Data (built by the parent process, not timed): Kaggle's ``train.csv`` (42,000 labelled images,
``scripts/make-mnist.py``) is split once by a seeded permutation (``--split-seed``) into a fixed held-out
30 % (12,600 rows, written as ``holdout.csv``) and a 70 % pool (29,400 rows). The Nx training file is built
from the pool only: the pool itself plus N-1 copies, copy k translating image i by S[(i + k - 1) mod |S|]
(the vacated border filled with 0, the background), where S is the 8 one-pixel translations when N ≤ 9 and
the 24 translations of at most 2 pixels in x and y when N > 9. Up to 9x (one-pixel) and 25x (two-pixel)
every image of the Nx file is a distinct picture; at 30x each pool image appears at 25 positions, 5 of them
twice. The rows are written in a seeded random order (the streaming learner shuffles chunks and the rows
within a chunk, not across chunks; a real CSV is not sorted by augmentation either). No training row is a
held-out image or a translation of one. ``--augment repeat`` repeats the pool instead (F1 then only shows
that more rows of the same data give the same model quality); ``--augment subpixel`` translates by
multiples of 1/3 pixel up to 1 pixel (bilinear, 48 distinct positions). Translations change the data: a
linear model on pixel values learns centred digits less well from digits moved by 2 pixels, so F1 across
sizes mixes the data's effect with the learner's.

To tell them apart, a size whose run trained in the streaming mode is run again on the same file with
``--control-memory-limit`` (default 8GB), where the in-memory mode fits: same data, the other learner.
The other way round, the 1x file is run again with ``--streaming-baseline-limit`` (default 200MB, under
its in-memory estimate), so that it streams as 10x and 30x do: the time ratios against that run compare
the same algorithm at three sizes, those against the 1x run of ``--memory-limit`` also the in-memory
learner's speed against the streaming one's.

Each run is a fresh child process (so ``ru_maxrss`` is that run's own peak) with a fresh ``AMLFLOW_HOME``
on local disk under ``--tmp`` and ``AMLFLOW_MEMORY_LIMIT`` set, through ``amlflow.connect()`` (the calls a
boto3 script makes), one job after the other so that each phase's time and memory are its own: the
training datasource (statistics computed), the held-out datasource (no statistics: AML needs them only for
training), the MULTICLASS model (ALL_CATEGORICAL recipe, AML's MNIST settings: 10 passes, L2 1e-5, shuffle
auto, 100 MB model size) and its evaluation on the held-out datasource (``MulticlassAvgFScore``, macro-F1).
A phase's time is from its create call to the COMPLETED status seen by polling every 50 ms, its CPU time
the process's user + system seconds over the same span, with those of the service's datasource reader
processes (``AMLFLOW_DATASOURCE_PROCESSES``), which read the datasources; the 1-minute load average is
printed at the start and end of each run (other work on the machine slows the wall times, hardly the CPU
times). The training
mode and its reason are read from the model's job log (``LogUri``). RSS is also sampled every 20 ms from
``/proc/self/statm`` to attribute the peak to a phase, with its anonymous part (RSS less file-backed pages:
a memory-mapped table counts in RSS while its pages are resident, but the kernel can drop them);
``ru_maxrss`` is the exact process peak, a sample can miss a spike shorter than 20 ms. The datasource
reader processes' peaks are printed apart: their ``VmHWM`` (exact, file-backed pages included: the
statistics read the memory-mapped table) and the largest reader's RSS and anonymous part sampled per phase.

Each Nx file is deleted as soon as its runs are over; the temporary directory with the held-out file and the
homes is removed at the end (``--keep`` keeps it). The defaults took 23 minutes on 2 cores (13 without the
control runs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src")]

SCHEMA = REPO / "schemas" / "mnist-train.csv.schema"
RECIPE = REPO / "recipes" / "mnist.recipe.json"
PARAMS = {
    "sgd.maxPasses": "10",
    "sgd.l2RegularizationAmount": "1e-5",
    "sgd.shuffleType": "auto",
    "sgd.maxMLModelSizeInBytes": str(100 * 1024 * 1024),
}
BUCKET = "bench"
SIDE = 28
#: the 24 non-zero translations of at most 2 pixels, nearest first (the 8 one-pixel shifts lead)
SHIFTS = sorted(
    ((dx, dy) for dy in range(-2, 3) for dx in range(-2, 3) if (dx, dy) != (0, 0)),
    key=lambda s: (max(abs(s[0]), abs(s[1])), s[0] * s[0] + s[1] * s[1], s[1], s[0]),
)


#: the 48 non-zero translations by multiples of 1/3 pixel, at most 1 pixel in x and y
SUBSHIFTS = sorted(
    ((dx / 3, dy / 3) for dy in range(-3, 4) for dx in range(-3, 4) if (dx, dy) != (0, 0)),
    key=lambda s: (max(abs(s[0]), abs(s[1])), s[0] * s[0] + s[1] * s[1], s[1], s[0]),
)


def _translate(images: Any, dx: float, dy: float) -> Any:
    """Translate by fractional pixels: bilinear (separable linear) interpolation, rounded to uint8."""
    import math

    import numpy as np

    out = images.astype(np.float32)
    for axis_d, axis in ((dx, "x"), (dy, "y")):
        lo = math.floor(axis_d)
        f = axis_d - lo
        a = _shift(out, lo, 0) if axis == "x" else _shift(out, 0, lo)
        if f > 1e-9:
            b = _shift(out, lo + 1, 0) if axis == "x" else _shift(out, 0, lo + 1)
            a = (1 - f) * a + f * b
        out = a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def shifts_for(factor: int) -> list[tuple[int, int]]:
    """The translations the ``factor``x set draws from: the 8 one-pixel ones while they give every image
    distinct variants (``factor`` ≤ 9), else all 24 of at most 2 pixels."""
    return SHIFTS[:8] if factor <= 9 else SHIFTS


PHASES = ("datasource", "holdout-datasource", "training", "evaluation")
KEY = {"data_source": "DataSourceId", "ml_model": "MLModelId", "evaluation": "EvaluationId"}


# --------------------------------------------------------------------------------------------- the data


def _csv_bytes(rows: Any) -> bytes:
    """``rows`` (uint8, n × 785: label then pixels) as CSV lines, vectorised: every value is looked up as
    its decimal digits followed by a separator (',' or, for the last column, '\\n')."""
    import numpy as np

    digits = np.zeros((256, 4), dtype=np.uint8)
    length = np.zeros(256, dtype=np.int64)
    for v in range(256):
        s = str(v).encode()
        digits[v, : len(s)] = list(s)
        digits[v, len(s)] = ord(",")
        length[v] = len(s)
    cells = digits[rows]  # n × 785 × 4
    n, m = rows.shape
    last = length[rows[:, -1]]
    cells[np.arange(n), m - 1, last] = ord("\n")
    keep = np.arange(4)[None, None, :] <= length[rows][:, :, None]
    return bytes(cells[keep].tobytes())


def _shift(images: Any, dx: int, dy: int) -> Any:
    """Translate ``images`` (n × 28 × 28) by ``dx`` columns and ``dy`` rows, filling with 0."""
    import numpy as np

    out = np.zeros_like(images)
    ys, yd = (slice(0, SIDE - dy), slice(dy, SIDE)) if dy >= 0 else (slice(-dy, SIDE), slice(0, SIDE + dy))
    xs, xd = (slice(0, SIDE - dx), slice(dx, SIDE)) if dx >= 0 else (slice(-dx, SIDE), slice(0, SIDE + dx))
    out[:, yd, xd] = images[:, ys, xs]
    return out


def load_split(mnist: Path, holdout: float, seed: int) -> tuple[Any, Any, bytes]:
    """train.csv → (pool rows, held-out rows, the header line), a seeded random split."""
    import numpy as np
    import pandas as pd

    with open(mnist / "train.csv", "rb") as f:
        header = f.readline()
    frame = pd.read_csv(mnist / "train.csv", dtype=np.uint8)
    if list(frame.columns[:2]) != ["label", "pixel0"] or frame.shape[1] != 1 + SIDE * SIDE:
        raise SystemExit(f"{mnist}/train.csv: not Kaggle's MNIST layout (label, pixel0..pixel783)")
    rows = frame.to_numpy()
    order = np.random.default_rng(seed).permutation(len(rows))
    n_out = round(len(rows) * holdout)
    return rows[order[n_out:]], rows[order[:n_out]], header


def _variants(pool: Any, factor: int, augment: str, seed: int, block: int = 8192) -> Iterator[Any]:
    """The rows of the ``factor``x training set in a seeded random order, ``block`` rows at a time."""
    import numpy as np

    n = len(pool)
    order = np.random.default_rng(seed + factor).permutation(n * factor)
    images = pool[:, 1:].reshape(n, SIDE, SIDE)
    for start in range(0, len(order), block):
        idx = order[start : start + block]
        copy, row = idx // n, idx % n
        out = pool[row].copy()
        if augment in ("shift", "subpixel"):
            shifts: list[Any] = shifts_for(factor) if augment == "shift" else SUBSHIFTS
            shifted = copy > 0
            which = (row + copy - 1) % len(shifts)
            for s, (dx, dy) in enumerate(shifts):
                sel = np.flatnonzero(shifted & (which == s))
                if len(sel):
                    out[sel, 1:] = _translate(images[row[sel]], dx, dy).reshape(len(sel), -1)
        yield out


def write_training(path: Path, header: bytes, pool: Any, factor: int, augment: str, seed: int) -> int:
    """Write the ``factor``x training CSV; returns its row count."""
    rows = 0
    with open(path, "wb") as f:
        f.write(header)
        for chunk in _variants(pool, factor, augment, seed):
            f.write(_csv_bytes(chunk))
            rows += len(chunk)
    return rows


# ------------------------------------------------------------------------------------------- the child


class RssSampler(threading.Thread):
    """Samples this process's RSS every ``interval`` seconds and keeps, per phase, the peak RSS and the peak
    of its anonymous part (RSS less file-backed and shared pages: memory-mapped tables count in RSS while
    their pages are resident, but the kernel can drop them)."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.phase = "start"
        self.peaks: dict[str, list[float]] = {}
        self.reader_peaks: dict[str, list[float]] = {}  # the same of the largest datasource reader
        self.halt = threading.Event()

    def sample(self) -> tuple[float, float]:
        """(RSS, anonymous RSS) in MB."""
        with open("/proc/self/statm") as f:
            fields = f.read().split()
        rss, shared = int(fields[1]), int(fields[2])
        return rss * self.page / 2**20, (rss - shared) * self.page / 2**20

    def sample_readers(self) -> tuple[float, float]:
        """The largest (RSS, anonymous RSS) in MB among the service's worker processes (datasource readers,
        training workers)."""
        from amlflow.service import reader_processes

        best = (0.0, 0.0)
        for pid in [pid for p in reader_processes.pools() for pid in p.pids()]:
            try:
                with open(f"/proc/{pid}/statm") as f:
                    fields = f.read().split()
            except OSError:
                continue
            rss, shared = int(fields[1]), int(fields[2])
            best = max(best, (rss * self.page / 2**20, (rss - shared) * self.page / 2**20))
        return best

    def run(self) -> None:
        while not self.halt.is_set():
            rss, anon = self.sample()
            peak = self.peaks.setdefault(self.phase, [0.0, 0.0])
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], anon)
            r_rss, r_anon = self.sample_readers()
            peak = self.reader_peaks.setdefault(self.phase, [0.0, 0.0])
            peak[0], peak[1] = max(peak[0], r_rss), max(peak[1], r_anon)
            self.halt.wait(self.interval)


def _cpu_s() -> float:
    """CPU seconds of this process so far (every thread, user + system), and of the service's worker
    processes: the datasource readers (``AMLFLOW_DATASOURCE_PROCESSES``) and the training workers
    (``AMLFLOW_TRAINING_PROCESSES``)."""
    from amlflow.service import reader_processes

    use = resource.getrusage(resource.RUSAGE_SELF)
    workers = sum(cpu for p in reader_processes.pools() for cpu, _ in p.usage())
    return use.ru_utime + use.ru_stime + workers


def _log_text(entity: dict[str, Any]) -> str:
    uri = entity.get("LogUri") or ""
    parsed = urlparse(uri)
    path = Path(unquote(parsed.path)) if parsed.scheme in ("file", "") else None
    return path.read_text(errors="replace") if path is not None and path.is_file() else ""


def _grep(text: str, *needles: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if any(n in line for n in needles)]


def child(train_csv: Path, holdout_csv: Path, home: Path, seed: int) -> dict[str, Any]:
    """The whole in-process job for one size, one phase after the other."""
    sampler = RssSampler()
    sampler.start()
    import amlflow
    from amlflow.service import reader_processes

    root = home / "s3"
    ml = amlflow.connect(home=home, storage_root=root, seed=seed)
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    load = [os.getloadavg()[0]]

    def put(key: str, source: Path) -> str:
        target = root / BUCKET / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)  # same file system: free; the service only reads it
        except OSError:
            shutil.copyfile(source, target)
        return f"s3://{BUCKET}/{key}"

    def run(phase: str, kind: str, entity_id: str, create: Any) -> dict[str, Any]:
        sampler.phase = phase
        t0, c0 = time.perf_counter(), _cpu_s()
        create()
        getter = getattr(ml, f"get_{kind}")
        while True:
            out: dict[str, Any] = getter(**{KEY[kind]: entity_id})
            if out["Status"] in ("COMPLETED", "FAILED", "DELETED"):
                break
            time.sleep(0.05)
        times[phase] = time.perf_counter() - t0
        cpu[phase] = _cpu_s() - c0
        if out["Status"] != "COMPLETED":
            log = _log_text(out)
            raise SystemExit(f"{phase}: {entity_id} {out['Status']}: {out.get('Message')}\n{log[-3000:]}")
        return out

    schema = SCHEMA.read_text()
    try:
        train_uri = put("mnist/train.csv", train_csv)
        holdout_uri = put("mnist/holdout.csv", holdout_csv)
        sampler.phase = "datasource"
        base_rss = sampler.sample()[0]
        ds = run(
            "datasource",
            "data_source",
            "ds-train",
            lambda: ml.create_data_source_from_s3(
                DataSourceId="ds-train",
                DataSpec={"DataLocationS3": train_uri, "DataSchema": schema},
                ComputeStatistics=True,
            ),
        )
        run(
            "holdout-datasource",
            "data_source",
            "ds-holdout",
            lambda: ml.create_data_source_from_s3(
                DataSourceId="ds-holdout",
                DataSpec={"DataLocationS3": holdout_uri, "DataSchema": schema},
                ComputeStatistics=False,
            ),
        )
        model = run(
            "training",
            "ml_model",
            "ml",
            lambda: ml.create_ml_model(
                MLModelId="ml",
                MLModelType="MULTICLASS",
                TrainingDataSourceId="ds-train",
                Parameters=PARAMS,
                Recipe=RECIPE.read_text(),
            ),
        )
        ev = run(
            "evaluation",
            "evaluation",
            "ev",
            lambda: ml.create_evaluation(
                EvaluationId="ev", MLModelId="ml", EvaluationDataSourceId="ds-holdout"
            ),
        )
        sampler.phase = "end"
        props = ev["PerformanceMetrics"]["Properties"]
        model_log = _log_text(model)
        mode_lines = _grep(model_log, "training mode:")
        return {
            "ds_rows": _ds_rows(ml, "ds-train"),
            "ds_log": [line.split(" ", 1)[-1] for line in _log_text(ds).splitlines()],
            "holdout_rows": _ds_rows(ml, "ds-holdout"),
            "csv_bytes": train_csv.stat().st_size,
            "times": times,
            "cpu": cpu,
            "load": load + [os.getloadavg()[0]],
            "total_s": sum(times.values()),
            "mode_line": mode_lines[-1] if mode_lines else "(no 'training mode:' line in the model's log)",
            "model_log": _grep(
                model_log,
                "memory-estimate:",
                "features:",
                "streaming:",
                "training in ",
                "processes: pre-pass",
                "processes: passes",
                "finished-training",
                "saved final",
            ),
            "macro_f1": float(props["MulticlassAvgFScore"]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "reader_peak_rss_mb": [rss / 2**20 for _, rss in reader_processes.pool(1).usage()],
            "trainer_peak_rss_mb": [
                rss / 2**20
                for p in reader_processes.pools()
                if p.role != "datasource reader"
                for _, rss in p.usage()
            ],
            "phase_rss_mb": sampler.peaks,
            "reader_phase_rss_mb": sampler.reader_peaks,
            "base_rss_mb": base_rss,
            "memory_limit": os.environ.get("AMLFLOW_MEMORY_LIMIT"),
        }
    finally:
        sampler.halt.set()
        service = getattr(ml, "service", None)
        if service is not None and hasattr(service, "shutdown"):
            service.shutdown(timeout=60)


def _ds_rows(ml: Any, ds_id: str) -> int | None:
    """Rows the datasource job encoded (its job log's ``encoded N rows`` line)."""
    found = re.findall(r"encoded (\d+) rows", _log_text(ml.get_data_source(DataSourceId=ds_id)))
    return int(found[-1]) if found else None


# ------------------------------------------------------------------------------------------ the parent


def _run_child(
    train_csv: Path, holdout_csv: Path, home: Path, seed: int, memory_limit: str
) -> dict[str, Any]:
    env = dict(os.environ, AMLFLOW_MEMORY_LIMIT=memory_limit, AMLFLOW_HOME=str(home))
    cmd = [sys.executable, __file__, "--child", str(train_csv), str(holdout_csv), str(home), str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-4000:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _mode(res: dict[str, Any]) -> str:
    line = res.get("mode_line", "")
    return (
        "streaming"
        if "training mode: streaming" in line
        else "processes"
        if "training mode: data-parallel in" in line
        else "in-memory"
        if "mode: in-memory" in line
        else "?"
    )


def _report(label: str, res: dict[str, Any]) -> None:
    if "error" in res:
        print(f"  {label} FAILED:\n{res['error']}", flush=True)
        return
    t, peaks = res["times"], res["phase_rss_mb"]
    c = res["cpu"]
    phases = ", ".join(f"{p} {t[p]:.1f} s ({c[p]:.1f} s CPU)" for p in PHASES if p in t)
    rss = ", ".join(f"{p} {peaks[p][0]:,.0f} ({peaks[p][1]:,.0f} anon)" for p in PHASES if p in peaks)
    readers = res.get("reader_phase_rss_mb", {})
    reader_rss = ", ".join(
        f"{p} {readers[p][0]:,.0f} ({readers[p][1]:,.0f} anon)" for p in PHASES if readers.get(p, [0])[0]
    )
    print(
        f"  {label} (AMLFLOW_MEMORY_LIMIT={res['memory_limit']}):\n"
        f"    mode: {res['mode_line'].split(' ', 1)[-1]}\n"
        f"    time: {phases}; total {res['total_s']:.1f} s (1-min load average {res['load'][0]:.1f} at the "
        f"start, {res['load'][1]:.1f} at the end, {os.cpu_count()} cores)\n"
        f"    peak RSS {res['peak_rss_mb']:,.0f} MB (ru_maxrss; {res['base_rss_mb']:.0f} MB after imports); "
        f"sampled per phase, MB: {rss}\n"
        f"    datasource readers' peak RSS (VmHWM; they read the datasources): "
        f"{', '.join(f'{r:,.0f}' for r in res.get('reader_peak_rss_mb', [])) or 'none'} MB; the largest "
        f"worker sampled per phase, MB: {reader_rss or 'none'}\n"
        f"    training workers' peak RSS (VmHWM): "
        f"{', '.join(f'{r:,.0f}' for r in res.get('trainer_peak_rss_mb', [])) or 'none'} MB\n"
        f"    macro-F1 on the {res['holdout_rows'] or '?':,} held-out rows: {res['macro_f1']:.4f}",
        flush=True,
    )
    for line in res["ds_log"]:
        print(f"    datasource log: {line[:160]}", flush=True)
    for line in res["model_log"]:
        print(f"    model log: {line.split(' ', 1)[-1][:160]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=Path(os.environ.get("MNIST_DIR", "/work/mnist")))
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument(
        "--memory-limit", default="1GB", help="AMLFLOW_MEMORY_LIMIT of each run (default 1GB)"
    )
    parser.add_argument(
        "--control-memory-limit",
        default="8GB",
        help="a size whose run streamed is run again with this limit (in memory) on the same file, to tell "
        "the learner's F1 from the data's (default 8GB; 'none': no control runs)",
    )
    parser.add_argument(
        "--streaming-baseline-limit",
        default="200MB",
        help="the 1x size is run again with this AMLFLOW_MEMORY_LIMIT, under its in-memory estimate, so it "
        "streams as the large sizes do: the time ratios against it compare one algorithm (default 200MB; "
        "'none': no such run)",
    )
    parser.add_argument("--augment", choices=["shift", "subpixel", "repeat"], default="shift")
    parser.add_argument("--holdout", type=float, default=0.3, help="held-out fraction of train.csv (0.3)")
    parser.add_argument("--split-seed", type=int, default=20150409)
    parser.add_argument("--seed", type=int, default=0, help="AMLFLOW_SEED of the learner")
    parser.add_argument("--tmp", type=Path, default=None, help="local-disk temporary root (system default)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        train, holdout, home, seed = args.child
        print(json.dumps(child(Path(train), Path(holdout), Path(home), int(seed))))
        return 0
    if not (args.mnist / "train.csv").is_file():
        raise SystemExit(
            f"{args.mnist}/train.csv missing: .venv/bin/python scripts/make-mnist.py {args.mnist}"
        )
    if any(f < 1 for f in args.factors):
        raise SystemExit("--factors: every factor is at least 1")
    control = None if args.control_memory_limit.lower() in ("", "none", "off") else args.control_memory_limit
    baseline_limit = args.streaming_baseline_limit
    baseline_limit = None if baseline_limit.lower() in ("", "none", "off") else baseline_limit
    baseline: dict[str, Any] | None = None

    tmp = Path(tempfile.mkdtemp(prefix="amlflow-scale-", dir=args.tmp))
    results: dict[int, dict[str, Any]] = {}
    controls: dict[int, dict[str, Any]] = {}
    t0 = time.perf_counter()
    try:
        pool, held, header = load_split(args.mnist, args.holdout, args.split_seed)
        holdout_csv = tmp / "holdout.csv"
        with open(holdout_csv, "wb") as f:
            f.write(header)
            f.write(_csv_bytes(held))
        pool_keys = {r.tobytes() for r in pool[:, 1:]}
        same = sum(r.tobytes() in pool_keys for r in held[:, 1:])
        print(
            f"MNIST Kaggle train.csv ({len(pool) + len(held):,} rows) split by seed {args.split_seed}: "
            f"{len(held):,} held-out rows ({same} of them identical to a training image), training sets "
            f"built from the other {len(pool):,} (augment={args.augment}); {os.cpu_count()} cores; "
            f"data under {tmp}",
            flush=True,
        )
        for factor in args.factors:
            train_csv = tmp / f"train-x{factor}.csv"
            tg = time.perf_counter()
            rows = write_training(train_csv, header, pool, factor, args.augment, args.split_seed)
            size_mb = train_csv.stat().st_size / 1e6
            print(
                f"\n{factor}x: {rows:,} training rows, {size_mb:,.0f} MB CSV "
                f"(written in {time.perf_counter() - tg:.0f} s, not timed)",
                flush=True,
            )
            try:
                home = tmp / f"home-x{factor}"
                res = _run_child(train_csv, holdout_csv, home, args.seed, args.memory_limit)
                shutil.rmtree(home, ignore_errors=True)
                res.update(rows=rows, csv_mb=size_mb)
                results[factor] = res
                _report("run", res)
                if factor == 1 and baseline_limit and "error" not in res and _mode(res) == "in-memory":
                    home = tmp / "home-x1-streaming"
                    baseline = _run_child(train_csv, holdout_csv, home, args.seed, baseline_limit)
                    shutil.rmtree(home, ignore_errors=True)
                    _report("1x streamed (the like-for-like baseline of the time ratios)", baseline)
                if control and "error" not in res and _mode(res) in ("streaming", "processes"):
                    home = tmp / f"home-x{factor}-control"
                    controls[factor] = _run_child(train_csv, holdout_csv, home, args.seed, control)
                    shutil.rmtree(home, ignore_errors=True)
                    _report("control, same file", controls[factor])
            finally:
                train_csv.unlink()
    finally:
        wall = time.perf_counter() - t0
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    ok = {f: r for f, r in results.items() if "error" not in r}
    print(
        f"\nsummary, AMLFLOW_MEMORY_LIMIT={args.memory_limit} (time in s: training datasource with "
        "statistics, held-out datasource, training, evaluation, total wall and CPU; RSS in MB)"
    )
    head = f"{'size':>5} {'rows':>9} {'CSV MB':>7} {'mode':>9} {'ds':>6} {'hold':>5} {'train':>6} {'eval':>5}"
    print(f"{head} {'total':>6} {'CPU':>6} {'peak RSS':>8} {'macro-F1':>8}  control: train s, RSS, F1")
    for n, r in results.items():
        if "error" in r:
            print(f"{n:>4}x {r['rows']:>9,} {r['csv_mb']:>7,.0f}  FAILED")
            continue
        t = r["times"]
        extra = ""
        if (ctl := controls.get(n)) is not None:
            extra = (
                "  FAILED"
                if "error" in ctl
                else f"  {ctl['times']['training']:.1f} s, {ctl['peak_rss_mb']:,.0f} MB, "
                f"{ctl['macro_f1']:.4f} ({_mode(ctl)})"
            )
        print(
            f"{n:>4}x {r['rows']:>9,} {r['csv_mb']:>7,.0f} {_mode(r):>9} {t['datasource']:>6.1f} "
            f"{t['holdout-datasource']:>5.1f} {t['training']:>6.1f} {t['evaluation']:>5.1f} "
            f"{r['total_s']:>6.1f} {sum(r['cpu'].values()):>6.1f} {r['peak_rss_mb']:>8,.0f} "
            f"{r['macro_f1']:>8.4f}{extra}"
        )
    if 1 in ok:
        for n, r in ok.items():
            if n != 1:
                ratio = r["total_s"] / ok[1]["total_s"]
                cpu_ratio = sum(r["cpu"].values()) / sum(ok[1]["cpu"].values())
                target = "; issue target for 30x: ≤ 32" if n == 30 else ""
                print(
                    f"time ratio {n}x/1x = {ratio:.1f}, CPU time ratio {cpu_ratio:.1f} (linear: {n}{target})"
                )
                if baseline is not None and "error" not in baseline and _mode(r) == _mode(baseline):
                    b_ratio = r["total_s"] / baseline["total_s"]
                    b_cpu = sum(r["cpu"].values()) / sum(baseline["cpu"].values())
                    print(
                        f"  against 1x {_mode(baseline)} ({baseline['total_s']:.1f} s; "
                        f"the same algorithm as {n}x): "
                        f"time ratio {b_ratio:.1f}, CPU time ratio {b_cpu:.1f}"
                    )
    if ok:
        top = max(ok)
        print(f"peak RSS at {top}x = {ok[top]['peak_rss_mb']:,.0f} MB (issue target at 30x: ≤ 1,536 MB)")
        print("macro-F1 per size: " + ", ".join(f"{n}x {r['macro_f1']:.4f}" for n, r in ok.items()))
    print(f"bench wall time {wall:.0f} s (data generation and control runs included)")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
