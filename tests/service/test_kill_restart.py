"""Restart recovery for real: `amlflow serve` killed with SIGKILL mid-job; the next server resumes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import aml_data
from tests.server.harness import make_client
from tests.service.support import DONE, wait_for

pytestmark = pytest.mark.server


def _start(home: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    err = log.open("a")  # the child keeps its own copy of the descriptor
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "amlflow.cli",
            "serve",
            "--port",
            "0",
            "--home",
            str(home),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env=dict(os.environ),
    )
    err.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("amlflow serving on "), line + log.read_text()
    return proc, line.split()[-1]


def test_sigkill_mid_job_then_restart_resumes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bucket = home / "s3" / "big"
    bucket.mkdir(parents=True)
    lines = aml_data.wine_csv().splitlines(keepends=True)
    with (bucket / "wine-x200.csv").open("wb") as fh:  # ~320,000 rows: a job that takes a while
        fh.write(lines[0])
        for _ in range(200):
            fh.writelines(lines[1:])
    log = tmp_path / "server.log"
    proc, url = _start(home, log)
    try:
        ml = make_client(url)
        ml.create_data_source_from_s3(
            DataSourceId="ds-done",
            DataSpec={
                "DataLocationS3": "s3://big/wine-x200.csv",
                "DataSchema": aml_data.wine_regression_schema(),
                "DataRearrangement": '{"splitting": {"percentBegin": 0, "percentEnd": 1}}',
            },
        )
        done = wait_for(lambda: ml.get_data_source(DataSourceId="ds-done"), timeout=120)
        assert done["Status"] == "COMPLETED", done.get("Message")
        ml.create_data_source_from_s3(
            DataSourceId="ds-killed",
            ComputeStatistics=True,
            DataSpec={
                "DataLocationS3": "s3://big/wine-x200.csv",
                "DataSchema": aml_data.wine_regression_schema(),
            },
        )
        status = wait_for(lambda: ml.get_data_source(DataSourceId="ds-killed"), ("INPROGRESS", *DONE), 60)
        if status["Status"] != "INPROGRESS":
            pytest.skip(f"the job finished before it could be killed ({status['Status']})")
        first_start = status["StartedAt"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    proc2, url2 = _start(home, log)
    try:
        ml2 = make_client(url2)
        done = ml2.get_data_source(DataSourceId="ds-done")
        assert done["Status"] == "COMPLETED" and done["NumberOfFiles"] == 1  # untouched
        out = wait_for(lambda: ml2.get_data_source(DataSourceId="ds-killed"), timeout=180)
        assert out["Status"] == "COMPLETED", out.get("Message")
        assert out["StartedAt"] > first_start  # run again from the start by the new server
        assert out["DataSizeInBytes"] == (bucket / "wine-x200.csv").stat().st_size
    finally:
        proc2.send_signal(signal.SIGTERM)
        proc2.wait(timeout=60)
        assert proc2.stdout is not None
        proc2.stdout.close()
