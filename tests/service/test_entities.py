"""The service's entity machinery with stand-in jobs (no ML): statuses, timing, dependencies, idempotency,
Describe filters/sort/paging, updates, deletes, tags, validation, restart recovery."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from amlflow.service.core import Service
from amlflow.service.errors import (
    AmlError,
    IdempotentParameterMismatchException,
    InvalidInputException,
    InvalidTagException,
    LimitExceededException,
    PredictorNotMountedException,
    ResourceNotFoundException,
    TagLimitExceededException,
)
from amlflow.service.jobs import JobContext, JobFailed, JobResult
from amlflow.settings import Settings
from tests.service.support import SCHEMA, STANDIN, FakeModel, Ticks, model_job, wait, wait_for


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def factory(jobs: dict[str, Any] | None = None, **settings: Any) -> Service:
        service = Service(Settings(home=tmp_path / "home", **settings), jobs={**STANDIN, **(jobs or {})})
        made.append(service)
        return service

    yield factory
    for service in made:
        service.shutdown(timeout=5)


def ds(
    service: Service,
    ds_id: str,
    *,
    name: str | None = None,
    stats: bool = True,
    location: str = "s3://b/data.csv",
) -> None:
    service.create_data_source_from_s3(
        DataSourceId=ds_id,
        DataSourceName=name,
        ComputeStatistics=stats,
        DataSpec={"DataLocationS3": location, "DataSchema": SCHEMA},
    )


def test_lifecycle_timing_fields_and_dependencies(make: Callable[..., Service]) -> None:
    gate = threading.Event()
    started = threading.Event()

    def gated(ctx: JobContext) -> JobResult:
        started.set()
        assert gate.wait(10)
        return JobResult({"DataSizeInBytes": 42, "NumberOfFiles": 1})

    service = make({"DataSource": gated})
    assert service.create_data_source_from_s3(
        DataSourceId="ds-1",
        DataSourceName="train",
        ComputeStatistics=True,
        DataSpec={
            "DataLocationS3": "s3://b/data.csv",
            "DataSchema": SCHEMA,
            "DataRearrangement": '{"splitting": {"percentBegin": 0, "percentEnd": 70}}',
        },
    ) == {"DataSourceId": "ds-1"}
    assert service.create_ml_model(
        MLModelId="ml-1", MLModelType="BINARY", TrainingDataSourceId="ds-1", Parameters={"sgd.maxPasses": "5"}
    ) == {"MLModelId": "ml-1"}
    assert started.wait(10)  # the datasource job runs (INPROGRESS) and holds until gate is set
    health = service.health()
    assert {k: health[k] for k in ("jobs_running", "jobs_queued", "jobs_waiting")} == {
        "jobs_running": 1,
        "jobs_queued": 0,
        "jobs_waiting": 1,
    }
    assert health["jobs_owned"] == [{"kind": "DataSource", "id": "ds-1"}]
    assert health["owner"] == service.jobs.owner
    model = service.get_ml_model(MLModelId="ml-1")
    assert model["Status"] == "PENDING"  # waits for its datasource
    assert "StartedAt" not in model and "FinishedAt" not in model and "ComputeTime" not in model
    assert model["CreatedAt"] == model["LastUpdatedAt"] and model["CreatedAt"].tzinfo is not None
    assert model["EndpointInfo"] == {"PeakRequestsPerSecond": 0, "EndpointStatus": "NONE"}
    assert model["TrainingParameters"]["sgd.maxPasses"] == "5"
    assert model["TrainingParameters"]["algorithm"] == "sgd"
    assert model["InputDataLocationS3"] == "s3://b/data.csv"
    assert model["CreatedByIamUser"] == "arn:aws:iam::123456789012:user/amlflow"
    running = service.get_data_source(DataSourceId="ds-1")
    assert running["Status"] == "INPROGRESS" and "StartedAt" in running and "FinishedAt" not in running
    gate.set()
    done = wait(service, "DataSource", "ds-1")
    assert done["Status"] == "COMPLETED" and done["DataSizeInBytes"] == 42 and done["NumberOfFiles"] == 1
    assert done["StartedAt"] <= done["FinishedAt"] and done["ComputeTime"] >= 1
    assert done["DataRearrangement"] == '{"splitting": {"percentBegin": 0, "percentEnd": 70}}'
    assert done["LogUri"].startswith("file://")
    model = wait(service, "MLModel", "ml-1")
    assert model["Status"] == "COMPLETED" and model["SizeInBytes"] == 123 and model["ScoreThreshold"] == 0.5
    verbose = service.get_data_source(DataSourceId="ds-1", Verbose=True)
    assert json.loads(verbose["DataSourceSchema"])["targetAttributeName"] == "y"
    assert "DataSourceSchema" not in done


def test_failed_input_fails_the_waiting_job(make: Callable[..., Service]) -> None:
    gate = threading.Event()

    def broken(ctx: JobContext) -> JobResult:
        assert gate.wait(10)
        raise JobFailed("DataLocationS3: no data found at s3://b/data.csv")

    service = make({"DataSource": broken})
    ds(service, "ds-bad")
    service.create_ml_model(MLModelId="ml-dep", MLModelType="BINARY", TrainingDataSourceId="ds-bad")
    service.create_evaluation(EvaluationId="ev-dep", MLModelId="ml-dep", EvaluationDataSourceId="ds-bad")
    assert service.health()["jobs_waiting"] == 2  # both wait for the datasource...
    gate.set()  # ...which now fails
    failed = wait(service, "DataSource", "ds-bad")
    assert failed["Status"] == "FAILED" and "no data found" in failed["Message"]
    assert "FinishedAt" in failed and "ComputeTime" not in failed
    model = wait(service, "MLModel", "ml-dep")
    assert model["Status"] == "FAILED" and "ds-bad" in model["Message"] and "FAILED" in model["Message"]
    ev = wait(service, "Evaluation", "ev-dep")
    assert ev["Status"] == "FAILED" and ("ml-dep" in ev["Message"] or "ds-bad" in ev["Message"])


def test_bug_in_a_job_fails_the_entity_with_a_message(make: Callable[..., Service]) -> None:
    def bug(ctx: JobContext) -> JobResult:
        raise KeyError("oops")

    service = make({"DataSource": bug})
    ds(service, "ds-bug")
    out = wait(service, "DataSource", "ds-bug")
    assert out["Status"] == "FAILED" and "Internal error" in out["Message"] and "oops" in out["Message"]
    assert "Traceback" in Path(out["LogUri"].removeprefix("file://")).read_text()


def test_create_time_input_errors_name_the_field(make: Callable[..., Service]) -> None:
    service = make()
    with pytest.raises(InvalidInputException, match="DataSpec.DataSchema"):
        service.create_data_source_from_s3(
            DataSourceId="ds-x", DataSpec={"DataLocationS3": "s3://b/x.csv", "DataSchema": "{not json"}
        )
    with pytest.raises(InvalidInputException, match="DataSpec.DataRearrangement"):
        service.create_data_source_from_s3(
            DataSourceId="ds-x",
            DataSpec={
                "DataLocationS3": "s3://b/x.csv",
                "DataSchema": SCHEMA,
                "DataRearrangement": '{"splitting": 5}',
            },
        )
    with pytest.raises(InvalidInputException, match="DataSchemaLocationS3"):
        service.create_data_source_from_s3(
            DataSourceId="ds-x",
            DataSpec={"DataLocationS3": "s3://b/x.csv", "DataSchemaLocationS3": "s3://b/missing.schema"},
        )
    with pytest.raises(InvalidInputException, match="DataSpec.DataLocationS3: .*escape"):
        service.create_data_source_from_s3(
            DataSourceId="ds-x", DataSpec={"DataLocationS3": "s3://b/../../etc", "DataSchema": SCHEMA}
        )
    with pytest.raises(InvalidInputException, match="DataSchema or DataSchemaLocationS3"):
        service.create_data_source_from_s3(DataSourceId="ds-x", DataSpec={"DataLocationS3": "s3://b/x.csv"})
    assert service.state.get("DataSource", "ds-x") is None  # nothing was created
    with pytest.raises(
        InvalidInputException, match="TrainingDataSourceId: DataSource ds-none does not exist"
    ):
        service.create_ml_model(MLModelId="ml-x", MLModelType="BINARY", TrainingDataSourceId="ds-none")
    ds(service, "ds-nostats", stats=False)
    with pytest.raises(InvalidInputException, match="ComputeStatistics"):
        service.create_ml_model(MLModelId="ml-x", MLModelType="BINARY", TrainingDataSourceId="ds-nostats")
    ds(service, "ds-ok")
    with pytest.raises(InvalidInputException, match="MLModelType: REGRESSION needs a NUMERIC target"):
        service.create_ml_model(MLModelId="ml-x", MLModelType="REGRESSION", TrainingDataSourceId="ds-ok")
    with pytest.raises(InvalidInputException, match="Parameters"):
        service.create_ml_model(
            MLModelId="ml-x",
            MLModelType="BINARY",
            TrainingDataSourceId="ds-ok",
            Parameters={"sgd.noSuchKnob": "1"},
        )
    with pytest.raises(InvalidInputException, match="not both"):
        service.create_ml_model(
            MLModelId="ml-x",
            MLModelType="BINARY",
            TrainingDataSourceId="ds-ok",
            Recipe="{}",
            RecipeUri="s3://b/r.json",
        )
    with pytest.raises(InvalidInputException, match="MLModelId: MLModel ml-none does not exist"):
        service.create_evaluation(EvaluationId="ev-x", MLModelId="ml-none", EvaluationDataSourceId="ds-ok")
    with pytest.raises(InvalidInputException, match="OutputUri"):
        service.create_batch_prediction(
            BatchPredictionId="bp-x",
            MLModelId="ml-none",
            BatchPredictionDataSourceId="ds-ok",
            OutputUri="s3://b/a//b/",
        )
    for op in ("CreateDataSourceFromRDS", "CreateDataSourceFromRedshift"):
        method = getattr(
            service, "create_data_source_from_rds" if "RDS" in op else "create_data_source_from_redshift"
        )
        with pytest.raises(InvalidInputException, match="use CreateDataSourceFromS3"):
            method(DataSourceId="ds-db")


def test_dispatch_validates_against_the_model(make: Callable[..., Service]) -> None:
    service = make()
    with pytest.raises(InvalidInputException) as info:
        service.dispatch("DescribeMLModels", {"Limit": 500, "FilterVariable": "Nope"})
    assert "at 'Limit'" in info.value.message and "at 'FilterVariable'" in info.value.message
    assert info.value.http_status == 400
    with pytest.raises(AmlError) as unknown:
        service.dispatch("TrainEverything", {})
    assert unknown.value.code == "UnknownOperationException"
    assert service.dispatch("DescribeDataSources", {})["Results"] == []
    with pytest.raises(ResourceNotFoundException, match="ml-none"):
        service.dispatch("GetMLModel", {"MLModelId": "ml-none"})


def test_idempotent_creates(make: Callable[..., Service]) -> None:
    service = make()
    ds(service, "ds-i", name="n")
    ds(service, "ds-i", name="n")  # same arguments: same entity, no error
    assert len(service.describe_data_sources()["Results"]) == 1
    with pytest.raises(IdempotentParameterMismatchException, match="ds-i"):
        ds(service, "ds-i", name="other")
    wait(service, "DataSource", "ds-i")
    args: dict[str, Any] = {
        "MLModelId": "ml-i",
        "MLModelType": "BINARY",
        "TrainingDataSourceId": "ds-i",
        "Parameters": {"sgd.maxPasses": "3"},
    }
    service.create_ml_model(**args)
    assert service.create_ml_model(**args) == {"MLModelId": "ml-i"}
    with pytest.raises(IdempotentParameterMismatchException):
        service.create_ml_model(**{**args, "Parameters": {"sgd.maxPasses": "4"}})
    service.create_batch_prediction(
        BatchPredictionId="bp-i",
        MLModelId="ml-i",
        BatchPredictionDataSourceId="ds-i",
        OutputUri="s3://out/x/",
    )
    with pytest.raises(IdempotentParameterMismatchException):
        service.create_batch_prediction(
            BatchPredictionId="bp-i",
            MLModelId="ml-i",
            BatchPredictionDataSourceId="ds-i",
            OutputUri="s3://out/y/",
        )


def test_describe_filters_sort_and_paging(make: Callable[..., Service], ticks: Ticks) -> None:
    service = make()
    for i, name in enumerate(["alpha 1", "alpha 2", "beta", "alpha 3", "gamma"]):
        ds(service, f"ds-{i}", name=name, location=f"s3://b/{name[0]}.csv")  # distinct CreatedAt (ticks)
    for i in range(5):
        wait(service, "DataSource", f"ds-{i}")
    describe = service.describe_data_sources

    def ids(**kw: Any) -> list[str]:
        return [r["DataSourceId"] for r in describe(**kw)["Results"]]

    assert ids() == [f"ds-{i}" for i in range(5)]  # by CreatedAt
    assert ids(SortOrder="dsc") == [f"ds-{i}" for i in reversed(range(5))]
    assert ids(FilterVariable="Name", Prefix="alpha") == ["ds-0", "ds-1", "ds-3"]
    assert ids(FilterVariable="Name", Prefix="alpha", SortOrder="dsc") == ["ds-3", "ds-1", "ds-0"]
    assert ids(FilterVariable="Name", EQ="beta") == ["ds-2"]
    assert ids(FilterVariable="Name", NE="beta") == ["ds-0", "ds-1", "ds-3", "ds-4"]
    assert ids(FilterVariable="Name", GT="alpha 2", LT="gamma") == ["ds-3", "ds-2"]
    assert ids(FilterVariable="Name", GE="beta", LE="gamma") == ["ds-2", "ds-4"]
    assert ids(FilterVariable="DataLocationS3", EQ="s3://b/a.csv") == ["ds-0", "ds-1", "ds-3"]
    assert ids(FilterVariable="Status", EQ="COMPLETED") == [f"ds-{i}" for i in range(5)]
    assert ids(FilterVariable="IAMUser", EQ="arn:aws:iam::123456789012:user/amlflow") == [
        f"ds-{i}" for i in range(5)
    ]
    third = service.get_data_source(DataSourceId="ds-2")["CreatedAt"]
    assert ids(FilterVariable="CreatedAt", GE=str(third.timestamp())) == ["ds-2", "ds-3", "ds-4"]
    assert ids(FilterVariable="CreatedAt", LT=third.isoformat()) == ["ds-0", "ds-1"]
    # paging
    page1 = describe(Limit=2)
    assert [r["DataSourceId"] for r in page1["Results"]] == ["ds-0", "ds-1"] and page1["NextToken"]
    page2 = describe(Limit=2, NextToken=page1["NextToken"])
    page3 = describe(Limit=2, NextToken=page2["NextToken"])
    assert [r["DataSourceId"] for r in page3["Results"]] == ["ds-4"] and "NextToken" not in page3
    with pytest.raises(InvalidInputException, match="NextToken"):
        describe(NextToken="garbage")
    with pytest.raises(InvalidInputException, match="FilterVariable"):
        describe(EQ="x")
    with pytest.raises(InvalidInputException, match="FilterVariable"):
        service.describe_ml_models(FilterVariable="DataLocationS3", EQ="x")
    # DELETED: hidden unless filtering on Status
    service.delete_data_source(DataSourceId="ds-4")
    assert "ds-4" not in ids()
    assert ids(FilterVariable="Status", EQ="DELETED") == ["ds-4"]
    # describe items carry no LogUri / schema
    item = describe(FilterVariable="Name", EQ="beta")["Results"][0]
    assert "LogUri" not in item and "DataSourceSchema" not in item and item["Status"] == "COMPLETED"


def test_model_describe_filters(make: Callable[..., Service]) -> None:
    service = make()
    ds(service, "ds-m")
    for i in range(3):
        service.create_ml_model(
            MLModelId=f"ml-{i}", MLModelName=f"m{i}", MLModelType="BINARY", TrainingDataSourceId="ds-m"
        )
    for i in range(3):
        wait(service, "MLModel", f"ml-{i}")
    service._models["ml-1"] = FakeModel()
    service.create_realtime_endpoint(MLModelId="ml-1")
    describe = service.describe_ml_models
    assert [
        r["MLModelId"] for r in describe(FilterVariable="RealtimeEndpointStatus", EQ="READY")["Results"]
    ] == ["ml-1"]
    assert len(describe(FilterVariable="MLModelType", EQ="BINARY")["Results"]) == 3
    assert len(describe(FilterVariable="Algorithm", EQ="sgd")["Results"]) == 3
    assert len(describe(FilterVariable="TrainingDataSourceId", EQ="ds-m")["Results"]) == 3
    assert len(describe(FilterVariable="TrainingDataURI", EQ="s3://b/data.csv")["Results"]) == 3
    assert describe()["Results"][0]["Algorithm"] == "sgd"
    assert "Algorithm" not in service.get_ml_model(MLModelId="ml-0")
    service.create_evaluation(EvaluationId="ev-1", MLModelId="ml-0", EvaluationDataSourceId="ds-m")
    service.create_batch_prediction(
        BatchPredictionId="bp-1", MLModelId="ml-2", BatchPredictionDataSourceId="ds-m", OutputUri="s3://out/"
    )
    evs = service.describe_evaluations(FilterVariable="MLModelId", EQ="ml-0")["Results"]
    assert [e["EvaluationId"] for e in evs] == ["ev-1"]
    assert service.describe_evaluations(FilterVariable="DataURI", EQ="s3://b/data.csv")["Results"]
    bps = service.describe_batch_predictions(FilterVariable="DataSourceId", EQ="ds-m")["Results"]
    assert [b["BatchPredictionId"] for b in bps] == ["bp-1"] and bps[0]["OutputUri"] == "s3://out/"


def test_updates_and_deletes(make: Callable[..., Service], ticks: Ticks) -> None:
    service = make()
    ds(service, "ds-u", name="old")
    wait(service, "DataSource", "ds-u")
    before = service.get_data_source(DataSourceId="ds-u")  # the update's stamp is later (ticks)
    assert service.update_data_source(DataSourceId="ds-u", DataSourceName="new") == {"DataSourceId": "ds-u"}
    after = service.get_data_source(DataSourceId="ds-u")
    assert after["Name"] == "new" and after["LastUpdatedAt"] > before["LastUpdatedAt"]
    service.create_ml_model(MLModelId="ml-u", MLModelType="BINARY", TrainingDataSourceId="ds-u")
    wait(service, "MLModel", "ml-u")
    service.update_ml_model(MLModelId="ml-u", ScoreThreshold=0.77, MLModelName="named")
    model = service.get_ml_model(MLModelId="ml-u")
    assert (
        model["ScoreThreshold"] == 0.77
        and model["Name"] == "named"
        and "ScoreThresholdLastUpdatedAt" in model
    )
    with pytest.raises(InvalidInputException, match="ScoreThreshold"):
        service.update_ml_model(MLModelId="ml-u", ScoreThreshold=1.5)
    with pytest.raises(ResourceNotFoundException, match="ml-none"):
        service.update_ml_model(MLModelId="ml-none", MLModelName="x")
    assert service.delete_ml_model(MLModelId="ml-u") == {"MLModelId": "ml-u"}
    assert service.delete_ml_model(MLModelId="ml-u") == {"MLModelId": "ml-u"}  # repeated delete: fine
    assert service.get_ml_model(MLModelId="ml-u")["Status"] == "DELETED"
    with pytest.raises(InvalidInputException, match="DELETED"):
        service.update_ml_model(MLModelId="ml-u", MLModelName="again")
    with pytest.raises(InvalidInputException, match="DELETED"):
        service.create_evaluation(EvaluationId="ev-u", MLModelId="ml-u", EvaluationDataSourceId="ds-u")
    with pytest.raises(ResourceNotFoundException):
        service.delete_evaluation(EvaluationId="ev-none")


def test_delete_while_waiting_fails_the_dependent(make: Callable[..., Service]) -> None:
    gate = threading.Event()

    def gated(ctx: JobContext) -> JobResult:
        gate.wait(10)
        return JobResult({})

    service = make({"DataSource": gated})
    ds(service, "ds-w")
    service.create_ml_model(MLModelId="ml-w", MLModelType="BINARY", TrainingDataSourceId="ds-w")
    service.delete_data_source(DataSourceId="ds-w")
    gate.set()
    model = wait(service, "MLModel", "ml-w")
    assert model["Status"] == "FAILED" and "DELETED" in model["Message"]
    assert service.get_data_source(DataSourceId="ds-w")["Status"] == "DELETED"  # the job did not undelete it


def test_tags(make: Callable[..., Service]) -> None:
    service = make()
    ds(service, "ds-t")
    service.add_tags(
        ResourceId="ds-t", ResourceType="DataSource", Tags=[{"Key": "team", "Value": "ml"}, {"Key": "flag"}]
    )
    service.add_tags(ResourceId="ds-t", ResourceType="DataSource", Tags=[{"Key": "team", "Value": "data"}])
    tags = service.describe_tags(ResourceId="ds-t", ResourceType="DataSource")
    assert tags == {
        "ResourceId": "ds-t",
        "ResourceType": "DataSource",
        "Tags": [{"Key": "team", "Value": "data"}, {"Key": "flag"}],
    }
    service.delete_tags(ResourceId="ds-t", ResourceType="DataSource", TagKeys=["flag", "not-there"])
    assert service.describe_tags(ResourceId="ds-t", ResourceType="DataSource")["Tags"] == [
        {"Key": "team", "Value": "data"}
    ]
    with pytest.raises(ResourceNotFoundException):
        service.describe_tags(ResourceId="ds-t", ResourceType="MLModel")  # wrong type for that id
    with pytest.raises(InvalidTagException, match="aws:"):
        service.add_tags(
            ResourceId="ds-t", ResourceType="DataSource", Tags=[{"Key": "aws:owner", "Value": "x"}]
        )
    with pytest.raises(InvalidTagException, match=r"Tags.1.Key"):
        service.add_tags(ResourceId="ds-t", ResourceType="DataSource", Tags=[{"Key": "bad#key"}])
    with pytest.raises(TagLimitExceededException, match="at most 50"):
        service.add_tags(
            ResourceId="ds-t", ResourceType="DataSource", Tags=[{"Key": f"k{i}"} for i in range(50)]
        )
    assert len(service.describe_tags(ResourceId="ds-t", ResourceType="DataSource")["Tags"]) == 1  # unchanged


def test_realtime_endpoint_predict_and_rate_limit(make: Callable[..., Service]) -> None:
    gate = threading.Event()

    def gated_model(ctx: JobContext) -> JobResult:
        gate.wait(10)
        return model_job(ctx)

    service = make({"MLModel": gated_model}, predict_rate_limit=5)
    service.set_endpoint_url("http://127.0.0.1:9999")
    ds(service, "ds-r")
    service.create_ml_model(MLModelId="ml-r", MLModelType="BINARY", TrainingDataSourceId="ds-r")
    with pytest.raises(InvalidInputException, match="COMPLETED"):
        service.create_realtime_endpoint(MLModelId="ml-r")
    gate.set()
    wait(service, "MLModel", "ml-r")
    service._models["ml-r"] = FakeModel()
    with pytest.raises(PredictorNotMountedException):
        service.predict(MLModelId="ml-r", Record={"x": "0.9"}, PredictEndpoint="http://127.0.0.1:9999")
    info = service.create_realtime_endpoint(MLModelId="ml-r")["RealtimeEndpointInfo"]
    assert info["EndpointStatus"] == "READY" and info["EndpointUrl"] == "http://127.0.0.1:9999"
    assert info["PeakRequestsPerSecond"] == 200 and info["CreatedAt"].tzinfo is not None
    assert service.create_realtime_endpoint(MLModelId="ml-r")["RealtimeEndpointInfo"] == info  # idempotent
    out = service.predict(MLModelId="ml-r", Record={"x": "0.9"}, PredictEndpoint=info["EndpointUrl"])
    assert out["Prediction"]["predictedLabel"] == "1"
    service.update_ml_model(MLModelId="ml-r", ScoreThreshold=0.95)
    assert (
        service.predict(MLModelId="ml-r", Record={"x": "0.9"}, PredictEndpoint=info["EndpointUrl"])[
            "Prediction"
        ]["predictedLabel"]
        == "0"
    )
    with pytest.raises(LimitExceededException):
        for _ in range(10):
            service.predict(MLModelId="ml-r", Record={"x": "0.1"}, PredictEndpoint=info["EndpointUrl"])
    with pytest.raises(ResourceNotFoundException):
        service.predict(MLModelId="ml-none", Record={}, PredictEndpoint=info["EndpointUrl"])
    assert service.delete_realtime_endpoint(MLModelId="ml-r")["RealtimeEndpointInfo"] == {
        "PeakRequestsPerSecond": 0,
        "EndpointStatus": "NONE",
    }
    with pytest.raises(PredictorNotMountedException):
        service.predict(MLModelId="ml-r", Record={"x": "0.9"}, PredictEndpoint=info["EndpointUrl"])


def test_rate_limit_zero_means_off(make: Callable[..., Service]) -> None:
    service = make(predict_rate_limit=0)
    ds(service, "ds-z")
    service.create_ml_model(MLModelId="ml-z", MLModelType="BINARY", TrainingDataSourceId="ds-z")
    wait(service, "MLModel", "ml-z")
    service._models["ml-z"] = FakeModel()
    url = service.create_realtime_endpoint(MLModelId="ml-z")["RealtimeEndpointInfo"]["EndpointUrl"]
    for _ in range(300):
        service.predict(MLModelId="ml-z", Record={"x": "0.2"}, PredictEndpoint=url)


def test_restart_recovery(make: Callable[..., Service]) -> None:
    gate = threading.Event()
    started = threading.Event()

    def slow(ctx: JobContext) -> JobResult:
        if ctx.entity.id == "ds-done":
            return JobResult({"DataSizeInBytes": 7})
        started.set()
        gate.wait(10)
        return JobResult({"DataSizeInBytes": 1})

    # a 1 s lease: first's heartbeat stops at its shutdown ("killed"), so its lease expires at once
    first = make({"DataSource": slow}, max_jobs=1, lease_seconds=1)
    ds(first, "ds-done")
    assert wait(first, "DataSource", "ds-done")["Status"] == "COMPLETED"
    ds(first, "ds-running")
    assert started.wait(10)
    ds(first, "ds-queued")
    first.create_ml_model(MLModelId="ml-after", MLModelType="BINARY", TrainingDataSourceId="ds-queued")
    assert first.shutdown(timeout=0.2) is False  # ds-running is still running: "killed" here
    assert first.get_data_source(DataSourceId="ds-running")["Status"] == "INPROGRESS"
    assert first.get_data_source(DataSourceId="ds-queued")["Status"] == "PENDING"

    calls: list[str] = []

    def resumed(ctx: JobContext) -> JobResult:
        calls.append(ctx.entity.id)
        if ctx.entity.id == "ds-queued":
            raise JobFailed("DataLocationS3: the input disappeared")
        return JobResult({"DataSizeInBytes": 99})

    second = make({"DataSource": resumed}, lease_seconds=1)
    assert wait(second, "DataSource", "ds-running")["DataSizeInBytes"] == 99
    assert wait(second, "DataSource", "ds-queued")["Status"] == "FAILED"
    assert wait(second, "MLModel", "ml-after")["Status"] == "FAILED"
    done = second.get_data_source(DataSourceId="ds-done")
    assert done["Status"] == "COMPLETED" and done["DataSizeInBytes"] == 7  # intact, not re-run
    assert sorted(calls) == ["ds-queued", "ds-running"]
    gate.set()  # the "killed" first job ends now: its lease is gone, so its result is discarded
    assert first.jobs.shutdown(timeout=10)
    assert second.get_data_source(DataSourceId="ds-running")["DataSizeInBytes"] == 99
    log = (second.jobs.log_path("DataSource", "ds-running")).read_text()
    assert "result discarded" in log and "taken over from" in log, log


def test_shutdown_leaves_queued_jobs_pending_for_the_next_service(make: Callable[..., Service]) -> None:
    first = make(max_jobs=1)
    first.shutdown(timeout=1)
    ds(first, "ds-late")  # created after shutdown: never queued, stays PENDING
    assert _counts(first) == (0, 0, 0)
    assert first.get_data_source(DataSourceId="ds-late")["Status"] == "PENDING"
    second = make()
    assert wait(second, "DataSource", "ds-late")["Status"] == "COMPLETED"
    # the worker leaves the running set just after it writes COMPLETED: wait for it, then nothing is running
    idle = wait_for(lambda: {"Status": "IDLE" if second.health()["jobs_running"] == 0 else "BUSY"}, ["IDLE"])
    assert idle["Status"] == "IDLE"


def test_shutdown_waits_for_running_jobs_only(make: Callable[..., Service]) -> None:
    started = threading.Event()
    release = threading.Event()

    def slow(ctx: JobContext) -> JobResult:
        started.set()
        assert release.wait(10)
        return JobResult({})

    service = make({"DataSource": slow}, max_jobs=1)
    for i in range(3):
        ds(service, f"ds-s{i}")
    assert started.wait(5)
    assert service.shutdown(timeout=0) is False  # stops taking work: the queued two are dropped...
    assert _counts(service) == (1, 0, 0)
    release.set()
    assert service.shutdown(timeout=10) is True  # ...and only the running one is waited for
    statuses = [service.get_data_source(DataSourceId=f"ds-s{i}")["Status"] for i in range(3)]
    assert statuses == ["COMPLETED", "PENDING", "PENDING"]
    assert _counts(service) == (0, 0, 0)


def _counts(service: Service) -> tuple[int, int, int]:
    """(running, queued, waiting) of ``service``'s health."""
    health = service.health()
    return health["jobs_running"], health["jobs_queued"], health["jobs_waiting"]
