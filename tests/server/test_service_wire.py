"""The real service through the wire: every operation, validation, waiters, paginators, realtime Predict.

Data: the real red-wine file (1,599 rows). Everything goes through uvicorn + real boto3.
"""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, WaiterError

from tests.server import aml_data
from tests.server.harness import AmlServer, wait_for

pytestmark = pytest.mark.server

FAST = {"Delay": 0.2, "MaxAttempts": 1500}


@pytest.fixture(scope="module")
def wine(aml_server: AmlServer, ml: Any) -> dict[str, str]:
    """Wine BINARY: train (0-70 %) and eval (70-100 %) datasources, a model, all COMPLETED."""
    uri = aml_server.put("s3://wine/wine-binary.csv", aml_data.wine_binary_csv())
    schema = aml_data.wine_binary_schema()
    for ds, split in (
        ("ds-wine-train", {"percentBegin": 0, "percentEnd": 70}),
        ("ds-wine-eval", {"percentBegin": 70, "percentEnd": 100}),
    ):
        ml.create_data_source_from_s3(
            DataSourceId=ds,
            DataSourceName=f"wine {ds}",
            DataSpec={
                "DataLocationS3": uri,
                "DataSchema": schema,
                "DataRearrangement": json.dumps({"splitting": split}),
            },
            ComputeStatistics=True,
        )
    ml.get_waiter("data_source_available").wait(
        FilterVariable="Name", Prefix="wine ds-wine-", WaiterConfig=FAST
    )
    ml.create_ml_model(
        MLModelId="ml-wine",
        MLModelName="wine binary",
        MLModelType="BINARY",
        TrainingDataSourceId="ds-wine-train",
        Parameters={"sgd.maxPasses": "10", "sgd.l2RegularizationAmount": "1e-6"},
    )
    ml.get_waiter("ml_model_available").wait(FilterVariable="Name", EQ="wine binary", WaiterConfig=FAST)
    return {
        "uri": uri,
        "schema": schema,
        "train": "ds-wine-train",
        "eval": "ds-wine-eval",
        "model": "ml-wine",
    }


def test_datasource_and_model_responses(ml: Any, wine: dict[str, str]) -> None:
    ds = ml.get_data_source(DataSourceId=wine["train"], Verbose=True)
    assert ds["Status"] == "COMPLETED"
    assert ds["DataLocationS3"] == wine["uri"]
    assert ds["ComputeStatistics"] is True
    assert isinstance(ds["DataSizeInBytes"], int) and ds["DataSizeInBytes"] > 0
    assert ds["NumberOfFiles"] == 1
    assert ds["CreatedAt"] <= ds["LastUpdatedAt"]
    assert json.loads(ds["DataSourceSchema"])["targetAttributeName"] == "good"
    model = ml.get_ml_model(MLModelId=wine["model"], Verbose=True)
    assert model["Status"] == "COMPLETED"
    assert model["MLModelType"] == "BINARY"
    assert model["TrainingParameters"]["sgd.maxPasses"] == "10"
    assert model["EndpointInfo"]["EndpointStatus"] == "NONE"
    assert isinstance(model["SizeInBytes"], int) and model["SizeInBytes"] > 0
    assert "Recipe" in model and "Schema" in model


