"""What the service tests share (not a test module): the two-column schema, per-kind stand-in job
functions for the entity-machinery tests, a Predict-capable model, and the one waiting helper."""

from __future__ import annotations

import json
import time
from typing import Any

from amlflow.service.core import Service
from amlflow.service.jobs import JobContext, JobFunction, JobResult

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

    schema = None
    size_in_bytes = 1

    def save(self, directory: Any) -> None:
        """Nothing to save."""

    def predict_record(self, record: dict[str, str], threshold: float = 0.5) -> dict[str, Any]:
        score = min(1.0, float(record.get("x", "0") or 0))
        label = "1" if score >= threshold else "0"
        return {
            "predictedLabel": label,
            "predictedScores": {label: score},
            "details": {"PredictiveModelType": "BINARY", "Algorithm": "SGD"},
        }


def wait(service: Service, kind: str, entity_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll GetX until the entity is COMPLETED, FAILED or DELETED (fails the test after ``timeout`` s)."""
    getter = {
        "DataSource": service.get_data_source,
        "MLModel": service.get_ml_model,
        "Evaluation": service.get_evaluation,
        "BatchPrediction": service.get_batch_prediction,
    }[kind]
    key = {
        "DataSource": "DataSourceId",
        "MLModel": "MLModelId",
        "Evaluation": "EvaluationId",
        "BatchPrediction": "BatchPredictionId",
    }[kind]
    deadline = time.monotonic() + timeout
    while True:
        out = getter(**{key: entity_id})
        if out["Status"] in DONE:
            return out
        assert time.monotonic() < deadline, f"{kind} {entity_id} still {out['Status']} after {timeout} s"
        time.sleep(0.01)
