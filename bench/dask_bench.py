"""Benchmark: evaluation and batch prediction of the Kaggle MNIST case on a Dask LocalCluster of 1 and
2 worker processes (``AMLFLOW_DASK_ADDRESS``), next to the in-process jobs, in one run.

    python bench/dask_bench.py                       # full Kaggle MNIST (scripts/make-mnist.py), local root
    python bench/dask_bench.py --store s3            # artifact root and data on moto's S3 (no shared disk)
    python bench/dask_bench.py --mnist data/mnist-sample --reps 5

Set-up (once, in-process, not timed): ``train.csv`` 70/30 sequential split into a training datasource
(statistics) and an evaluation datasource, ``test.csv`` as the batch datasource, the MULTICLASS model with
AML's MNIST settings (ALL_CATEGORICAL, 10 passes, L2 1e-5). Then three modes (in-process, Dask with 1
worker, Dask with 2 workers; one thread per worker), each a ``Service`` on its own copy of the set-up state,
take ``--reps`` rounds in turn (interleaved, so they share whatever load the machine has) of: the
evaluation alone, the batch prediction alone, and both at once (the pipeline's evaluation ∥ batch). A
round's time is from the creates to the last COMPLETED, measured by the caller. Each cluster is
started and its workers have imported amlflow before the first round (a running cluster has); the first
round is "cold" (each worker reads the model and the tables into its cache: with ``--store s3`` it
downloads them), the others warm; the figures are the median of the warm rounds, the cold one printed
apart. Every Dask batch output is checked byte for byte (uncompressed) against the in-process one, and
every metric against the in-process metric.

Everything shares the machine's cores: the service (and moto with ``--store s3``), the scheduler and the
workers.

It also prints the CPU seconds per phase of each mode and job (median of the warm rounds): the service
process (the jobs' own work, the scheduler and the client, moto with ``--store s3``), the workers'
processes, and the workers' phases (``amlflow.service.distributed.worker_phases``: model and table fetch,
the batch task and its deflate, the evaluation's scores or accumulators; "Dask & rest" is the workers' CPU
outside them). On a shared machine, reason from these rather than from wall-clock ratios.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO)]

PARAMS = {
    "sgd.maxPasses": "10",
    "sgd.l2RegularizationAmount": "1e-5",
    "sgd.shuffleType": "auto",
    "sgd.maxMLModelSizeInBytes": str(100 * 1024 * 1024),
}


def _split(begin: int, end: int) -> str:
    return json.dumps({"splitting": {"percentBegin": begin, "percentEnd": end}})


def _inputs(mnist: Path) -> tuple[Path, Path]:
    for train, test in (("train.csv", "test.csv"), ("train.csv.gz", "test.csv.gz")):
        if (mnist / train).is_file() and (mnist / test).is_file():
            return mnist / train, mnist / test
    raise SystemExit(f"{mnist}: no train.csv/test.csv (build them: python scripts/make-mnist.py {mnist})")


class Bench:
    """One amlflow home (state, caches), local or moto S3 storage, and the set-up entities."""

    def __init__(self, mnist: Path, store: str) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="amlflow-dask-bench-"))
        self.store = store
        self.moto: Any = None
        self.train, self.test = _inputs(mnist)
        if store == "s3":
            import boto3
            from moto.server import ThreadedMotoServer

            self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self.moto.start()
            host, port = self.moto.get_host_and_port()
            os.environ.update(
                AWS_ENDPOINT_URL_S3=f"http://{host}:{port}",
                AWS_ACCESS_KEY_ID="moto",
                AWS_SECRET_ACCESS_KEY="moto",
                AWS_DEFAULT_REGION="us-east-1",
            )
            s3 = boto3.client("s3")
            for bucket in ("bench", "artifacts"):
                s3.create_bucket(Bucket=bucket)
            for path in (self.train, self.test):
                s3.upload_file(str(path), "bench", f"mnist/{path.name}")
        else:
            target = self.work / "s3" / "bench" / "mnist"
            target.mkdir(parents=True)
            for path in (self.train, self.test):
                try:
                    os.link(path, target / path.name)
                except OSError:
                    shutil.copyfile(path, target / path.name)

    def settings(self, home: str, dask_address: str | None = None, database: str = "state.db") -> Any:
        from amlflow.settings import Settings

        common: dict[str, Any] = {
            "home": self.work / home,
            "database_url": f"sqlite:///{self.work / database}",
            "max_jobs": 2,
            "dask_address": dask_address,
        }
        if self.store == "s3":
            return Settings(storage="s3", artifact_root="s3://artifacts/bench/", **common)
        # a local artifact root every LocalCluster worker sees at the same path (as a shared mount)
        return Settings(storage_root=self.work / "s3", artifact_root=str(self.work / "artifacts"), **common)

    def service(
        self, home: str, dask_address: str | None = None, database: str = "state.db"
    ) -> tuple[Any, Any]:
        from amlflow.service.core import Service
        from amlflow.service.embedded import build_client

        settings = self.settings(home, dask_address, database)
        service = Service(settings)
        return service, build_client(service, settings)

    def set_up(self) -> None:
        service, ml = self.service("setup")
        try:
            schema = (REPO / "schemas" / "mnist-train.csv.schema").read_text()
            train = f"s3://bench/mnist/{self.train.name}"
            for ds_id, split in (("ds-train", (0, 70)), ("ds-eval", (70, 100))):
                ml.create_data_source_from_s3(
                    DataSourceId=ds_id,
                    DataSpec={
                        "DataLocationS3": train,
                        "DataSchema": schema,
                        "DataRearrangement": _split(*split),
                    },
                    ComputeStatistics=ds_id == "ds-train",
                )
            ml.create_data_source_from_s3(
                DataSourceId="ds-batch",
                DataSpec={
                    "DataLocationS3": f"s3://bench/mnist/{self.test.name}",
                    "DataSchema": (REPO / "schemas" / "mnist-test.csv.schema").read_text(),
                },
            )
            ml.create_ml_model(
                MLModelId="ml",
                MLModelType="MULTICLASS",
                TrainingDataSourceId="ds-train",
                Recipe=(REPO / "recipes" / "mnist.recipe.json").read_text(),
                Parameters=PARAMS,
            )
            for get, key, value in (
                (ml.get_data_source, "DataSourceId", "ds-eval"),
                (ml.get_data_source, "DataSourceId", "ds-batch"),
                (ml.get_ml_model, "MLModelId", "ml"),
            ):
                _wait(get, key, value)
        finally:
            service.shutdown(timeout=60)

    def output(self, bp_id: str) -> bytes:
        """The batch prediction's result file, uncompressed."""
        name = self.test.name.removesuffix(".gz")
        key = f"out/{bp_id}/batch-prediction/result/{bp_id}-{name}.gz"
        if self.store == "s3":
            import boto3

            return gzip.decompress(boto3.client("s3").get_object(Bucket="bench", Key=key)["Body"].read())
        return gzip.decompress((self.work / "s3" / "bench" / key).read_bytes())

    def close(self) -> None:
        if self.moto is not None:
            self.moto.stop()
        shutil.rmtree(self.work, ignore_errors=True)