def test_evaluation_and_batch_prediction(aml_server: AmlServer, ml: Any, wine: dict[str, str]) -> None:
    ml.create_evaluation(
        EvaluationId="ev-wine",
        EvaluationName="wine eval",
        MLModelId=wine["model"],
        EvaluationDataSourceId=wine["eval"],
    )
    ml.get_waiter("evaluation_available").wait(
        FilterVariable="MLModelId", EQ=wine["model"], WaiterConfig=FAST
    )
    ev = ml.get_evaluation(EvaluationId="ev-wine")
    auc = float(ev["PerformanceMetrics"]["Properties"]["BinaryAUC"])
    assert 0.6 < auc <= 1.0
    ml.create_batch_prediction(
        BatchPredictionId="bp-wine",
        BatchPredictionName="wine bp",
        MLModelId=wine["model"],
        BatchPredictionDataSourceId=wine["eval"],
        OutputUri="s3://wine-out/run1/",
    )
    ml.get_waiter("batch_prediction_available").wait(FilterVariable="Name", EQ="wine bp", WaiterConfig=FAST)
    bp = ml.get_batch_prediction(BatchPredictionId="bp-wine")
    assert bp["Status"] == "COMPLETED"
    keys = aml_server.list("s3://wine-out/run1/batch-prediction/")
    result = [k for k in keys if k.endswith("-wine-binary.csv.gz")]
    assert result, keys
    lines = gzip.decompress(aml_server.get(f"s3://wine-out/{result[0]}")).decode().splitlines()
    assert lines[0].split(",")[:1] == ["trueLabel"] or "bestAnswer" in lines[0]
    assert bp["TotalRecordCount"] == len(lines) - 1 > 400  # 30 % of 1,599 rows


def test_realtime_endpoint_and_predict(aml_server: AmlServer, ml: Any, wine: dict[str, str]) -> None:
    info = ml.create_realtime_endpoint(MLModelId=wine["model"])["RealtimeEndpointInfo"]
    assert info["EndpointUrl"] == aml_server.url
    assert info["EndpointStatus"] in ("UPDATING", "READY")
    for _ in range(100):
        if ml.get_ml_model(MLModelId=wine["model"])["EndpointInfo"]["EndpointStatus"] == "READY":
            break
        time.sleep(0.1)
    endpoint = ml.get_ml_model(MLModelId=wine["model"])["EndpointInfo"]
    assert endpoint["EndpointStatus"] == "READY" and endpoint["EndpointUrl"] == aml_server.url
    assert endpoint["PeakRequestsPerSecond"] > 0
    record = dict(
        zip(
            aml_data.WINE_COLUMNS[:-1],
            ["7.4", "0.7", "0", "1.9", "0.076", "11", "34", "0.9978", "3.51", "0.56", "9.4"],
            strict=True,
        )
    )
    out = ml.predict(MLModelId=wine["model"], Record=record, PredictEndpoint=endpoint["EndpointUrl"])
    pred = out["Prediction"]
    assert pred["predictedLabel"] in ("0", "1")
    assert list(pred["predictedScores"]) == [pred["predictedLabel"]]
    assert 0.0 <= pred["predictedScores"][pred["predictedLabel"]] <= 1.0
    assert pred["details"]["PredictiveModelType"] == "BINARY"
    # a threshold above every score makes the label 0
    ml.update_ml_model(MLModelId=wine["model"], ScoreThreshold=1.0)
    again = ml.predict(MLModelId=wine["model"], Record=record, PredictEndpoint=endpoint["EndpointUrl"])
    assert again["Prediction"]["predictedLabel"] == "0"
    ml.update_ml_model(MLModelId=wine["model"], ScoreThreshold=0.5)
    deleted = ml.delete_realtime_endpoint(MLModelId=wine["model"])["RealtimeEndpointInfo"]
    assert deleted["EndpointStatus"] == "NONE"
    with pytest.raises(ml.exceptions.PredictorNotMountedException):
        ml.predict(MLModelId=wine["model"], Record=record, PredictEndpoint=aml_server.url)


