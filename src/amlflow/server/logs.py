"""Structured logs for ``amlflow serve``: one JSON object per line.

Every record carries ``ts``, ``level``, ``logger`` and ``msg``; the access log adds ``request_id``,
``operation``, ``status``, ``error`` and ``duration_ms`` (see :mod:`amlflow.server.app`), and errors add
``exc`` with the traceback (which never goes into a response).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["JsonFormatter", "configure_logging"]

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Format a record as a single JSON line, with every ``extra=`` field as a key."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        line = json.dumps(out, default=str, ensure_ascii=False)
        if not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate in a message: escape it, keep the line
                line = json.dumps(out, default=str, ensure_ascii=True)
        return line


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send amlflow's and uvicorn's logs to ``stream`` (stderr) as JSON lines at ``level``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level: expected one of debug, info, warning, error, critical; got {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("amlflow", "uvicorn", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(numeric)
        log.propagate = False
    # uvicorn's own access log would duplicate ours (and has no request id)
    logging.getLogger("uvicorn.access").disabled = True