#: seconds between two describes while a round waits (``--poll``)
POLL = 0.01


def _wait(get: Callable[..., dict[str, Any]], key: str, value: str, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        out = get(**{key: value})
        if out["Status"] in ("COMPLETED", "FAILED", "DELETED"):
            if out["Status"] != "COMPLETED":
                raise SystemExit(f"{key} {value}: {out['Status']}: {out.get('Message')}")
            return out
        if time.monotonic() > deadline:
            raise SystemExit(f"{key} {value}: still {out['Status']} after {timeout} s")
        time.sleep(POLL)


def _round(ml: Any, tag: str, what: str) -> tuple[float, dict[str, str], float]:
    """Create the evaluation and/or the batch prediction; seconds until every one is COMPLETED as the
    caller sees it, the metric, and the round's span by the service's own timestamps (the first
    CreatedAt to the last FinishedAt: what the jobs took, without the caller's polling)."""
    started = time.perf_counter()
    waits = []
    if what in ("eval", "both"):
        ml.create_evaluation(EvaluationId=f"ev-{tag}", MLModelId="ml", EvaluationDataSourceId="ds-eval")
        waits.append((ml.get_evaluation, "EvaluationId", f"ev-{tag}"))
    if what in ("batch", "both"):
        ml.create_batch_prediction(
            BatchPredictionId=f"bp-{tag}",
            MLModelId="ml",
            BatchPredictionDataSourceId="ds-batch",
            OutputUri=f"s3://bench/out/bp-{tag}/",
        )
        waits.append((ml.get_batch_prediction, "BatchPredictionId", f"bp-{tag}"))
    done = [_wait(get, key, value) for get, key, value in waits]
    elapsed = time.perf_counter() - started
    metric = next((d["PerformanceMetrics"]["Properties"] for d in done if "PerformanceMetrics" in d), {})
    span = max(d["FinishedAt"] for d in done) - min(d["CreatedAt"] for d in done)
    return elapsed, metric, span.total_seconds()


class Mode:
    """One way to run the jobs: a service on its own copy of the set-up state (so no other mode's
    scanner takes its jobs) and, for Dask, its own LocalCluster."""

    def __init__(self, bench: Bench, name: str, workers: int) -> None:
        import sqlite3

        self.name, self.workers = name, workers
        self.cluster: Any = None
        self.client: Any = None
        address = None
        if workers:
            from distributed import Client, LocalCluster

            self.cluster = LocalCluster(
                n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=":0"
            )
            address = self.cluster.scheduler_address
            self.client = Client(address, set_as_default=False)
            self.client.run(__import__, "amlflow.service.distributed")  # a running cluster has it imported
        with (
            sqlite3.connect(bench.work / "state.db") as src,
            sqlite3.connect(bench.work / f"{name}.db") as dst,
        ):
            src.backup(dst)
        self.service, self.ml = bench.service(name, address, database=f"{name}.db")
        self.times: dict[str, list[float]] = {"eval": [], "batch": [], "both": []}
        #: per round: the service's timestamps' span (first CreatedAt to last FinishedAt)
        self.spans: dict[str, list[float]] = {"eval": [], "batch": [], "both": []}
        #: per round: CPU seconds of the service process (with the scheduler and moto, which run in it),
        #: of the workers (their processes' total) and the workers' phases (worker_phases)
        self.cpu: dict[str, list[dict[str, float]]] = {"eval": [], "batch": [], "both": []}
        self.metrics: list[dict[str, str]] = []

    def _worker_cpu(self) -> float:
        return sum(self.client.run(time.process_time).values()) if self.client is not None else 0.0

    def round(self, rep: int) -> None:
        import resource

        from amlflow.service.distributed import worker_phases

        for what in ("eval", "batch", "both"):
            if self.client is not None:
                self.client.run(worker_phases, True)
            w0 = self._worker_cpu()
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            seconds, metric, span = _round(self.ml, f"{self.name}-{what}-{rep}", what)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = {
                "service process": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
                "workers": self._worker_cpu() - w0,
            }
            if self.client is not None:
                for phases in self.client.run(worker_phases, False).values():
                    for name, (c, _, _) in phases.items():
                        cpu[name] = cpu.get(name, 0.0) + c
            self.times[what].append(seconds)
            self.spans[what].append(span)
            self.cpu[what].append(cpu)
            if metric:
                self.metrics.append(metric)

    def close(self) -> None:
        self.service.shutdown(timeout=60)
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


#: the workers' phases that hold the others (their sum is the workers' task CPU)
_TOP = (
    "model fetch + load (once per worker)",
    "table fetch + open (once per worker)",
    "batch: task (features, scores, CSV, deflate)",
    "evaluation: scores (features, scoring)",
    "evaluation: accumulators",
)


def _print_cpu(modes: list[Any]) -> None:
    """CPU seconds per phase, median of the warm rounds (the cold first round in brackets): the service
    process (the jobs' own work, the scheduler, moto with --store s3), the workers' processes, and the
    workers' phases; "workers: Dask & rest" is the workers' CPU outside amlflow's task phases (Dask's
    event loop, (de)serialisation, transfers)."""
    print()
    print("CPU seconds per phase (median of the warm rounds; the cold first round in brackets)")
    for what, label in (("eval", "evaluation"), ("batch", "batch"), ("both", "evaluation ∥ batch")):
        rounds = {m.name: m.cpu[what] for m in modes}
        names: list[str] = []
        for rs in rounds.values():
            for r in rs:
                names += [k for k in r if k not in names]
        names += ["workers: Dask & rest"]
        print(f"  {label}")
        print(f"    {'phase':<48}" + "".join(f"{m.name:>16}" for m in modes))
        for name in names:
            cells = []
            for m in modes:
                values = []
                for r in rounds[m.name]:
                    if name == "workers: Dask & rest":
                        values.append(r.get("workers", 0.0) - sum(r.get(k, 0.0) for k in _TOP))
                    else:
                        values.append(r.get(name, 0.0))
                warm = statistics.median(values[1:]) if len(values) > 1 else values[0]
                cells.append(f"{warm:.2f} ({values[0]:.2f})")
            print(f"    {name:<48}" + "".join(f"{c:>16}" for c in cells))


def _spin(_: int) -> float:
    started = time.perf_counter()
    x = 0
    for i in range(10_000_000):
        x += i
    return time.perf_counter() - started


def _cores_free() -> float:
    """Throughput of 2 processes of a pure-Python loop relative to 1: about 2 on an idle 2-core machine,
    less while other processes use the cores (the ceiling of any 2-worker speed-up measured meanwhile)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_spin, [0, 1])  # the pool's start-up, not measured
        one = pool.map(_spin, [0])[0]
        two = max(pool.map(_spin, [0, 1]))
    return 2 * one / two


def local_clusters(module: str, sizes: tuple[int, ...] = (1, 2)) -> dict[int, Any]:
    """A started ``LocalCluster`` per worker count in ``sizes`` (processes, one thread each, dashboard on a
    free port), every worker having imported ``module`` already; the caller closes them."""
    from distributed import Client, LocalCluster

    clusters: dict[int, Any] = {}
    try:
        for n in sizes:
            clusters[n] = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
            )
            with Client(clusters[n].scheduler_address, set_as_default=False) as client:
                client.run(__import__, module)
    except BaseException:
        for cluster in clusters.values():
            cluster.close()
        raise
    return clusters


def main(argv: list[str] | None = None) -> int:
    global POLL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=Path(os.environ.get("MNIST_DIR", "/work/mnist")))
    parser.add_argument("--store", choices=["local", "s3"], default="local")
    parser.add_argument("--reps", type=int, default=4, help="rounds per mode (the first is the cold one)")
    parser.add_argument(
        "--poll",
        type=float,
        default=POLL,
        help="seconds between the caller's describes while it waits (default 0.01; the describes run in "
        "the service's process, on the cores the workers use)",
    )
    args = parser.parse_args(argv)
    POLL = args.poll
    sample = REPO / "data" / "mnist-sample"
    if not any((args.mnist / name).is_file() for name in ("train.csv", "train.csv.gz")):
        print(f"{args.mnist}: no train.csv; using the repository's MNIST sample")
        args.mnist = sample

    import logging

    logging.getLogger("distributed").setLevel(logging.WARNING)
    bench = Bench(args.mnist, args.store)
    try:
        t = time.perf_counter()
        bench.set_up()
        print(f"set-up (3 datasources, training; in-process): {time.perf_counter() - t:.1f} s")
        before = _cores_free()
        print(f"data: {bench.train} (70/30), {bench.test}; store: {args.store}; cores: {os.cpu_count()}")
        from amlflow.service import distributed as dask_jobs

        modes = [Mode(bench, "inproc", 0), Mode(bench, "dask1", 1), Mode(bench, "dask2", 2)]
        try:
            for rep in range(args.reps):  # the modes' rounds interleaved: they share the machine's load
                for mode in modes:
                    mode.round(rep)
        finally:
            dask_jobs.close_clients()
            for mode in modes:
                mode.close()
        results = [
            {"name": m.name, "workers": m.workers, "times": m.times, "spans": m.spans, "metrics": m.metrics}
            for m in modes
        ]
        reference = bench.output("bp-inproc-batch-0")
        same = all(
            bench.output(f"bp-{r['name']}-{what}-{rep}") == reference
            for r in results
            for what in ("batch", "both")
            for rep in range(args.reps)
        )
        values = {json.dumps(m, sort_keys=True) for r in results for m in r["metrics"]}
        print(f"batch output identical to the in-process one in every round: {same}")
        print(f"evaluation metrics over every round and mode: {sorted(values)}")
        print()
        print("seconds (median of the warm rounds; the cold first round in brackets)")
        print(f"{'mode':<12}{'evaluation':>18}{'batch':>18}{'eval ∥ batch':>18}")
        med: dict[str, dict[str, float]] = {}
        for r in results:
            cells = []
            med[r["name"]] = {}
            for what in ("eval", "batch", "both"):
                values_s = r["times"][what]
                warm = statistics.median(values_s[1:]) if len(values_s) > 1 else values_s[0]
                med[r["name"]][what] = warm
                cells.append(f"{warm:.2f} ({values_s[0]:.2f})")
            label = (
                "in-process" if not r["workers"] else f"dask {r['workers']} worker" + "s" * (r["workers"] > 1)
            )
            print(f"{label:<12}" + "".join(f"{c:>18}" for c in cells))
        print()
        for what, label in (("eval", "evaluation"), ("batch", "batch"), ("both", "evaluation ∥ batch")):
            up = med["dask1"][what] / med["dask2"][what]
            print(f"speed-up 2 workers vs 1, {label}: {up:.2f}x")
        print(
            f"\nthe same rounds by the service's timestamps (first CreatedAt to last FinishedAt; the caller "
            f"polled every {POLL * 1000:.0f} ms), median of the warm rounds (cold in brackets)"
        )
        print(f"{'mode':<12}{'evaluation':>18}{'batch':>18}{'eval ∥ batch':>18}")
        span_med: dict[str, dict[str, float]] = {}
        for r in results:
            span_med[r["name"]] = {}
            cells = []
            for what in ("eval", "batch", "both"):
                v = r["spans"][what]
                span_med[r["name"]][what] = statistics.median(v[1:]) if len(v) > 1 else v[0]
                cells.append(f"{span_med[r['name']][what]:.2f} ({v[0]:.2f})")
            label = (
                "in-process" if not r["workers"] else f"dask {r['workers']} worker" + "s" * (r["workers"] > 1)
            )
            print(f"{label:<12}" + "".join(f"{c:>18}" for c in cells))
        for what, label in (("eval", "evaluation"), ("batch", "batch"), ("both", "evaluation ∥ batch")):
            up = span_med["dask1"][what] / span_med["dask2"][what]
            print(f"speed-up 2 workers vs 1 by the timestamps, {label}: {up:.2f}x")
        _print_cpu(modes)
        total1 = med["dask1"]["eval"] + med["dask1"]["batch"]
        total2 = med["dask2"]["eval"] + med["dask2"]["batch"]
        print(f"speed-up 2 workers vs 1, evaluation + batch one after the other: {total1 / total2:.2f}x")
        print(
            f"cores free for this run (2 busy-loop processes vs 1; 2.0 = both idle): {before:.2f} before, "
            f"{_cores_free():.2f} after; load average {os.getloadavg()[0]:.2f}"
        )
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
