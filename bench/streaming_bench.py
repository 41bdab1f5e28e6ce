"""Benchmark: the engine's two training modes side by side — in-memory (the whole matrix, scikit-learn) and
streaming (chunks through mini-batch SGD, engine.sgd) — on the reference cases: time, peak RSS, metric.

    python bench/streaming_bench.py                          # wine, banking, MNIST Kaggle (seeds 0 1 2)
    python bench/streaming_bench.py --cases wine banking     # some cases only
    python bench/streaming_bench.py --cases mnist-headerless # 60k/10k, quantile_bin, 100 passes
    python bench/streaming_bench.py --factor 10              # + MNIST, 10x the training rows
    python bench/streaming_bench.py --modes memory streaming auto --budget 536870912
    python bench/streaming_bench.py --mnist DIR              # where train.csv / train_data.csv / ... are

Build the full Kaggle-format MNIST files first: ``.venv/bin/python scripts/make-mnist.py /work/mnist``.

The cases are those of bench/engine_bench.py (same files, schemas, recipes, parameters, 70/30 splits by
bytes as a datasource job makes them, the same metric as an evaluation) run at the engine level, because a
mode is a keyword of ``engine.model.train`` that the service does not expose. The encoded tables are built
once; then each (case, seed, mode) trains in its own child process, so "peak RSS" is that process's own
``ru_maxrss`` read right after training (before the evaluation), next to its RSS just before training
(imports and the memory-mapped table), and the growth of the anonymous RSS during training (``RssAnon``
sampled every 20 ms: the job's own memory, without the table's memory-mapped file pages, which the kernel
can drop and which ``ru_maxrss`` counts as they are read). ``--factor N`` repeats the
first 70 % of Kaggle ``train.csv``'s rows N times and evaluates on the last 30 %, which are no copy of a
training row.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src")]

DATA = REPO / "data"
SCHEMAS = REPO / "schemas"
RECIPES = REPO / "recipes"

MNIST_PARAMS = {
    "sgd.maxPasses": "10",
    "sgd.l2RegularizationAmount": "1e-5",
    "sgd.shuffleType": "auto",
    "sgd.maxMLModelSizeInBytes": str(100 * 1024 * 1024),
}
HEADERLESS_PARAMS = {"sgd.maxPasses": "100", "sgd.l2RegularizationAmount": "1e-4", "sgd.shuffleType": "auto"}
SAMPLES_PARAMS = {"sgd.maxPasses": "100", "sgd.l2RegularizationAmount": "1e-4", "sgd.shuffleType": "auto"}

# case: (schema, recipe, model type, parameters, metric, AML's figure, higher is better)
CASES: dict[str, tuple[Path, Path, str, dict[str, str], str, float, bool]] = {
    "wine": (
        SCHEMAS / "wine-regression.csv.schema",
        RECIPES / "wine.recipe.json",
        "REGRESSION",
        {},
        "RMSE",
        0.729,
        False,
    ),
    "wine-binary": (
        SCHEMAS / "wine-binary.csv.schema",
        RECIPES / "wine.recipe.json",
        "BINARY",
        {},
        "AUC",
        0.778,
        True,
    ),
    "banking": (
        DATA / "aml-banking" / "banking.csv.schema",
        DATA / "aml-banking" / "recipe.json",
        "BINARY",
        {},
        "AUC",
        0.936,
        True,
    ),
    "banking-samples": (
        DATA / "aml-banking" / "banking.csv.schema",
        DATA / "aml-banking" / "recipe.json",
        "BINARY",
        SAMPLES_PARAMS,
        "AUC",
        0.94,
        True,
    ),
    "mnist": (
        SCHEMAS / "mnist-train.csv.schema",
        RECIPES / "mnist.recipe.json",
        "MULTICLASS",
        MNIST_PARAMS,
        "macro-F1",
        0.914,
        True,
    ),
    "mnist-headerless": (
        SCHEMAS / "mnist-headerless.csv.schema",
        RECIPES / "mnist-headerless.recipe.json",
        "MULTICLASS",
        HEADERLESS_PARAMS,
        "accuracy",
        0.91,
        True,
    ),
}
DEFAULT_CASES = ["wine", "wine-binary", "banking", "banking-samples", "mnist"]


def split(begin: int, end: int, complement: bool = False) -> str:
    """AML's DataRearrangement JSON for a sequential split."""
    return json.dumps({"splitting": {"percentBegin": begin, "percentEnd": end, "complement": complement}})


