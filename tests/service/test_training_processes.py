"""Streaming training on this machine's cores (``AMLFLOW_TRAINING_PROCESSES``,
amlflow.service.training_processes): the model is the engine's data-parallel fit with as many shards, bit
for bit; the service chooses it for a model over its budget when the workers' working sets fit, and says
so; a killed worker fails the fit naming it, and the next fit gets new workers."""

from __future__ import annotations

import gzip
import io
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amlflow.engine.dataset import EncodedTable, Source, build_dataset
from amlflow.engine.model import train_sharded
from amlflow.engine.params import parse_parameters
from amlflow.engine.rearrange import parse_rearrangement
from amlflow.engine.recipe import parse_recipe
from amlflow.engine.schema import parse_schema
from amlflow.service import reader_processes, training_processes
from amlflow.service.core import Service
from amlflow.service.jobs import JobFailed
from amlflow.settings import Settings
from tests.service.dask_support import MNIST_PARAMETERS
from tests.service.support import wait

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> tuple[EncodedTable, object, object]:
    """The repository's MNIST sample (5,000 rows) as a table, its schema and the MNIST recipe."""
    raw = gzip.decompress((REPO / "data" / "mnist-sample" / "train.csv.gz").read_bytes())
    schema = parse_schema((REPO / "schemas" / "mnist-train.csv.schema").read_text())
    out = tmp_path_factory.mktemp("mnist") / "table"
    source = Source("train.csv", len(raw), lambda: io.BytesIO(raw))
    build_dataset([source], schema, parse_rearrangement(None), out)
    recipe = parse_recipe((REPO / "recipes" / "mnist.recipe.json").read_text(), schema)
    return EncodedTable.open(out), schema, recipe


def _train(mnist: tuple[EncodedTable, object, object], work: Path, log: Any = None) -> object:
    """Train the sample on 2 workers (``when="always"``); ``log``: a list the lines go to, or a callable."""
    table, schema, recipe = mnist
    return training_processes.train_in_processes(
        2,
        work_dir=work,
        table=table,
        schema=schema,  # type: ignore[arg-type]
        recipe=recipe,  # type: ignore[arg-type]
        params=parse_parameters(MNIST_PARAMETERS),
        model_type="MULTICLASS",
        seed=0,
        memory_budget=None,
        when="always",
        log=log.append if isinstance(log, list) else log,
    )


def test_the_model_is_the_engines_data_parallel_fit_bit_for_bit(mnist, tmp_path: Path) -> None:
    lines: list[str] = []
    model = _train(mnist, tmp_path / "work", lines)
    table, schema, recipe = mnist
    reference = train_sharded(
        table,
        schema,
        recipe,
        parse_parameters(MNIST_PARAMETERS),
        "MULTICLASS",
        shards=2,  # type: ignore[arg-type]
    )
    np.testing.assert_array_equal(model.coef, reference.coef)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(model.intercept, reference.intercept)  # type: ignore[attr-defined]
    info = model.training_info  # type: ignore[attr-defined]
    assert info["training_mode"] == "processes" and info["shards"] == 2, info
    text = "\n".join(lines)
    assert "training mode: data-parallel in 2 worker processes of this machine (requested" in text, text
    assert "training in 2 worker processes: 2 shard(s) of" in text and "batches of 32 rows" in text, text
    assert sum(1 for line in lines if line.startswith("processes: pass ")) == 10, text
    assert not (tmp_path / "work").exists()  # states and chunk features removed
    # the workers stay for the next fit (their shards dropped), ready and idle
    assert len(reader_processes.pool(2, training_processes.ROLE).pids()) == 2


def test_a_killed_worker_fails_the_fit_and_the_next_fit_gets_new_ones(mnist, tmp_path: Path) -> None:
    pool = reader_processes.pool(2, training_processes.ROLE)
    killed: list[int] = []

    def log(line: str) -> None:
        if line.startswith("processes: pass 2 ") and not killed:
            killed.append(pool.pids()[0])
            os.kill(killed[0], signal.SIGKILL)

    with pytest.raises(JobFailed, match=r"training: the training worker process was killed by signal 9"):
        _train(mnist, tmp_path / "work", log)
    assert killed and not (tmp_path / "work").exists()
    assert killed[0] not in pool.pids()
    model = _train(mnist, tmp_path / "again")
    assert model.training_info["training_mode"] == "processes"  # type: ignore[attr-defined]
    assert killed[0] not in pool.pids() and len(pool.pids()) == 2


