"""``Service``: Amazon ML's 28 operations over the engine, the storage and the SQLite state.

Methods are the snake_case operation names taking the PascalCase request members as keywords and
returning boto3's response dicts (timestamps as timezone-aware UTC datetimes, no ``None`` values)::

    service = Service(Settings(home=...), endpoint_url="http://127.0.0.1:8080")
    service.create_data_source_from_s3(DataSourceId="ds-1", DataSpec={...}, ComputeStatistics=True)
    service.dispatch("GetDataSource", {"DataSourceId": "ds-1"})   # validated against botocore's model

Semantics follow docs/aml-reference.md §1–2 and §8–9: creates return at once with the entity PENDING;
jobs wait for their inputs and run in a bounded pool (:mod:`amlflow.service.jobs`); errors are
:mod:`amlflow.service.errors`. ``Service`` is composed of one part per job, each a subclass of
:class:`~amlflow.service.entities.EntityOps` (the shared entity rules, Update* and Delete*)::

    datasources.py   CreateDataSourceFrom*, GetDataSource, the datasource job, data insights
    models.py        CreateMLModel, GetMLModel, the training job
    evaluations.py   CreateEvaluation, GetEvaluation, the evaluation job, its report
    batch.py         CreateBatchPrediction, GetBatchPrediction, the batch job
    describe.py      Describe* (filter, sort, paginate)
    tags.py          AddTags, DeleteTags, DescribeTags
    realtime.py      Create/DeleteRealtimeEndpoint, Predict (rate limiter)

This module holds the constructor, restart recovery, shutdown and :meth:`Service.dispatch`, the one
entry point the HTTP app and the in-process client call. Files under ``AMLFLOW_HOME``::

    state.db                                  entity state (SQLite, WAL)
    datasources/<dir>/table/                  the encoded table (engine.table)
    datasources/<dir>/insights.json           data insights (ComputeStatistics=true)
    models/<dir>/model/                       the saved model (engine.model, never pickled)
    evaluations/<dir>/report.json             the evaluation report (baseline, confusion matrix, ...)
    logs/<kind>/<dir>.log                     job logs (LogUri)

``<dir>`` is :func:`amlflow.service.layout.entity_dir_name` of the entity's kind and id, never the id.

The jobs reach the engine's ML work only through ``Service(engine=...)``
(:class:`amlflow.service.engine_jobs.EngineJobs`; default: the real engine).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from botocore import xform_name

from amlflow.service import reader_processes
from amlflow.service import validate as _validate
from amlflow.service.artifacts import Artifacts
from amlflow.service.batch import BatchPredictions
from amlflow.service.datasources import DataSources
from amlflow.service.describe import Describe
from amlflow.service.engine_jobs import ENGINE, EngineJobs, Model
from amlflow.service.errors import AmlError
from amlflow.service.evaluations import Evaluations
from amlflow.service.jobs import JobContext, JobFunction, JobResult, JobRunner, now
from amlflow.service.layout import PathRedactor, clean_leftovers
from amlflow.service.models import Models
from amlflow.service.realtime import RateLimiter, Realtime
from amlflow.service.state import StateStore
from amlflow.service.tags import Tags
from amlflow.settings import Settings
from amlflow.storage import S3Storage, Storage, storage_from_settings

__all__ = ["EMBEDDED_ENDPOINT_URL", "Service"]

log = logging.getLogger("amlflow.service")

#: The realtime ``EndpointUrl`` an embedded service (no HTTP server) advertises. ``.invalid`` never
#: resolves, so nothing sent there can leave the machine; the in-process client never sends anything.
EMBEDDED_ENDPOINT_URL = "http://realtime.amlflow.invalid"


class Service(DataSources, Models, Evaluations, BatchPredictions, Describe, Tags, Realtime):
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
        self.state = StateStore(self.settings.resolved_database_url())
        self.iam_user = f"arn:aws:iam::{self.settings.account_id}:user/{self.settings.iam_user}"
        job_functions: dict[str, JobFunction] = {
            "DataSource": self._datasource_job,
            "MLModel": self._model_job,
            "Evaluation": self._evaluation_job,
            "BatchPrediction": self._batch_job,
        }
        job_functions.update(jobs or {})
        self.artifacts = Artifacts(self.home, self.settings.artifact_root, self._artifact_storage())
        job_functions = {kind: self._publishing(kind, fn) for kind, fn in job_functions.items()}
        local_root = self.settings.resolved_storage_root() if self.settings.storage == "local" else None
        self.jobs = JobRunner(
            self.state,
            max_jobs=self.settings.max_jobs,
            jobs=job_functions,
            deps=self._deps,
            log_dir=self.artifacts.base / "logs",
            log_uri=self.artifacts.log_uri,
            on_finish=lambda e: self.artifacts.publish_log(e.kind, e.id),
            redact=PathRedactor(home=self.home, storage_root=local_root),
            lease_seconds=self.settings.lease_seconds,
            poll_interval=self.settings.job_poll_interval,
        )
        self._models: dict[str, Model] = {}
        self._models_lock = threading.Lock()
        self._limiter = RateLimiter(self.settings.predict_rate_limit)
        self._create_lock = threading.Lock()
        if start:
            self.recover()

    def __repr__(self) -> str:
        return (
            f"Service(home={str(self.home)!r}, storage={self.storage!r}, endpoint_url={self.endpoint_url!r})"
        )

    def _artifact_storage(self) -> Storage | None:
        """The storage reaching an ``s3://`` artifact root (the service's own storage when it is S3)."""
        root = self.settings.artifact_root or ""
        if not root.startswith("s3://"):
            return None
        return self.storage if isinstance(self.storage, S3Storage) else S3Storage()

    def _publishing(self, kind: str, job: JobFunction) -> JobFunction:
        """``job``, then its entity's files published to the artifact root (before COMPLETED)."""

        def run(ctx: JobContext) -> JobResult:
            result = job(ctx)
            self.artifacts.publish(kind, ctx.entity.id)
            return result

        return run

    # ----------------------------------------------------------------------------------- lifecycle

    def set_endpoint_url(self, url: str) -> None:
        """Advertise ``url`` as the realtime ``EndpointUrl`` of endpoints created from now on."""
        self.endpoint_url = url

    def recover(self) -> None:
        """Start-up: crash leftovers removed while no live process holds a job; then the job scanner and
        the lease heartbeat start. Jobs nobody holds (PENDING ones, and those of a process that died) are
        claimed by the scanner; jobs with a live lease are left to their owner."""
        if not any(lease.expires >= now() for lease in self.state.leases()):
            local_root = self.settings.resolved_storage_root() if self.settings.storage == "local" else None
            artifact_base = None if self.artifacts.remote else self.artifacts.base
            for path in clean_leftovers(self.home, local_root, artifact_base):
                log.info("removed a crash leftover: %s", path)
        self.engine.prepare()
        reader_processes.warm(self._reader_processes())
        self.jobs.start()
        self.jobs.scan()

    def shutdown(self, timeout: float | None = 30.0) -> bool:
        """Stop taking jobs; wait up to ``timeout`` s for running ones (the rest stay PENDING); close the
        state store's idle connections (a job still running opens its own when it writes)."""
        done = self.jobs.shutdown(timeout)
        self.state.close()
        return done

    close = shutdown

    def health(self) -> dict[str, Any]:
        """Cheap status for ``GET /health``: this process's lease owner id, its job counts and the jobs
        it owns."""
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
