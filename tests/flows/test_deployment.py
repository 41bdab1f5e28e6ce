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
from typing import Any

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


def _watch(deployment: str, params: dict[str, Any], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            PREFECT,
            "deployment",
            "run",
            deployment,
            "--params",
            json.dumps(params),
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


def test_overlapping_deployment_runs_share_one_home_and_run_every_job_once(
    prefect_server: dict[str, str], tmp_path: Path
) -> None:
    """Two runs of wine-regression and the nightly re-training at once, on one process worker: three flow
    processes with embedded services on one AMLFLOW_HOME (issue 9). All complete; every AML job was
    started exactly once (counted in the job logs)."""
    env = prefect_server
    _run([PREFECT, "work-pool", "create", "amlflow-process", "--type", "process"], env)
    _run(
        [PREFECT, "--no-prompt", "deploy", "--name", "wine-regression", "--name", "retrain-wine-nightly"], env
    )
    watches = [
        _watch("wine-pipeline/wine-regression", {"output_dir": str(tmp_path / "a")}, env),
        _watch("wine-pipeline/wine-regression", {"output_dir": str(tmp_path / "b")}, env),
        _watch("retrain-champion/retrain-wine-nightly", {"output_dir": str(tmp_path / "c")}, env),
    ]
    outputs: list[str] = []
    try:
        time.sleep(3)  # the runs are scheduled before the worker polls
        worker = _run(
            [PREFECT, "worker", "start", "--pool", "amlflow-process", "--run-once", "--limit", "3"],
            env,
            timeout=600,
        )
        for watch in watches:
            outputs.append(watch.communicate(timeout=600)[0])
    finally:
        for watch in watches:
            if watch.poll() is None:
                watch.kill()
    for watch, watched in zip(watches, outputs, strict=True):
        assert watch.returncode == 0 and "COMPLETED" in watched.upper(), (
            f"a run did not complete:\n{watched}\nworker:\n{worker.stdout}\n{worker.stderr}"
        )
    logs = sorted((Path(env["AMLFLOW_HOME"]) / "logs").rglob("*.log"))
    assert len(logs) >= 8, logs  # 3 datasources, models, evaluations, batch predictions
    owners = set()
    for log in logs:
        starts = [line for line in log.read_text().splitlines() if ": started by " in line]
        assert len(starts) == 1, f"{log.name}: started {len(starts)} times:\n{log.read_text()}"
        owners.add(starts[0].rsplit("started by ", 1)[1])
    assert len(owners) >= 2, f"the flow processes did not overlap: {owners}"
