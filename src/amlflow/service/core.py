"""``Service``: Amazon ML's 28 operations over the engine, the storage and the SQLite state.

Methods are the snake_case operation names taking the PascalCase request members as keywords and
returning boto3's response dicts (timestamps as timezone-aware UTC datetimes, no ``None`` values)::

    service = Service(Settings(home=...), endpoint_url="http://127.0.0.1:8080")
    service.create_data_source_from_s3(DataSourceId="ds-1", DataSpec={...}, ComputeStatistics=True)
    service.dispatch("GetDataSource", {"DataSourceId": "ds-1"})   # validated against botocore's model

Semantics follow docs/aml-reference (§1–2, §8–9): creates return at once with the entity PENDING;
jobs wait for their inputs and run in a bounded pool (:mod:`amlflow.service.jobs`); errors are
:mod:`amlflow.service.errors`. Files under ``AMLFLOW_HOME``::

    state.db                                  entity state (SQLite, WAL)
    datasources/<id>/table/                   the encoded table (engine.dataset)
    datasources/<id>/insights.json            data insights (ComputeStatistics=true)
    models/<id>/model/                        the saved model (engine.model, never pickled)
    evaluations/<id>/report.json              the evaluation report (baseline, confusion matrix, ...)
    logs/<kind>/<id>.log                      job logs (LogUri)

The jobs reach the engine's ML work only through ``Service(engine=...)``
(:class:`amlflow.service.engine_jobs.EngineJobs`; default: the real engine).
"""

from __future__ import annotations

import base64
import collections
import datetime as _dt
import gzip
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from botocore import xform_name

from amlflow.engine.dataset import EncodedTable, Source
from amlflow.engine.errors import EngineError
from amlflow.engine.params import parse_parameters
from amlflow.engine.rearrange import parse_rearrangement
from amlflow.engine.recipe import parse_recipe, suggest_recipe
from amlflow.engine.schema import Schema, parse_schema
from amlflow.engine.table import Table
from amlflow.service import validate as _validate
from amlflow.service.engine_jobs import ENGINE, EngineJobs, Model
from amlflow.service.errors import (
    AmlError,
    IdempotentParameterMismatchException,
    InvalidInputException,
    InvalidTagException,
    LimitExceededException,
    PredictorNotMountedException,
    ResourceNotFoundException,
    TagLimitExceededException,
    from_engine,
)
from amlflow.service.jobs import JobContext, JobFailed, JobFunction, JobResult, JobRunner, now
from amlflow.service.state import Entity, StateStore
from amlflow.settings import Settings
from amlflow.storage import Storage, parse_s3_uri, storage_from_settings

__all__ = ["EMBEDDED_ENDPOINT_URL", "Service"]

log = logging.getLogger("amlflow.service")

#: The realtime ``EndpointUrl`` an embedded service (no HTTP server) advertises. ``.invalid`` never
#: resolves, so nothing sent there can leave the machine; the in-process client never sends anything.
EMBEDDED_ENDPOINT_URL = "http://realtime.amlflow.invalid"

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
FILTERS = {
    "DataSource": {"DataLocationS3": "DataLocationS3"},
    "MLModel": {
        "TrainingDataSourceId": "TrainingDataSourceId",
        "RealtimeEndpointStatus": "EndpointInfo.EndpointStatus",
        "MLModelType": "MLModelType",
        "Algorithm": "Algorithm",
        "TrainingDataURI": "InputDataLocationS3",
    },
    "Evaluation": {
        "MLModelId": "MLModelId",
        "DataSourceId": "EvaluationDataSourceId",
        "DataURI": "InputDataLocationS3",
    },
    "BatchPrediction": {
        "MLModelId": "MLModelId",
        "DataSourceId": "BatchPredictionDataSourceId",
        "DataURI": "InputDataLocationS3",
    },
}
COMMON_FILTERS = {
    "CreatedAt": "CreatedAt",
    "LastUpdatedAt": "LastUpdatedAt",
    "Status": "Status",
    "Name": "Name",
    "IAMUser": "CreatedByIamUser",
}

TARGET_TYPE = {"BINARY": "BINARY", "REGRESSION": "NUMERIC", "MULTICLASS": "CATEGORICAL"}
MAX_TAGS = 50
NO_ENDPOINT = {"PeakRequestsPerSecond": 0, "EndpointStatus": "NONE"}
PEAK_RPS = 200
MAX_RECORD_BYTES = 100 * 1024


def _utc(seconds: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(float(seconds), tz=_dt.UTC)


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value if v is not None]
    return value


