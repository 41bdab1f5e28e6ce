"""The in-process client is botocore's own: methods, waiters (fast), paginators, ClientError, no network."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError, WaiterError

from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.service.jobs import JobContext, JobFailed, JobResult
from amlflow.settings import Settings
from tests.service.support import SCHEMA, STANDIN


def _ds_job(ctx: JobContext) -> JobResult:
    if "fail" in ctx.entity.id:
        raise JobFailed("DataLocationS3: nothing there")
    return JobResult({"DataSizeInBytes": 5, "NumberOfFiles": 1})


@pytest.fixture
def ml(tmp_path: Path) -> Iterator[Any]:
    settings = Settings(home=tmp_path / "home")
    service = Service(settings, jobs={**STANDIN, "DataSource": _ds_job})
    yield build_client(service, settings)
    service.shutdown(timeout=5)


def test_calls_errors_and_metadata(ml: Any) -> None:
    out = ml.create_data_source_from_s3(
        DataSourceId="ds-1",
        DataSourceName="one",
        ComputeStatistics=True,
        DataSpec={"DataLocationS3": "s3://b/x.csv", "DataSchema": SCHEMA},
    )
    assert out["DataSourceId"] == "ds-1"
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200 and out["ResponseMetadata"]["RequestId"]
    with pytest.raises(ml.exceptions.ResourceNotFoundException) as info:
        ml.get_ml_model(MLModelId="ml-nope")
    assert "ml-nope" in info.value.response["Error"]["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ml.exceptions.InvalidInputException) as invalid:
        ml.describe_ml_models(Limit=500)  # botocore lets it through; the service refuses it
    assert "at 'Limit'" in invalid.value.response["Error"]["Message"]
    with pytest.raises(ParamValidationError):
        ml.get_ml_model()  # botocore's own client-side validation
    with pytest.raises(ClientError) as unsupported:
        ml.create_data_source_from_redshift(
            DataSourceId="ds-rs",
            RoleARN="arn:aws:iam::1:role/x",
            DataSpec={
                "DatabaseInformation": {"DatabaseName": "db", "ClusterIdentifier": "c"},
                "SelectSqlQuery": "select 1",
                "DatabaseCredentials": {"Username": "u", "Password": "password1"},
                "S3StagingLocation": "s3://b/p",
            },
        )
    assert "CreateDataSourceFromS3" in unsupported.value.response["Error"]["Message"]
    assert ml.meta.endpoint_url == "http://realtime.amlflow.invalid"
    assert ml.service is not None and hasattr(ml.service, "get_evaluation_report")


def test_waiters_are_fast_and_see_failures(ml: Any) -> None:
    for i in range(3):
        ml.create_data_source_from_s3(
            DataSourceId=f"ds-w{i}",
            DataSourceName=f"wait {i}",
            ComputeStatistics=True,
            DataSpec={"DataLocationS3": "s3://b/x.csv", "DataSchema": SCHEMA},
        )
    waiter = ml.get_waiter("data_source_available")
    # fast: every waiter polls every settings.waiter_delay (1 s) instead of AML's 30 s
    for name in ml.waiter_names:
        assert ml.get_waiter(name).config.delay == 1.0
    waiter.wait(FilterVariable="Name", Prefix="wait ")
    assert {
        r["Status"] for r in ml.describe_data_sources(FilterVariable="Name", Prefix="wait ")["Results"]
    } == {"COMPLETED"}
    ml.create_data_source_from_s3(
        DataSourceId="ds-fail",
        DataSourceName="will fail",
        DataSpec={"DataLocationS3": "s3://b/x.csv", "DataSchema": SCHEMA},
    )
    with pytest.raises(WaiterError, match="failure"):
        waiter.wait(FilterVariable="Name", EQ="will fail", WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    ml.create_ml_model(
        MLModelId="ml-1",
        MLModelType="BINARY",
        TrainingDataSourceId="ds-w0",
        Parameters={"sgd.maxPasses": "2"},
    )
    ml.get_waiter("ml_model_available").wait(FilterVariable="TrainingDataSourceId", EQ="ds-w0")
    model = ml.get_ml_model(MLModelId="ml-1", Verbose=True)
    assert model["Status"] == "COMPLETED" and model["CreatedAt"].tzinfo is not None
    assert json.loads(model["Schema"])["targetAttributeName"] == "y"


def test_paginators_walk_every_page(ml: Any) -> None:
    for i in range(5):
        ml.create_data_source_from_s3(
            DataSourceId=f"ds-p{i}",
            DataSourceName=f"page {i}",
            DataSpec={"DataLocationS3": "s3://b/x.csv", "DataSchema": SCHEMA},
        )
    pages = list(
        ml.get_paginator("describe_data_sources").paginate(
            FilterVariable="Name", Prefix="page ", PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(p["Results"]) for p in pages] == [2, 2, 1]
    assert "NextToken" not in pages[-1]
    assert sorted(r["Name"] for p in pages for r in p["Results"]) == [f"page {i}" for i in range(5)]


def test_tags_round_trip(ml: Any) -> None:
    ml.create_data_source_from_s3(
        DataSourceId="ds-t", DataSpec={"DataLocationS3": "s3://b/x.csv", "DataSchema": SCHEMA}
    )
    ml.add_tags(ResourceId="ds-t", ResourceType="DataSource", Tags=[{"Key": "équipe", "Value": "données"}])
    assert ml.describe_tags(ResourceId="ds-t", ResourceType="DataSource")["Tags"] == [
        {"Key": "équipe", "Value": "données"}
    ]
    with pytest.raises(ml.exceptions.InvalidTagException):
        ml.add_tags(ResourceId="ds-t", ResourceType="DataSource", Tags=[{"Key": "aws:x"}])


def test_a_bug_is_an_internal_server_exception_without_traceback(
    ml: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_: Any) -> dict[str, Any]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(ml.service, "describe_ml_models", broken)
    with pytest.raises(ml.exceptions.InternalServerException) as info:
        ml.describe_ml_models()
    error = info.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert error["ResponseMetadata"]["RequestId"] in error["Error"]["Message"]
    assert "secret internals" not in error["Error"]["Message"]
