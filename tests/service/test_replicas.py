"""Two replicas that share only a PostgreSQL database and an S3 artifact root (moto), no disk: each
serves the other's entities (issue 9) — create here, wait/describe/evaluate/batch/Predict there."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.settings import Settings
from tests.s3 import moto_s3_server
from tests.server import aml_data
from tests.service.support import wait_for


@pytest.fixture
def moto_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with moto_s3_server(monkeypatch) as url:
        s3 = boto3.client("s3", endpoint_url=url)
        for bucket in ("data", "artifacts"):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="data", Key="wine.csv", Body=aml_data.wine_binary_csv())
        yield url


def _replica(home: Path, url: str, *, start: bool = True) -> tuple[Service, Any]:
    settings = Settings(
        home=home,
        storage="s3",
        database_url=url,
        artifact_root="s3://artifacts/amlflow/",
        job_poll_interval=0.2,
        lease_seconds=5,
    )
    service = Service(settings, endpoint_url=f"http://replica-{home.name}.invalid", start=start)
    return service, build_client(service, settings)


def _files(home: Path, folder: str) -> list[str]:
    return sorted(p.name for p in (home / folder).glob("*")) if (home / folder).is_dir() else []


def test_two_replicas_serve_each_others_entities(moto_env: str, postgres_url: str, tmp_path: Path) -> None:
    # A runs every job it is given; B never scans (start=False): what B uses, A made — and B's own
    # creates (an evaluation, a batch prediction) run in B on A's table and model, fetched from S3
    a, ml_a = _replica(tmp_path / "a", postgres_url)
    b, ml_b = _replica(tmp_path / "b", postgres_url, start=False)
    try:
        schema = aml_data.wine_binary_schema()
        for ds_id, split in (("ds-train", (0, 70)), ("ds-eval", (70, 100))):
            ml_a.create_data_source_from_s3(
                DataSourceId=ds_id,
                DataSpec={
                    "DataLocationS3": "s3://data/wine.csv",
                    "DataSchema": schema,
                    "DataRearrangement": json.dumps(
                        {"splitting": {"percentBegin": split[0], "percentEnd": split[1]}}
                    ),
                },
                ComputeStatistics=ds_id == "ds-train",
            )
        ml_a.create_ml_model(MLModelId="ml", MLModelType="BINARY", TrainingDataSourceId="ds-train")
        # B waits and describes what A builds
        model = wait_for(lambda: ml_b.get_ml_model(MLModelId="ml"), timeout=120)
        assert model["Status"] == "COMPLETED", model
        assert model["LogUri"].startswith("s3://artifacts/amlflow/logs/MLModel/")
        # the evaluation datasource runs beside the model, not before it: wait for it too
        assert wait_for(lambda: ml_b.get_data_source(DataSourceId="ds-eval"), timeout=120)["Status"] == (
            "COMPLETED"
        )
        described = ml_b.describe_data_sources(FilterVariable="Status", EQ="COMPLETED")["Results"]
        assert sorted(d["DataSourceId"] for d in described) == ["ds-eval", "ds-train"]
        insights = b.get_data_insights("ds-train")  # A's file, fetched by B
        assert insights["statistics_computed"] is True or "attributes" in insights

        # B evaluates and batch-predicts with A's model and tables
        ml_b.create_evaluation(EvaluationId="ev", MLModelId="ml", EvaluationDataSourceId="ds-eval")
        ml_b.create_batch_prediction(
            BatchPredictionId="bp",
            MLModelId="ml",
            BatchPredictionDataSourceId="ds-eval",
            OutputUri="s3://data/out/",
        )
        ev = wait_for(lambda: ml_a.get_evaluation(EvaluationId="ev"), timeout=120)
        bp = wait_for(lambda: ml_a.get_batch_prediction(BatchPredictionId="bp"), timeout=120)
        assert ev["Status"] == "COMPLETED" and bp["Status"] == "COMPLETED", (ev, bp)
        for kind, entity_id in (("Evaluation", "ev"), ("BatchPrediction", "bp")):
            log = b.jobs.log_path(kind, entity_id).read_text()
            assert f"started by {b.jobs.owner}" in log  # B ran them
        for kind, entity_id in (("DataSource", "ds-train"), ("MLModel", "ml")):
            log = a.jobs.log_path(kind, entity_id).read_text()
            assert f"started by {a.jobs.owner}" in log  # A ran those
        auc = float(ev["PerformanceMetrics"]["Properties"]["BinaryAUC"])
        assert 0.5 < auc <= 1.0
        assert not (tmp_path / "a" / "evaluations").exists()  # no common disk: A has no copy yet
        report = a.get_evaluation_report("ev")  # B's report, fetched by A
        assert report == b.get_evaluation_report("ev")

        s3 = boto3.client("s3", endpoint_url=moto_env)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="data", Prefix="out/")["Contents"]]
        assert any(k.endswith(".gz") for k in keys), keys
        body = s3.get_object(Bucket="data", Key=next(k for k in keys if k.endswith(".gz")))["Body"].read()
        rows = gzip.decompress(body).decode().splitlines()
        assert rows[0].startswith("trueLabel,") and len(rows) > 100, rows[:2]

        # Predict on both replicas, each with its own EndpointUrl
        for service, ml in ((b, ml_b), (a, ml_a)):
            info = ml.create_realtime_endpoint(MLModelId="ml")["RealtimeEndpointInfo"]
            assert info["EndpointStatus"] == "READY"
            if service is b:  # the replica's own URL (A's call below reuses the endpoint B created)
                assert info["EndpointUrl"] == "http://replica-b.invalid"
            record = {"fixed acidity": "7.4", "volatile acidity": "0.7", "alcohol": "9.4"}
            prediction = ml.predict(MLModelId="ml", Record=record, PredictEndpoint=service.endpoint_url)
            assert prediction["Prediction"]["predictedLabel"] in ("0", "1")

        # B's home holds the copies it fetched: the model, the datasource it scored, the one whose
        # insights it read
        assert len(_files(tmp_path / "b", "models")) == 1 and len(_files(tmp_path / "b", "datasources")) == 2
    finally:
        a.shutdown(timeout=30)
        b.shutdown(timeout=30)


@pytest.mark.server
def test_two_serve_replicas_on_postgres_and_s3_create_here_predict_there(
    moto_env: str, postgres_url: str, tmp_path: Path
) -> None:
    """Real ``amlflow serve`` processes with separate homes; real boto3 clients; ``/health`` per replica."""
    import urllib.request

    from tests.server.harness import ServeProcess, make_client

    flags = ("--storage", "s3", "--database-url", postgres_url, "--artifact-root", "s3://artifacts/serve/")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = ServeProcess(tmp_path / "one", *flags)
    two = ServeProcess(tmp_path / "two", *flags, "--public-url", "http://lb.example.invalid")
    try:
        ml_one, ml_two = make_client(one.url, retries=3), make_client(two.url, retries=3)
        ml_one.create_data_source_from_s3(
            DataSourceId="ds",
            DataSpec={"DataLocationS3": "s3://data/wine.csv", "DataSchema": aml_data.wine_binary_schema()},
            ComputeStatistics=True,
        )
        ml_one.create_ml_model(MLModelId="ml", MLModelType="BINARY", TrainingDataSourceId="ds")
        model = wait_for(lambda: ml_two.get_ml_model(MLModelId="ml"), timeout=120)
        assert model["Status"] == "COMPLETED", model
        info = ml_two.create_realtime_endpoint(MLModelId="ml")["RealtimeEndpointInfo"]
        assert info["EndpointUrl"] == "http://lb.example.invalid"  # --public-url
        record = {"fixed acidity": "7.4", "alcohol": "9.4"}
        for ml, url in ((ml_two, two.url), (ml_one, one.url)):  # any replica answers Predict
            answer = ml.predict(MLModelId="ml", Record=record, PredictEndpoint=url)
            assert answer["Prediction"]["predictedLabel"] in ("0", "1")
        for replica in (one, two):
            with urllib.request.urlopen(f"{replica.url}/health", timeout=10) as response:
                health = json.loads(response.read())
            assert health["owner"].split("/")[1].isdigit() and health["jobs_owned"] == []
    finally:
        one.stop()
        two.stop()
