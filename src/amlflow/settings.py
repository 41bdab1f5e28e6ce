"""amlflow's settings, read from the environment (``AMLFLOW_*``) and overridable by keyword.

| setting        | environment             | default                   |
|----------------|-------------------------|---------------------------|
| home           | ``AMLFLOW_HOME``        | ``~/.amlflow``            |
| storage        | ``AMLFLOW_STORAGE``     | ``local`` (or ``s3``)     |
| storage_root   | ``AMLFLOW_STORAGE_ROOT``| ``$AMLFLOW_HOME/s3``      |
| max_jobs       | ``AMLFLOW_MAX_JOBS``    | 2 (AML allowed 25)        |
| seed           | ``AMLFLOW_SEED``        | 0                         |
| region         | ``AMLFLOW_REGION``      | ``us-east-1``             |
| predict_rate_limit | ``AMLFLOW_PREDICT_RATE_LIMIT`` | 200 Predict/s per model (AML's peak; 0 = off) |
| waiter_delay   | ``AMLFLOW_WAITER_DELAY``| 1 s (embedded client's waiters; AML: 30 s) |
| database_url   | ``AMLFLOW_DATABASE_URL``| SQLite ``$AMLFLOW_HOME/state.db`` (or ``postgresql://…``) |
| artifact_root  | ``AMLFLOW_ARTIFACT_ROOT``| ``$AMLFLOW_HOME`` (or a folder, or ``s3://bucket/prefix/``) |
| lease_seconds  | ``AMLFLOW_LEASE_SECONDS``| 20 s (a job of a dead process is taken over after it) |
| memory_limit   | ``AMLFLOW_MEMORY_LIMIT``| half of RAM / cgroup / rlimit (``2GB``, ``512MiB``, bytes) |
| dask_address   | ``AMLFLOW_DASK_ADDRESS``| unset (in-process), or ``tcp://scheduler:8786`` |
| dask_training  | ``AMLFLOW_DASK_TRAINING``| ``auto`` (cluster when over the budget), ``always``, ``never`` |
| dask_datasource | ``AMLFLOW_DASK_DATASOURCE``| ``auto`` (cluster for a large input), ``always``, ``never`` |
| datasource_processes | ``AMLFLOW_DATASOURCE_PROCESSES`` | a reader per job slot, up to the cores (0: none) |
| training_processes | ``AMLFLOW_TRAINING_PROCESSES`` | one per core (0 or 1: stream in the job's thread) |
| batch_processes | ``AMLFLOW_BATCH_PROCESSES`` | one per core (0 or 1: score in the job's thread) |

See docs/configuration.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Configuration of the embedded service and the server."""

    model_config = SettingsConfigDict(env_prefix="AMLFLOW_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path("~/.amlflow").expanduser())
    storage: Literal["local", "s3"] = "local"
    storage_root: Path | None = None
    max_jobs: int = Field(default=2, ge=1, le=25)
    seed: int = 0
    region: str = "us-east-1"
    account_id: str = "123456789012"
    iam_user: str = "amlflow"
    predict_rate_limit: int = Field(default=200, ge=0)
    waiter_delay: float = Field(default=1.0, gt=0)
    #: a job's memory budget in bytes (``2GB``, ``512MiB`` or a number); None: half of the smallest of
    #: physical memory, the cgroup limit and the process's rlimit (``engine.limits.default_memory_budget``)
    memory_limit: ByteSize | None = None
    #: the state store: None is SQLite under ``home``; ``postgresql://user:pass@host:port/db`` shares
    #: one state between processes on many machines (docs/shared-state.md)
    database_url: str | None = None
    #: where entities' files go (models, encoded datasources, reports, insights, job logs): a local
    #: folder (None: ``home``) or ``s3://bucket/prefix/`` that every replica reads (docs/shared-state.md)
    artifact_root: str | None = None
    #: a job lease's life without a heartbeat (renewed every quarter of it); a job of a process that
    #: died is taken over by a live one after at most this long
    lease_seconds: float = Field(default=20.0, gt=0, le=3600)
    #: seconds between a process's scans of the shared state for jobs to run
    job_poll_interval: float = Field(default=0.5, gt=0, le=60)
    #: a Dask scheduler (``tcp://scheduler:8786``): evaluations and batch predictions are scored by
    #: partition on its workers, which read models and tables from the artifact root (docs/scale.md,
    #: "Dask"; needs the ``amlflow[dask]`` extra); None: everything runs in-process
    dask_address: str | None = None
    #: with ``dask_address``: ``auto`` trains data-parallel on the cluster when the in-memory estimate is
    #: over ``memory_limit`` (where the service would stream) and in-process when it fits; ``always`` trains
    #: every model on the cluster; ``never`` trains in-process (docs/scale.md, "Training on Dask")
    dask_training: Literal["auto", "always", "never"] = "auto"
    #: with ``dask_address``: ``auto`` encodes a datasource by file and byte range on the cluster when
    #: its input is large enough to be worth it (``dask_datasource.AUTO_MIN_BYTES``, more than one part);
    #: ``always`` sends every datasource; ``never`` encodes in-process (docs/scale.md, "Datasources on Dask")
    dask_datasource: Literal["auto", "always", "never"] = "auto"
    #: worker processes that read datasources' CSV (and compute their statistics) for the jobs, so jobs
    #: running at once do not share one interpreter: None is one per job slot, at most the machine's
    #: cores (none on one core); 0 reads in the job's thread (docs/scale.md, "Datasource readers")
    datasource_processes: int | None = Field(default=None, ge=0, le=64)
    #: worker processes a streaming fit (a model over ``memory_limit`` in memory) runs data-parallel on:
    #: None is one per core (none on one core); 0 or 1 streams in the job's thread (docs/scale.md,
    #: "Training on this machine's cores")
    training_processes: int | None = Field(default=None, ge=0, le=64)
    #: worker processes a batch prediction of ``batch_processes.MIN_ROWS`` rows or more is scored on (the
    #: same bytes): None is one per core (none on one core); 0 or 1 scores in the job's thread
    #: (docs/scale.md, "Batch predictions on this machine's cores")
    batch_processes: int | None = Field(default=None, ge=0, le=64)

    def resolved_datasource_processes(self) -> int:
        """``datasource_processes``, or its default for ``max_jobs`` on this machine."""
        if self.datasource_processes is not None:
            return self.datasource_processes
        from amlflow.service.reader_processes import default_processes

        return default_processes(self.max_jobs)

    def resolved_training_processes(self) -> int:
        """``training_processes``, or its default on this machine (one per core; none on one core)."""
        return _per_core(self.training_processes)

    def resolved_batch_processes(self) -> int:
        """``batch_processes``, or its default on this machine (one per core; none on one core)."""
        return _per_core(self.batch_processes)

    def resolved_database_url(self) -> str:
        """``database_url``, or the SQLite file ``<home>/state.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.home).expanduser() / 'state.db'}"

    def resolved_storage_root(self) -> Path:
        """The local storage root: ``storage_root`` or ``<home>/s3``."""
        root = self.storage_root if self.storage_root is not None else self.home / "s3"
        return Path(root).expanduser()


def _per_core(value: int | None) -> int:
    """``value``, or one per core of this machine (none on one core)."""
    if value is not None:
        return value
    from amlflow.service.reader_processes import cores

    n = cores()
    return 0 if n < 2 else n
