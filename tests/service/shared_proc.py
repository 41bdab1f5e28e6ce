"""A process on a shared amlflow state, for the shared-state tests (run as ``python -m``; not a test module).

    python -m tests.service.shared_proc --home H [--database-url U] pipeline NAME
        create the wine pipeline NAME (3 datasources, a model, an evaluation, a batch prediction), wait
        until every entity of it is done, print one JSON line {id: status}, shut down (waiting for the
        jobs this process runs, whoever created them)
    python -m tests.service.shared_proc --home H [--database-url U] block KIND NAME READY
        create the pipeline NAME; the first job of KIND this process starts touches READY and then
        hangs (the test kills the process with SIGKILL there)

``--host`` gives the process another host name in its lease owner id: a process of "another machine",
whose death only the lease's expiry reveals.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.server import aml_data

KINDS = ("DataSource", "MLModel", "Evaluation", "BatchPrediction")


def seed_data(storage_root: Path) -> None:
    """The wine CSV at ``s3://shared/wine.csv`` of a local storage root (idempotent)."""
    target = storage_root / "shared" / "wine.csv"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".wine.{time.monotonic_ns()}")
        tmp.write_bytes(aml_data.wine_binary_csv())
        tmp.replace(target)


def pipeline_ids(name: str) -> dict[str, tuple[str, str]]:
    """The entities of pipeline ``name``: label → (kind, id)."""
    return {
        "train": ("DataSource", f"{name}-ds-train"),
        "eval": ("DataSource", f"{name}-ds-eval"),
        "batch": ("DataSource", f"{name}-ds-batch"),
        "model": ("MLModel", f"{name}-ml"),
        "evaluation": ("Evaluation", f"{name}-ev"),
        "prediction": ("BatchPrediction", f"{name}-bp"),
    }


def create_pipeline(ml: Any, name: str) -> None:
    """Create every entity of pipeline ``name`` at once (AML queues them on their inputs)."""
    ids = {label: entity_id for label, (_, entity_id) in pipeline_ids(name).items()}
    schema = aml_data.wine_binary_schema()
    for label, rearrangement in (
        ("train", {"splitting": {"percentBegin": 0, "percentEnd": 70}}),
        ("eval", {"splitting": {"percentBegin": 70, "percentEnd": 100}}),
        ("batch", None),
    ):
        spec: dict[str, Any] = {"DataLocationS3": "s3://shared/wine.csv", "DataSchema": schema}
        if rearrangement is not None:
            spec["DataRearrangement"] = json.dumps(rearrangement)
        ml.create_data_source_from_s3(
            DataSourceId=ids[label], DataSpec=spec, ComputeStatistics=label == "train"
        )
    ml.create_ml_model(MLModelId=ids["model"], MLModelType="BINARY", TrainingDataSourceId=ids["train"])
    ml.create_evaluation(
        EvaluationId=ids["evaluation"], MLModelId=ids["model"], EvaluationDataSourceId=ids["eval"]
    )
    ml.create_batch_prediction(
        BatchPredictionId=ids["prediction"],
        MLModelId=ids["model"],
        BatchPredictionDataSourceId=ids["batch"],
        OutputUri=f"s3://shared/out/{name}/",
    )


def statuses(service: Any, name: str) -> dict[str, str]:
    """The status of every entity of pipeline ``name``."""
    out = {}
    for kind, entity_id in pipeline_ids(name).values():
        entity = service.state.get(kind, entity_id)
        out[entity_id] = entity.status if entity is not None else "MISSING"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--database-url")
    parser.add_argument("--lease-seconds", type=float, default=3.0)
    parser.add_argument("--host")
    parser.add_argument("--timeout", type=float, default=240.0)
    sub = parser.add_subparsers(dest="mode", required=True)
    p_pipeline = sub.add_parser("pipeline")
    p_pipeline.add_argument("name")
    p_block = sub.add_parser("block")
    p_block.add_argument("kind", choices=KINDS)
    p_block.add_argument("name")
    p_block.add_argument("ready")
    args = parser.parse_args(argv)
    if args.host:
        socket.gethostname = lambda: args.host  # type: ignore[assignment]

    from amlflow.service.core import Service
    from amlflow.service.embedded import build_client
    from amlflow.settings import Settings

    settings = Settings(
        home=Path(args.home),
        database_url=args.database_url,
        lease_seconds=args.lease_seconds,
        job_poll_interval=0.2,
        max_jobs=2,
    )
    seed_data(settings.resolved_storage_root())
    service = Service(settings, start=False)
    created = threading.Event()
    if args.mode == "block":
        real = service.jobs.jobs[args.kind]

        def hang(ctx: Any) -> Any:
            created.wait()  # the whole pipeline exists before the test kills this process
            # the test polls for READY: it appears with its content (one temp file per hung job)
            tmp = Path(f"{args.ready}.{threading.get_ident()}.tmp")
            tmp.write_text(ctx.entity.id)
            tmp.replace(args.ready)
            threading.Event().wait()  # until SIGKILL
            return real(ctx)

        service.jobs.jobs[args.kind] = hang
    service.recover()
    ml = build_client(service, settings)
    create_pipeline(ml, args.name)
    created.set()
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        now = statuses(service, args.name)
        if all(s in ("COMPLETED", "FAILED", "DELETED") for s in now.values()):
            break
        time.sleep(0.2)
    print(json.dumps(statuses(service, args.name)), flush=True)
    service.shutdown(timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
