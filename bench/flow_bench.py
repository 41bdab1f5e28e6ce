"""Benchmark: the full Kaggle MNIST pipeline as a Prefect flow vs the same AML work called in-process.

    python bench/flow_bench.py [--train /work/mnist/train.csv --test /work/mnist/test.csv
                                --labels /work/mnist/test_labels.csv]

What it measures (wall clock, ``time.perf_counter``), each run in a fresh ``AMLFLOW_HOME`` so nothing is
re-attached:

1. **in-process**: the same AML calls as the flow (upload, 3 datasources, model, evaluation ∥ batch
   prediction) made directly on ``amlflow.client.ml_client()``, waiting with the same backoff polling;
2. **flow**: ``flows.mnist_pipeline`` against a *warm* Prefect API (``PREFECT_API_URL`` if set, else a
   temporary local server that this script starts and warms up with one small flow run first).

For the flow it prints the AML critical path (first ``CreatedAt`` → last ``FinishedAt`` of its entities, the
service's own clock), the Prefect/orchestration overhead (flow wall time minus that), the time of the
report tasks (artifacts, images, copies, Kaggle submission: work the in-process run does not do), and
Prefect's added time relative to the in-process run. Target: added time ≤ 25 % of the flow run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "src")]

MNIST_PARAMETERS = {
    "sgd.maxPasses": "10",
    "sgd.l2RegularizationAmount": "1e-5",
    "sgd.shuffleType": "auto",
    "sgd.maxMLModelSizeInBytes": str(100 * 1024 * 1024),
}


def _poll(get: Callable[..., dict[str, Any]], member: str, entity: str) -> dict[str, Any]:
    delay = 0.2
    while True:
        response = get(**{member: entity})
        if response["Status"] in ("COMPLETED", "FAILED", "DELETED"):
            if response["Status"] != "COMPLETED":
                raise RuntimeError(f"{entity} ended {response['Status']}: {response.get('Message')}")
            return response
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)


def in_process(train: str, test: str) -> dict[str, float]:
    """The flow's AML work, called directly on the embedded client (no Prefect)."""
    from amlflow.client import ml_client, reset_clients, storage

    reset_clients()
    ml = ml_client()
    store = storage()
    train_schema = (REPO / "schemas/mnist-train.csv.schema").read_text()
    test_schema = (REPO / "schemas/mnist-test.csv.schema").read_text()
    recipe = (REPO / "recipes/mnist.recipe.json").read_text()
    t0 = time.perf_counter()
    uris = {}
    for role, path in (("train", train), ("test", test)):
        uris[role] = f"s3://bench/inputs/{Path(path).name}"
        with open(path, "rb") as fh:
            store.write_atomic(uris[role], fh)
    t_upload = time.perf_counter() - t0

    def ds(ds_id: str, uri: str, schema: str, rearr: str | None, stats: bool) -> None:
        spec = {"DataLocationS3": uri, "DataSchema": schema}
        if rearr:
            spec["DataRearrangement"] = rearr
        ml.create_data_source_from_s3(DataSourceId=ds_id, DataSpec=spec, ComputeStatistics=stats)

    ds("ds-train", uris["train"], train_schema, '{"splitting":{"percentBegin":0,"percentEnd":70}}', True)
    ds("ds-eval", uris["train"], train_schema, '{"splitting":{"percentBegin":70,"percentEnd":100}}', True)
    ds("ds-batch", uris["test"], test_schema, None, False)
    _poll(ml.get_data_source, "DataSourceId", "ds-train")
    ml.create_ml_model(
        MLModelId="ml-1",
        MLModelType="MULTICLASS",
        TrainingDataSourceId="ds-train",
        Recipe=recipe,
        Parameters=MNIST_PARAMETERS,
    )
    _poll(ml.get_ml_model, "MLModelId", "ml-1")
    _poll(ml.get_data_source, "DataSourceId", "ds-eval")
    _poll(ml.get_data_source, "DataSourceId", "ds-batch")
    ml.create_evaluation(EvaluationId="ev-1", MLModelId="ml-1", EvaluationDataSourceId="ds-eval")
    ml.create_batch_prediction(
        BatchPredictionId="bp-1",
        MLModelId="ml-1",
        BatchPredictionDataSourceId="ds-batch",
        OutputUri="s3://bench/output/",
    )
    results: dict[str, dict[str, Any]] = {}
    waits = [
        threading.Thread(
            target=lambda: results.__setitem__("ev", _poll(ml.get_evaluation, "EvaluationId", "ev-1"))
        ),
        threading.Thread(
            target=lambda: results.__setitem__(
                "bp", _poll(ml.get_batch_prediction, "BatchPredictionId", "bp-1")
            )
        ),
    ]
    for w in waits:
        w.start()
    for w in waits:
        w.join()
    total = time.perf_counter() - t0
    metric = results["ev"]["PerformanceMetrics"]["Properties"]
    reset_clients()
    return {"wall_s": total, "upload_s": t_upload, "metric": float(next(iter(metric.values())))}


