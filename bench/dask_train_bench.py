"""Benchmark: data-parallel training on a Dask LocalCluster (``AMLFLOW_DASK_TRAINING``) next to the
in-process streaming mode, quality and time, in one run (service/dask_training.py, docs/scale.md).

    python bench/dask_train_bench.py                         # wine, banking, MNIST s0-2; time 1x, 10x
    python bench/dask_train_bench.py --factor 0              # no 10x MNIST (its table takes ~1 min to build)
    python bench/dask_train_bench.py --only quality          # or: --only time
    python bench/dask_train_bench.py --mnist DIR             # where train.csv is (scripts/make-mnist.py)

The cases are bench/streaming_bench.py's (same files, schemas, recipes, AML's parameters, 70/30 splits by
bytes, the evaluation's metric; ``--factor N``: the first 70 % of Kaggle ``train.csv``'s rows N times,
evaluated on the last 30 %). Each encoded table is put where a training datasource's table lives under a
local artifact root, and the model is trained

* **in-process, streaming**: ``engine.model.train(mode="streaming")`` (the chunks kept on disk between
  passes), in this process;
* **on Dask**: ``amlflow.service.dask_training.train_on_dask(when="always")``, the service's own code path,
  on a ``LocalCluster`` of 1 or 2 worker processes with one thread each (its workers read the table from
  the artifact root, as they would from S3 into their caches);
* **on 2 training worker processes**: ``amlflow.service.training_processes.train_in_processes(2,
  when="always")``, the service's path for a model over its budget (``AMLFLOW_TRAINING_PROCESSES``): the
  same algorithm as the 2-worker Dask run, so the same metric.

Quality: streaming against 2 workers for every case and MNIST seed. Time (MNIST seed 0, at 1x and at
``--factor`` x the rows): streaming, 1 worker and 2 workers; the training time is measured by the caller
(for Dask: from the call to the model, so the service's preparation, the pre-pass that builds every
shard's features on the workers, the passes and the finishing), with the pre-pass and the median pass from
the job log's lines. Both clusters are started, and their workers have imported amlflow, before anything
is timed. The service, the scheduler and the workers share this machine's cores; the bench prints how many
of them were free (2 processes of a busy loop against 1) before and after.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO / "bench")]

import streaming_bench as sb  # noqa: E402  (the cases, their tables)
from dask_bench import _cores_free, local_clusters  # noqa: E402


class Cases:
    """Encoded tables under a local artifact root, and the trainings of the bench."""

    def __init__(self, root: Path, mnist: Path) -> None:
        from amlflow.service.artifacts import Artifacts

        self.root = root
        self.mnist = mnist
        self.tables = root / "tables"
        self.artifacts = Artifacts(root / "home", None, None)
        self.show_log = False

    def build(self, case: str, factor: int = 0) -> str:
        """The case's tables; its training table published as datasource ``<prefix>-tr``."""
        prefix = f"mnist-x{factor}" if factor else case
        sb.build_tables(case, self.mnist, self.tables, factor=factor)
        folder = self.artifacts.local("DataSource", f"{prefix}-tr")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "table").symlink_to(self.tables / f"{prefix}-tr")
        return prefix

    def train(self, case: str, prefix: str, seed: int, address: str | None) -> dict[str, Any]:
        """``address``: None streams in this process, ``"processes"`` trains on 2 training worker
        processes of this machine (service/training_processes.py), else on the Dask cluster there."""
        from amlflow.engine.evaluation import evaluate
        from amlflow.engine.model import train
        from amlflow.engine.params import parse_parameters
        from amlflow.engine.recipe import parse_recipe
        from amlflow.engine.schema import parse_schema
        from amlflow.engine.table import EncodedTable
        from amlflow.service.dask_training import train_on_dask
        from amlflow.service.training_processes import train_in_processes

        schema_path, recipe_path, model_type, params, _, _, _ = sb.CASES[case]
        schema = parse_schema(schema_path.read_text())
        recipe = parse_recipe(recipe_path.read_text(), schema)
        tr = EncodedTable.open(self.tables / f"{prefix}-tr")
        ev = EncodedTable.open(self.tables / f"{prefix}-ev")
        lines: list[str] = []
        t0 = time.perf_counter()
        if address is None:
            model: Any = train(
                tr, schema, recipe, parse_parameters(params), model_type, seed=seed, log=lines.append,
                mode="streaming",
            )  # fmt: skip
        elif address == "processes":
            model = train_in_processes(
                2,
                work_dir=self.root / f"work-{prefix}-{seed}",
                table=tr,
                schema=schema,
                recipe=recipe,
                params=parse_parameters(params),
                model_type=model_type,
                seed=seed,
                memory_budget=None,
                when="always",
                log=lines.append,
            )
        else:
            model = train_on_dask(
                address,
                self.artifacts,
                model_id=f"bench-{prefix}-{seed}",
                datasource_id=f"{prefix}-tr",
                table=tr,
                schema=schema,
                recipe=recipe,
                params=parse_parameters(params),
                model_type=model_type,
                seed=seed,
                memory_budget=None,
                when="always",
                log=lines.append,
            )
        seconds = time.perf_counter() - t0
        metric = float(next(iter(evaluate(model, ev, schema, training_info={}).properties.values())))
        text = "\n".join(lines)
        if self.show_log:
            print(text, flush=True)
        pre = re.search(r"pre-pass .*?: ([\d.]+) s", text)
        med = re.search(r"median-pass=([\d.]+)s", text)
        passes = [float(x) for x in re.findall(r"(?:dask|processes): pass \d+ of \d+: ([\d.]+) s", text)]
        return {
            "metric": metric,
            "seconds": seconds,
            "mode": model.training_info["training_mode"],
            "pre": float(pre.group(1)) if pre else None,
            "median_pass": float(med.group(1)) if med else None,
            "passes": passes,
            "rows": int(tr.n_rows),
        }


