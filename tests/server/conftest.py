"""Fixtures for the HTTP layer: real uvicorn servers on 127.0.0.1:0 in threads, real boto3 clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from amlflow.server.app import create_app
from amlflow.server.runner import ServerThread
from tests.server.fakes import FakeDispatcher

REGION = "us-east-1"


def make_client(url: str, *, key: str = "x", secret: str = "y", retries: int = 1) -> Any:
    """A real boto3 ``machinelearning`` client for ``url`` (no retries: errors surface at once)."""
    return boto3.client(
        "machinelearning",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"mode": "standard", "max_attempts": retries}, read_timeout=60),
    )


@pytest.fixture(scope="module")
def fake_server() -> Iterator[ServerThread]:
    """The app around a :class:`FakeDispatcher` (no service needed): protocol-level tests."""
    srv = ServerThread(lambda url: create_app(FakeDispatcher(url)))
    with srv:
        yield srv


@pytest.fixture(scope="module")
def fake_ml(fake_server: ServerThread) -> Any:
    """boto3 client for :func:`fake_server`."""
    return make_client(fake_server.url)


@pytest.fixture
def client_factory() -> Callable[..., Any]:
    """Build more clients (other keys, other URLs)."""
    return make_client