def _banking_service(home: Path, **settings: object) -> Service:
    s = Settings(home=home, max_jobs=2, **settings)  # type: ignore[arg-type]
    root = s.resolved_storage_root()
    (root / "bank").mkdir(parents=True)
    (root / "bank" / "banking.csv").write_bytes((REPO / "data" / "aml-banking" / "banking.csv").read_bytes())
    return Service(s, endpoint_url="http://127.0.0.1:1")


def _model_over_budget(service: Service) -> tuple[dict[str, object], str, object]:
    service.create_data_source_from_s3(
        DataSourceId="ds-bank",
        DataSpec={
            "DataLocationS3": "s3://bank/banking.csv",
            "DataSchema": (REPO / "data" / "aml-banking" / "banking.csv.schema").read_text(),
        },
        ComputeStatistics=True,
    )
    assert wait(service, "DataSource", "ds-bank", timeout=60)["Status"] == "COMPLETED"
    service.create_ml_model(
        MLModelId="ml-bank",
        MLModelType="BINARY",
        TrainingDataSourceId="ds-bank",
        Recipe=(REPO / "data" / "aml-banking" / "recipe.json").read_text(),
    )
    got = wait(service, "MLModel", "ml-bank", timeout=120)
    return got, service.jobs.log_path("MLModel", "ml-bank").read_text(), service._model("ml-bank")


#: banking's in-memory estimate is 23 MB; two streaming working sets of 10 MB fit this budget
BANKING_BUDGET = 20 << 20


@pytest.mark.parametrize("processes", [2, 0])
def test_a_model_over_the_budget_trains_on_the_workers_unless_off(tmp_path: Path, processes: int) -> None:
    service = _banking_service(tmp_path, memory_limit=BANKING_BUDGET, training_processes=processes)
    try:
        got, log, model = _model_over_budget(service)
    finally:
        service.shutdown(timeout=30)
    assert got["Status"] == "COMPLETED", got
    info = model.training_info  # type: ignore[attr-defined]
    if processes:
        assert "training mode: data-parallel in 2 worker processes of this machine (in-memory estimate" in log
        assert info["training_mode"] == "processes" and info["shards"] == 2, info
    else:
        assert "training mode: streaming (in-memory estimate" in log and "worker processes" not in log
        assert info.get("training_mode") != "processes", info
    assert not list((tmp_path / "models").rglob(".shards.tmp-*"))


def test_a_model_within_the_budget_trains_in_memory(tmp_path: Path) -> None:
    service = _banking_service(tmp_path, training_processes=2)
    try:
        got, log, model = _model_over_budget(service)
    finally:
        service.shutdown(timeout=30)
    assert got["Status"] == "COMPLETED", got
    assert "within the budget" in log and "worker processes" not in log, log


def test_workers_started_with_malloc_trim_threshold_raise_glibcs_thresholds(
    mnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that started a Dask LocalCluster has MALLOC_TRIM_THRESHOLD_=65536 in its environment,
    which its workers inherit (measured: shard passes twice as slow); the workers say they raised it."""
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    saved = reader_processes._pools.pop(training_processes.ROLE, None)  # new workers, with the variable
    try:
        lines: list[str] = []
        model = _train(mnist, tmp_path / "work", lines)
        assert model.training_info["training_mode"] == "processes"  # type: ignore[attr-defined]
        assert any("2 of 2 worker(s) with MALLOC_TRIM_THRESHOLD_ set" in line for line in lines), lines
    finally:
        fresh = reader_processes._pools.pop(training_processes.ROLE, None)
        if fresh is not None:
            fresh.close()
        if saved is not None:
            reader_processes._pools[training_processes.ROLE] = saved