def _cell(r: dict[str, Any], higher: bool, bar: float) -> str:
    ok = r["metric"] >= bar if higher else r["metric"] <= bar
    return f"{r['metric']:.4f}{'' if ok else '!'} {r['seconds']:6.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=Path(os.environ.get("MNIST_DIR", "/work/mnist")))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--factor", type=int, default=10, help="time also MNIST at N x the rows (0: not)")
    parser.add_argument("--only", choices=["quality", "time"], default=None)
    parser.add_argument("--log", action="store_true", help="print every training's log lines")
    args = parser.parse_args(argv)
    if not (args.mnist / "train.csv").exists():
        raise SystemExit(
            f"{args.mnist}/train.csv missing: .venv/bin/python scripts/make-mnist.py {args.mnist}"
        )

    from amlflow.service.distributed import close_clients

    print(f"cores free before (2 busy loops vs 1, of 2): {_cores_free():.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="amlflow-dask-train-bench-") as tmp:
        cases = Cases(Path(tmp), args.mnist)
        cases.show_log = args.log
        clusters = local_clusters("amlflow.service.dask_training")
        try:
            address = {n: c.scheduler_address for n, c in clusters.items()}

            if args.only in (None, "quality"):
                print(
                    "\nquality: in-process streaming vs data-parallel on 2 Dask workers and on 2 training "
                    "worker processes (metric, training)"
                )
                print(
                    f"{'case':34} {'streaming':>20} | {'dask, 2 workers':>20} | {'2 processes':>20} | "
                    "difference (dask − streaming)"
                )
                for case in ("wine", "banking", "mnist"):
                    prefix = cases.build(case)
                    _, _, _, _, metric, bar, higher = sb.CASES[case]
                    for seed in args.seeds if case == "mnist" else [0]:
                        s = cases.train(case, prefix, seed, None)
                        d = cases.train(case, prefix, seed, address[2])
                        p = cases.train(case, prefix, seed, "processes")
                        assert d["mode"] == "dask" and p["mode"] == "processes", (d, p)
                        name = f"{case} s{seed} ({metric}, {'≥' if higher else '≤'} {bar})"
                        print(
                            f"{name:34} {_cell(s, higher, bar):>20} | {_cell(d, higher, bar):>20} | "
                            f"{_cell(p, higher, bar):>20} | {d['metric'] - s['metric']:+.4f}",
                            flush=True,
                        )

            if args.only in (None, "time"):
                print("\ntime: MNIST seed 0, training (pre-pass, median pass), macro-F1")
                sizes = [0] + ([args.factor] if args.factor else [])
                for factor in sizes:
                    t0 = time.perf_counter()
                    prefix = cases.build("mnist", factor) if factor else "mnist"
                    if not factor and not (cases.tables / "mnist-tr").exists():
                        prefix = cases.build("mnist")
                    built = time.perf_counter() - t0
                    rows: dict[str, dict[str, Any]] = {}
                    rows["streaming"] = cases.train("mnist", prefix, 0, None)
                    for n in (1, 2):
                        rows[f"dask {n} worker{'s' if n > 1 else ''}"] = cases.train(
                            "mnist", prefix, 0, address[n]
                        )
                    rows["2 processes"] = cases.train("mnist", prefix, 0, "processes")
                    label = f"{factor}x" if factor else "1x"
                    print(
                        f"  MNIST {label}: {rows['streaming']['rows']:,} training rows "
                        f"(tables built in {built:.0f} s)"
                    )
                    for name, r in rows.items():
                        extra = (
                            f" (pre-pass {r['pre']:.2f} s, median pass {r['median_pass']:.2f} s)"
                            if r["pre"] is not None
                            else ""
                        )
                        print(
                            f"    {name:16} {r['seconds']:7.1f} s{extra}  macro-F1 {r['metric']:.4f}",
                            flush=True,
                        )
                    one, two = rows["dask 1 worker"], rows["dask 2 workers"]
                    print(
                        f"    speed-up 2 workers vs 1: {one['seconds'] / two['seconds']:.2f}x training, "
                        f"{one['median_pass'] / two['median_pass']:.2f}x per pass; "
                        "2 workers vs in-process streaming: "
                        f"{rows['streaming']['seconds'] / two['seconds']:.2f}x; 2 training processes vs "
                        "in-process streaming: "
                        f"{rows['streaming']['seconds'] / rows['2 processes']['seconds']:.2f}x",
                        flush=True,
                    )
        finally:
            close_clients()
            for cluster in clusters.values():
                cluster.close()
    print(f"\ncores free after: {_cores_free():.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
