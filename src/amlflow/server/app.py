"""The ASGI application: ``POST /`` speaking AWS JSON 1.1, plus ``GET /health``.

The app is transport only. Each AWS request goes: body size limit → optional SigV4 check →
``X-Amz-Target`` → JSON body → ``dispatcher.dispatch(operation, params)`` (run in a worker thread, the
service is synchronous) → the result shaped to the operation's output by :mod:`amlflow.server.protocol`.
Nothing but transport work runs on the event loop: ``Predict`` runs in its own worker threads with a
per-prediction time budget (:mod:`amlflow.server.predict`), every other operation in the shared pool.

Any error carries ``{"__type", "message"}`` plus the ``x-amzn-ErrorType`` header; every response
carries ``x-amzn-RequestId``. Errors raised by the service are recognised by their ``code``,
``message`` and ``http_status`` attributes (``amlflow.service.errors.AmlError``); anything else is a bug:
it is logged with its traceback and the request id, and the client gets a 500
``InternalServerException`` naming only the request id.

``Predict`` is accepted on the same listener whatever the ``Host`` header says, because botocore sends it
to the host of ``PredictEndpoint`` (``switch_host_machinelearning``), which is this server's own URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from amlflow.server.auth import SignedRequest, SigV4Verifier
from amlflow.server.connections import DEFAULT_BODY_TIMEOUT
from amlflow.server.predict import DEFAULT_PREDICT_TIMEOUT, DEFAULT_PREDICT_WORKERS, PredictPool
from amlflow.server.protocol import (
    CONTENT_TYPE,
    ProtocolError,
    dump_json,
    error_payload,
    parse_body,
    parse_target,
    serialize_output,
)
from amlflow.server.validate import validate_input

__all__ = ["DEFAULT_MAX_BODY_BYTES", "Dispatcher", "create_app"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024

access_log = logging.getLogger("amlflow.server.access")
error_log = logging.getLogger("amlflow.server")


class Dispatcher(Protocol):
    """What the app needs from the service: ``amlflow.service.Service`` satisfies it."""

    def dispatch(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run one operation with its wire parameters and return its wire result."""
        ...


