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

import json
import logging
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import botocore.session
from botocore.awsrequest import AWSResponse

try:  # TEMPORARY: gates tests/flows/test_flows_real.py until the package exports Service
    from amlflow.service import Service
except ImportError as _exc:
    raise ModuleNotFoundError("amlflow.service.Service is not exported yet", name="amlflow.service.client") from _exc
from amlflow.service.core import EMBEDDED_ENDPOINT_URL
from amlflow.service.errors import AmlError
from amlflow.settings import Settings

__all__ = ["connect", "get_service", "reset_services"]

log = logging.getLogger("amlflow.service")

_SERVICES: dict[str, Service] = {}
_LOCK = threading.Lock()


def get_service(settings: Settings) -> Service:
    """The process's one service for ``settings.home`` (created on first use)."""
    key = str(Path(settings.home).expanduser().resolve())
    with _LOCK:
        service = _SERVICES.get(key)
        if service is None:
            service = Service(settings)
            _SERVICES[key] = service
        return service


def reset_services(timeout: float = 5.0) -> None:
    """Shut down and forget every cached service (tests)."""
    with _LOCK:
        services = list(_SERVICES.values())
        _SERVICES.clear()
    for service in services:
        service.shutdown(timeout=timeout)


def _waiter_data_path(settings: Settings) -> Path:
    """A botocore data directory holding the fast copy of machinelearning's waiters-2.json."""
    root = Path(settings.home).expanduser() / "botocore-data"
    loader = botocore.session.get_session().get_component("data_loader")
    api_version = "2014-12-12"
    config = loader.load_service_model("machinelearning", "waiters-2", api_version)
    config = json.loads(json.dumps(config))
    for waiter in config.get("waiters", {}).values():
        waiter["delay"] = settings.waiter_delay
    target = root / "machinelearning" / api_version / "waiters-2.json"
    text = json.dumps(config, indent=2, sort_keys=True)
    if not target.is_file() or target.read_text("utf-8") != text:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    return root


def _response(status: int, parsed: dict[str, Any], request_id: str) -> tuple[AWSResponse, dict[str, Any]]:
    headers = {"x-amzn-RequestId": request_id, "content-type": "application/x-amz-json-1.1"}
    parsed["ResponseMetadata"] = {"RequestId": request_id, "HTTPStatusCode": status, "HTTPHeaders": headers,
                                  "RetryAttempts": 0}
    return AWSResponse(EMBEDDED_ENDPOINT_URL, status, headers, None), parsed


def connect(**overrides: Any) -> Any:
    """Return an in-process ``machinelearning`` client for the service at ``Settings(**overrides).home``.

    Example:
        >>> ml = connect(home="/tmp/amlflow-doc-home")
        >>> ml.describe_ml_models()["Results"]
        []
    """
    settings = Settings(**overrides)
    service = get_service(settings)
    session = botocore.session.Session()
    session.get_component("data_loader").search_paths.insert(0, str(_waiter_data_path(settings)))
    client = session.create_client(
        "machinelearning",
        region_name=settings.region,
        endpoint_url=EMBEDDED_ENDPOINT_URL,
        aws_access_key_id="amlflow-embedded",
        aws_secret_access_key="amlflow-embedded",
    )

    def before_call(model: Any, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        request_id = str(uuid.uuid4())
        body = params.get("body") or b"{}"
        try:
            request = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
            result = service.dispatch(model.name, request)
        except AmlError as exc:
            return _response(exc.http_status, {"Error": {"Code": exc.code, "Message": exc.message}}, request_id)
        except Exception:  # noqa: BLE001 - a bug: the caller gets a 500 naming the request id
            log.exception("internal error", extra={"request_id": request_id, "operation": model.name})
            return _response(500, {"Error": {"Code": "InternalServerException",
                                             "Message": f"An internal error occurred; quote request id "
                                                        f"{request_id} when reporting it."}}, request_id)
        return _response(200, dict(result or {}), request_id)

    client.meta.events.register("before-call", before_call)
    client.service = service
    return client