def test_tags_updates_and_deletes(ml: Any, wine: dict[str, str]) -> None:
    ml.add_tags(
        ResourceId=wine["model"],
        ResourceType="MLModel",
        Tags=[{"Key": "team", "Value": "ml"}, {"Key": "stage"}],
    )
    tags = ml.describe_tags(ResourceId=wine["model"], ResourceType="MLModel")
    assert tags["ResourceId"] == wine["model"] and tags["ResourceType"] == "MLModel"
    assert sorted(t["Key"] for t in tags["Tags"]) == ["stage", "team"]
    ml.delete_tags(ResourceId=wine["model"], ResourceType="MLModel", TagKeys=["stage"])
    assert [t["Key"] for t in ml.describe_tags(ResourceId=wine["model"], ResourceType="MLModel")["Tags"]] == [
        "team"
    ]
    assert (
        ml.update_data_source(DataSourceId=wine["eval"], DataSourceName="renamed")["DataSourceId"]
        == wine["eval"]
    )
    assert ml.get_data_source(DataSourceId=wine["eval"])["Name"] == "renamed"
    assert (
        ml.update_ml_model(MLModelId=wine["model"], MLModelName="wine renamed")["MLModelId"] == wine["model"]
    )
    ml.create_data_source_from_s3(
        DataSourceId="ds-to-delete", DataSpec={"DataLocationS3": wine["uri"], "DataSchema": wine["schema"]}
    )
    assert ml.delete_data_source(DataSourceId="ds-to-delete")["DataSourceId"] == "ds-to-delete"
    assert ml.get_data_source(DataSourceId="ds-to-delete")["Status"] == "DELETED"


def test_update_and_delete_evaluation_and_batch_prediction(ml: Any, wine: dict[str, str]) -> None:
    ml.create_evaluation(
        EvaluationId="ev-wine-2", MLModelId=wine["model"], EvaluationDataSourceId=wine["eval"]
    )
    assert (
        ml.update_evaluation(EvaluationId="ev-wine-2", EvaluationName="ev two")["EvaluationId"] == "ev-wine-2"
    )
    ml.create_batch_prediction(
        BatchPredictionId="bp-wine-2",
        MLModelId=wine["model"],
        BatchPredictionDataSourceId=wine["eval"],
        OutputUri="s3://wine-out/run2/",
    )
    assert (
        ml.update_batch_prediction(BatchPredictionId="bp-wine-2", BatchPredictionName="bp two")[
            "BatchPredictionId"
        ]
        == "bp-wine-2"
    )
    wait_for(ml, "evaluation", "ev-wine-2")
    wait_for(ml, "batch_prediction", "bp-wine-2")
    assert ml.delete_evaluation(EvaluationId="ev-wine-2")["EvaluationId"] == "ev-wine-2"
    assert ml.delete_batch_prediction(BatchPredictionId="bp-wine-2")["BatchPredictionId"] == "bp-wine-2"
    assert ml.get_evaluation(EvaluationId="ev-wine-2")["Status"] == "DELETED"
    assert ml.get_batch_prediction(BatchPredictionId="bp-wine-2")["Status"] == "DELETED"


def test_idempotent_create_and_mismatch(ml: Any, wine: dict[str, str]) -> None:
    again = ml.create_ml_model(
        MLModelId="ml-wine",
        MLModelName="wine binary",
        MLModelType="BINARY",
        TrainingDataSourceId="ds-wine-train",
        Parameters={"sgd.maxPasses": "10", "sgd.l2RegularizationAmount": "1e-6"},
    )
    assert again["MLModelId"] == "ml-wine"
    with pytest.raises(ml.exceptions.IdempotentParameterMismatchException):
        ml.create_ml_model(
            MLModelId="ml-wine", MLModelType="REGRESSION", TrainingDataSourceId="ds-wine-train"
        )