def _entity_span(result: dict[str, Any]) -> float:
    """AML critical path of a flow run: first CreatedAt → last FinishedAt of its entities."""
    from amlflow.client import ml_client

    ml = ml_client()
    items = [ml.get_data_source(DataSourceId=i) for i in result["data_sources"].values()] + [
        ml.get_ml_model(MLModelId=result["ml_model_id"]),
        ml.get_evaluation(EvaluationId=result["evaluation_id"]),
        ml.get_batch_prediction(BatchPredictionId=result["batch"]["batch_prediction_id"]),
    ]
    start = min(i["CreatedAt"] for i in items)
    end = max(i["FinishedAt"] for i in items)
    return (
        float((end - start).total_seconds())
        if hasattr(end, "__sub__") and not isinstance(end, float)
        else float(end) - float(start)
    )


def _report_task_seconds(flow_run_id: str) -> tuple[float, dict[str, float]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    per: dict[str, float] = {}
    for run in runs:
        if run.start_time and run.end_time:
            name = run.name.rsplit("-", 1)[0]
            per[name] = per.get(name, 0.0) + (run.end_time - run.start_time).total_seconds()
    reports = sum(v for k, v in per.items() if k.startswith("report_") or k == "kaggle_submission")
    return reports, per


def run_flow(train: str, test: str, labels: str | None, out: str) -> dict[str, Any]:
    from amlflow.client import reset_clients
    from flows.mnist_pipeline import mnist_pipeline

    reset_clients()
    t0 = time.perf_counter()
    result = mnist_pipeline(train=train, test=test, test_labels=labels, output_dir=out)
    wall = time.perf_counter() - t0
    span = _entity_span(result)
    reports, per_task = _report_task_seconds(result["flow_run_id"])
    reset_clients()
    return {
        "wall_s": wall,
        "aml_span_s": span,
        "report_tasks_s": reports,
        "per_task_s": per_task,
        "metric": result["evaluation"]["metric"],
        "accuracy": result["submission"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", default="/work/mnist/train.csv")
    parser.add_argument("--test", default="/work/mnist/test.csv")
    parser.add_argument("--labels", default="/work/mnist/test_labels.csv")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    labels = args.labels if args.labels and Path(args.labels).exists() else None

    work = Path(tempfile.mkdtemp(prefix="amlflow-bench-"))
    os.environ["AMLFLOW_HOME"] = str(work / "home-direct")
    print(f"in-process run ({args.train}, {args.test}) ...", flush=True)
    direct = in_process(args.train, args.test)
    print(f"  {direct['wall_s']:.1f} s (metric {direct['metric']:.4f})", flush=True)

    from prefect import flow

    @flow(name="bench-warmup")
    def warmup() -> int:
        return 1

    harness = None
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.testing.utilities import prefect_test_harness

        harness = prefect_test_harness(server_startup_timeout=120)
        harness.__enter__()
    try:
        t0 = time.perf_counter()
        warmup()
        print(f"Prefect warm-up flow: {time.perf_counter() - t0:.1f} s", flush=True)
        os.environ["AMLFLOW_HOME"] = str(work / "home-flow")
        print("flow run ...", flush=True)
        flowed = run_flow(args.train, args.test, labels, str(work / "out"))
    finally:
        if harness is not None:
            harness.__exit__(None, None, None)

    overhead = flowed["wall_s"] - flowed["aml_span_s"]
    added = flowed["wall_s"] - direct["wall_s"]
    rows = [
        ("in-process (same AML work, no Prefect)", direct["wall_s"]),
        ("flow run, wall", flowed["wall_s"]),
        ("  AML critical path (entity timestamps)", flowed["aml_span_s"]),
        ("  Prefect + reports (wall − AML path)", overhead),
        ("    of which report tasks (task-run time)", flowed["report_tasks_s"]),
        ("Prefect's added time (flow − in-process)", added),
    ]
    print("\n| measure | seconds |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value:.1f} |")
    share = added / flowed["wall_s"] if flowed["wall_s"] else float("nan")
    print(f"\nadded time = {share:.1%} of the flow run (target ≤ 25 %)")
    print(
        f"metric: in-process {direct['metric']:.4f}, flow {flowed['metric']:.4f}; "
        f"Kaggle accuracy {flowed['accuracy']}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"direct": direct, "flow": flowed, "added_share": share}, indent=2)
        )


if __name__ == "__main__":
    main()
