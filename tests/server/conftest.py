"""Fixtures for the HTTP layer: real uvicorn servers on 127.0.0.1:0 in threads, real boto3 clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from amlflow.server.app import create_app
from amlflow.server.runner import ServerThread
from tests.server.fakes import FakeDispatcher
from tests.server.harness import REGION, AmlServer, make_client


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


def _settings(home: Any, **overrides: Any) -> Any:
    from amlflow.settings import Settings

    return Settings(home=home, storage_root=home / "s3", max_jobs=2, **overrides)


@pytest.fixture(scope="module")
def aml_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmlServer]:
    """The real service with local storage, shared by a test module."""
    server = AmlServer(_settings(tmp_path_factory.mktemp("aml-home")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ml(aml_server: AmlServer) -> Any:
    """boto3 client for :func:`aml_server`."""
    return aml_server.client()


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    """moto's ThreadedMotoServer on 127.0.0.1:<free port>: the S3 endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def s3_server(moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmlServer]:
    """The real service in ``s3`` storage mode, reading and writing through moto (AWS_ENDPOINT_URL_S3)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL_S3", moto_s3)
        mp.setenv("AWS_ACCESS_KEY_ID", "moto")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "moto")
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.delenv("AWS_PROFILE", raising=False)
        server = AmlServer(_settings(tmp_path_factory.mktemp("aml-home-s3"), storage="s3"), s3_url=moto_s3)
        yield server
        server.stop()
