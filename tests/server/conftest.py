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


# --------------------------------------------------------------------------- the real service, over HTTP


class AmlServer:
    """A real ``amlflow`` service behind the real app, on 127.0.0.1:<free port>, plus its storage.

    Attributes:
        url: the server's URL (also the realtime ``EndpointUrl`` it advertises).
        service: the ``amlflow.service.Service`` instance.
        settings: its settings.
    """

    def __init__(self, settings: Any, *, s3_url: str | None = None, **app_kwargs: Any) -> None:
        from amlflow.server.serve import build_service, shutdown_service

        self.settings = settings
        self.s3_url = s3_url
        self.service: Any = None

        def factory(url: str) -> Any:
            self.service = build_service(settings, url)
            return create_app(
                self.service, on_shutdown=lambda: shutdown_service(self.service, 30), **app_kwargs
            )

        self._thread = ServerThread(factory)
        self.url = self._thread.start()

    def client(self, **kwargs: Any) -> Any:
        """A boto3 ``machinelearning`` client for this server."""
        return make_client(self.url, **kwargs)

    def s3(self) -> Any:
        """A boto3 S3 client on the S3 endpoint the service uses (moto), or None in local mode."""
        if self.s3_url is None:
            return None
        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name=REGION,
            aws_access_key_id="x",
            aws_secret_access_key="y",
        )

    def put(self, uri: str, data: bytes) -> str:
        """Store ``data`` at ``s3://bucket/key`` where the service reads it; returns ``uri``."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if self.s3_url is None:
            path = self.settings.resolved_storage_root() / bucket / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            s3 = self.s3()
            try:
                s3.create_bucket(Bucket=bucket)
            except s3.exceptions.BucketAlreadyOwnedByYou:
                pass
            s3.put_object(Bucket=bucket, Key=key, Body=data)
        return uri

    def get(self, uri: str) -> bytes:
        """Read ``s3://bucket/key`` from the service's storage."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if self.s3_url is None:
            return (self.settings.resolved_storage_root() / bucket / key).read_bytes()
        return self.s3().get_object(Bucket=bucket, Key=key)["Body"].read()

    def list(self, prefix_uri: str) -> list[str]:
        """Keys under ``s3://bucket/prefix``."""
        bucket, _, prefix = prefix_uri.removeprefix("s3://").partition("/")
        if self.s3_url is None:
            root = self.settings.resolved_storage_root() / bucket
            return sorted(
                str(p.relative_to(root))
                for p in root.rglob("*")
                if p.is_file() and str(p.relative_to(root)).startswith(prefix)
            )
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        """Graceful stop (jobs get up to 30 s)."""
        self._thread.stop(timeout=60)


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


def wait_for(ml: Any, kind: str, entity_id: str, *, timeout: float = 300.0) -> dict[str, Any]:
    """Poll ``get_<kind>`` until COMPLETED or FAILED; return the last response."""
    import time

    getter = getattr(ml, f"get_{kind}")
    key = {
        "data_source": "DataSourceId",
        "ml_model": "MLModelId",
        "evaluation": "EvaluationId",
        "batch_prediction": "BatchPredictionId",
    }[kind]
    deadline = time.monotonic() + timeout
    while True:
        out = getter(**{key: entity_id})
        if out["Status"] in ("COMPLETED", "FAILED", "DELETED") or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def _service_available() -> bool:
    try:
        from amlflow.service import Service  # noqa: F401
    except ImportError:
        return False
    return True


#: Tests that drive the real service: skipped, with this reason, until ``amlflow.service.Service`` exists.
requires_service = pytest.mark.skipif(
    not _service_available(), reason="amlflow.service.Service is not implemented yet (issue 2)"
)
