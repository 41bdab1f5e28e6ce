"""What the service tests share (not a test module): the two-column schema, per-kind stand-in job
functions for the entity-machinery tests, a Predict-capable model, a ticking clock, and the one waiting
helper (:func:`wait_for`, and :func:`wait` on a ``Service``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from amlflow.engine.schema import parse_schema
from amlflow.service.core import Service
from amlflow.service.jobs import JobContext, JobFunction, JobResult, now

SCHEMA = json.dumps(
    {
        "version": "1.0",
        "targetAttributeName": "y",
        "dataFormat": "CSV",
        "dataFileContainsHeader": True,
        "attributes": [
            {"attributeName": "x", "attributeType": "NUMERIC"},
            {"attributeName": "y", "attributeType": "BINARY"},
        ],
    }
)

DONE = ("COMPLETED", "FAILED", "DELETED")


def quick_job(ctx: JobContext) -> JobResult:
    """A whole job that does nothing (a datasource reports a size and one file)."""
    return JobResult({"DataSizeInBytes": 10, "NumberOfFiles": 1} if ctx.entity.kind == "DataSource" else {})


def model_job(ctx: JobContext) -> JobResult:
    """A whole ML model job that trains nothing."""
    return JobResult({"SizeInBytes": 123, "ScoreThreshold": 0.5})


STANDIN: dict[str, JobFunction] = {
    "DataSource": quick_job,
    "MLModel": model_job,
    "Evaluation": quick_job,
    "BatchPrediction": quick_job,
}


class FakeModel:
    """What Predict needs from a trained model."""

    schema = parse_schema(SCHEMA)
    size_in_bytes = 1

    def save(self, directory: Path | str) -> None:
        """Nothing to save."""

    def predict_record(self, record: Mapping[str, str], threshold: float = 0.5) -> dict[str, Any]:
        score = min(1.0, float(record.get("x", "0") or 0))
        label = "1" if score >= threshold else "0"
        return {
            "predictedLabel": label,
            "predictedScores": {label: score},
            "details": {"PredictiveModelType": "BINARY", "Algorithm": "SGD"},
        }


def wait_for(
    fetch: Callable[[], dict[str, Any]], statuses: Iterable[str] = DONE, timeout: float = 10.0
) -> dict[str, Any]:
    """The one waiting helper: call ``fetch`` (a GetX) until its ``Status`` is one of ``statuses``.

    Fails the test after ``timeout`` seconds.
    """
    wanted = tuple(statuses)
    deadline = time.monotonic() + timeout
    while True:
        out = fetch()
        if out["Status"] in wanted:
            return out
        assert time.monotonic() < deadline, (
            f"still {out['Status']} after {timeout} s (waiting for {wanted}): {out}"
        )
        time.sleep(0.01)


def wait(service: Service, kind: str, entity_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Wait until the ``kind`` entity is COMPLETED, FAILED or DELETED; return its GetX answer."""
    method = {
        "DataSource": "get_data_source",
        "MLModel": "get_ml_model",
        "Evaluation": "get_evaluation",
        "BatchPrediction": "get_batch_prediction",
    }[kind]
    getter: Callable[..., dict[str, Any]] = getattr(service, method)
    key = {
        "DataSource": "DataSourceId",
        "MLModel": "MLModelId",
        "Evaluation": "EvaluationId",
        "BatchPrediction": "BatchPredictionId",
    }[kind]
    return wait_for(lambda: getter(**{key: entity_id}), timeout=timeout)


class Ticks:
    """A service clock that moves at least 1 ms per reading: every stamp (CreatedAt, LastUpdatedAt,
    StartedAt, ...) is distinct and later than the one before, without sleeping between calls."""

    def __init__(self) -> None:
        self.last = 0.0
        self._lock = threading.Lock()
        self._wall: Callable[[], float] = now

    def __call__(self) -> float:
        with self._lock:
            self.last = max(self._wall(), round(self.last + 0.001, 3))
            return self.last
