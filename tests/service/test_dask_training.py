"""Data-parallel training on a Dask cluster (``AMLFLOW_DASK_TRAINING``, issue 10): a 2-worker
``LocalCluster`` of processes whose only store shared with the service is moto's S3 (the artifact root
``s3://artifacts/x/``), on the repository's MNIST sample, with a memory budget (48 MB) under its in-memory
estimate (56 MB), so that ``auto`` trains on the cluster where the service alone would stream.

Measured on this split (seed 0, 3,497 training rows): macro-F1 0.8922 for the in-process streaming model
(chunks of 909 rows) and 0.8934 for the Dask model (2 shards of 4 chunks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amlflow.engine.model import train_sharded
from amlflow.engine.params import parse_parameters
from amlflow.engine.recipe import parse_recipe
from amlflow.service import dask_training
from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.settings import Settings
from tests.service.dask_support import MNIST_PARAMETERS, local_cluster, mnist_s3, s3_settings
from tests.service.support import wait_for

REPO = Path(__file__).resolve().parents[2]
#: under the sample's in-memory estimate (56.2 MB), over its streaming one (30.5 MB + chunks)
BUDGET = 48 << 20
#: the Dask model's macro-F1 against the in-process streaming model's (measured: 0.8934 vs 0.8922)
F1_TOLERANCE = 0.01


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 with the sample's training file."""
    with mnist_s3(monkeypatch) as url:
        yield url


@pytest.fixture
def cluster(moto_s3: str) -> Iterator[Any]:
    """A 2-worker LocalCluster of processes, started after the S3 environment."""
    with local_cluster() as c:
        yield c


def _settings(home: Path, db: Path, **extra: Any) -> Settings:
    return s3_settings(home, db, memory_limit=BUDGET, **extra)


def _f1(evaluation: dict[str, Any]) -> float:
    return float(evaluation["PerformanceMetrics"]["Properties"]["MulticlassAvgFScore"])