def _time_value(text: str) -> float:
    """A CreatedAt/LastUpdatedAt comparator: epoch seconds or an ISO-8601 time."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputException(
            f"Comparator value {text!r}: expected epoch seconds or an ISO-8601 time for a time FilterVariable"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.UTC)
    return parsed.timestamp()


class _RateLimiter:
    """At most ``rate`` calls per sliding second per key (0 = unlimited)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._calls: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        t = time.monotonic()
        with self._lock:
            calls = self._calls.setdefault(key, collections.deque())
            while calls and t - calls[0] >= 1.0:
                calls.popleft()
            if len(calls) >= self.rate:
                return False
            calls.append(t)
            return True


class Service:
    """Amazon ML's API over the local engine (see the module docstring).

    Args:
        settings: home, storage, max_jobs, seed, predict_rate_limit, ... (``amlflow.settings.Settings``).
        endpoint_url: the realtime ``EndpointUrl`` to advertise (the server's own URL); default
            :data:`EMBEDDED_ENDPOINT_URL`.
        storage: override the storage ``settings`` choose (tests).
        engine: the engine functions the jobs call (:class:`~amlflow.service.engine_jobs.EngineJobs`);
            default the real engine. Stand-ins: :mod:`amlflow.service.standin`.
        jobs: replace whole job functions per kind, bookkeeping included (entity-machinery tests).
        start: recover and start interrupted jobs at once (default True).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        endpoint_url: str | None = None,
        storage: Storage | None = None,
        engine: EngineJobs | None = None,
        jobs: Mapping[str, JobFunction] | None = None,
        start: bool = True,
    ) -> None:
        self.engine = engine if engine is not None else ENGINE
        self.settings = settings if settings is not None else Settings()
        self.home = Path(self.settings.home).expanduser()
        self.home.mkdir(parents=True, exist_ok=True)
        self.endpoint_url = endpoint_url or EMBEDDED_ENDPOINT_URL
        self.storage = storage if storage is not None else storage_from_settings(self.settings)
        self.state = StateStore(self.home / "state.db")
        self.iam_user = f"arn:aws:iam::{self.settings.account_id}:user/{self.settings.iam_user}"
        job_functions: dict[str, JobFunction] = {
            "DataSource": self._datasource_job,
            "MLModel": self._model_job,
            "Evaluation": self._evaluation_job,
            "BatchPrediction": self._batch_job,
        }
        job_functions.update(jobs or {})
        self.jobs = JobRunner(
            self.state,
            max_jobs=self.settings.max_jobs,
            jobs=job_functions,
            deps=self._deps,
            log_dir=self.home / "logs",
        )
        self._models: dict[str, Model] = {}
        self._models_lock = threading.Lock()
        self._limiter = _RateLimiter(self.settings.predict_rate_limit)
        self._create_lock = threading.Lock()
        if start:
            self.recover()

    def __repr__(self) -> str:
        return (
            f"Service(home={str(self.home)!r}, storage={self.storage!r}, endpoint_url={self.endpoint_url!r})"
        )

    # ----------------------------------------------------------------------------------- lifecycle

    def set_endpoint_url(self, url: str) -> None:
        """Advertise ``url`` as the realtime ``EndpointUrl`` of endpoints created from now on."""
        self.endpoint_url = url

    def recover(self) -> None:
        """Restart recovery: PENDING and INPROGRESS entities of an earlier run are queued again."""
        for entity in self.state.all(statuses=("PENDING", "INPROGRESS")):
            if entity.status == "INPROGRESS":
                stamp = now()

                def reset(e: Entity, stamp: float = stamp) -> bool:
                    if e.status != "INPROGRESS":
                        return False
                    e.attrs.update(Status="PENDING", LastUpdatedAt=stamp)
                    e.attrs.pop("StartedAt", None)
                    return True

                self.state.update(entity.kind, entity.id, reset)
                log.info("resuming interrupted %s %s", entity.kind, entity.id)
            self.jobs.schedule(entity.kind, entity.id)

    def shutdown(self, timeout: float | None = 30.0) -> bool:
        """Stop taking jobs; wait up to ``timeout`` s for running ones (the rest stay PENDING)."""
        return self.jobs.shutdown(timeout)

    close = shutdown

    def health(self) -> dict[str, Any]:
        """Cheap status for ``GET /health``: job counts."""
        return dict(self.jobs.counts())

    # ------------------------------------------------------------------------------------ dispatch

    #: dispatch() validates every request against botocore's model, so the HTTP app need not.
    validates_input = True

    def dispatch(self, operation: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """Validate ``params`` against botocore's model and run ``operation`` (PascalCase)."""
        if operation not in _validate.operation_names():
            raise AmlError(f"Unknown operation {operation!r}", code="UnknownOperationException")
        params = dict(params or {})
        _validate.validate_input(operation, params)
        method = getattr(self, xform_name(operation))
        shape = _validate.service_model().operation_model(operation).input_shape
        known = set(shape.members) if shape is not None else set()
        kwargs = {k: v for k, v in params.items() if k in known and v is not None}
        return method(**kwargs)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------------- helpers

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
        request = _strip_none(request)
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
                _strip_none(
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
                value = _utc(value)
            elif key == "EndpointInfo":
                value = dict(value)
                if "CreatedAt" in value:
                    value["CreatedAt"] = _utc(value["CreatedAt"])
            out[key] = value
        return _strip_none(out)

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
        folder = {
            "DataSource": "datasources",
            "MLModel": "models",
            "Evaluation": "evaluations",
            "BatchPrediction": "batch-predictions",
        }[kind]
        return self.home / folder / entity_id

    # ---------------------------------------------------------------------------------- datasource

    def create_data_source_from_s3(
        self,
        *,
        DataSourceId: str,
        DataSpec: dict[str, Any],
        DataSourceName: str | None = None,
        ComputeStatistics: bool | None = None,
    ) -> dict[str, Any]:
        location = DataSpec.get("DataLocationS3")
        if not location:
            raise InvalidInputException("DataSpec.DataLocationS3: required")
        self._check_uri(location, "DataSpec.DataLocationS3")
        inline, schema_uri = DataSpec.get("DataSchema"), DataSpec.get("DataSchemaLocationS3")
        if inline and schema_uri:
            raise InvalidInputException("DataSpec: give either DataSchema or DataSchemaLocationS3, not both.")
        request = {
            "DataSourceId": DataSourceId,
            "DataSourceName": DataSourceName,
            "DataSpec": DataSpec,
            "ComputeStatistics": bool(ComputeStatistics),
        }
        existing = self.state.get("DataSource", DataSourceId)
        if existing is not None:  # idempotent retry: compare before re-reading anything
            return self._create("DataSource", DataSourceId, request, {})
        if inline:
            schema_text, member = inline, "DataSpec.DataSchema"
        elif schema_uri:
            self._check_uri(schema_uri, "DataSpec.DataSchemaLocationS3")
            schema_text, member = (
                self._read_text(schema_uri, "DataSpec.DataSchemaLocationS3"),
                "DataSpec.DataSchemaLocationS3",
            )
        else:
            raise InvalidInputException("DataSpec: one of DataSchema or DataSchemaLocationS3 is required.")
        try:
            schema = parse_schema(schema_text)
        except EngineError as exc:
            raise from_engine(exc, member) from None
        rearrangement_text = DataSpec.get("DataRearrangement")
        try:
            parse_rearrangement(rearrangement_text or None)
        except EngineError as exc:
            raise from_engine(exc, "DataSpec.DataRearrangement") from None
        attrs = {
            "DataLocationS3": location,
            "DataRearrangement": rearrangement_text,
            "Name": DataSourceName,
            "ComputeStatistics": bool(ComputeStatistics),
        }
        return self._create("DataSource", DataSourceId, request, attrs, {"schema": schema.to_json()})

    def _unsupported(self, op: str) -> dict[str, Any]:
        raise InvalidInputException(
            f"{op} is not supported by amlflow (no database access): export the query result to CSV in S3 "
            f"(or the local storage) and use CreateDataSourceFromS3."
        )

    def create_data_source_from_rds(self, **kwargs: Any) -> dict[str, Any]:
        return self._unsupported("CreateDataSourceFromRDS")

    def create_data_source_from_redshift(self, **kwargs: Any) -> dict[str, Any]:
        return self._unsupported("CreateDataSourceFromRedshift")

    def _datasource_job(self, ctx: JobContext) -> JobResult:
        entity = ctx.entity
        location = entity.attrs["DataLocationS3"]
        objects = [o for o in self.storage.list(location) if not o.key.endswith("/")]
        if not objects:
            raise JobFailed(
                f"DataLocationS3: no data found at {location} (no object or prefix of that name)."
            )
        ctx.log(f"reading {len(objects)} file(s) from {location}: {sum(o.size for o in objects)} bytes")
        schema = parse_schema(entity.internal["schema"])
        rearrangement = parse_rearrangement(entity.attrs.get("DataRearrangement") or None)
        sources = [Source(o.key, o.size, (lambda uri=o.uri: self.storage.open_read(uri))) for o in objects]
        folder = self._paths("DataSource", entity.id)
        table_dir = folder / "table"
        if table_dir.exists():
            shutil.rmtree(table_dir)
        folder.mkdir(parents=True, exist_ok=True)
        info = self.engine.build_dataset(sources, schema, rearrangement, table_dir)
        ctx.log(f"encoded {info.n_rows} rows ({info.n_rejected} rejected)")
        attrs: dict[str, Any] = {
            "DataSizeInBytes": int(info.data_size_bytes),
            "NumberOfFiles": int(info.n_files),
        }
        internal: dict[str, Any] = {
            "objects": [[o.uri, o.key, o.size] for o in objects],
            "n_rows": int(info.n_rows),
            "n_rejected": int(info.n_rejected),
        }
        if info.n_rejected:
            attrs["Message"] = f"{info.n_rejected} record(s) were rejected (see the insights for samples)."
        if entity.attrs.get("ComputeStatistics"):
            insights = self.engine.compute_statistics(EncodedTable.open(table_dir), schema)
            if isinstance(insights, dict):
                insights.setdefault("rejected_samples", info.rejected_samples)
                insights.setdefault("statistics_computed", True)
            ctx.log("statistics computed")
        else:  # what the job knows anyway: record counts and rejected samples, no attribute statistics
            insights = {
                "n_rows": int(info.n_rows),
                "n_rejected": int(info.n_rejected),
                "target": schema.target,
                "attributes": [],
                "rejected_samples": list(info.rejected_samples),
                "statistics_computed": False,
            }
        _write_json(folder / "insights.json", insights)
        return JobResult(attrs, internal, compute_time=bool(entity.attrs.get("ComputeStatistics")))

    def get_data_source(self, *, DataSourceId: str, Verbose: bool = False) -> dict[str, Any]:
        entity = self._get("DataSource", DataSourceId)
        out = self._out(entity, (*DESCRIBE_FIELDS["DataSource"], "LogUri"))
        if Verbose and "schema" in entity.internal:
            out["DataSourceSchema"] = entity.internal["schema"]
        return out

    def get_data_insights(self, data_source_id: str) -> dict[str, Any]:
        """The datasource's data insights, or ResourceNotFound before its job completed.

        With ``ComputeStatistics`` true: ``engine.stats.compute_statistics``' document; otherwise only
        the record counts and rejected samples (``"statistics_computed": false``, no attribute statistics).
        """
        entity = self._get("DataSource", data_source_id)
        path = self._paths("DataSource", entity.id) / "insights.json"
        if not path.is_file():
            raise ResourceNotFoundException(
                f"DataSource {data_source_id} has no data insights (status {entity.status}, "
                f"ComputeStatistics={bool(entity.attrs.get('ComputeStatistics'))})."
            )
        return dict(json.loads(path.read_text("utf-8")))

    # ------------------------------------------------------------------------------------- ML model

    def create_ml_model(
        self,
        *,
        MLModelId: str,
        MLModelType: str,
        TrainingDataSourceId: str,
        MLModelName: str | None = None,
        Parameters: dict[str, str] | None = None,
        Recipe: str | None = None,
        RecipeUri: str | None = None,
    ) -> dict[str, Any]:
        request = {
            "MLModelId": MLModelId,
            "MLModelName": MLModelName,
            "MLModelType": MLModelType,
            "TrainingDataSourceId": TrainingDataSourceId,
            "Parameters": Parameters or {},
            "Recipe": Recipe,
            "RecipeUri": RecipeUri,
        }
        if self.state.get("MLModel", MLModelId) is not None:
            return self._create("MLModel", MLModelId, request, {})
        if Recipe and RecipeUri:
            raise InvalidInputException("Recipe, RecipeUri: give one of them, not both.")
        ds = self._input("DataSource", TrainingDataSourceId, "TrainingDataSourceId")
        if not ds.attrs.get("ComputeStatistics"):
            raise InvalidInputException(
                f"TrainingDataSourceId: DataSource {TrainingDataSourceId} was created with ComputeStatistics "
                f"false; a training datasource needs ComputeStatistics=true."
            )
        schema = self._schema_of(ds)
        if schema.target is None:
            raise InvalidInputException(
                f"TrainingDataSourceId: the schema of DataSource {TrainingDataSourceId} has no "
                f"targetAttributeName; a training datasource needs a target."
            )
        target_type = schema.type_of(schema.target)
        if TARGET_TYPE[MLModelType] != target_type:
            raise InvalidInputException(
                f"MLModelType: {MLModelType} needs a {TARGET_TYPE[MLModelType]} target, but "
                f"{schema.target!r} is {target_type} in DataSource {TrainingDataSourceId}."
            )
        try:
            params = parse_parameters(Parameters or None)
        except EngineError as exc:
            raise from_engine(exc, "Parameters") from None
        recipe_text = Recipe
        if RecipeUri:
            self._check_uri(RecipeUri, "RecipeUri")
            recipe_text = self._read_text(RecipeUri, "RecipeUri")
        if recipe_text is not None:
            try:
                parse_recipe(recipe_text, schema)
            except EngineError as exc:
                raise from_engine(exc, "RecipeUri" if RecipeUri else "Recipe") from None
        attrs = {
            "Name": MLModelName,
            "MLModelType": MLModelType,
            "TrainingDataSourceId": TrainingDataSourceId,
            "InputDataLocationS3": ds.attrs.get("DataLocationS3"),
            "Algorithm": "sgd",
            "TrainingParameters": params.echo(),
            "EndpointInfo": dict(NO_ENDPOINT),
        }
        return self._create("MLModel", MLModelId, request, attrs, {"recipe": recipe_text})

    def _schema_of(self, ds: Entity) -> Schema:
        return parse_schema(ds.internal["schema"])

    def _table_of(self, ds_id: str) -> Table:
        return EncodedTable.open(self._paths("DataSource", ds_id) / "table")

    def _model_job(self, ctx: JobContext) -> JobResult:
        entity = ctx.entity
        ds = self._get("DataSource", entity.attrs["TrainingDataSourceId"])
        schema = self._schema_of(ds)
        table = self._table_of(ds.id)
        recipe_text = entity.internal.get("recipe")
        if recipe_text is None:
            recipe_text = suggest_recipe(table, schema)
            ctx.log("no recipe given: using the suggested recipe")
        recipe = parse_recipe(recipe_text, schema)
        params = parse_parameters(entity.internal["request"].get("Parameters") or None)
        model = self.engine.train(
            table, schema, recipe, params, entity.attrs["MLModelType"], seed=self.settings.seed, log=ctx.log
        )
        folder = self._paths("MLModel", entity.id) / "model"
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        model.save(folder)
        with self._models_lock:  # evaluations, batch predictions and Predict use the saved model
            self._models.pop(entity.id, None)
        model = self._model(entity.id)
        attrs: dict[str, Any] = {"SizeInBytes": int(model.size_in_bytes)}
        defaults = {"ScoreThreshold": 0.5} if entity.attrs["MLModelType"] == "BINARY" else {}
        schema_json = model.schema.to_json()
        return JobResult(attrs, {"recipe": recipe_text, "schema": schema_json}, defaults=defaults)

    def _model(self, model_id: str) -> Model:
        with self._models_lock:
            model = self._models.get(model_id)
        if model is None:
            model = self.engine.load_model(self._paths("MLModel", model_id) / "model")
            with self._models_lock:
                self._models[model_id] = model
        return model

    def get_ml_model(self, *, MLModelId: str, Verbose: bool = False) -> dict[str, Any]:
        entity = self._get("MLModel", MLModelId)
        fields = tuple(f for f in DESCRIBE_FIELDS["MLModel"] if f != "Algorithm") + ("LogUri",)
        out = self._out(entity, fields)
        if Verbose:
            if entity.internal.get("recipe") is not None:
                out["Recipe"] = entity.internal["recipe"]
            ds = self.state.get("DataSource", entity.attrs["TrainingDataSourceId"])
            schema = entity.internal.get("schema") or (ds.internal.get("schema") if ds else None)
            if schema:
                out["Schema"] = schema
        return out

    # ----------------------------------------------------------------------------------- evaluation

    def create_evaluation(
        self,
        *,
        EvaluationId: str,
        MLModelId: str,
        EvaluationDataSourceId: str,
        EvaluationName: str | None = None,
    ) -> dict[str, Any]:
        request = {
            "EvaluationId": EvaluationId,
            "EvaluationName": EvaluationName,
            "MLModelId": MLModelId,
            "EvaluationDataSourceId": EvaluationDataSourceId,
        }
        if self.state.get("Evaluation", EvaluationId) is not None:
            return self._create("Evaluation", EvaluationId, request, {})
        model = self._input("MLModel", MLModelId, "MLModelId")
        ds = self._input("DataSource", EvaluationDataSourceId, "EvaluationDataSourceId")
        schema = self._schema_of(ds)
        if schema.target is None:
            raise InvalidInputException(
                f"EvaluationDataSourceId: the schema of DataSource {EvaluationDataSourceId} has no "
                f"targetAttributeName; an evaluation needs the true values."
            )
        train_ds = self.state.get("DataSource", model.attrs["TrainingDataSourceId"])
        if train_ds is not None:
            train_target = self._schema_of(train_ds).target
            if train_target != schema.target:
                raise InvalidInputException(
                    f"EvaluationDataSourceId: target {schema.target!r} differs from the model's training "
                    f"target {train_target!r}."
                )
        attrs = {
            "Name": EvaluationName,
            "MLModelId": MLModelId,
            "EvaluationDataSourceId": EvaluationDataSourceId,
            "InputDataLocationS3": ds.attrs.get("DataLocationS3"),
        }
        return self._create("Evaluation", EvaluationId, request, attrs)

    def _scoring_inputs(self, entity: Entity, ds_member: str) -> tuple[Model, Table, Schema, Entity]:
        model = self._model(entity.attrs["MLModelId"])
        ds = self._get("DataSource", entity.attrs[ds_member])
        # the datasource's own schema: the engine reads the data with the model's types itself
        return model, self._table_of(ds.id), self._schema_of(ds), ds

    def _evaluation_job(self, ctx: JobContext) -> JobResult:
        entity = ctx.entity
        model, table, schema, _ = self._scoring_inputs(entity, "EvaluationDataSourceId")
        model_entity = self._get("MLModel", entity.attrs["MLModelId"])
        train_ds_id = model_entity.attrs["TrainingDataSourceId"]
        training_info = {
            "training_datasource_id": train_ds_id,
            "evaluation_datasource_id": entity.attrs["EvaluationDataSourceId"],
            "score_threshold": float(model_entity.attrs.get("ScoreThreshold", 0.5)),
        }
        result = self.engine.evaluate(model, table, schema, training_info=training_info)
        folder = self._paths("Evaluation", entity.id)
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "report.json", result.report)
        ctx.log(f"metrics: {result.properties}")
        return JobResult(
            {"PerformanceMetrics": {"Properties": {k: str(v) for k, v in result.properties.items()}}}
        )

    def get_evaluation(self, *, EvaluationId: str) -> dict[str, Any]:
        return self._out(self._get("Evaluation", EvaluationId), (*DESCRIBE_FIELDS["Evaluation"], "LogUri"))

    def get_evaluation_report(self, evaluation_id: str) -> dict[str, Any]:
        """The evaluation's report (engine.evaluation), or ResourceNotFound while there is none."""
        entity = self._get("Evaluation", evaluation_id)
        path = self._paths("Evaluation", entity.id) / "report.json"
        if not path.is_file():
            raise ResourceNotFoundException(
                f"Evaluation {evaluation_id} has no report (status {entity.status})."
            )
        return dict(json.loads(path.read_text("utf-8")))

    # ----------------------------------------------------------------------------- batch prediction

    def create_batch_prediction(
        self,
        *,
        BatchPredictionId: str,
        MLModelId: str,
        BatchPredictionDataSourceId: str,
        OutputUri: str,
        BatchPredictionName: str | None = None,
    ) -> dict[str, Any]:
        request = {
            "BatchPredictionId": BatchPredictionId,
            "BatchPredictionName": BatchPredictionName,
            "MLModelId": MLModelId,
            "BatchPredictionDataSourceId": BatchPredictionDataSourceId,
            "OutputUri": OutputUri,
        }
        if self.state.get("BatchPrediction", BatchPredictionId) is not None:
            return self._create("BatchPrediction", BatchPredictionId, request, {})
        self._check_uri(OutputUri, "OutputUri")
        _, key = parse_s3_uri(OutputUri)
        if "//" in key or "/./" in f"/{key}" or "/../" in f"/{key}/" or ":" in key:
            raise InvalidInputException(
                f"OutputUri: {OutputUri!r} must not contain ':', '//', '/./' or '/../' in its key."
            )
        self._input("MLModel", MLModelId, "MLModelId")
        ds = self._input("DataSource", BatchPredictionDataSourceId, "BatchPredictionDataSourceId")
        attrs = {
            "Name": BatchPredictionName,
            "MLModelId": MLModelId,
            "BatchPredictionDataSourceId": BatchPredictionDataSourceId,
            "InputDataLocationS3": ds.attrs.get("DataLocationS3"),
            "OutputUri": OutputUri,
        }
        return self._create("BatchPrediction", BatchPredictionId, request, attrs)

    def _batch_job(self, ctx: JobContext) -> JobResult:
        entity = ctx.entity
        model, table, schema, ds = self._scoring_inputs(entity, "BatchPredictionDataSourceId")
        model_entity = self._get("MLModel", entity.attrs["MLModelId"])
        threshold = float(model_entity.attrs.get("ScoreThreshold", 0.5))
        base = entity.attrs["OutputUri"].rstrip("/") + "/batch-prediction/"
        objects = ds.internal.get("objects") or [[ds.attrs["DataLocationS3"], ds.attrs["DataLocationS3"], 0]]
        manifest: dict[str, str] = {}
        by_key = {str(o[1]): str(o[0]) for o in objects}
        files = [(str(k), int(a), int(b)) for k, a, b in table.files]
        if len(objects) == 1 or len(files) <= 1:
            spans: list[tuple[str, str, tuple[int, int] | None]] = [
                (str(objects[0][0]), str(objects[0][1]), None)
            ]
        else:
            spans = [(by_key.get(key, key), key, (start, stop)) for key, start, stop in files]
        total = invalid = 0
        work = Path(tempfile.mkdtemp(prefix=f".bp-{entity.id}-", dir=self.home))
        try:
            for i, (input_uri, key, rows) in enumerate(spans):
                name = PurePosixPath(key).name or "data"
                # AML: <id>-<input file name>.gz. AML read only plain CSV; for a gzipped input (an amlflow
                # extension) the output is named after the CSV inside it, not "<name>.gz.gz".
                name = name.removesuffix(".gz") or name
                result_uri = f"{base}result/{entity.id}-{name}.gz"
                gz = work / f"part-{i}.gz"
                with gzip.open(gz, "wb", compresslevel=6) as out:
                    counts = self.engine.write_batch_output(
                        model, table, schema, cast(BinaryIO, out), threshold=threshold, rows=rows
                    )
                total += int(counts.total)
                invalid += int(counts.invalid)
                self.storage.write_atomic(result_uri, gz)
                manifest[input_uri] = result_uri
                ctx.log(f"wrote {result_uri}: {counts.total} records ({counts.invalid} invalid)")
            self.storage.write_atomic(f"{base}{entity.id}.manifest", json.dumps(manifest).encode("utf-8"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        ctx.log(f"scored {total} records ({invalid} invalid), threshold {threshold}")
        return JobResult({"TotalRecordCount": total, "InvalidRecordCount": invalid})

    def get_batch_prediction(self, *, BatchPredictionId: str) -> dict[str, Any]:
        return self._out(
            self._get("BatchPrediction", BatchPredictionId), (*DESCRIBE_FIELDS["BatchPrediction"], "LogUri")
        )

    # ------------------------------------------------------------------------------------ describe

    def _describe(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        variable = params.get("FilterVariable")
        ops = {
            k: params[k] for k in ("EQ", "GT", "LT", "GE", "LE", "NE", "Prefix") if params.get(k) is not None
        }
        if ops and variable is None:
            raise InvalidInputException(f"FilterVariable: required with {', '.join(sorted(ops))}.")
        path = None
        if variable is not None:
            path = COMMON_FILTERS.get(variable) or FILTERS[kind].get(variable)
            if path is None:
                raise InvalidInputException(f"FilterVariable: {variable!r} is not a filter of {kind}.")
        limit = int(params.get("Limit") or 100)
        offset = 0
        token = params.get("NextToken")
        if token:
            try:
                offset = int(json.loads(base64.urlsafe_b64decode(token.encode()).decode())["offset"])
            except (ValueError, KeyError, TypeError):
                raise InvalidInputException("NextToken: not a token this service issued.") from None
        is_time = variable in ("CreatedAt", "LastUpdatedAt")

        def value_of(e: Entity) -> Any:
            value: Any = e.attrs
            for part in (path or "CreatedAt").split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if variable is None or is_time:
                return float(value or 0.0)
            return "" if value is None else str(value)

        entities = self.state.all(kind)
        if variable != "Status":
            entities = [e for e in entities if e.status != "DELETED"]
        if ops:
            keep = []
            for e in entities:
                v = value_of(e)
                ok = True
                for op, raw in ops.items():
                    if op == "Prefix":
                        ok = str(v).startswith(raw) if not is_time else str(e.attrs.get(path)).startswith(raw)
                    else:
                        c = _time_value(raw) if is_time else raw
                        ok = {
                            "EQ": v == c,
                            "NE": v != c,
                            "GT": v > c,
                            "LT": v < c,
                            "GE": v >= c,
                            "LE": v <= c,
                        }[op]
                    if not ok:
                        break
                if ok:
                    keep.append(e)
            entities = keep
        entities.sort(
            key=lambda e: (value_of(e), e.attrs.get("CreatedAt", 0.0), e.id),
            reverse=params.get("SortOrder") == "dsc",
        )
        page = entities[offset : offset + limit]
        out: dict[str, Any] = {"Results": [self._out(e, DESCRIBE_FIELDS[kind]) for e in page]}
        if offset + limit < len(entities):
            out["NextToken"] = base64.urlsafe_b64encode(
                json.dumps({"offset": offset + limit}).encode()
            ).decode()
        return out

    def describe_data_sources(self, **params: Any) -> dict[str, Any]:
        return self._describe("DataSource", params)

    def describe_ml_models(self, **params: Any) -> dict[str, Any]:
        return self._describe("MLModel", params)

    def describe_evaluations(self, **params: Any) -> dict[str, Any]:
        return self._describe("Evaluation", params)

    def describe_batch_predictions(self, **params: Any) -> dict[str, Any]:
        return self._describe("BatchPrediction", params)

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

    # ---------------------------------------------------------------------------------------- tags

    def _taggable(self, resource_id: str, resource_type: str) -> Entity:
        entity = self.state.get(resource_type, resource_id)
        if entity is None:
            raise ResourceNotFoundException(f"No {resource_type} with id {resource_id} exists.")
        return entity

    @staticmethod
    def _check_tag_key(key: str, where: str) -> None:
        if not key or len(key) > 128:
            raise InvalidTagException(f"{where}: tag key must be 1 to 128 characters, got {len(key)}.")
        if key.lower().startswith("aws:"):
            raise InvalidTagException(f"{where}: tag key {key!r} uses the reserved prefix 'aws:'.")
        if not _validate._matcher(r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$")(key):
            raise InvalidTagException(
                f"{where}: tag key {key!r} has characters outside letters, digits, "
                f"spaces and _ . : / = + - @."
            )

    def add_tags(
        self,
        *,
        Tags: list[dict[str, str]],
        ResourceId: str,
        ResourceType: str,
    ) -> dict[str, Any]:
        self._taggable(ResourceId, ResourceType)
        current = dict(self.state.tags(ResourceType, ResourceId))
        for i, tag in enumerate(Tags, 1):
            key, value = tag.get("Key", ""), tag.get("Value")
            self._check_tag_key(key, f"Tags.{i}.Key")
            if value is not None and (
                len(value) > 256 or not _validate._matcher(r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$")(value)
            ):
                raise InvalidTagException(
                    f"Tags.{i}.Value: tag value {value!r} must be at most 256 letters, "
                    f"digits, spaces or _ . : / = + - @."
                )
            current[key] = value
        if len(current) > MAX_TAGS:
            raise TagLimitExceededException(
                f"Tags: {ResourceType} {ResourceId} would have {len(current)} tags; at most {MAX_TAGS} are allowed."
            )
        self.state.set_tags(ResourceType, ResourceId, list(current.items()))
        return {"ResourceId": ResourceId, "ResourceType": ResourceType}

    def delete_tags(
        self,
        *,
        TagKeys: list[str],
        ResourceId: str,
        ResourceType: str,
    ) -> dict[str, Any]:
        self._taggable(ResourceId, ResourceType)
        for i, key in enumerate(TagKeys, 1):
            if not key or len(key) > 128:
                raise InvalidTagException(f"TagKeys.{i}: tag key must be 1 to 128 characters.")
        drop = set(TagKeys)
        current = [(k, v) for k, v in self.state.tags(ResourceType, ResourceId) if k not in drop]
        self.state.set_tags(ResourceType, ResourceId, current)
        return {"ResourceId": ResourceId, "ResourceType": ResourceType}

    def describe_tags(self, *, ResourceId: str, ResourceType: str) -> dict[str, Any]:
        self._taggable(ResourceId, ResourceType)
        tags = [
            {"Key": k, "Value": v} if v is not None else {"Key": k}
            for k, v in self.state.tags(ResourceType, ResourceId)
        ]
        return {"ResourceId": ResourceId, "ResourceType": ResourceType, "Tags": tags}

    # ---------------------------------------------------------------------------------- realtime

    def create_realtime_endpoint(self, *, MLModelId: str) -> dict[str, Any]:
        entity = self._get("MLModel", MLModelId)
        if entity.status != "COMPLETED":
            raise InvalidInputException(
                f"MLModelId: ML model {MLModelId} is {entity.status}; a realtime endpoint needs a COMPLETED model."
            )
        info = entity.attrs.get("EndpointInfo") or {}
        if info.get("EndpointStatus") != "READY":
            self._model(MLModelId)  # load (and keep) the model in memory
            info = {
                "PeakRequestsPerSecond": PEAK_RPS,
                "CreatedAt": now(),
                "EndpointUrl": self.endpoint_url,
                "EndpointStatus": "READY",
            }

            def change(e: Entity) -> None:
                e.attrs["EndpointInfo"] = info

            self.state.update("MLModel", MLModelId, change)
        return {
            "MLModelId": MLModelId,
            "RealtimeEndpointInfo": self._out(
                Entity("MLModel", MLModelId, {"EndpointInfo": info}), ("EndpointInfo",)
            )["EndpointInfo"],
        }

    def delete_realtime_endpoint(self, *, MLModelId: str) -> dict[str, Any]:
        self._get("MLModel", MLModelId)

        def change(e: Entity) -> None:
            e.attrs["EndpointInfo"] = dict(NO_ENDPOINT)

        self.state.update("MLModel", MLModelId, change)
        return {"MLModelId": MLModelId, "RealtimeEndpointInfo": dict(NO_ENDPOINT)}

    def predict(
        self,
        *,
        MLModelId: str,
        Record: dict[str, str],
        PredictEndpoint: str,
    ) -> dict[str, Any]:
        entity = self._get("MLModel", MLModelId)
        if entity.status == "DELETED":
            raise ResourceNotFoundException(f"ML model {MLModelId} is DELETED.")
        info = entity.attrs.get("EndpointInfo") or {}
        if info.get("EndpointStatus") != "READY":
            raise PredictorNotMountedException(
                f"ML model {MLModelId} has no READY realtime endpoint; call CreateRealtimeEndpoint first."
            )
        size = sum(len(str(k)) + len(str(v)) for k, v in Record.items())
        if size > MAX_RECORD_BYTES:
            raise InvalidInputException(
                f"Record: {size} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes."
            )
        if not self._limiter.allow(MLModelId):
            raise LimitExceededException(
                f"ML model {MLModelId}: more than {self._limiter.rate} Predict requests per second."
            )
        model = self._model(MLModelId)
        threshold = float(entity.attrs.get("ScoreThreshold", 0.5))
        prediction = model.predict_record({str(k): str(v) for k, v in Record.items()}, threshold)
        return {"Prediction": _strip_none(dict(prediction))}


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=_json_default)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
