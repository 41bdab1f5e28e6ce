"""Helpers of the HTTP-layer tests (imported by conftest and by test modules; no fixtures here).

* :func:`make_client` — a real boto3 ``machinelearning`` client for a URL;
* :class:`AmlServer` — the real service behind the real app in a thread on 127.0.0.1:0;
* :class:`ServeProcess` — ``amlflow serve`` as a real process (port 0, JSON log to a file);
* :func:`wait_for` — poll ``get_<kind>`` until a final status.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from amlflow.server.app import create_app
from amlflow.server.runner import ServerThread

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
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=bucket)
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


def wait_for(ml: Any, kind: str, entity_id: str, *, timeout: float = 300.0) -> dict[str, Any]:
    """Poll ``get_<kind>`` until COMPLETED or FAILED; return the last response."""
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


class ServeProcess:
    """``amlflow serve --port 0`` as a real process, its JSON-lines log in ``<tmp>/server.log``.

    Args:
        tmp_path: a directory for the home and the log.
        extra: more ``serve`` flags.
        env: more environment variables.

    Attributes:
        url: the URL the server printed.
        log_path: its log file.
    """

    def __init__(self, tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.log_path = tmp_path / "server.log"
        log = self.log_path.open("w")
        cmd = [sys.executable, "-m", "amlflow.cli", "serve", "--port", "0", "--home", str(tmp_path / "home")]
        self.proc = subprocess.Popen(
            [*cmd, "--shutdown-timeout", "20", *extra],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **(env or {})},
        )
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("amlflow serving on http://127.0.0.1:"):
            self.proc.kill()
            raise AssertionError(line + self.log_path.read_text())
        self.url = line.split()[-1]
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        self.address = (host, int(port))

    def stop(self) -> int:
        """SIGTERM and wait; return the exit status (its stdout pipe is closed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON records of the log so far."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
