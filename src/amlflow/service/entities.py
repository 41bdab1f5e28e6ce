"""The entities: look-ups, create (idempotent), the wire form, files under the home, update and delete.

AML's entity rules (docs/aml-reference.md §2.1–2.2, §2.5, §2.7); the kinds' own create/get operations
and jobs are in :mod:`~amlflow.service.datasources`, :mod:`~amlflow.service.models`,
:mod:`~amlflow.service.evaluations` and :mod:`~amlflow.service.batch`.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from amlflow.engine.dataset import EncodedTable
from amlflow.engine.errors import EngineError
from amlflow.engine.schema import Schema, parse_schema
from amlflow.engine.table import Table
from amlflow.service.artifacts import Artifacts
from amlflow.service.engine_jobs import EngineJobs, Model
from amlflow.service.errors import (
    IdempotentParameterMismatchException,
    InvalidInputException,
    PredictorNotMountedException,
    ResourceNotFoundException,
)
from amlflow.service.jobs import JobRunner, now
from amlflow.service.state import Entity, StateStore
from amlflow.settings import Settings
from amlflow.storage import Storage, parse_s3_uri
from amlflow.storage.atomic import write_file_atomic

__all__ = [
    "DESCRIBE_FIELDS",
    "ID_FIELD",
    "KINDS",
    "LABEL",
    "NAME_FIELD",
    "NO_ENDPOINT",
    "TIMESTAMPS",
    "EntityOps",
    "strip_none",
    "utc",
    "write_json",
]

_T = TypeVar("_T")

KINDS = ("DataSource", "MLModel", "Evaluation", "BatchPrediction")
ID_FIELD = {
    "DataSource": "DataSourceId",
    "MLModel": "MLModelId",
    "Evaluation": "EvaluationId",
    "BatchPrediction": "BatchPredictionId",
}
NAME_FIELD = {
    "DataSource": "DataSourceName",
    "MLModel": "MLModelName",
    "Evaluation": "EvaluationName",
    "BatchPrediction": "BatchPredictionName",
}
TIMESTAMPS = ("CreatedAt", "LastUpdatedAt", "StartedAt", "FinishedAt", "ScoreThresholdLastUpdatedAt")
LABEL = {
    "DataSource": "DataSource",
    "MLModel": "MLModel",
    "Evaluation": "Evaluation",
    "BatchPrediction": "BatchPrediction",
}

#: Describe* item members (GetX adds LogUri, and verbose extras).
DESCRIBE_FIELDS = {
    "DataSource": (
        "DataSourceId",
        "DataLocationS3",
        "DataRearrangement",
        "CreatedByIamUser",
        "CreatedAt",
        "LastUpdatedAt",
        "DataSizeInBytes",
        "NumberOfFiles",
        "Name",
        "Status",
        "Message",
        "RoleARN",
        "ComputeStatistics",
        "ComputeTime",
        "FinishedAt",
        "StartedAt",
    ),
    "MLModel": (
        "MLModelId",
        "TrainingDataSourceId",
        "CreatedByIamUser",
        "CreatedAt",
        "LastUpdatedAt",
        "Name",
        "Status",
        "SizeInBytes",
        "EndpointInfo",
        "TrainingParameters",
        "InputDataLocationS3",
        "Algorithm",
        "MLModelType",
        "ScoreThreshold",
        "ScoreThresholdLastUpdatedAt",
        "Message",
        "ComputeTime",
        "FinishedAt",
        "StartedAt",
    ),
    "Evaluation": (
        "EvaluationId",
        "MLModelId",
        "EvaluationDataSourceId",
        "InputDataLocationS3",
        "CreatedByIamUser",
        "CreatedAt",
        "LastUpdatedAt",
        "Name",
        "Status",
        "PerformanceMetrics",
        "Message",
        "ComputeTime",
        "FinishedAt",
        "StartedAt",
    ),
    "BatchPrediction": (
        "BatchPredictionId",
        "MLModelId",
        "BatchPredictionDataSourceId",
        "InputDataLocationS3",
        "CreatedByIamUser",
        "CreatedAt",
        "LastUpdatedAt",
        "Name",
        "Status",
        "OutputUri",
        "Message",
        "ComputeTime",
        "FinishedAt",
        "StartedAt",
        "TotalRecordCount",
        "InvalidRecordCount",
    ),
}

#: FilterVariable → (attribute, kind of comparison)

NO_ENDPOINT = {"PeakRequestsPerSecond": 0, "EndpointStatus": "NONE"}


def utc(seconds: float) -> _dt.datetime:
    """Epoch seconds as a timezone-aware UTC datetime (what boto3 returns for timestamps)."""
    return _dt.datetime.fromtimestamp(float(seconds), tz=_dt.UTC)


def strip_none(value: _T) -> _T:
    """``value`` without ``None`` members or items, recursively (boto3 responses carry no ``None``)."""
    if isinstance(value, dict):
        return cast(_T, {k: strip_none(v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return cast(_T, [strip_none(v) for v in value if v is not None])
    return value


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (``amlflow.storage.atomic.write_file_atomic``)."""
    write_file_atomic(path, json.dumps(data, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays, and paths, in the engine's documents."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class EntityOps:
    """The entity rules every operation shares (docs/aml-reference.md §2): look-ups, create with
    idempotency, the wire form of an entity, its files, and Update*/Delete*.

    The other parts of :class:`amlflow.service.Service` subclass this; ``Service.__init__`` sets the
    attributes.
    """

    settings: Settings
    home: Path
    artifacts: Artifacts
    endpoint_url: str
    storage: Storage
    state: StateStore
    iam_user: str
    engine: EngineJobs
    jobs: JobRunner
    _models: dict[str, Model]
    _models_lock: threading.Lock
    _create_lock: threading.Lock

    def _get(self, kind: str, entity_id: str) -> Entity:
        entity = self.state.get(kind, entity_id)
        if entity is None:
            raise ResourceNotFoundException(f"No {LABEL[kind]} with id {entity_id} exists.")
        return entity

    def _input(self, kind: str, entity_id: str, member: str) -> Entity:
        """A referenced input at create time: must exist and not be DELETED (InvalidInputException)."""
        entity = self.state.get(kind, entity_id)
        if entity is None:
            raise InvalidInputException(f"{member}: {LABEL[kind]} {entity_id} does not exist.")
        if entity.status == "DELETED":
            raise InvalidInputException(f"{member}: {LABEL[kind]} {entity_id} is DELETED.")
        return entity

    def _deps(self, entity: Entity) -> list[tuple[str, str]]:
        a = entity.attrs
        if entity.kind == "MLModel":
            return [("DataSource", a["TrainingDataSourceId"])]
        if entity.kind == "Evaluation":
            return [("MLModel", a["MLModelId"]), ("DataSource", a["EvaluationDataSourceId"])]
        if entity.kind == "BatchPrediction":
            return [("MLModel", a["MLModelId"]), ("DataSource", a["BatchPredictionDataSourceId"])]
        return []

    def _create(
        self,
        kind: str,
        entity_id: str,
        request: dict[str, Any],
        attrs: dict[str, Any],
        internal: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Insert a new PENDING entity (or answer an idempotent retry) and schedule its job."""
        request = strip_none(request)
        id_field = ID_FIELD[kind]
        with self._create_lock:
            existing = self.state.get(kind, entity_id)
            if existing is not None:
                if existing.internal.get("request") != json.loads(json.dumps(request)):
                    raise IdempotentParameterMismatchException(
                        f"{LABEL[kind]} {entity_id} already exists with different parameters; use another "
                        f"{id_field} or repeat the original request exactly."
                    )
                return {id_field: entity_id}
            stamp = now()
            entity = Entity(
                kind,
                entity_id,
                strip_none(
                    {
                        id_field: entity_id,
                        "Status": "PENDING",
                        "CreatedAt": stamp,
                        "LastUpdatedAt": stamp,
                        "CreatedByIamUser": self.iam_user,
                        **attrs,
                    }
                ),
                {"request": request, **(internal or {})},
            )
            self.state.insert(entity)
        self.jobs.schedule(kind, entity_id)
        return {id_field: entity_id}

    def _out(self, entity: Entity, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        attrs = entity.attrs
        out: dict[str, Any] = {}
        for key in fields if fields is not None else tuple(attrs):
            if key not in attrs or attrs[key] is None:
                continue
            value = attrs[key]
            if key in TIMESTAMPS:
                value = utc(value)
            elif key == "EndpointInfo":
                value = dict(value)
                if "CreatedAt" in value:
                    value["CreatedAt"] = utc(value["CreatedAt"])
            out[key] = value
        return strip_none(out)

    def _read_text(self, uri: str, member: str) -> str:
        try:
            return self.storage.read_bytes(uri).decode("utf-8")
        except FileNotFoundError:
            raise InvalidInputException(f"{member}: {uri} does not exist.") from None
        except UnicodeDecodeError:
            raise InvalidInputException(f"{member}: {uri} is not UTF-8 text.") from None
        except ValueError as exc:
            raise InvalidInputException(f"{member}: {exc}") from None

    def _check_uri(self, uri: str, member: str) -> None:
        """An ``s3://`` URI the storage accepts (local storage: nothing escaping its root)."""
        try:
            parse_s3_uri(uri)
            local_path = getattr(self.storage, "path", None)
            if callable(local_path):
                local_path(uri)
        except ValueError as exc:
            raise InvalidInputException(f"{member}: {exc}") from None

    def _paths(self, kind: str, entity_id: str) -> Path:
        """The entity's own directory (docs: service/layout.py): never derived from the id as a path."""
        return self.artifacts.local(kind, entity_id)

    def _fetched(self, kind: str, entity_id: str) -> Path:
        """The entity's directory with its files, fetched from the artifact root if another replica
        made them (:meth:`amlflow.service.artifacts.Artifacts.fetch`)."""
        return self.artifacts.fetch(kind, entity_id)

    def _schema_of(self, ds: Entity) -> Schema:
        return parse_schema(ds.internal["schema"])

    def _table_of(self, ds_id: str) -> Table:
        try:
            return EncodedTable.open(self._fetched("DataSource", ds_id) / "table")
        except (OSError, ValueError, EngineError):
            raise InvalidInputException(
                f"DataSourceId: the encoded data of datasource {ds_id} is missing or damaged; "
                "re-create the datasource."
            ) from None

    def _model(self, model_id: str) -> Model:
        with self._models_lock:
            model = self._models.get(model_id)
        if model is None:
            try:
                model = self.engine.load_model(self._fetched("MLModel", model_id) / "model")
            except (OSError, ValueError, KeyError, EngineError):
                raise PredictorNotMountedException(
                    f"MLModelId: the saved model of ML model {model_id} is missing or damaged; "
                    "re-create the ML model."
                ) from None
            with self._models_lock:
                self._models[model_id] = model
        return model

    def _scoring_inputs(self, entity: Entity, ds_member: str) -> tuple[Model, Table, Schema, Entity]:
        model = self._model(entity.attrs["MLModelId"])
        ds = self._get("DataSource", entity.attrs[ds_member])
        # the datasource's own schema: the engine reads the data with the model's types itself
        return model, self._table_of(ds.id), self._schema_of(ds), ds

    # ---------------------------------------------------------------------------- update / delete

    def _rename(
        self, kind: str, entity_id: str, name: str | None, extra: Callable[[Entity], None] | None = None
    ) -> dict[str, Any]:
        current = self._get(kind, entity_id)
        if current.status == "DELETED":
            raise InvalidInputException(f"{ID_FIELD[kind]}: {LABEL[kind]} {entity_id} is DELETED.")
        stamp = now()

        def change(e: Entity) -> None:
            if name is not None:
                e.attrs["Name"] = name
            if extra is not None:
                extra(e)
            e.attrs["LastUpdatedAt"] = stamp

        self.state.update(kind, entity_id, change)
        return {ID_FIELD[kind]: entity_id}

    def update_data_source(self, *, DataSourceId: str, DataSourceName: str) -> dict[str, Any]:
        return self._rename("DataSource", DataSourceId, DataSourceName)

    def update_evaluation(self, *, EvaluationId: str, EvaluationName: str) -> dict[str, Any]:
        return self._rename("Evaluation", EvaluationId, EvaluationName)

    def update_batch_prediction(
        self,
        *,
        BatchPredictionId: str,
        BatchPredictionName: str,
    ) -> dict[str, Any]:
        return self._rename("BatchPrediction", BatchPredictionId, BatchPredictionName)

    def update_ml_model(
        self,
        *,
        MLModelId: str,
        MLModelName: str | None = None,
        ScoreThreshold: float | None = None,
    ) -> dict[str, Any]:
        current = self._get("MLModel", MLModelId)
        extra = None
        if ScoreThreshold is not None:
            if current.attrs.get("MLModelType") != "BINARY":
                raise InvalidInputException(
                    f"ScoreThreshold: only BINARY models have a score threshold; {MLModelId} is "
                    f"{current.attrs.get('MLModelType')}."
                )
            threshold = float(ScoreThreshold)
            if not 0.0 <= threshold <= 1.0:
                raise InvalidInputException(f"ScoreThreshold: {threshold} is not between 0 and 1.")
            stamp = now()

            def extra(e: Entity) -> None:
                e.attrs["ScoreThreshold"] = threshold
                e.attrs["ScoreThresholdLastUpdatedAt"] = stamp

        return self._rename("MLModel", MLModelId, MLModelName, extra)

    def _delete(self, kind: str, entity_id: str) -> dict[str, Any]:
        self._get(kind, entity_id)
        stamp = now()

        def change(e: Entity) -> bool:
            if e.status == "DELETED":
                return False
            e.attrs.update(Status="DELETED", LastUpdatedAt=stamp)
            if kind == "MLModel":
                e.attrs["EndpointInfo"] = dict(NO_ENDPOINT)
            return True

        self.state.update(kind, entity_id, change)
        if kind == "MLModel":
            with self._models_lock:
                self._models.pop(entity_id, None)
        self.jobs.kick()
        return {ID_FIELD[kind]: entity_id}

    def delete_data_source(self, *, DataSourceId: str) -> dict[str, Any]:
        return self._delete("DataSource", DataSourceId)

    def delete_ml_model(self, *, MLModelId: str) -> dict[str, Any]:
        return self._delete("MLModel", MLModelId)

    def delete_evaluation(self, *, EvaluationId: str) -> dict[str, Any]:
        return self._delete("Evaluation", EvaluationId)

    def delete_batch_prediction(self, *, BatchPredictionId: str) -> dict[str, Any]:
        return self._delete("BatchPrediction", BatchPredictionId)