# ----------------------------------------------------------------------------------------------- tables


def _build(out: Path, name: str, schema: Path, data: Path | bytes, rearrangement: str | None) -> None:
    from amlflow.engine.dataset import Source, build_dataset
    from amlflow.engine.rearrange import parse_rearrangement
    from amlflow.engine.schema import parse_schema

    if isinstance(data, bytes):
        payload = data
        source = Source(f"{name}.csv", len(payload), lambda: io.BytesIO(payload))
    else:
        source = Source(data.name, data.stat().st_size, functools.partial(data.open, "rb"))
    build_dataset([source], parse_schema(schema.read_text()), parse_rearrangement(rearrangement), out / name)


def build_tables(case: str, mnist: Path, out: Path, factor: int = 0) -> None:
    """``out/<case>-tr`` and ``out/<case>-ev``: the encoded training and evaluation tables of ``case``;
    MNIST with ``factor`` ≥ 1: ``out/mnist-x<factor>-{tr,ev}``, split by rows (see the module docstring)."""
    import pandas as pd

    schema = CASES[case][0]
    if case in ("wine", "wine-binary"):
        frame = pd.read_csv(DATA / "wine" / "winequality-red-comma.csv")
        if case == "wine-binary":
            frame["good"] = (frame.pop("quality") >= 7).astype(int)
        data = frame.to_csv(index=False).encode()
        _build(out, f"{case}-tr", schema, data, split(0, 70))
        _build(out, f"{case}-ev", schema, data, split(70, 100))
    elif case in ("banking", "banking-samples"):
        path = DATA / "aml-banking" / "banking.csv"
        _build(out, f"{case}-tr", schema, path, split(0, 70))
        _build(out, f"{case}-ev", schema, path, split(0, 70, complement=True))
    elif case == "mnist" and not factor:
        _build(out, "mnist-tr", schema, mnist / "train.csv", split(0, 70))
        _build(out, "mnist-ev", schema, mnist / "train.csv", split(70, 100))
    elif case == "mnist":  # N copies of the first 70 % of the rows; the last 30 % held out
        with open(mnist / "train.csv", "rb") as fh:
            header, *lines = fh.read().splitlines(keepends=True)
        k = int(len(lines) * 0.7)
        big = out / f"train-x{factor}.csv"
        with open(big, "wb") as fh:
            fh.write(header)
            body = b"".join(lines[:k])
            for _ in range(factor):
                fh.write(body)
        held_out = header + b"".join(lines[k:])
        del lines
        _build(out, f"mnist-x{factor}-tr", schema, big, None)
        big.unlink()
        _build(out, f"mnist-x{factor}-ev", schema, held_out, None)
    else:
        _build(out, f"{case}-tr", schema, mnist / "train_data.csv", None)
        _build(out, f"{case}-ev", schema, mnist / "test_data.csv", None)


