"""A batch prediction scored on this machine's cores (``AMLFLOW_BATCH_PROCESSES``,
amlflow.service.batch_processes): the same output bytes as the job's own thread, over several input files
and partitions; a killed worker fails the batch naming it and publishes nothing."""

from __future__ import annotations

import gzip
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from amlflow.service import batch_processes, reader_processes
from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.settings import Settings
from tests.server import aml_data
from tests.service.support import wait


def _service(home: Path, processes: int) -> tuple[Service, object, Path]:
    settings = Settings(home=home, max_jobs=2, batch_processes=processes)
    root = settings.resolved_storage_root()
    rows = aml_data.wine_binary_csv().splitlines(keepends=True)
    (root / "wine" / "batch").mkdir(parents=True)
    (root / "wine" / "wine.csv").write_bytes(aml_data.wine_binary_csv())
    for i in range(3):  # three input files: three spans, one result file each
        (root / "wine" / "batch" / f"b{i}.csv").write_bytes(rows[0] + b"".join(rows[1:]) * (i + 2))
    service = Service(settings, endpoint_url="http://127.0.0.1:1")
    ml = build_client(service, settings)
    schema = aml_data.wine_binary_schema()
    ml.create_data_source_from_s3(
        DataSourceId="ds-train", DataSpec={"DataLocationS3": "s3://wine/wine.csv", "DataSchema": schema},
        ComputeStatistics=True,
    )  # fmt: skip
    ml.create_data_source_from_s3(
        DataSourceId="ds-batch", DataSpec={"DataLocationS3": "s3://wine/batch/", "DataSchema": schema}
    )
    ml.create_ml_model(MLModelId="ml", MLModelType="BINARY", TrainingDataSourceId="ds-train")
    assert wait(service, "MLModel", "ml", timeout=120)["Status"] == "COMPLETED"
    return service, ml, root


def _outputs(root: Path) -> dict[str, bytes]:
    out = root / "wine" / "out"
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_the_same_output_bytes_as_the_jobs_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_processes, "MIN_ROWS", 0)  # the sample is small: score it on the workers
    got = {}
    for name, processes in (("procs", 2), ("thread", 0)):
        service, ml, root = _service(tmp_path / name, processes)
        try:
            ml.create_batch_prediction(  # type: ignore[attr-defined]
                BatchPredictionId="bp", MLModelId="ml", BatchPredictionDataSourceId="ds-batch",
                OutputUri="s3://wine/out/",
            )  # fmt: skip
            bp = wait(service, "BatchPrediction", "bp", timeout=120)
            log = service.jobs.log_path("BatchPrediction", "bp").read_text()
        finally:
            service.shutdown(timeout=30)
        assert bp["Status"] == "COMPLETED", bp
        got[name] = (_outputs(root), bp["TotalRecordCount"], bp["InvalidRecordCount"], log)
    procs, thread = got["procs"], got["thread"]
    assert len(procs[0]) == 4  # three results and the manifest
    assert procs[0] == thread[0] and procs[1:3] == thread[1:3]  # byte for byte, the same counts
    assert "scoring in 2 batch worker processes:" in procs[3] and "batch worker" not in thread[3]
    n = len(aml_data.wine_binary_csv().splitlines()) - 1  # b0 holds the wine rows twice
    first = next(v for k, v in procs[0].items() if k.endswith("b0.csv.gz"))
    assert gzip.decompress(first).count(b"\n") == 2 * n + 1  # the header and one line per row
    assert not list((tmp_path / "procs").glob(".bp-*"))  # the job's work folder is gone


def test_a_killed_worker_fails_the_batch_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_processes, "MIN_ROWS", 0)
    service, ml, root = _service(tmp_path, 2)
    pool = reader_processes.pool(2, batch_processes.ROLE)
    real = pool.call
    fifo = tmp_path / "blocks.fifo"
    os.mkfifo(fifo)  # a worker writing its blocks there waits (no reader) until it is killed

    def call_then_kill(request: dict[str, object]) -> dict[str, object]:
        if request.get("first") == 0 and not fifo.with_suffix(".used").exists():
            fifo.with_suffix(".used").touch()
            request = {**request, "out": str(fifo)}

            def kill() -> None:
                time.sleep(0.5)
                for pid in pool.pids():
                    os.kill(pid, signal.SIGKILL)

            threading.Thread(target=kill, daemon=True).start()
        return real(request)

    monkeypatch.setattr(pool, "call", call_then_kill)
    try:
        ml.create_batch_prediction(  # type: ignore[attr-defined]
            BatchPredictionId="bp", MLModelId="ml", BatchPredictionDataSourceId="ds-batch",
            OutputUri="s3://wine/out/",
        )  # fmt: skip
        bp = wait(service, "BatchPrediction", "bp", timeout=120)
    finally:
        service.shutdown(timeout=30)
    assert bp["Status"] == "FAILED", bp
    assert "scoring: the batch worker process was killed by signal 9" in bp["Message"], bp
    assert not (root / "wine" / "out").exists() or _outputs(root) == {}


def test_an_evaluation_scored_on_the_workers_is_the_jobs_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exact evaluation's scores from the batch workers' partitions: the same metric and report."""
    monkeypatch.setattr(batch_processes, "MIN_ROWS", 0)
    got = {}
    for name, processes in (("procs", 2), ("thread", 0)):
        service, ml, _ = _service(tmp_path / name, processes)
        try:
            ml.create_evaluation(  # type: ignore[attr-defined]
                EvaluationId="ev", MLModelId="ml", EvaluationDataSourceId="ds-batch"
            )
            ev = wait(service, "Evaluation", "ev", timeout=120)
            log = service.jobs.log_path("Evaluation", "ev").read_text()
            report = service.get_evaluation_report("ev")
        finally:
            service.shutdown(timeout=30)
        assert ev["Status"] == "COMPLETED", ev
        got[name] = (ev["PerformanceMetrics"], report, log)
    assert got["procs"][:2] == got["thread"][:2]  # the metric, digit for digit, and the whole report
    assert got["procs"][1]["evaluation_mode"] == "exact"
    assert "scoring in 2 batch worker processes:" in got["procs"][2], got["procs"][2]
    assert "batch worker" not in got["thread"][2]
    assert not list((tmp_path / "procs").rglob(".bp-ev-*"))
