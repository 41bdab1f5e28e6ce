"""Shared state (issue 9): job leases in the state store, on SQLite and on a real PostgreSQL server.

* the store: one claim wins, an expired or dead owner's lease is taken over, writes guarded by a lost
  lease are refused, the schema is versioned and migrated (an unversioned SQLite file of before);
* processes: two and three processes on one home each running a full wine pipeline — every job
  started exactly once (counted in the job logs); a job created in one process whose input completes in
  another starts within a couple of scans; the owner of a job killed with SIGKILL mid-job, for each
  job kind, on this host and as "another machine" (only the lease's expiry reveals its death): the job
  is finished by a live process within the lease and a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.service.state import SCHEMA_VERSION, Entity, LeaseLost, StateStore
from amlflow.settings import Settings
from tests.service.shared_proc import KINDS, pipeline_ids, seed_data
from tests.service.support import wait_for

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------- store


@pytest.fixture
def open_store() -> Iterator[Callable[[Any], StateStore]]:
    """``StateStore(url)``, closed after the test."""
    opened: list[StateStore] = []

    def factory(url: Any) -> StateStore:
        store = StateStore(url)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def _pending(store: StateStore, entity_id: str, created: float = 1.0) -> None:
    assert store.insert(Entity("DataSource", entity_id, {"Status": "PENDING", "CreatedAt": created}))


def test_one_claim_wins_among_many(database_url: str, open_store: Callable[[Any], StateStore]) -> None:
    store = open_store(database_url)
    _pending(store, "ds")
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def claim(owner: str) -> None:
        barrier.wait()
        if store.claim("DataSource", "ds", owner, ttl=30) is not None:
            winners.append(owner)

    threads = [threading.Thread(target=claim, args=(f"owner-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert [lease.owner for lease in store.leases()] == winners
    assert store.claimable() == []


def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_write(
    database_url: str, open_store: Callable[[Any], StateStore]
) -> None:
    store = open_store(database_url)
    _pending(store, "ds")
    assert store.claim("DataSource", "ds", "old", ttl=0.2) is not None
    assert store.claim("DataSource", "ds", "new", ttl=30) is None  # live lease: refused
    time.sleep(0.3)
    assert [e.id for e in store.claimable()] == ["ds"]
    claimed = store.claim("DataSource", "ds", "new", ttl=30)
    assert claimed is not None and claimed[1] == "old"  # the previous owner is reported
    with pytest.raises(LeaseLost):
        store.update("DataSource", "ds", attrs={"Status": "COMPLETED"}, owner="old")
    assert store.get("DataSource", "ds").status == "PENDING"  # type: ignore[union-attr]
    assert store.renew("old", 30) == set()
    assert store.renew("new", 30) == {("DataSource", "ds")}
    done = store.update("DataSource", "ds", attrs={"Status": "COMPLETED"}, owner="new", release=True)
    assert done is not None and done.status == "COMPLETED" and done.lease_owner is None
    assert store.leases() == [] and store.claimable() == []
    assert store.claim("DataSource", "ds", "late", ttl=30) is None  # done: nothing to claim


def test_a_dead_owner_lease_is_claimable_at_once(
    database_url: str, open_store: Callable[[Any], StateStore]
) -> None:
    store = open_store(database_url)
    _pending(store, "ds")
    assert store.claim("DataSource", "ds", "dead-one", ttl=600) is not None
    assert store.claim("DataSource", "ds", "me", ttl=30) is None
    claimed = store.claim("DataSource", "ds", "me", ttl=30, dead=frozenset({"dead-one"}))
    assert claimed is not None and claimed[1] == "dead-one"


def test_schema_is_versioned_and_reopening_does_not_migrate_again(
    database_url: str, open_store: Callable[[Any], StateStore]
) -> None:
    store = open_store(database_url)
    assert store.schema_version() == SCHEMA_VERSION
    _pending(store, "kept")
    store.set_tags("DataSource", "kept", [("k", "v")])
    store.close()
    again = open_store(database_url)
    assert again.schema_version() == SCHEMA_VERSION
    assert again.get("DataSource", "kept") is not None and again.tags("DataSource", "kept") == [("k", "v")]


def test_an_unversioned_sqlite_state_of_before_is_migrated_in_place(
    tmp_path: Path, open_store: Callable[[Any], StateStore]
) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE entities (kind TEXT NOT NULL, id TEXT NOT NULL, status TEXT NOT NULL, "
        "created_at REAL NOT NULL, attrs TEXT NOT NULL, internal TEXT NOT NULL, PRIMARY KEY (kind, id));"
        "CREATE TABLE tags (kind TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL, value TEXT, "
        "position INTEGER NOT NULL, PRIMARY KEY (kind, id, key));"
    )
    conn.execute(
        "INSERT INTO entities VALUES ('DataSource', 'old', 'INPROGRESS', 1.0, ?, '{}')",
        (json.dumps({"Status": "INPROGRESS", "CreatedAt": 1.0}),),
    )
    conn.commit()
    conn.close()
    store = open_store(path)
    assert store.schema_version() == SCHEMA_VERSION
    # an INPROGRESS job of a process from before the leases has no lease: any process takes it
    assert [e.id for e in store.claimable()] == ["old"]


def test_a_database_newer_than_the_code_is_refused(
    database_url: str, open_store: Callable[[Any], StateStore]
) -> None:
    store = open_store(database_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE amlflow_schema SET version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this amlflow"):
        StateStore(database_url)


# --------------------------------------------------------------------------------------- processes


def _proc(home: Path, database_url: str | None, *args: str, host: str | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.service.shared_proc", "--home", str(home)]
    if database_url:
        argv += ["--database-url", database_url]
    if host:
        argv += ["--host", host]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    return subprocess.Popen(
        [*argv, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _starts(home: Path, kind: str, entity_id: str, service: Service) -> int:
    """How many times the job of (kind, id) was started, from its job log."""
    path = service.jobs.log_path(kind, entity_id)
    text = path.read_text() if path.exists() else ""
    return sum(1 for line in text.splitlines() if f"{kind} {entity_id}: started by " in line)


@pytest.fixture(params=["sqlite", "postgresql"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str | None]]:
    """(home, database_url): one home on SQLite, or one home whose state is on PostgreSQL."""
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    yield tmp_path / "home", url


@pytest.mark.parametrize("n", [2, 3])
def test_processes_on_one_home_run_every_job_once(shared: tuple[Path, str | None], n: int) -> None:
    home, url = shared
    procs = [_proc(home, url, "pipeline", f"p{i}") for i in range(n)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    for result in outputs:
        assert set(result.values()) == {"COMPLETED"}, result
    observer = Service(Settings(home=home, database_url=url), start=False)
    try:
        owners = set()
        for i in range(n):
            for kind, entity_id in pipeline_ids(f"p{i}").values():
                assert _starts(home, kind, entity_id, observer) == 1, (kind, entity_id)
                log = observer.jobs.log_path(kind, entity_id).read_text()
                owners.add(log.split("started by ", 1)[1].split()[0])
        assert observer.state.leases() == []
        assert len(owners) >= 2, f"all jobs ran in one process: {owners}"  # the work was shared
    finally:
        observer.shutdown(timeout=5)


def test_a_job_whose_input_completes_in_another_process_starts_at_once(
    shared: tuple[Path, str | None],
) -> None:
    home, url = shared
    settings_a = Settings(home=home, database_url=url, job_poll_interval=0.2, lease_seconds=3)
    a = Service(settings_a)
    gate = threading.Event()
    real = a.jobs.jobs["DataSource"]

    def gated(ctx: Any) -> Any:
        assert gate.wait(60)
        return real(ctx)

    a.jobs.jobs["DataSource"] = gated
    seed_data(settings_a.resolved_storage_root())
    b = Service(Settings(home=home, database_url=url, job_poll_interval=0.2, lease_seconds=3))
    b.jobs.jobs["DataSource"] = gated
    try:
        ml_a, ml_b = build_client(a, settings_a), build_client(b, settings_a)
        spec = {"DataLocationS3": "s3://shared/wine.csv", "DataSchema": _schema()}
        ml_a.create_data_source_from_s3(DataSourceId="ds-x", DataSpec=spec, ComputeStatistics=True)
        ml_b.create_ml_model(MLModelId="ml-x", MLModelType="BINARY", TrainingDataSourceId="ds-x")
        gate.set()
        ds = wait_for(lambda: ml_a.get_data_source(DataSourceId="ds-x"), timeout=60)
        model = wait_for(lambda: ml_b.get_ml_model(MLModelId="ml-x"), ("INPROGRESS", "COMPLETED"), 60)
        assert ds["Status"] == "COMPLETED"
        started_after = (model["StartedAt"] - ds["FinishedAt"]).total_seconds()
        assert started_after < 3.0, f"the model started {started_after:.1f} s after its datasource"
        assert wait_for(lambda: ml_b.get_ml_model(MLModelId="ml-x"), timeout=60)["Status"] == "COMPLETED"
    finally:
        gate.set()
        a.shutdown(timeout=30)
        b.shutdown(timeout=30)


def _schema() -> str:
    from tests.server import aml_data

    return aml_data.wine_binary_schema()


@pytest.mark.parametrize("host", [None, "another-machine"], ids=["same-host", "other-host"])
@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_of_the_owner_mid_job_is_finished_by_a_live_process(
    shared: tuple[Path, str | None], tmp_path: Path, kind: str, host: str | None
) -> None:
    home, url = shared
    ready = tmp_path / "ready"
    lease = 3.0
    proc = _proc(home, url, "block", kind, "k", str(ready), host=host)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the blocked job never started"
            time.sleep(0.05)
        entity_id = ready.read_text()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    killed_at = time.monotonic()
    state = StateStore(Settings(home=home, database_url=url).resolved_database_url())
    stuck = state.get(kind, entity_id)
    assert stuck is not None and stuck.status == "INPROGRESS" and stuck.lease_owner is not None
    state.close()
    live = Service(Settings(home=home, database_url=url, job_poll_interval=0.2, lease_seconds=lease))
    try:
        ml = build_client(live, Settings(home=home))
        getter = {
            "DataSource": lambda: ml.get_data_source(DataSourceId=entity_id),
            "MLModel": lambda: ml.get_ml_model(MLModelId=entity_id),
            "Evaluation": lambda: ml.get_evaluation(EvaluationId=entity_id),
            "BatchPrediction": lambda: ml.get_batch_prediction(BatchPredictionId=entity_id),
        }[kind]
        finished = wait_for(getter, timeout=lease + 60)
        took = time.monotonic() - killed_at
        assert finished["Status"] == "COMPLETED", finished
        for other_kind, other_id in pipeline_ids("k").values():
            other = wait_for(lambda k=other_kind, i=other_id: _get(ml, k, i), timeout=60)
            assert other["Status"] == "COMPLETED", other.get("Message")
        log = live.jobs.log_path(kind, entity_id).read_text()
        assert _starts(home, kind, entity_id, live) == 2 and "taken over from" in log, log
        # the job itself takes a few seconds at most on the wine data; the takeover waits for the lease
        # on another machine only (on this host the dead pid is seen at once)
        assert took < lease + 30, f"finished {took:.1f} s after the kill"
    finally:
        live.shutdown(timeout=30)


def _get(ml: Any, kind: str, entity_id: str) -> dict[str, Any]:
    method, key = {
        "DataSource": ("get_data_source", "DataSourceId"),
        "MLModel": ("get_ml_model", "MLModelId"),
        "Evaluation": ("get_evaluation", "EvaluationId"),
        "BatchPrediction": ("get_batch_prediction", "BatchPredictionId"),
    }[kind]
    result: dict[str, Any] = getattr(ml, method)(**{key: entity_id})
    return result
