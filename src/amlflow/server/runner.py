"""Running the app under uvicorn: on a socket bound first, so the server knows its own URL.

The listening socket is bound *before* the service is built, so the service can advertise the real
``host:port`` as its realtime ``EndpointUrl`` even when port 0 asked the OS for a free port (botocore
sends ``Predict`` to that URL).

* :class:`ServerThread` — uvicorn in a background thread (tests, benchmarks; like moto's
  ``ThreadedMotoServer``): ``with ServerThread(factory) as srv: srv.url``.
* :func:`bind_socket`, :func:`socket_url` — helpers shared with ``amlflow serve``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from amlflow.server.connections import ConnectionLimits

__all__ = ["ServerThread", "bind_socket", "socket_url"]

AppFactory = Callable[[str], Any]


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """Bind a listening TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        OSError: when the address cannot be bound (in use, not local, ...).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP; without it each response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket, advertised_host: str | None = None) -> str:
    """``http://host:port`` of a bound socket; a wildcard host is advertised as loopback."""
    host, port = sock.getsockname()[:2]
    host = advertised_host or host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class ServerThread:
    """A real uvicorn server on ``host:port`` in a daemon thread.

    Args:
        app_factory: called with the server's URL (``http://127.0.0.1:<port>``), returns the ASGI app.
        host: the address to bind (default loopback).
        port: the port (0: a free one).
        log_level: uvicorn's log level.
        graceful_timeout: seconds to wait for open requests on stop.
        limits: the listener's header/keep-alive timeouts and connection cap (the body timeout is the
            app's, :func:`amlflow.server.app.create_app`).

    Example:
        >>> with ServerThread(lambda url: create_app(service)) as srv:   # doctest: +SKIP
        ...     boto3.client("machinelearning", endpoint_url=srv.url)
    """

    def __init__(
        self,
        app_factory: AppFactory,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        graceful_timeout: int = 5,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self._factory = app_factory
        self._host = host
        self._port = port
        self._log_level = log_level
        self._graceful_timeout = graceful_timeout
        self._limits = limits or ConnectionLimits()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None
        self.url = ""
        self.app: Any = None

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; return the URL once the server accepts connections."""
        self._sock = bind_socket(self._host, self._port)
        self.url = socket_url(self._sock)
        self.app = self._factory(self.url)
        config = uvicorn.Config(
            self.app,
            log_level=self._log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=self._graceful_timeout,
            log_config=None,
            **self._limits.uvicorn_options(),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"amlflow-server-{self.url}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"server on {self.url} failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on {self.url} did not start within {timeout} s")
            time.sleep(0.01)
        return self.url

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:
            self._error = exc

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit (graceful: open requests finish) and wait for its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