# ------------------------------------------------------------------------------------------------ child


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _AnonPeak:
    """The peak of the process's anonymous RSS (``RssAnon``: its own memory, without the memory-mapped
    table's file pages, which ``ru_maxrss`` counts), sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        import threading

        self.peak = _rss_mb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb("RssAnon"))
        return self.peak


def child(case: str, tables: Path, prefix: str, mode: str, seed: int, budget: int | None) -> dict[str, Any]:
    """Train ``case`` in ``mode`` on the tables under ``tables``; time, peak RSS, metric, the mode line."""
    import numpy as np

    from amlflow.engine.evaluation import evaluate
    from amlflow.engine.model import train
    from amlflow.engine.params import parse_parameters
    from amlflow.engine.recipe import parse_recipe
    from amlflow.engine.schema import parse_schema
    from amlflow.engine.table import EncodedTable

    schema_path, recipe_path, model_type, params, metric, _, _ = CASES[case]
    schema = parse_schema(schema_path.read_text())
    recipe = parse_recipe(recipe_path.read_text(), schema)
    tr = EncodedTable.open(tables / f"{prefix}-tr")
    ev = EncodedTable.open(tables / f"{prefix}-ev")
    import sklearn.linear_model  # noqa: F401  (the in-memory mode's; imported first so RSS counts training only)

    rss_before = _rss_mb()
    anon_before = _rss_mb("RssAnon")
    anon = _AnonPeak()
    lines: list[str] = []
    t0 = time.perf_counter()
    model = train(
        tr,
        schema,
        recipe,
        parse_parameters(params),
        model_type,
        seed=seed,
        log=lines.append,
        memory_budget=budget,
        mode=mode,  # type: ignore[arg-type]
    )
    train_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    anon_peak = anon.stop()
    if metric == "accuracy":
        assert schema.target is not None
        labels = model.predict_table(ev).labels()
        value = float(np.mean(labels == ev.strings(schema.target).astype(object)))
    else:
        value = float(next(iter(evaluate(model, ev, schema, training_info={}).properties.values())))
    return {
        "metric": value,
        "train_s": train_s,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak,
        "anon_before_mb": anon_before,
        "peak_anon_mb": anon_peak,
        "mode": model.training_info.get("training_mode"),
        "mode_line": next((line for line in lines if line.startswith("training mode:")), ""),
        "rows": int(tr.n_rows),
    }


def _child(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------------------------- main


def run(
    case: str, prefix: str, tables: Path, seeds: list[int], modes: list[str], budget: int | None
) -> list[str]:
    _, _, _, _, metric, bar, higher = CASES[case]
    out = []
    for seed in seeds:
        cells, details = [], []
        for mode in modes:
            args = [case, str(tables), prefix, mode, str(seed), str(budget if budget is not None else "")]
            r = _child(*args)
            ok = r["metric"] >= bar if higher else r["metric"] <= bar
            cells.append(
                f"{r['metric']:.4f}{'' if ok else '!'} {r['train_s']:6.1f} s {r['peak_rss_mb']:6.0f} MB"
                f" {r['peak_anon_mb'] - r['anon_before_mb']:+5.0f} MB"
            )
            if mode == "auto" or budget is not None:
                details.append(f"    {mode}: {r['mode_line']}")
        name = f"{prefix} s{seed} ({metric}, {'≥' if higher else '≤'} {bar})"
        out.append(f"{name:36} " + " | ".join(f"{c:34}" for c in cells))
        out.extend(details)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=Path(os.environ.get("MNIST_DIR", "/work/mnist")))
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="MNIST seeds (others: 0)")
    parser.add_argument("--modes", nargs="+", choices=["memory", "streaming", "auto"], default=None)
    parser.add_argument(
        "--budget", type=int, default=None, help="memory_budget in bytes (default: the job's)"
    )
    parser.add_argument("--factor", type=int, default=0, help="also MNIST with N x the training rows")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        case, tables, prefix, mode, seed, budget = args.child
        result = child(case, Path(tables), prefix, mode, int(seed), int(budget) if budget else None)
        print(json.dumps(result))
        return 0
    cases = args.cases or DEFAULT_CASES
    modes = args.modes or ["memory", "streaming"]
    if any(c.startswith("mnist") for c in cases) or args.factor:
        need = "train.csv" if "mnist" in cases or args.factor else "train_data.csv"
        if not (args.mnist / need).exists():
            raise SystemExit(
                f"{args.mnist}/{need} missing: .venv/bin/python scripts/make-mnist.py {args.mnist}"
            )
    print(
        f"{'case':36} " + " | ".join(f"{m + ': metric, train, RSS, anon':34}" for m in modes),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="amlflow-streaming-bench-") as tmp:
        tables = Path(tmp)
        for case in cases:
            build_tables(case, args.mnist, tables)
            seeds = args.seeds if case.startswith("mnist") else [0]
            print("\n".join(run(case, case, tables, seeds, modes, args.budget)), flush=True)
            for kind in ("tr", "ev"):
                shutil.rmtree(tables / f"{case}-{kind}", ignore_errors=True)
        for factor in sorted({1, args.factor}) if args.factor else []:
            t0 = time.perf_counter()
            build_tables("mnist", args.mnist, tables, factor=factor)
            prefix = f"mnist-x{factor}"
            print(f"  ({prefix}: tables built in {time.perf_counter() - t0:.0f} s)", flush=True)
            print("\n".join(run("mnist", prefix, tables, [args.seeds[0]], modes, args.budget)), flush=True)
            for kind in ("tr", "ev"):
                shutil.rmtree(tables / f"{prefix}-{kind}", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
