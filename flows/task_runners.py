"""The Prefect task runner of the pipelines: ``AMLFLOW_PREFECT_TASK_RUNNER``.

| value                     | task runner                                                          |
|---------------------------|----------------------------------------------------------------------|
| unset, ``threads``        | Prefect's default ``ThreadPoolTaskRunner``                           |
| ``dask``                  | ``prefect_dask.DaskTaskRunner`` on a temporary local cluster (threads) |
| ``dask:tcp://host:8786``  | ``DaskTaskRunner`` on an existing Dask scheduler                     |

The pipelines' tasks are API calls and waits: the three datasource creates, and evaluation ∥ batch
prediction, already run at once on threads, and the ML work runs inside amlflow's jobs, not in the
tasks. A Dask task runner therefore helps only when the tasks themselves must run on other machines
(e.g. the workers of a Dask cluster that also reach the data); to put amlflow's *job* work on a Dask
cluster, set ``AMLFLOW_DASK_ADDRESS`` (docs/scale.md) — that is the Dask that matters for speed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["task_runner_from_env"]


def task_runner_from_env(env: Mapping[str, str] | None = None) -> Any | None:
    """The task runner ``AMLFLOW_PREFECT_TASK_RUNNER`` asks for, or None for Prefect's default.

    Raises:
        ValueError: an unknown value (the message lists the accepted ones).
        ImportError: ``dask`` without the ``amlflow[dask]`` extra (prefect-dask).
    """
    spec = (env if env is not None else os.environ).get("AMLFLOW_PREFECT_TASK_RUNNER", "").strip()
    if spec in ("", "threads"):
        return None
    kind, _, address = spec.partition(":")
    if kind != "dask":
        raise ValueError(
            f"AMLFLOW_PREFECT_TASK_RUNNER: {spec!r}; expected threads, dask or dask:tcp://host:port"
        )
    try:
        from prefect_dask.task_runners import DaskTaskRunner
    except ImportError as exc:
        raise ImportError(
            "AMLFLOW_PREFECT_TASK_RUNNER=dask needs prefect-dask: pip install 'amlflow[dask]'"
        ) from exc
    if address:
        return DaskTaskRunner(address=address)
    # threads of this process: the tasks share the flow's embedded service and client cache
    kwargs = {"processes": False, "n_workers": 1, "threads_per_worker": 8, "dashboard_address": ":0"}
    return DaskTaskRunner(cluster_kwargs=kwargs)
