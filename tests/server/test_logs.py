"""Structured request logs: one JSON line per request with its request id, operation, status, duration."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from amlflow.server.app import create_app
from amlflow.server.logs import configure_logging
from amlflow.server.runner import ServerThread
from tests.server.fakes import FakeDispatcher

pytestmark = pytest.mark.server


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    names = ("amlflow", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        n: (
            logging.getLogger(n).handlers[:],
            logging.getLogger(n).level,
            logging.getLogger(n).propagate,
            logging.getLogger(n).disabled,
        )
        for n in names
    }
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    for n, (handlers, level, propagate, disabled) in saved.items():
        log = logging.getLogger(n)
        log.handlers[:] = handlers
        log.setLevel(level)
        log.propagate = propagate
        log.disabled = disabled


def test_access_log_lines_are_json_with_request_id(log_stream: io.StringIO) -> None:
    with ServerThread(lambda url: create_app(FakeDispatcher(url))) as srv:
        ok = httpx.post(
            srv.url,
            headers={"X-Amz-Target": "AmazonML_20141212.GetMLModel"},
            content=b'{"MLModelId": "ml-1"}',
        )
        bug = httpx.post(
            srv.url,
            headers={"X-Amz-Target": "AmazonML_20141212.GetMLModel"},
            content=b'{"MLModelId": "boom"}',
        )
    records = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    by_id = {r.get("request_id"): r for r in records if r["logger"] == "amlflow.server.access"}
    first = by_id[ok.headers["x-amzn-RequestId"]]
    assert first["operation"] == "GetMLModel" and first["status"] == 200 and first["level"] == "info"
    assert first["duration_ms"] >= 0 and first["error"] is None
    failed = by_id[bug.headers["x-amzn-RequestId"]]
    assert failed["status"] == 500 and failed["error"] == "InternalServerException"
    traced = [
        r
        for r in records
        if r["logger"] == "amlflow.server" and r.get("request_id") == bug.headers["x-amzn-RequestId"]
    ]
    assert traced and "RuntimeError" in traced[0]["exc"]  # the traceback goes to the log, not the response
    assert "RuntimeError" not in bug.text


def test_bad_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("chatty")
