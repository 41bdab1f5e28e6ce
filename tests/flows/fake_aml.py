"""A small in-memory stand-in for boto3's ``machinelearning`` client and amlflow's storage.

Used for tests of the flow wiring (IDs, ordering, failures) that do not need real ML; the end-to-end
tests use the real embedded service. Entities move PENDING → INPROGRESS → COMPLETED on a short clock;
a model whose ``MLModelName`` contains ``FAIL`` ends FAILED with a message.
"""

from __future__ import annotations

import gzip
import io
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

_KINDS = {
    "DataSource": "DataSourceId",
    "MLModel": "MLModelId",
    "Evaluation": "EvaluationId",
    "BatchPrediction": "BatchPredictionId",
}


def client_error(code: str, message: str, operation: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


@dataclass
class ObjectInfo:
    uri: str
    key: str
    size: int


class MemoryStorage:
    """The ``Storage`` protocol over a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.writes = 0

    def list(self, uri_prefix: str) -> list[ObjectInfo]:
        return [
            ObjectInfo(u, u.split("/", 3)[-1], len(b))
            for u, b in sorted(self.objects.items())
            if u.startswith(uri_prefix)
        ]

    def open_read(self, uri: str) -> io.BytesIO:
        return io.BytesIO(self.read_bytes(uri))

    def read_bytes(self, uri: str) -> bytes:
        if uri not in self.objects:
            raise FileNotFoundError(uri)
        return self.objects[uri]

    def write_atomic(self, uri: str, data_or_file: Any) -> None:
        self.writes += 1
        self.objects[uri] = data_or_file if isinstance(data_or_file, bytes) else data_or_file.read()

    def exists(self, uri: str) -> bool:
        return uri in self.objects


class FakeML:
    """Enough of the ``machinelearning`` client for the pipeline tasks."""

    def __init__(self, storage: MemoryStorage, *, pending: float = 0.05, running: float = 0.3) -> None:
        self.storage = storage
        self.pending = pending
        self.running = running
        self.entities: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in _KINDS}
        self.tags: dict[str, dict[str, str]] = {}
        self.calls: list[str] = []
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- helpers
    def _create(
        self, kind: str, op: str, entity_id: str, params: dict[str, Any], deps: list[tuple[str, str]]
    ) -> None:
        with self._lock:
            self.calls.append(op)
            existing = self.entities[kind].get(entity_id)
            if existing is not None:
                if existing["params"] != params:
                    raise client_error(
                        "IdempotentParameterMismatchException",
                        f"{_KINDS[kind]} {entity_id} exists with different parameters",
                        op,
                    )
                return
            for dep_kind, dep_id in deps:
                if dep_id not in self.entities[dep_kind]:
                    raise client_error("InvalidInputException", f"{dep_kind} {dep_id} does not exist", op)
            self.entities[kind][entity_id] = {"params": params, "created": time.monotonic(), "deps": deps}

    def _status(self, kind: str, entity_id: str) -> tuple[str, str]:
        ent = self.entities[kind][entity_id]
        for dep_kind, dep_id in ent["deps"]:
            status, _ = self._status(dep_kind, dep_id)
            if status == "FAILED":
                return "FAILED", f"{dep_kind} {dep_id} failed"
            if status != "COMPLETED":
                return "PENDING", ""
        age = (
            time.monotonic()
            - ent["created"]
            - max((self.pending + self.running for _ in ent["deps"]), default=0.0)
        )
        if "FAIL" in str(ent["params"].get("MLModelName", "")) and age > self.pending:
            return "FAILED", "Training failed: the recipe's output 'FAIL' is not a group or attribute"
        if age < self.pending:
            return "PENDING", ""
        if age < self.pending + self.running:
            return "INPROGRESS", ""
        return "COMPLETED", ""

    def _get(self, kind: str, op: str, entity_id: str) -> dict[str, Any]:
        with self._lock:
            self.calls.append(op)
            if entity_id not in self.entities[kind]:
                raise client_error("ResourceNotFoundException", f"No {kind} with id {entity_id}", op)
            status, message = self._status(kind, entity_id)
            out = {_KINDS[kind]: entity_id, "Status": status, **self.entities[kind][entity_id]["params"]}
            if message:
                out["Message"] = message
            return out

    # ---------------------------------------------------------------- datasources
    def create_data_source_from_s3(
        self, *, DataSourceId: str, DataSpec: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        if not self.storage.list(DataSpec["DataLocationS3"]):
            raise client_error(
                "InvalidInputException", f"No data at {DataSpec['DataLocationS3']}", "CreateDataSourceFromS3"
            )
        self._create(
            "DataSource",
            "CreateDataSourceFromS3",
            DataSourceId,
            {
                "DataLocationS3": DataSpec["DataLocationS3"],
                "DataRearrangement": DataSpec.get("DataRearrangement"),
                "ComputeStatistics": kw.get("ComputeStatistics", False),
                "Name": kw.get("DataSourceName"),
            },
            [],
        )
        return {"DataSourceId": DataSourceId}

    def get_data_source(self, *, DataSourceId: str, **_: Any) -> dict[str, Any]:
        return self._get("DataSource", "GetDataSource", DataSourceId)

    # ---------------------------------------------------------------- models
    def create_ml_model(
        self, *, MLModelId: str, MLModelType: str, TrainingDataSourceId: str, **kw: Any
    ) -> dict[str, Any]:
        self.calls.append("CreateMLModel:attempt")
        if MLModelType not in ("BINARY", "MULTICLASS", "REGRESSION"):
            raise client_error(
                "InvalidInputException",
                f"1 validation error detected: Value '{MLModelType}' at 'mLModelType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [REGRESSION, BINARY, MULTICLASS]",
                "CreateMLModel",
            )
        self._create(
            "MLModel",
            "CreateMLModel",
            MLModelId,
            {
                "MLModelType": MLModelType,
                "TrainingDataSourceId": TrainingDataSourceId,
                "MLModelName": kw.get("MLModelName"),
            },
            [("DataSource", TrainingDataSourceId)],
        )
        return {"MLModelId": MLModelId}

    def get_ml_model(self, *, MLModelId: str, **_: Any) -> dict[str, Any]:
        return self._get("MLModel", "GetMLModel", MLModelId)

    def update_ml_model(self, *, MLModelId: str, **kw: Any) -> dict[str, Any]:
        with self._lock:
            self.entities["MLModel"][MLModelId]["params"].update(kw)
        return {"MLModelId": MLModelId}

    def describe_tags(self, *, ResourceId: str, ResourceType: str) -> dict[str, Any]:
        tags = self.tags.get(ResourceId, {})
        return {
            "ResourceId": ResourceId,
            "ResourceType": ResourceType,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }

    def add_tags(self, *, ResourceId: str, ResourceType: str, Tags: list[dict[str, str]]) -> dict[str, Any]:
        self.tags.setdefault(ResourceId, {}).update({t["Key"]: t.get("Value", "") for t in Tags})
        return {"ResourceId": ResourceId, "ResourceType": ResourceType}

    # ---------------------------------------------------------------- evaluations
    def create_evaluation(
        self, *, EvaluationId: str, MLModelId: str, EvaluationDataSourceId: str, **kw: Any
    ) -> dict[str, Any]:
        self._create(
            "Evaluation",
            "CreateEvaluation",
            EvaluationId,
            {"MLModelId": MLModelId, "EvaluationDataSourceId": EvaluationDataSourceId},
            [("MLModel", MLModelId), ("DataSource", EvaluationDataSourceId)],
        )
        return {"EvaluationId": EvaluationId}

    def get_evaluation(self, *, EvaluationId: str) -> dict[str, Any]:
        out = self._get("Evaluation", "GetEvaluation", EvaluationId)
        if out["Status"] == "COMPLETED":
            model_type = self.entities["MLModel"][out["MLModelId"]]["params"]["MLModelType"]
            key = {
                "BINARY": "BinaryAUC",
                "MULTICLASS": "MulticlassAvgFScore",
                "REGRESSION": "RegressionRMSE",
            }[model_type]
            out["PerformanceMetrics"] = {"Properties": {key: "0.75"}}
        return out

    # ---------------------------------------------------------------- batch predictions
    def create_batch_prediction(
        self,
        *,
        BatchPredictionId: str,
        MLModelId: str,
        BatchPredictionDataSourceId: str,
        OutputUri: str,
        **kw: Any,
    ) -> dict[str, Any]:
        self._create(
            "BatchPrediction",
            "CreateBatchPrediction",
            BatchPredictionId,
            {
                "MLModelId": MLModelId,
                "BatchPredictionDataSourceId": BatchPredictionDataSourceId,
                "OutputUri": OutputUri,
            },
            [("MLModel", MLModelId), ("DataSource", BatchPredictionDataSourceId)],
        )
        return {"BatchPredictionId": BatchPredictionId}

    def get_batch_prediction(self, *, BatchPredictionId: str) -> dict[str, Any]:
        out = self._get("BatchPrediction", "GetBatchPrediction", BatchPredictionId)
        if out["Status"] == "COMPLETED":
            ds = self.entities["DataSource"][out["BatchPredictionDataSourceId"]]["params"]["DataLocationS3"]
            base = out["OutputUri"].rstrip("/") + "/batch-prediction"
            result = f"{base}/result/{BatchPredictionId}-{ds.rsplit('/', 1)[-1]}.gz"
            if not self.storage.exists(result):
                self.storage.objects[result] = gzip.compress(b"bestAnswer,score\n1,9E-1\n0,1.5E-1\n")
                self.storage.objects[f"{base}/{BatchPredictionId}.manifest"] = json.dumps(
                    {ds: result}
                ).encode()
            out["TotalRecordCount"], out["InvalidRecordCount"] = 2, 0
        return out

    # ---------------------------------------------------------------- paginators
    def get_paginator(self, name: str) -> Any:
        fake = self

        class _Paginator:
            def paginate(self, **_: Any) -> list[dict[str, Any]]:
                assert name == "describe_ml_models"
                ids = list(fake.entities["MLModel"])
                return [{"Results": [fake.get_ml_model(MLModelId=i) for i in ids]}]

        return _Paginator()

    def count(self, op: str) -> int:
        return sum(1 for c in self.calls if c == op)
