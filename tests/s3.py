"""moto's threaded S3 server for the tests (not a test module): one place that starts it and points this
process's environment (and any child it starts) at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

__all__ = ["moto_s3_server"]


@contextmanager
def moto_s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 on 127.0.0.1 (no buckets yet), AWS_ENDPOINT_URL_S3 and dummy credentials set; its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_ACCESS_KEY_ID": "moto",
        "AWS_SECRET_ACCESS_KEY": "moto",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        yield url
    finally:
        server.stop()