def test_paginators_walk_every_page(ml: Any, wine: dict[str, str]) -> None:
    for i in range(5):
        ml.create_data_source_from_s3(
            DataSourceId=f"ds-page-{i}",
            DataSourceName=f"page {i}",
            DataSpec={"DataLocationS3": wine["uri"], "DataSchema": wine["schema"]},
        )
    pages = list(
        ml.get_paginator("describe_data_sources").paginate(
            FilterVariable="Name", Prefix="page ", PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(p["Results"]) for p in pages] == [2, 2, 1]
    assert "NextToken" not in pages[-1]
    names = [r["Name"] for p in pages for r in p["Results"]]
    assert sorted(names) == [f"page {i}" for i in range(5)]
    for op in ("describe_ml_models", "describe_evaluations", "describe_batch_predictions"):
        results = [
            r for p in ml.get_paginator(op).paginate(PaginationConfig={"PageSize": 1}) for r in p["Results"]
        ]
        assert results, op


def test_waiter_failure_reports_failed_entity(aml_server: AmlServer, ml: Any) -> None:
    """A datasource over a missing file FAILs; the waiter stops with a failure, not a timeout."""
    ml.create_data_source_from_s3(
        DataSourceId="ds-missing",
        DataSourceName="missing file",
        DataSpec={
            "DataLocationS3": "s3://wine/no-such-file.csv",
            "DataSchema": aml_data.wine_regression_schema(),
        },
    )
    with pytest.raises(WaiterError) as info:
        ml.get_waiter("data_source_available").wait(
            FilterVariable="Name", EQ="missing file", WaiterConfig=FAST
        )
    assert "FAILED" in str(info.value) or "failure" in str(info.value)
    failed = ml.get_data_source(DataSourceId="ds-missing")
    assert failed["Status"] == "FAILED" and failed["Message"]


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        ("describe_ml_models", {"Limit": 500}),
        (
            "create_ml_model",
            {"MLModelId": "ml-x", "MLModelType": "NOPE", "TrainingDataSourceId": "ds-wine-train"},
        ),
        ("get_ml_model", {"MLModelId": "has spaces and is way too long " * 5}),
        ("describe_data_sources", {"FilterVariable": "NotAVariable"}),
        (
            "create_batch_prediction",
            {
                "BatchPredictionId": "bp-x",
                "MLModelId": "ml-wine",
                "BatchPredictionDataSourceId": "ds-wine-eval",
                "OutputUri": "http://x/",
            },
        ),
    ],
)
def test_server_side_validation(ml: Any, call: str, kwargs: dict[str, Any]) -> None:
    """What botocore's client lets through (max, pattern, enum) the server rejects, naming the field."""
    with pytest.raises(ml.exceptions.InvalidInputException) as info:
        getattr(ml, call)(**kwargs)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    message = info.value.response["Error"]["Message"]
    assert any(name in message for name in kwargs), message


def test_not_found(ml: Any) -> None:
    for call, key in (
        ("get_ml_model", "MLModelId"),
        ("get_data_source", "DataSourceId"),
        ("get_evaluation", "EvaluationId"),
        ("get_batch_prediction", "BatchPredictionId"),
    ):
        with pytest.raises(ml.exceptions.ResourceNotFoundException) as info:
            getattr(ml, call)(**{key: "does-not-exist"})
        assert "does-not-exist" in info.value.response["Error"]["Message"]


def test_rds_and_redshift_are_refused_clearly(ml: Any) -> None:
    with pytest.raises(ClientError) as info:
        ml.create_data_source_from_redshift(
            DataSourceId="ds-rs",
            RoleARN="arn:aws:iam::123456789012:role/x",
            DataSpec={
                "DatabaseInformation": {"DatabaseName": "db", "ClusterIdentifier": "c"},
                "SelectSqlQuery": "select 1",
                "DatabaseCredentials": {"Username": "u", "Password": "password1"},
                "S3StagingLocation": "s3://b/p",
            },
        )
    assert info.value.response["Error"]["Code"] == "InvalidInputException"
    assert "CreateDataSourceFromS3" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        ml.create_data_source_from_rds(
            DataSourceId="ds-rds",
            RoleARN="arn:aws:iam::123456789012:role/x",
            RDSData={
                "DatabaseInformation": {"InstanceIdentifier": "i", "DatabaseName": "db"},
                "SelectSqlQuery": "select 1",
                "DatabaseCredentials": {"Username": "u", "Password": "password1"},
                "S3StagingLocation": "s3://b/p",
                "ResourceRole": "r",
                "ServiceRole": "s",
                "SubnetId": "sn",
                "SecurityGroupIds": ["sg"],
            },
        )
    assert info.value.response["Error"]["Code"] == "InvalidInputException"
