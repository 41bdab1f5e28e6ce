"""The in-process client: a real botocore ``machinelearning`` client whose calls never leave the process.

``connect(**settings)`` (``amlflow.connect``) builds an ordinary botocore client — so every method,
``get_waiter``, ``get_paginator``, parameter validation, ``client.exceptions`` and ``ClientError`` are
botocore's own — and registers a ``before-call`` handler, the hook botocore's ``Stubber`` uses: the
handler decodes the serialized JSON request body, calls ``Service.dispatch`` and returns
``(http_response, parsed)``, so botocore never opens a connection. Errors come back as
``{"Error": {"Code", "Message"}, "ResponseMetadata": {...}}`` with the error's HTTP status, and botocore
raises the modelled exception (``client.exceptions.ResourceNotFoundException``, ...). Nothing is
retried (retries live in the HTTP layer the handler skips).

Credentials and region are dummies (no AWS configuration is read or needed); the endpoint is
:data:`amlflow.service.core.EMBEDDED_ENDPOINT_URL`, which never resolves.

Waiters: AML's waiters poll every 30 s. The embedded client loads its waiter definitions from a copy
of botocore's ``waiters-2.json`` with ``delay`` set to ``settings.waiter_delay`` (1 s by default), written
under ``<home>/botocore-data/machinelearning/2014-12-12/`` and put first on the client's data path.
``WaiterConfig={"Delay": ...}`` still overrides it per call.

One :class:`~amlflow.service.core.Service` per amlflow home per process: clients for the same home
share it (and its job pool). ``client.service`` is that service (``amlflow.client.reports_for`` finds
the report side-channel there).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.service.engine_jobs import EngineJobs
from amlflow.settings import Settings

__all__ = ["connect", "get_service", "reset_services"]

_SERVICES: dict[str, Service] = {}
_LOCK = threading.Lock()


def get_service(settings: Settings, engine: EngineJobs | None = None) -> Service:
    """The process's one service for ``settings.home`` (created on first use).

    Args:
        settings: the service's settings (only the first call for a home creates the service).
        engine: the engine functions its jobs call (:class:`~amlflow.service.engine_jobs.EngineJobs`;
            default the real engine).

    Raises:
        ValueError: the home's service already runs with other engine functions.
    """
    key = str(Path(settings.home).expanduser().resolve())
    with _LOCK:
        service = _SERVICES.get(key)
        if service is None:
            service = Service(settings, engine=engine)
            _SERVICES[key] = service
        elif engine is not None and service.engine is not engine:
            raise ValueError(f"the service for {key} already runs with other engine functions")
        return service


def reset_services(timeout: float = 5.0) -> None:
    """Shut down and forget every cached service (tests)."""
    with _LOCK:
        services = list(_SERVICES.values())
        _SERVICES.clear()
    for service in services:
        service.shutdown(timeout=timeout)


def connect(*, engine: EngineJobs | None = None, **overrides: Any) -> Any:
    """Return an in-process ``machinelearning`` client for the service at ``Settings(**overrides).home``.

    ``engine`` replaces the engine functions the service's jobs call (stand-ins:
    :func:`amlflow.service.standin.standin_engine`); it applies when this call creates the home's service.

    Example:
        >>> ml = connect(home="/tmp/amlflow-doc-home")
        >>> ml.describe_ml_models()["Results"]
        []
    """
    settings = Settings(**overrides)
    return build_client(get_service(settings, engine), settings)