def test_a_model_over_the_budget_trains_on_the_cluster_as_the_engine_does(
    cluster: Any, moto_s3: str, tmp_path: Path
) -> None:
    db = tmp_path / "state.db"
    schema_text = (REPO / "schemas" / "mnist-train.csv.schema").read_text()
    recipe_text = (REPO / "recipes" / "mnist.recipe.json").read_text()

    # 1. in-process (no Dask): the datasources, and the streaming model the budget forces
    local = Service(_settings(tmp_path / "local", db))
    ml = build_client(local, local.settings)
    try:
        for ds_id, begin, end in (("ds-train", 0, 70), ("ds-eval", 70, 100)):
            ml.create_data_source_from_s3(
                DataSourceId=ds_id,
                DataSpec={
                    "DataLocationS3": "s3://data/mnist/train.csv.gz",
                    "DataSchema": schema_text,
                    "DataRearrangement": json.dumps(
                        {"splitting": {"percentBegin": begin, "percentEnd": end}}
                    ),
                },
                ComputeStatistics=ds_id == "ds-train",
            )
        ml.create_ml_model(
            MLModelId="ml-stream",
            MLModelType="MULTICLASS",
            TrainingDataSourceId="ds-train",
            Recipe=recipe_text,
            Parameters=MNIST_PARAMETERS,
        )
        ml.create_evaluation(
            EvaluationId="ev-stream", MLModelId="ml-stream", EvaluationDataSourceId="ds-eval"
        )
        ev_stream = wait_for(lambda: ml.get_evaluation(EvaluationId="ev-stream"), timeout=120)
        assert ev_stream["Status"] == "COMPLETED", ev_stream
        stream_log = local.jobs.log_path("MLModel", "ml-stream").read_text()
    finally:
        local.shutdown(timeout=30)
    assert "training mode: streaming (in-memory estimate 53.6 MB over the budget of 48.0 MB" in stream_log

    # 2. another process (its own home, no file of the first), with the cluster: auto trains there
    service = Service(_settings(tmp_path / "dask", db, dask_address=cluster.scheduler_address))
    ml = build_client(service, service.settings)
    try:
        ml.create_ml_model(
            MLModelId="ml-dask",
            MLModelType="MULTICLASS",
            TrainingDataSourceId="ds-train",
            Recipe=recipe_text,
            Parameters=MNIST_PARAMETERS,
        )
        ml.create_evaluation(EvaluationId="ev-dask", MLModelId="ml-dask", EvaluationDataSourceId="ds-eval")
        model = wait_for(lambda: ml.get_ml_model(MLModelId="ml-dask"), timeout=180)
        ev_dask = wait_for(lambda: ml.get_evaluation(EvaluationId="ev-dask"), timeout=120)
        assert model["Status"] == "COMPLETED" and ev_dask["Status"] == "COMPLETED", (model, ev_dask)
        log = service.jobs.log_path("MLModel", "ml-dask").read_text()
        trained = service._model("ml-dask")
        table = service._table_of("ds-train")
        schema = service._schema_of(service._get("DataSource", "ds-train"))
    finally:
        service.shutdown(timeout=30)

    # the mode and why, recorded in the model file and the job log
    assert trained.training_info["training_mode"] == "dask", trained.training_info
    assert trained.training_info["shards"] == 2 and trained.training_info["dask_workers"] == 2
    assert "training mode: dask (in-memory estimate 53.6 MB over the budget of 48.0 MB" in log, log
    assert "training on the Dask cluster at tcp://" in log and "2 worker(s), 2 thread(s), 2 shard(s)" in log
    assert "batches of 32 rows with the step of 64" in log, log
    # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536; the training tasks raise it meanwhile
    assert "2 of 2 shard(s) on workers with MALLOC_TRIM_THRESHOLD_ set" in log, log
    assert sum(1 for line in log.splitlines() if " dask: pass " in line) == 10, log

    # as good as the in-process streaming model
    assert _f1(ev_dask) >= _f1(ev_stream) - F1_TOLERANCE and _f1(ev_dask) > 0.88, (
        _f1(ev_stream),
        _f1(ev_dask),
    )

    # and the engine's own data-parallel fit, its 2 shards run one after the other here: the same weights
    recipe = parse_recipe(recipe_text, schema)
    reference = train_sharded(
        table,
        schema,
        recipe,
        parse_parameters(MNIST_PARAMETERS),
        "MULTICLASS",
        shards=2,
        memory_budget=BUDGET,
    )
    np.testing.assert_array_equal(trained.coef, reference.coef)
    np.testing.assert_array_equal(trained.intercept, reference.intercept)

    # the workers read the table from S3 into their own caches, and dropped the job's chunks at its end
    from distributed import Client

    with Client(cluster.scheduler_address, set_as_default=False) as client:
        caches = client.run(_worker_state)
    assert len(caches) == 2, caches
    for home, folders, shards in caches.values():
        assert home is not None and not home.startswith(str(tmp_path)), home
        assert "datasources" in folders and shards == 0, (folders, shards)


def _worker_state() -> tuple[str | None, list[str], int]:
    """On a worker: its training cache home, the folders in it and the shards it still keeps."""
    from amlflow.service import dask_training as on_worker

    home = on_worker._home
    folders = sorted(p.name for p in home.iterdir() if p.is_dir()) if home is not None else []
    return (str(home) if home is not None else None), folders, len(on_worker._shards)


def test_within_the_budget_or_never_the_model_trains_in_process(tmp_path: Path) -> None:
    """``auto`` with the in-memory fit within the budget, and ``never``, decide before any cluster is
    reached (the address here is nobody's)."""
    import pandas as pd

    from amlflow.engine.recipe import parse_recipe as recipe_of
    from amlflow.engine.schema import parse_schema
    from amlflow.engine.table import EncodedTable
    from amlflow.service.artifacts import Artifacts

    frame = pd.read_csv(REPO / "data/wine/winequality-red-comma.csv", dtype=str, keep_default_na=False)
    schema = parse_schema((REPO / "schemas/wine-regression.csv.schema").read_text())
    recipe = recipe_of((REPO / "recipes/wine.recipe.json").read_text(), schema)
    table = EncodedTable.from_frame(frame)
    lines: list[str] = []
    for when in ("auto", "never"):
        got = dask_training.train_on_dask(
            "tcp://127.0.0.1:9",
            Artifacts(tmp_path, None, None),
            model_id="ml",
            datasource_id="ds",
            table=table,
            schema=schema,
            recipe=recipe,
            params=parse_parameters(None),
            model_type="REGRESSION",
            seed=0,
            memory_budget=1 << 30,
            when=when,
            log=lines.append,
        )
        assert got is None
    assert lines == [
        "training on Dask: no (AMLFLOW_DASK_TRAINING=auto and the in-memory fit is within the budget)"
    ]