def create_app(
    dispatcher: Dispatcher,
    *,
    credentials: Mapping[str, str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    health: Callable[[], Mapping[str, Any]] | None = None,
    verifier: SigV4Verifier | None = None,
    on_shutdown: Callable[[], None] | None = None,
    validate: bool = True,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    predict_workers: int = DEFAULT_PREDICT_WORKERS,
    predict_timeout: float = DEFAULT_PREDICT_TIMEOUT,
) -> Starlette:
    """Build the Starlette app around ``dispatcher``.

    Args:
        dispatcher: the service (anything with ``dispatch(operation, params) -> dict``).
        credentials: access key id → secret; when given (or ``verifier`` is), every AWS request must
            carry a valid SigV4 signature. ``None`` accepts any request, signed or not (like moto).
        max_body_bytes: larger request bodies get 413 ``RequestEntityTooLargeException``.
        health: extra fields for ``GET /health`` (e.g. job counts); must be cheap.
        verifier: a ready :class:`SigV4Verifier` (tests inject one with a fake clock).
        on_shutdown: called (in a worker thread) when the server shuts down, after it stopped accepting
            connections and open requests finished: ``amlflow serve`` lets running jobs finish here.
        validate: check every request against botocore's input shape (lengths, patterns, enums, ranges)
            before it reaches the service (:mod:`amlflow.server.validate`); skipped for a dispatcher whose
            ``validates_input`` attribute is true (it does the same check itself).
        body_timeout: seconds to receive the whole body once the request head is in; a client still
            sending after that gets 408 ``RequestTimeoutException`` and the connection is closed.
        predict_workers: threads that run ``Predict`` (apart from the pool other operations share).
        predict_timeout: seconds a ``Predict`` may take, queueing included; then
            ``LimitExceededException``.
    """
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes: expected a positive number of bytes, got {max_body_bytes}")
    if not body_timeout > 0:
        raise ValueError(f"body_timeout: expected a positive number of seconds, got {body_timeout}")
    if verifier is None and credentials:
        verifier = SigV4Verifier(credentials)
    # A dispatcher that validates every request itself (amlflow.service.Service does, for its in-process
    # callers too) is not validated twice: on Predict that second pass was a measurable share of the time.
    validate = validate and not getattr(dispatcher, "validates_input", False)
    predictions = PredictPool(predict_workers, predict_timeout)
    started = time.time()

    async def aws(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        t0 = time.perf_counter()
        operation = "-"
        try:
            body = await _read_body(request, max_body_bytes, body_timeout)
            if verifier is not None:
                verifier.verify(
                    SignedRequest(
                        method=request.method,
                        path=request.scope.get("raw_path", b"/").decode("latin-1") or "/",
                        query=request.scope.get("query_string", b"").decode("latin-1"),
                        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
                        body=body,
                    )
                )
            operation = parse_target(request.headers.get("x-amz-target"))
            params = parse_body(body)
            if validate:
                validate_input(operation, params)
            if operation == "Predict":
                result = await predictions.run(dispatcher.dispatch, operation, params)
            else:
                result = await run_in_threadpool(dispatcher.dispatch, operation, params)
            payload = serialize_output(operation, result)
            response = Response(dump_json(payload), status_code=200, media_type=CONTENT_TYPE)
        except ClientDisconnect:
            # The client went away mid-request: nobody to answer, nothing went wrong here.
            response = _error_response("ClientDisconnected", "The client closed the connection.", 400)
        except Exception as exc:
            response = _exception_response(exc, request_id, operation)
        response.headers["x-amzn-RequestId"] = request_id
        duration_ms = (time.perf_counter() - t0) * 1000.0
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "operation": operation,
                    "status": response.status_code,
                    "error": response.headers.get("x-amzn-ErrorType"),
                    "duration_ms": round(duration_ms, 3),
                    "client": request.client.host if request.client else None,
                },
            )
        return response

    async def health_check(request: Request) -> Response:
        payload: dict[str, Any] = {
            "status": "ok",
            "service": "amlflow",
            "uptime_seconds": round(time.time() - started, 3),
            "auth": "sigv4" if verifier is not None else "none",
        }
        try:
            from amlflow import __version__

            payload["version"] = __version__
            if health is not None:
                payload.update(health())
        except Exception:
            error_log.exception("health probe failed")
            payload["status"] = "degraded"
        response = Response(dump_json(payload), media_type="application/json")
        response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        return response

    async def not_allowed(request: Request) -> Response:
        response = _error_response(
            "UnknownOperationException",
            f"{request.method} {request.url.path} is not part of this API: send AWS JSON 1.1 requests "
            f"as POST with an X-Amz-Target header (GET /health for status).",
            405 if request.url.path == "/" else 404,
        )
        response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        return response

    routes = [
        Route("/health", health_check, methods=["GET", "HEAD"]),
        Route("/{path:path}", aws, methods=["POST"]),
        Route("/{path:path}", not_allowed, methods=["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            predictions.shutdown()
        if on_shutdown is not None:
            await run_in_threadpool(on_shutdown)

    return Starlette(routes=routes, lifespan=lifespan)


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ProtocolError("SerializationException", "Content-Length is not a number.") from None
        if size > limit:
            raise _too_large(size, limit)
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise _too_large(total, limit)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"The request body was not received within {timeout:g} seconds ({total} bytes arrived)."
        ) from None
    return b"".join(chunks)


class RequestTimeout(ProtocolError):
    """The body did not arrive in time: 408, and the connection is closed (the client is mid-body)."""

    def __init__(self, message: str) -> None:
        super().__init__("RequestTimeoutException", message, 408)


def _too_large(size: int, limit: int) -> ProtocolError:
    return ProtocolError(
        "RequestEntityTooLargeException",
        f"Request body of {size} bytes or more exceeds the limit of {limit} bytes.",
        413,
    )


def _exception_response(exc: Exception, request_id: str, operation: str) -> Response:
    """The JSON error reply for ``exc``; cannot fail, whatever the exception holds."""
    try:
        code, message, status = _service_error(exc)
        if code is not None:
            response = _error_response(code, message, status)
            if isinstance(exc, RequestTimeout):
                response.headers["connection"] = "close"
            return response
        error_log.exception("internal error", extra={"request_id": request_id, "operation": operation})
    except Exception:  # a broken __str__, an unloggable message, ...: still a JSON error
        error_log.error("error while reporting an error", extra={"request_id": request_id})
    return _internal_error(request_id)


def _service_error(exc: Exception) -> tuple[str | None, str, int]:
    code = getattr(exc, "code", None)
    status = getattr(exc, "http_status", None)
    if isinstance(code, str) and code and isinstance(status, int) and 400 <= status <= 599:
        message = getattr(exc, "message", None)
        return code, str(message if message is not None else exc), status
    return None, "", 500


def _internal_error(request_id: str) -> Response:
    return _error_response(
        "InternalServerException",
        f"An internal error occurred; quote request id {request_id} when reporting it.",
        500,
    )


def _error_response(code: str, message: str, status: int) -> Response:
    payload = error_payload(code, message)
    response = Response(dump_json(payload), status_code=status, media_type=CONTENT_TYPE)
    response.headers["x-amzn-ErrorType"] = payload["__type"].encode("ascii", "replace").decode("ascii")
    return response
