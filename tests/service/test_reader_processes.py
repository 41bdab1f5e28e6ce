"""Datasource reader processes (``AMLFLOW_DATASOURCE_PROCESSES``, amlflow.service.reader_processes): the
same table, insights and failures as the job's own thread; a killed reader fails only its job; a reader
whose service is gone exits even in the middle of a request."""

from __future__ import annotations

import errno
import gzip
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from amlflow.service import reader_processes
from amlflow.service.core import Service
from amlflow.service.layout import entity_dir_name
from amlflow.settings import Settings
from tests.server import aml_data
from tests.service.support import SCHEMA, wait


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    """Two services over the same input: one reading in reader processes, one in the job's thread."""
    out = []
    for name, processes in (("procs", 2), ("thread", 0)):
        settings = Settings(home=tmp_path / name, max_jobs=2, datasource_processes=processes)
        root = settings.resolved_storage_root()
        (root / "wine").mkdir(parents=True)
        (root / "wine" / "wine.csv").write_bytes(aml_data.wine_binary_csv())
        (root / "wine" / "bad.csv.gz").write_bytes(gzip.compress(aml_data.wine_binary_csv())[:500])
        rows = aml_data.wine_binary_csv().splitlines(keepends=True)
        (root / "wine" / "short.csv").write_bytes(rows[0] + b"1,2\n" * 10_001)
        out.append(Service(settings, endpoint_url="http://127.0.0.1:1"))
    yield out[0], out[1]
    for s in out:
        s.shutdown(timeout=30)


def _create(service: Service, ds_id: str, key: str, split: dict[str, int] | None = None) -> dict[str, object]:
    spec = {"DataLocationS3": f"s3://wine/{key}", "DataSchema": aml_data.wine_binary_schema()}
    if split:
        spec["DataRearrangement"] = json.dumps({"splitting": split})
    service.create_data_source_from_s3(DataSourceId=ds_id, DataSpec=spec, ComputeStatistics=True)
    return wait(service, "DataSource", ds_id, timeout=60)


def _files(service: Service, ds_id: str) -> dict[str, bytes]:
    folder = service.home / "datasources" / entity_dir_name("DataSource", ds_id)
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_the_same_table_and_insights_as_the_jobs_thread(services: tuple[Service, Service]) -> None:
    procs, thread = services
    for ds_id, split in (("ds-tr", {"percentBegin": 0, "percentEnd": 70}), ("ds-all", None)):
        a, b = _create(procs, ds_id, "wine.csv", split), _create(thread, ds_id, "wine.csv", split)
        assert a["Status"] == b["Status"] == "COMPLETED"
        assert (a["DataSizeInBytes"], a["NumberOfFiles"]) == (b["DataSizeInBytes"], b["NumberOfFiles"])
        files_a, files_b = _files(procs, ds_id), _files(thread, ds_id)
        assert sorted(files_a) == sorted(files_b) and "table/codes.bin" in files_a
        assert files_a == files_b  # codes, dictionaries, meta, insights: byte for byte
        assert procs.get_data_insights(ds_id) == thread.get_data_insights(ds_id)
    log = (procs.home / "logs").rglob(f"{entity_dir_name('DataSource', 'ds-tr')}.log")
    assert "reading in a datasource reader process" in next(log).read_text()
    log = (thread.home / "logs").rglob(f"{entity_dir_name('DataSource', 'ds-tr')}.log")
    assert "reader process" not in next(log).read_text()


def test_failures_are_the_jobs_threads(services: tuple[Service, Service]) -> None:
    procs, thread = services
    for ds_id, key in (("ds-gz", "bad.csv.gz"), ("ds-short", "short.csv")):
        a, b = _create(procs, ds_id, key), _create(thread, ds_id, key)
        assert a["Status"] == b["Status"] == "FAILED"
        assert a["Message"] == b["Message"]
    assert "gzip" in procs.get_data_source(DataSourceId="ds-gz")["Message"]
    assert "more than 10,000 rows were rejected" in procs.get_data_source(DataSourceId="ds-short")["Message"]
    # the table directory is not left half-written
    assert "table/meta.json" not in _files(procs, "ds-short")


