"""The stand-in engine (amlflow.service.standin): the real service and datasource job, instant ML work —
what flow tests use instead of a hand-written copy of AML's entity rules."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import WaiterError

import amlflow
from amlflow.engine.errors import TrainingError
from amlflow.service.client import reset_services
from amlflow.service.standin import standin_engine
from tests.service.support import SCHEMA

FAST = {"Delay": 0.02, "MaxAttempts": 500}


@pytest.fixture
def ml(tmp_path: Path) -> Iterator[Any]:
    def refuse(schema: Any, params: Any, model_type: str) -> Exception | None:
        return TrainingError("stand-in: no MULTICLASS here") if model_type == "MULTICLASS" else None

    client = amlflow.connect(home=tmp_path / "home", engine=standin_engine(metric=0.91, train_error=refuse))
    root = client.service.settings.resolved_storage_root() / "b"
    root.mkdir(parents=True)
    (root / "d.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    yield client
    reset_services()


def test_lifecycle_with_instant_ml(ml: Any) -> None:
    ml.create_data_source_from_s3(
        DataSourceId="ds",
        ComputeStatistics=True,
        DataSpec={"DataLocationS3": "s3://b/d.csv", "DataSchema": SCHEMA},
    )
    ml.create_ml_model(MLModelId="m", MLModelType="BINARY", TrainingDataSourceId="ds")
    ml.create_evaluation(EvaluationId="ev", MLModelId="m", EvaluationDataSourceId="ds")
    ml.create_batch_prediction(
        BatchPredictionId="bp", MLModelId="m", BatchPredictionDataSourceId="ds", OutputUri="s3://b/out/"
    )
    ml.get_waiter("evaluation_available").wait(FilterVariable="MLModelId", EQ="m", WaiterConfig=FAST)
    ml.get_waiter("batch_prediction_available").wait(FilterVariable="MLModelId", EQ="m", WaiterConfig=FAST)
    assert ml.get_data_source(DataSourceId="ds")["DataSizeInBytes"] > 0
    assert ml.service.get_data_insights("ds")["n_rows"] == 40  # the real datasource job
    assert ml.get_ml_model(MLModelId="m")["ScoreThreshold"] == 0.5
    assert ml.get_evaluation(EvaluationId="ev")["PerformanceMetrics"] == {"Properties": {"BinaryAUC": "0.91"}}
    assert ml.service.get_evaluation_report("ev")["value"] == 0.91
    assert ml.get_batch_prediction(BatchPredictionId="bp")["TotalRecordCount"] == 40
    manifest = json.loads(ml.service.storage.read_bytes("s3://b/out/batch-prediction/bp.manifest"))
    assert manifest == {"s3://b/d.csv": "s3://b/out/batch-prediction/result/bp-d.csv.gz"}
    lines = gzip.decompress(ml.service.storage.read_bytes(manifest["s3://b/d.csv"])).decode().splitlines()
    assert lines[0] == "bestAnswer,score" and len(lines) == 41 and lines[1] == "1,0.5"
    ml.create_realtime_endpoint(MLModelId="m")
    prediction = ml.predict(
        MLModelId="m", Record={"x": "3"}, PredictEndpoint=amlflow.service.EMBEDDED_ENDPOINT_URL
    )
    assert prediction["Prediction"]["predictedLabel"] == "1"


def test_train_error_fails_the_model(ml: Any) -> None:
    schema = json.loads(SCHEMA)
    schema["attributes"][1]["attributeType"] = "CATEGORICAL"
    ml.create_data_source_from_s3(
        DataSourceId="ds-c",
        ComputeStatistics=True,
        DataSpec={"DataLocationS3": "s3://b/d.csv", "DataSchema": json.dumps(schema)},
    )
    ml.create_ml_model(MLModelId="m-c", MLModelType="MULTICLASS", TrainingDataSourceId="ds-c")
    with pytest.raises(WaiterError, match="terminal failure"):
        ml.get_waiter("ml_model_available").wait(
            FilterVariable="TrainingDataSourceId", EQ="ds-c", WaiterConfig=FAST
        )
    model = ml.get_ml_model(MLModelId="m-c")
    assert model["Status"] == "FAILED" and "no MULTICLASS here" in model["Message"]
