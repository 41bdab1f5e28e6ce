"""``amlflow serve``: the service behind the HTTP app, under uvicorn, in the foreground.

Order of events:

1. bind the listening socket (port 0 → a free port), so the server knows its URL;
2. build the service with that URL as its realtime ``EndpointUrl`` (botocore sends ``Predict`` there);
3. print ``amlflow serving on <url>`` on stdout (the bound address, even with ``--public-url``), then
   serve;
4. on SIGTERM / SIGINT (uvicorn's handlers): stop accepting, let open requests finish, then — in the
   app's shutdown hook — shut the service's job pool down, waiting up to ``shutdown_timeout`` seconds
   for running jobs; jobs still running after that are left to the service's restart recovery
   (resumed or marked FAILED when the next server starts on the same home).
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from amlflow.server.app import DEFAULT_MAX_BODY_BYTES, create_app
from amlflow.server.connections import ConnectionLimits
from amlflow.server.predict import DEFAULT_PREDICT_TIMEOUT, DEFAULT_PREDICT_WORKERS
from amlflow.server.runner import bind_socket, socket_url

__all__ = ["ServeOptions", "build_service", "run", "shutdown_service"]

log = logging.getLogger("amlflow.server")

#: 0.5 ms instead of CPython's 5 ms (see :func:`run`).
DEFAULT_SWITCH_INTERVAL = 0.0005


@dataclass
class ServeOptions:
    """Everything ``amlflow serve`` needs besides the service settings.

    Attributes:
        host: address to bind (default loopback only).
        port: TCP port; 0 picks a free one.
        credentials: access key id → secret; empty: no signature checks.
        max_body_bytes: request body limit.
        shutdown_timeout: seconds to wait for running jobs on shutdown.
        advertised_url: the ``EndpointUrl`` to advertise instead of the bound address (a proxy's URL).
        log_level: ``debug``/``info``/``warning``/``error``.
        limits: header/body/keep-alive timeouts and the connection cap.
        predict_workers: threads that run ``Predict``.
        predict_timeout: seconds a ``Predict`` may take (queueing included).
        switch_interval: the interpreter's thread switch interval in seconds (``sys.setswitchinterval``):
            how long the event loop may wait for the GIL while predictions compute.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    credentials: Mapping[str, str] = field(default_factory=dict)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    shutdown_timeout: float = 30.0
    advertised_url: str | None = None
    log_level: str = "info"
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    predict_workers: int = DEFAULT_PREDICT_WORKERS
    predict_timeout: float = DEFAULT_PREDICT_TIMEOUT
    switch_interval: float = DEFAULT_SWITCH_INTERVAL


def build_service(settings: Any, endpoint_url: str) -> Any:
    """Build ``amlflow.service.Service`` for ``settings``, advertising ``endpoint_url`` for Predict."""
    from amlflow.service import Service

    params = inspect.signature(Service).parameters
    if "endpoint_url" in params:
        return Service(settings, endpoint_url=endpoint_url)
    service = Service(settings)
    setter = getattr(service, "set_endpoint_url", None)
    if callable(setter):
        setter(endpoint_url)
    else:
        service.endpoint_url = endpoint_url
    return service


def shutdown_service(service: Any, timeout: float) -> None:
    """Stop the service's job pool, waiting at most ``timeout`` seconds for running jobs."""
    for name in ("shutdown", "close"):
        method = getattr(service, name, None)
        if not callable(method):
            continue
        params = inspect.signature(method).parameters
        done = threading.Event()

        def call(method: Any = method, params: Any = params, done: threading.Event = done) -> None:
            try:
                if "timeout" in params:
                    method(timeout=timeout)
                elif "wait" in params:
                    method(wait=True)
                else:
                    method()
            finally:
                done.set()

        worker = threading.Thread(target=call, name="amlflow-shutdown", daemon=True)
        worker.start()
        if not done.wait(timeout + 1.0):
            log.warning(
                "jobs still running after the shutdown timeout; they will be recovered on restart",
                extra={"timeout_s": timeout},
            )
        return


def run(settings: Any, options: ServeOptions) -> None:
    """Serve until SIGTERM/SIGINT; blocks. Prints the URL on stdout once bound."""
    # Predict runs in worker threads that hold the GIL while they compute; the event loop gets it back
    # only at the interpreter's switch interval (5 ms by default), several times per request. A shorter
    # interval keeps /health and cheap operations answered within milliseconds under costly predictions
    # (bench/hardening_bench.py). This process is the server's own, so the global setting is ours.
    sys.setswitchinterval(options.switch_interval)
    sock = bind_socket(options.host, options.port)
    url = options.advertised_url or socket_url(sock)
    service = build_service(settings, url)
    app = create_app(
        service,
        credentials=dict(options.credentials) or None,
        max_body_bytes=options.max_body_bytes,
        health=_health_probe(service),
        on_shutdown=lambda: shutdown_service(service, options.shutdown_timeout),
        body_timeout=options.limits.body_timeout,
        predict_workers=options.predict_workers,
        predict_timeout=options.predict_timeout,
    )
    config = uvicorn.Config(
        app,
        log_level=options.log_level,
        access_log=False,
        lifespan="on",
        log_config=None,
        timeout_graceful_shutdown=max(1, int(options.shutdown_timeout)),
        server_header=False,
        **options.limits.uvicorn_options(),
    )
    server = uvicorn.Server(config)
    log.info(
        "starting",
        extra={
            "url": url,
            "bound": socket_url(sock),
            "home": str(getattr(settings, "home", "")),
            "storage": getattr(settings, "storage", ""),
            "auth": "sigv4" if options.credentials else "none",
            "header_timeout_s": options.limits.header_timeout,
            "body_timeout_s": options.limits.body_timeout,
            "keep_alive_timeout_s": options.limits.keep_alive_timeout,
            "max_connections": options.limits.max_connections,
            "predict_workers": options.predict_workers,
            "predict_timeout_s": options.predict_timeout,
        },
    )
    # the address this replica listens on (behind --public-url, the advertised URL is in the log line)
    print(f"amlflow serving on {socket_url(sock)}", flush=True)
    sys.stdout.flush()
    server.run(sockets=[sock])


def _health_probe(service: Any) -> Any:
    probe = getattr(service, "health", None)
    if callable(probe):
        return probe
    return None
