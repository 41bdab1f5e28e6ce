"""The service end to end on the real engine: wine BINARY/REGRESSION through the in-process client."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.service.layout import entity_dir_name
from amlflow.settings import Settings
from tests.server import aml_data

FAST = {"Delay": 0.1, "MaxAttempts": 1200}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Service, Path]]:
    home = tmp_path_factory.mktemp("real-home")
    settings = Settings(home=home, max_jobs=2)
    service = Service(settings, endpoint_url="http://127.0.0.1:1")
    root = settings.resolved_storage_root()
    (root / "wine").mkdir(parents=True)
    (root / "wine" / "wine-binary.csv").write_bytes(aml_data.wine_binary_csv())
    # the same rows split over two files under one prefix
    lines = aml_data.wine_binary_csv().splitlines(keepends=True)
    (root / "wine" / "parts").mkdir()
    (root / "wine" / "parts" / "a.csv").write_bytes(b"".join(lines[:801]))
    (root / "wine" / "parts" / "b.csv").write_bytes(lines[0] + b"".join(lines[801:]))
    yield build_client(service, settings), service, root
    service.shutdown(timeout=60)


@pytest.fixture(scope="module")
def wine(env: tuple[Any, Service, Path]) -> dict[str, str]:
    ml, _, _ = env
    schema = aml_data.wine_binary_schema()
    for ds, split in (
        ("ds-train", {"percentBegin": 0, "percentEnd": 70}),
        ("ds-eval", {"percentBegin": 70, "percentEnd": 100}),
    ):
        ml.create_data_source_from_s3(
            DataSourceId=ds,
            DataSourceName=f"wine {ds}",
            ComputeStatistics=True,
            DataSpec={
                "DataLocationS3": "s3://wine/wine-binary.csv",
                "DataSchema": schema,
                "DataRearrangement": json.dumps({"splitting": split}),
            },
        )
    ml.create_ml_model(
        MLModelId="ml-wine",
        MLModelType="BINARY",
        TrainingDataSourceId="ds-train",
        Parameters={"sgd.maxPasses": "10", "sgd.l2RegularizationAmount": "1e-6"},
    )
    ml.get_waiter("ml_model_available").wait(
        FilterVariable="TrainingDataSourceId", EQ="ds-train", WaiterConfig=FAST
    )
    return {"schema": schema}


def test_datasource_model_and_insights(env: tuple[Any, Service, Path], wine: dict[str, str]) -> None:
    ml, service, _ = env
    ds = ml.get_data_source(DataSourceId="ds-train", Verbose=True)
    assert ds["Status"] == "COMPLETED", ds.get("Message")
    assert ds["NumberOfFiles"] == 1 and ds["DataSizeInBytes"] > 0 and ds["ComputeTime"] > 0
    assert json.loads(ds["DataSourceSchema"])["targetAttributeName"] == "good"
    insights = service.get_data_insights("ds-train")
    assert isinstance(insights, dict) and insights
    model = ml.get_ml_model(MLModelId="ml-wine", Verbose=True)
    assert model["Status"] == "COMPLETED", model.get("Message")
    assert model["SizeInBytes"] > 0 and model["ScoreThreshold"] == 0.5
    assert model["TrainingParameters"]["sgd.maxPasses"] == "10"
    assert json.loads(model["Recipe"])["outputs"]  # the suggested recipe, kept
    assert (service.home / "models" / entity_dir_name("MLModel", "ml-wine") / "model").is_dir()


def test_evaluation_report(env: tuple[Any, Service, Path], wine: dict[str, str]) -> None:
    ml, service, _ = env
    ml.create_evaluation(EvaluationId="ev-wine", MLModelId="ml-wine", EvaluationDataSourceId="ds-eval")
    ml.get_waiter("evaluation_available").wait(FilterVariable="MLModelId", EQ="ml-wine", WaiterConfig=FAST)
    ev = ml.get_evaluation(EvaluationId="ev-wine")
    auc = float(ev["PerformanceMetrics"]["Properties"]["BinaryAUC"])
    assert 0.7 < auc <= 1.0, ev
    report = service.get_evaluation_report("ev-wine")
    assert isinstance(report, dict) and report


def test_batch_prediction_over_a_prefix_writes_one_result_per_file(
    env: tuple[Any, Service, Path], wine: dict[str, str]
) -> None:
    ml, _, root = env
    ml.create_data_source_from_s3(
        DataSourceId="ds-parts", DataSpec={"DataLocationS3": "s3://wine/parts/", "DataSchema": wine["schema"]}
    )
    ml.create_batch_prediction(
        BatchPredictionId="bp-parts",
        MLModelId="ml-wine",
        BatchPredictionDataSourceId="ds-parts",
        OutputUri="s3://out/run",
    )
    ml.get_waiter("batch_prediction_available").wait(
        FilterVariable="MLModelId", EQ="ml-wine", WaiterConfig=FAST
    )
    bp = ml.get_batch_prediction(BatchPredictionId="bp-parts")
    assert bp["Status"] == "COMPLETED", bp.get("Message")
    assert bp["TotalRecordCount"] == 1599 and bp["InvalidRecordCount"] == 0
    assert ml.get_data_source(DataSourceId="ds-parts")["NumberOfFiles"] == 2
    manifest = json.loads((root / "out" / "run" / "batch-prediction" / "bp-parts.manifest").read_text())
    assert manifest == {
        "s3://wine/parts/a.csv": "s3://out/run/batch-prediction/result/bp-parts-a.csv.gz",
        "s3://wine/parts/b.csv": "s3://out/run/batch-prediction/result/bp-parts-b.csv.gz",
    }
    a = gzip.decompress((root / "out/run/batch-prediction/result/bp-parts-a.csv.gz").read_bytes()).decode()
    b = gzip.decompress((root / "out/run/batch-prediction/result/bp-parts-b.csv.gz").read_bytes()).decode()
    assert a.splitlines()[0] == b.splitlines()[0] == "trueLabel,bestAnswer,score"
    assert len(a.splitlines()) == 801 and len(b.splitlines()) == 800


def test_realtime_predict(env: tuple[Any, Service, Path], wine: dict[str, str]) -> None:
    ml, _, _ = env
    info = ml.create_realtime_endpoint(MLModelId="ml-wine")["RealtimeEndpointInfo"]
    assert info["EndpointStatus"] == "READY" and info["EndpointUrl"] == "http://127.0.0.1:1"
    record = dict(
        zip(
            aml_data.WINE_COLUMNS[:-1],
            ["7.4", "0.7", "0", "1.9", "0.076", "11", "34", "0.9978", "3.51", "0.56", "9.4"],
            strict=True,
        )
    )
    pred = ml.predict(MLModelId="ml-wine", Record=record, PredictEndpoint=info["EndpointUrl"])["Prediction"]
    assert pred["predictedLabel"] in ("0", "1") and list(pred["predictedScores"]) == [pred["predictedLabel"]]
    assert pred["details"] == {"PredictiveModelType": "BINARY", "Algorithm": "SGD"}


def test_missing_file_fails_the_datasource(env: tuple[Any, Service, Path], wine: dict[str, str]) -> None:
    ml, _, _ = env
    ml.create_data_source_from_s3(
        DataSourceId="ds-missing",
        DataSpec={"DataLocationS3": "s3://wine/nope.csv", "DataSchema": wine["schema"]},
    )
    with pytest.raises(Exception, match="failure"):
        ml.get_waiter("data_source_available").wait(
            FilterVariable="DataLocationS3", EQ="s3://wine/nope.csv", WaiterConfig=FAST
        )
    failed = ml.get_data_source(DataSourceId="ds-missing")
    assert failed["Status"] == "FAILED" and "s3://wine/nope.csv" in failed["Message"]


def test_bad_recipe_is_refused_at_create_time(env: tuple[Any, Service, Path], wine: dict[str, str]) -> None:
    ml, _, _ = env
    with pytest.raises(ml.exceptions.InvalidInputException) as info:
        ml.create_ml_model(
            MLModelId="ml-bad",
            MLModelType="BINARY",
            TrainingDataSourceId="ds-train",
            Recipe=json.dumps({"groups": {}, "assignments": {}, "outputs": ["NO_SUCH_GROUP"]}),
        )
    message = info.value.response["Error"]["Message"]
    assert message.startswith("Recipe") and "NO_SUCH_GROUP" in message


def test_schema_and_recipe_from_storage(env: tuple[Any, Service, Path], wine: dict[str, str]) -> None:
    ml, _, root = env
    (root / "wine" / "wine.schema").write_text(wine["schema"])
    recipe = {"groups": {}, "assignments": {}, "outputs": ["ALL_NUMERIC"]}
    (root / "wine" / "recipe.json").write_text(json.dumps(recipe))
    ml.create_data_source_from_s3(
        DataSourceId="ds-uri",
        ComputeStatistics=True,
        DataSpec={
            "DataLocationS3": "s3://wine/wine-binary.csv",
            "DataSchemaLocationS3": "s3://wine/wine.schema",
        },
    )
    ml.create_ml_model(
        MLModelId="ml-uri",
        MLModelType="BINARY",
        TrainingDataSourceId="ds-uri",
        RecipeUri="s3://wine/recipe.json",
    )
    ml.get_waiter("ml_model_available").wait(
        FilterVariable="TrainingDataSourceId", EQ="ds-uri", WaiterConfig=FAST
    )
    model = ml.get_ml_model(MLModelId="ml-uri", Verbose=True)
    assert json.loads(model["Recipe"]) == recipe
    with pytest.raises(ml.exceptions.InvalidInputException, match="RecipeUri"):
        ml.create_ml_model(
            MLModelId="ml-nouri",
            MLModelType="BINARY",
            TrainingDataSourceId="ds-uri",
            RecipeUri="s3://wine/missing.json",
        )