def test_a_large_input_read_in_parts_on_every_reader_is_the_same_table(
    services: tuple[Service, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts by byte range on both readers, merged in the job's thread: the same files, insights and
    failures as one read (here with the thresholds lowered: 84 KB of wine in parts of 16 KiB)."""
    monkeypatch.setattr(reader_processes, "PARTS_MIN_BYTES", 0)
    monkeypatch.setattr(reader_processes, "PART_BYTES", 16 << 10)
    procs, thread = services
    random = {
        "percentBegin": 10,
        "percentEnd": 90,
        "strategy": "random",
        "strategyParams": {"randomSeed": "x"},
    }
    for ds_id, split in (
        ("ds-tr", {"percentBegin": 0, "percentEnd": 70}),
        ("ds-rnd", random),
        ("ds-all", None),
    ):
        a, b = _create(procs, ds_id, "wine.csv", split), _create(thread, ds_id, "wine.csv", split)
        assert a["Status"] == b["Status"] == "COMPLETED", (a, b)
        assert _files(procs, ds_id) == _files(thread, ds_id)  # codes, dictionaries, meta, insights
        assert procs.get_data_insights(ds_id) == thread.get_data_insights(ds_id)
        log = next((procs.home / "logs").rglob(f"{entity_dir_name('DataSource', ds_id)}.log")).read_text()
        assert "reading in 6 part(s) of up to 16,384 bytes on the datasource reader processes" in log, log
    # more than 10,000 rejected rows over several parts: the merge's own check, the one read's message
    a, b = _create(procs, "ds-short", "short.csv"), _create(thread, "ds-short", "short.csv")
    assert a["Status"] == b["Status"] == "FAILED" and a["Message"] == b["Message"], (a, b)
    assert not list((procs.home / "datasources").rglob(".parts-*"))  # no part left behind


def test_a_killed_reader_fails_only_its_job(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h", max_jobs=1, datasource_processes=1)
    root = settings.resolved_storage_root()
    (root / "b").mkdir(parents=True)
    rows = aml_data.wine_binary_csv().splitlines(keepends=True)
    (root / "b" / "big.csv").write_bytes(rows[0] + b"".join(rows[1:]) * 300)  # ~30 MB: a second to read
    (root / "b" / "wine.csv").write_bytes(aml_data.wine_binary_csv())
    service = Service(settings, endpoint_url="http://127.0.0.1:1")
    try:
        pool = reader_processes.pool(1)
        idle = {w.proc.pid for w in pool._idle}
        assert idle, "the service started its reader"
        spec = {"DataLocationS3": "s3://b/big.csv", "DataSchema": aml_data.wine_binary_schema()}
        service.create_data_source_from_s3(DataSourceId="ds-big", DataSpec=spec, ComputeStatistics=True)
        deadline = time.monotonic() + 30
        while idle == {w.proc.pid for w in pool._idle} and time.monotonic() < deadline:
            time.sleep(0.005)
        (busy,) = idle - {w.proc.pid for w in pool._idle}  # the one the job took
        os.kill(busy, signal.SIGKILL)
        failed = wait(service, "DataSource", "ds-big", timeout=30)
        assert failed["Status"] == "FAILED"
        assert failed["Message"] == (
            f"DataLocationS3: the datasource reader process was killed by signal {int(signal.SIGKILL)} "
            "(out of memory?)"
        )
        # the next job gets a new reader
        spec = {"DataLocationS3": "s3://b/wine.csv", "DataSchema": aml_data.wine_binary_schema()}
        service.create_data_source_from_s3(DataSourceId="ds-ok", DataSpec=spec)
        assert wait(service, "DataSource", "ds-ok", timeout=60)["Status"] == "COMPLETED"
        assert busy not in {w.proc.pid for w in pool._idle}
    finally:
        service.shutdown(timeout=30)


def test_a_reader_exits_when_its_service_is_gone_mid_request(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    fifo = tmp_path / "b" / "slow.csv"
    os.mkfifo(fifo)
    worker = reader_processes._Worker()
    worker.wait_ready()
    request = {
        "storage": str(tmp_path),
        "objects": [["s3://b/slow.csv", "slow.csv", 0]],
        "schema": aml_data.wine_binary_schema(),
        "rearrangement": None,
        "out_dir": str(tmp_path / "table"),
        "statistics": False,
    }
    assert worker.proc.stdin is not None
    worker.proc.stdin.write(json.dumps(request) + "\n")
    worker.proc.stdin.flush()
    time.sleep(0.3)
    assert worker.proc.poll() is None  # blocked opening the FIFO: in the middle of the request
    worker.proc.stdin.close()  # what the service's death does to the pipe
    try:
        assert worker.proc.wait(timeout=10) == 0
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        raise
    finally:
        assert worker.proc.stdout is not None
        worker.proc.stdout.close()
    # nobody ever wrote to the FIFO, and nobody has it open for reading any more: the request was in
    # flight when the reader left
    with pytest.raises(OSError) as exc:
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    assert exc.value.errno == errno.ENXIO
    assert not (tmp_path / "table").exists()


def test_default_is_one_reader_per_job_slot_up_to_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert reader_processes.default_processes(1) == 1
    assert reader_processes.default_processes(4) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    assert reader_processes.default_processes(4) == 0
    assert Settings(max_jobs=3, datasource_processes=5).resolved_datasource_processes() == 5


@pytest.mark.parametrize("processes", [2, 0])
def test_dictionaries_over_the_memory_limit(tmp_path: Path, processes: int) -> None:
    """AMLFLOW_MEMORY_LIMIT bounds the datasource job too, in a reader process as in the job's thread: a
    NUMERIC column with a value per row is stored without a dictionary (the job completes, its insights
    exact), and a CATEGORICAL one whose dictionary would pass half of the budget (and the 256 MiB floor)
    fails the job naming the column."""
    from amlflow.engine.dataset import MIN_DICTIONARY_BYTES
    from amlflow.engine.table import BYTES_PER_DISTINCT_VALUE, EncodedTable

    n = MIN_DICTIONARY_BYTES // BYTES_PER_DISTINCT_VALUE + 50_000  # ~840,000 distinct values
    settings = Settings(home=tmp_path, datasource_processes=processes, memory_limit=64 << 20)
    root = settings.resolved_storage_root()
    (root / "b").mkdir(parents=True)
    (root / "b" / "ids.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(n)))
    categorical = json.loads(SCHEMA)
    for a in categorical["attributes"]:
        if a["attributeName"] == "x":
            a["attributeType"] = "CATEGORICAL"
    service = Service(settings, endpoint_url="http://127.0.0.1:1")
    try:
        spec = {"DataLocationS3": "s3://b/ids.csv", "DataSchema": SCHEMA}  # x NUMERIC, y BINARY
        service.create_data_source_from_s3(DataSourceId="ds", DataSpec=spec, ComputeStatistics=True)
        spec = {**spec, "DataSchema": json.dumps(categorical)}
        service.create_data_source_from_s3(DataSourceId="ds-ids", DataSpec=spec, ComputeStatistics=True)
        out = wait(service, "DataSource", "ds", timeout=120)
        assert out["Status"] == "COMPLETED", out
        ds_dir = tmp_path / "datasources" / entity_dir_name("DataSource", "ds")
        assert EncodedTable.open(ds_dir / "table").kind("x") == "values"
        insights = json.loads((ds_dir / "insights.json").read_text())
        (x,) = (a for a in insights["attributes"] if a["name"] == "x")
        assert (x["min"], x["max"], x["median"], x["missing"]) == (0.0, n - 1.0, (n - 1) / 2, 0)
        out = wait(service, "DataSource", "ds-ids", timeout=120)
        assert out["Status"] == "FAILED"
        assert out["Message"].startswith("x: the columns' distinct values would need more memory")
        assert (
            "over 256 MB (half of the job's memory budget, AMLFLOW_MEMORY_LIMIT, and at least 256 MB)"
            in (out["Message"])
        )
    finally:
        service.shutdown(timeout=30)


def test_parts_read_from_s3_are_the_same_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The readers' ranged reads of an S3 object (moto's server; the readers get the service's AWS
    environment with each request): the same table and insights as the job's thread reading it whole."""
    from tests.service.dask_support import mnist_s3, s3_settings

    monkeypatch.setattr(reader_processes, "PARTS_MIN_BYTES", 0)
    monkeypatch.setattr(reader_processes, "PART_BYTES", 16 << 10)
    with mnist_s3(monkeypatch, {"wine/wine.csv": aml_data.wine_binary_csv()}):
        files = {}
        for name, processes in (("procs", 2), ("thread", 0)):
            settings = s3_settings(tmp_path / name, tmp_path / f"{name}.db", datasource_processes=processes)
            service = Service(settings, endpoint_url="http://127.0.0.1:1")
            try:
                spec = {
                    "DataLocationS3": "s3://data/wine/wine.csv",
                    "DataSchema": aml_data.wine_binary_schema(),
                }
                service.create_data_source_from_s3(DataSourceId="ds", DataSpec=spec, ComputeStatistics=True)
                got = wait(service, "DataSource", "ds", timeout=60)
                assert got["Status"] == "COMPLETED", got
                log = service.jobs.log_path("DataSource", "ds").read_text()
                files[name] = _files(service, "ds")
            finally:
                service.shutdown(timeout=30)
            assert ("part(s) of up to 16,384 bytes" in log) == bool(processes), log
    assert "table/codes.bin" in files["procs"] and files["procs"] == files["thread"]
