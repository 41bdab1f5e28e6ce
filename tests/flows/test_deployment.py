"""prefect.yaml for real: a Prefect server, a process work pool, `prefect deploy`, a worker, a watched run.

Slow (a server and a worker start as subprocesses): ``pytest -m slow tests/flows/test_deployment.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))

pytestmark = [pytest.mark.slow, pytest.mark.ci, pytest.mark.prefect]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real `prefect server start` on a free port with its own PREFECT_HOME; yields the environment."""
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "AMLFLOW_HOME": str(tmp_path / "amlflow-home"),
    }
    env.pop("PREFECT_PROFILES_PATH", None)
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("prefect server did not start:\n" + (tmp_path / "server.log").read_text())
            time.sleep(0.5)
        yield env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def _run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_deploy_and_run_wine_regression_on_a_process_worker(
    prefect_server: dict[str, str], tmp_path: Path
) -> None:
    env = prefect_server
    out = tmp_path / "outputs"
    _run([PREFECT, "work-pool", "create", "amlflow-process", "--type", "process"], env)
    _run([PREFECT, "--no-prompt", "deploy", "--name", "wine-regression"], env)
    listed = _run([PREFECT, "deployment", "ls"], env).stdout
    assert "wine-regression" in listed

    watch = subprocess.Popen(
        [
            PREFECT,
            "deployment",
            "run",
            "wine-pipeline/wine-regression",
            "--params",
            json.dumps({"output_dir": str(out)}),
            "--watch",
            "--watch-timeout",
            "600",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(3)  # the run is scheduled before the worker polls
        worker = _run(
            [PREFECT, "worker", "start", "--pool", "amlflow-process", "--run-once"], env, timeout=600
        )
        watched, _ = watch.communicate(timeout=600)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, (
        f"watched run did not complete:\n{watched}\nworker:\n{worker.stdout}\n{worker.stderr}"
    )
    assert "COMPLETED" in watched.upper()

    report = json.loads((out / "wine-regression" / "evaluation-report.json").read_text())
    assert report["metric_name"] == "RegressionRMSE" and report["metric"] > 0
    assert list((out / "wine-regression").glob("bp-*.gz")), (
        "the batch prediction was copied to the output folder"
    )
