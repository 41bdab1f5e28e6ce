"""Benchmark: the datasource job's CSV encoding in-process vs on a Dask LocalCluster of 1 and 2 workers, by
input file and byte range (``AMLFLOW_DASK_DATASOURCE``, service/dask_datasource.py, docs/scale.md).

    python bench/dask_datasource_bench.py                    # Kaggle MNIST train.csv (76 MB)
    python bench/dask_datasource_bench.py --factor 10        # and its rows 10 times in one file (760 MB)
    python bench/dask_datasource_bench.py --range-mb 32      # ranges of 32 MiB (default 64)
    python bench/dask_datasource_bench.py --reps 3           # best of 3 rounds per mode

Every mode encodes the same input with the service's own code: **in-process**
``engine.dataset.build_dataset``; **on Dask** ``amlflow.service.dask_datasource.build_on_dask(
when="always")`` (workers read their byte range of the object through the storage, write their part into
the artifact root; this process merges the parts in order). Storage and artifact root are local folders
here (a LocalCluster shares this machine's disk); through S3 the workers' ranged reads and the parts'
upload and download add their transfer time. Each Dask table is checked byte for byte against the
in-process one. ``statistics`` is ``engine.stats.compute_statistics`` on the merged table — what the job
does after the merge in every mode. Both clusters are started, and their workers have imported amlflow,
before anything is timed. The bench prints how many cores were free (2 busy loops vs 1) before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO / "bench")]

from dask_bench import _cores_free, local_clusters  # noqa: E402

TABLE_FILES = ("codes.bin", "dictionaries.json", "meta.json")


def _input(store_root: Path, mnist: Path, factor: int) -> str:
    """The bench's input object in the local storage: train.csv, or its rows ``factor`` times."""
    target = store_root / "data" / (f"train-{factor}x.csv" if factor > 1 else "train.csv")
    target.parent.mkdir(parents=True, exist_ok=True)
    source = mnist / "train.csv"
    if factor <= 1:
        shutil.copyfile(source, target)
    else:
        with open(source, "rb") as fh:
            header, body = fh.readline(), fh.read()
        with open(target, "wb") as out:
            out.write(header)
            for _ in range(factor):
                out.write(body)
    return f"s3://data/{target.name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=Path(os.environ.get("MNIST_DIR", "/work/mnist")))
    parser.add_argument("--factor", type=int, default=0, help="also time N x the rows in one file (0: not)")
    parser.add_argument("--range-mb", type=int, default=64)
    parser.add_argument("--reps", type=int, default=2, help="rounds per mode; the best is printed")
    parser.add_argument("--log", action="store_true", help="print the Dask runs' log lines")
    args = parser.parse_args(argv)
    if not (args.mnist / "train.csv").exists():
        raise SystemExit(
            f"{args.mnist}/train.csv missing: .venv/bin/python scripts/make-mnist.py {args.mnist}"
        )

    import logging

    logging.getLogger("distributed").setLevel(logging.WARNING)
    from amlflow.engine.dataset import Source, build_dataset
    from amlflow.engine.rearrange import Rearrangement
    from amlflow.engine.schema import parse_schema
    from amlflow.engine.stats import compute_statistics
    from amlflow.engine.table import EncodedTable
    from amlflow.service.artifacts import Artifacts
    from amlflow.service.dask_datasource import build_on_dask
    from amlflow.service.distributed import close_clients
    from amlflow.storage import LocalStorage

    schema = parse_schema((REPO / "schemas" / "mnist-train.csv.schema").read_text())
    print(f"cores free before (2 busy loops vs 1, of 2): {_cores_free():.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="amlflow-dask-ds-bench-") as tmp:
        root = Path(tmp)
        storage = LocalStorage(root / "s3")
        artifacts = Artifacts(root / "home", str(root / "artifacts"), None)
        clusters = local_clusters("amlflow.service.dask_datasource")
        try:
            print(
                f"{'input':>22} {'parts':>5} | {'in-process':>10} {'statistics':>10} | "
                f"{'dask 1 worker':>13} {'dask 2 workers':>14} {'speed-up 2 vs 1':>15} {'2 vs in-proc':>12}"
            )
            for factor in [1] + ([args.factor] if args.factor > 1 else []):
                uri = _input(storage.root, args.mnist, factor)
                objects = storage.list(uri)
                sources = [Source(o.key, o.size, lambda u=o.uri: storage.open_read(u)) for o in objects]
                size = sum(o.size for o in objects)
                times: dict[str, float] = {}
                out = artifacts.local("DataSource", "bench") / "table"

                def best(fn: Any) -> float:
                    took = []
                    for _ in range(args.reps):
                        t0 = time.perf_counter()
                        fn()
                        took.append(time.perf_counter() - t0)
                    return min(took)

                times["in-process"] = best(
                    lambda s=sources, o=out: build_dataset(s, schema, Rearrangement(), o)
                )
                expected = {name: (out / name).read_bytes() for name in TABLE_FILES}
                table = EncodedTable.open(out)
                times["statistics"] = best(lambda t=table: compute_statistics(t, schema))
                lines: list[str] = []
                parts = 0
                for n, cluster in clusters.items():

                    def run(
                        address: str = cluster.scheduler_address,
                        objects: list[Any] = objects,
                        out: Path = out,
                        lines: list[str] = lines,
                    ) -> None:
                        info = build_on_dask(
                            address,
                            artifacts,
                            storage,
                            datasource_id="bench",
                            objects=objects,
                            schema=schema,
                            rearrangement=Rearrangement(),
                            out_dir=out,
                            when="always",
                            range_bytes=args.range_mb << 20,
                            log=lines.append,
                        )
                        assert info is not None

                    times[f"dask {n}"] = best(run)
                    got = {name: (out / name).read_bytes() for name in TABLE_FILES}
                    assert got == expected, f"dask {n}: the table differs from the in-process one"
                    parts = int(lines[0].split(" part(s)")[0].rsplit(" ", 1)[1])
                if args.log:
                    print("\n".join(f"    {line}" for line in lines))
                label = f"MNIST {factor}x ({size / 1e6:.0f} MB)"
                print(
                    f"{label:>22} {parts:>5} | {times['in-process']:>9.2f}s {times['statistics']:>9.2f}s | "
                    f"{times['dask 1']:>12.2f}s {times['dask 2']:>13.2f}s "
                    f"{times['dask 1'] / times['dask 2']:>14.2f}x "
                    f"{times['in-process'] / times['dask 2']:>11.2f}x",
                    flush=True,
                )
                storage.delete(uri)
        finally:
            close_clients()
            for cluster in clusters.values():
                cluster.close()
    print(f"cores free after: {_cores_free():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
