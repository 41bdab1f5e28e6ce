"""`amlflow serve` as a real process: port 0 prints the URL, JSON logs with request ids, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server.harness import ServeProcess, make_client

pytestmark = pytest.mark.server


def test_serve_port_zero_health_logs_and_sigterm(tmp_path: Path) -> None:
    srv = ServeProcess(tmp_path)
    url = srv.url
    try:
        health = httpx.get(url + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ml = make_client(url)
        response = ml.describe_ml_models()
        request_id = response["ResponseMetadata"]["RequestId"]
        with pytest.raises(ml.exceptions.ResourceNotFoundException):
            ml.get_ml_model(MLModelId="ml-none")
    finally:
        returncode = srv.stop()
    # uvicorn re-raises the signal after a graceful shutdown: the process ends by SIGTERM
    assert returncode in (0, -signal.SIGTERM)
    lines = srv.log_lines()
    access = [rec for rec in lines if rec.get("logger") == "amlflow.server.access"]
    ours = [rec for rec in access if rec["request_id"] == request_id]
    assert ours and ours[0]["operation"] == "DescribeMLModels" and ours[0]["status"] == 200
    assert isinstance(ours[0]["duration_ms"], float)
    errors = [rec for rec in access if rec["operation"] == "GetMLModel"]
    assert errors and errors[0]["status"] == 400 and errors[0]["error"] == "ResourceNotFoundException"
    assert any(rec.get("msg") == "starting" and rec.get("url") == url for rec in lines)


def test_sigterm_lets_a_running_job_finish(tmp_path: Path, data_dir: Path) -> None:
    """A datasource job started just before SIGTERM is COMPLETED when the next server starts."""
    storage = tmp_path / "home" / "s3" / "bucket"
    storage.mkdir(parents=True)
    (storage / "wine.csv").write_bytes((data_dir / "wine" / "winequality-red-comma.csv").read_bytes())
    from tests.server.aml_data import wine_regression_schema

    with ServeProcess(tmp_path) as srv:
        ml = make_client(srv.url)
        ml.create_data_source_from_s3(
            DataSourceId="ds-term",
            ComputeStatistics=True,
            DataSpec={"DataLocationS3": "s3://bucket/wine.csv", "DataSchema": wine_regression_schema()},
        )
    with ServeProcess(tmp_path) as srv2:
        ml2 = make_client(srv2.url)
        deadline = time.monotonic() + 60
        status = ml2.get_data_source(DataSourceId="ds-term")
        while status["Status"] not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
            time.sleep(0.2)
            status = ml2.get_data_source(DataSourceId="ds-term")
        assert status["Status"] == "COMPLETED", status.get("Message")


def test_serve_requires_signatures_when_keys_are_set(tmp_path: Path) -> None:
    env = {"AMLFLOW_ACCESS_KEY_ID": "AKIDSERVE", "AMLFLOW_SECRET_ACCESS_KEY": "sekrit"}
    with ServeProcess(tmp_path, env=env) as srv:
        url = srv.url
        good = make_client(url, key="AKIDSERVE", secret="sekrit")
        assert "Results" in good.describe_ml_models()
        bad = make_client(url, key="AKIDSERVE", secret="wrong")
        with pytest.raises(bad.exceptions.ClientError) as info:
            bad.describe_ml_models()
        assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert httpx.get(url + "/health", timeout=10).json()["auth"] == "sigv4"


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    from amlflow.server.runner import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "amlflow.cli",
                "serve",
                "--port",
                str(port),
                "--home",
                str(tmp_path / "h"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        sock.close()
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
