"""Connection limits of the HTTP listener: how long a client may take, how many may be connected.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``), concurrent connections and
requests (``limit_concurrency``: beyond it a 503) and the size of a request head (h11's
``h11_max_incomplete_event_size``), but nothing bounds how long a client may take to send its request
head: a client that connects and sends nothing, or half a header, holds its connection forever.
:class:`HeaderTimeoutProtocol` adds that timer to uvicorn's h11 protocol. The body has its own deadline,
enforced by the app while it reads the body (:func:`amlflow.server.app.create_app`, ``body_timeout``):
a half-sent body gets ``408 RequestTimeoutException`` and the connection is closed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionLimits", "HeaderTimeoutProtocol", "protocol_with_header_timeout"]

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 5
DEFAULT_MAX_CONNECTIONS = 1000
#: Largest request head (request line and headers) in bytes; h11 answers 400 beyond it.
MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    """The listener's timeouts and caps (every one has an ``amlflow serve`` flag).

    Attributes:
        header_timeout: seconds a client has to send a complete request head, from connecting or from
            the first byte of a next request on a kept-alive connection; then the connection is closed.
        body_timeout: seconds to receive the whole body once the head is in; then 408.
        keep_alive_timeout: seconds an idle kept-alive connection stays open between requests.
        max_connections: concurrent connections (and requests) before uvicorn answers 503;
            ``None``: no cap.
    """

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    keep_alive_timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT
    max_connections: int | None = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number of seconds, got {getattr(self, name)}")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError(f"max_connections: expected a positive number, got {self.max_connections}")

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config`` enforcing these limits (all but the body's)."""
        return {
            "http": protocol_with_header_timeout(self.header_timeout),
            "timeout_keep_alive": self.keep_alive_timeout,
            "limit_concurrency": self.max_connections,
            "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        }


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head does not arrive in time."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the head timer as soon as the client connects."""
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        """Arm the timer on the first bytes of an incomplete request head; stop it once a head is parsed."""
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()
        elif self._header_timer is None:
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the timer with the connection."""
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.debug("request head not received within %s s; closing", self.header_timeout)
            self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    """A :class:`HeaderTimeoutProtocol` subclass with ``header_timeout = seconds`` (for ``Config(http=)``)."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": float(seconds)})
