"""The pipeline's wiring on the real embedded service with instant stand-in ML: concurrency, idempotent
re-runs, retries, failures, reports with and without the service's report side-channel."""

from __future__ import annotations

import gzip
import re
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)

from amlflow.client import override
from amlflow.engine.errors import TrainingError
from amlflow.service.engine_jobs import EngineJobs
from amlflow.service.standin import standin_engine
from flows.pipeline import aml_pipeline
from tasks._common import EntityFailedError
from tests.flows.conftest import STANDIN_METRIC, EmbeddedAML

pytestmark = pytest.mark.prefect

SCHEMA = (
    '{"version":"1.0","dataFormat":"CSV","dataFileContainsHeader":true,"targetAttributeName":"y",'
    '"attributes":[{"attributeName":"x","attributeType":"NUMERIC"},{"attributeName":"y","attributeType":"BINARY"}]}'
)
#: A deadlock guard for the gated stand-in jobs below, not a timing expectation.
GATE_DEADLINE = 120.0


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    return path


def run(tiny_csv: Path, tmp_path: Path, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "name": "tiny",
        "train_data": str(tiny_csv),
        "data_schema": SCHEMA,
        "model_type": "BINARY",
        "batch_data": str(tiny_csv),
        "output_dir": str(tmp_path / "out"),
    }
    kwargs.update(overrides)
    return aml_pipeline(**kwargs)


def task_runs(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def artifacts(flow_run_id: Any) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found if a.key}


def client_error(code: str, message: str, operation: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


def overlap_gated_engine(polled: dict[str, threading.Event]) -> EngineJobs:
    """Stand-in jobs that prove the evaluation ∥ batch prediction overlap without any clock.

    The evaluation job finishes only once ``wait_for_batch_prediction`` has polled, and the batch job only
    once ``wait_for_evaluation`` has polled: each wait task therefore ends after the other one started. A
    serial wiring never sets the other event and the job fails (the flow with it) at the deadlock guard.
    """
    base = standin_engine(metric=STANDIN_METRIC)

    def gate(operation: str) -> None:
        if not polled[operation].wait(GATE_DEADLINE):
            raise RuntimeError(
                f"no {operation} while this job ran: evaluation and batch prediction are serial"
            )

    def evaluate(*args: Any, **kwargs: Any) -> Any:
        gate("GetBatchPrediction")
        return base.evaluate(*args, **kwargs)

    def write_batch_output(*args: Any, **kwargs: Any) -> Any:
        gate("GetEvaluation")
        return base.write_batch_output(*args, **kwargs)

    return replace(base, evaluate=evaluate, write_batch_output=write_batch_output)


def test_pipeline_runs_evaluation_and_batch_prediction_in_parallel(
    start_aml: Callable[..., EmbeddedAML], tiny_csv: Path, tmp_path: Path
) -> None:
    polled = {op: threading.Event() for op in ("GetEvaluation", "GetBatchPrediction")}
    aml = start_aml(overlap_gated_engine(polled))
    for op, event in polled.items():
        aml.ml.meta.events.register(
            f"before-parameter-build.machine-learning.{op}", lambda event=event, **_: event.set()
        )
    state = run(tiny_csv, tmp_path, score_threshold=0.6, return_state=True)
    result = state.result()
    assert result["ml_model_id"].startswith("ml-")
    assert set(result["data_sources"]) == {"train", "evaluation", "batch"}
    assert result["evaluation"]["metric_name"] == "BinaryAUC"
    assert result["evaluation"]["metric"] == STANDIN_METRIC
    assert result["evaluation"]["report_available"] is True  # the embedded service's side-channel
    # the real datasource jobs' insights: a 70/30 sequential split of the 40 rows (AML measures it in
    # bytes and the ten one-digit rows are shorter, so 29 rows train), and all 40 batch rows
    assert [(i["data_source_id"], i["insights"], i["rows"]) for i in result["insights"]] == [
        (result["data_sources"]["train"], True, 29),
        (result["data_sources"]["evaluation"], True, 11),
        (result["data_sources"]["batch"], True, 40),
    ]
    local = Path(result["batch"]["local_files"][0])
    assert local.exists()
    model = aml.ml.get_ml_model(MLModelId=result["ml_model_id"])
    assert model["ScoreThreshold"] == 0.6
    # the threshold was set before the batch prediction ran: the stand-in's score 0.5 is below 0.6
    lines = gzip.decompress(local.read_bytes()).decode().splitlines()
    assert lines[0] == "bestAnswer,score" and set(lines[1:]) == {"0,0.5"} and len(lines) == 41
    # 3 datasources, 1 model, 1 evaluation, 1 batch prediction
    assert aml.counts() == [3, 1, 1, 1]
    (bp,) = aml.describe("BatchPrediction")
    assert bp["MLModelId"] == result["ml_model_id"]
    assert bp["BatchPredictionDataSourceId"] == result["data_sources"]["batch"]
    assert bp["OutputUri"] == "s3://amlflow/tiny/output/"

    runs = {r.name.rsplit("-", 1)[0]: r for r in task_runs(state.state_details.flow_run_id)}
    ev, bp_run = runs["wait_for_evaluation"], runs["wait_for_batch_prediction"]
    assert ev.start_time < bp_run.end_time and bp_run.start_time < ev.end_time, (
        "evaluation and batch prediction overlap"
    )
    model_run = runs["wait_for_ml_model"]
    assert model_run.end_time <= runs["create_evaluation"].start_time
    assert runs["wait_for_data_source"].end_time is not None

    published = artifacts(state.state_details.flow_run_id)
    # artifact keys carry the case, so the Prefect UI's history of a key follows one pipeline
    assert {
        "tiny-insights-train",
        "tiny-insights-evaluation",
        "tiny-insights-batch",
        "tiny-evaluation-report",
        "tiny-batch-preview",
        "tiny-batch-summary",
        "tiny-batch-result",
    } <= set(published)
    assert all(key.startswith("tiny-") for key in published), sorted(published)
    report = published["tiny-evaluation-report"]
    assert "| model | 0.75 |" in report.data and "data:image/png;base64," in report.data
    assert "not available from this AML back end" not in published["tiny-insights-train"].data


class WithoutReports:
    """The real client without the embedded service's report side-channel, as over HTTP or on AWS."""

    service = None

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_reports_degrade_on_a_back_end_without_reports(
    aml: EmbeddedAML, tiny_csv: Path, tmp_path: Path
) -> None:
    with override(ml=WithoutReports(aml.ml)):
        state = run(tiny_csv, tmp_path, batch_data=None, return_state=True)
    result = state.result()
    assert result["evaluation"]["metric"] == STANDIN_METRIC
    assert result["evaluation"]["baseline"] is None  # no report side-channel on this back end
    assert result["evaluation"]["report_available"] is False
    assert [i["insights"] for i in result["insights"]] == [False, False]
    published = artifacts(state.state_details.flow_run_id)
    report = published["tiny-evaluation-report"]
    assert "| model | 0.75 |" in report.data and "data:image/png;base64," in report.data
    assert "No baseline" in report.data
    assert "not available from this AML back end" in published["tiny-insights-train"].data
    assert aml.counts() == [2, 1, 1, 0]


def test_pipeline_rerun_reattaches_to_the_same_entities(
    aml: EmbeddedAML, tiny_csv: Path, tmp_path: Path
) -> None:
    def uploaded() -> dict[Path, tuple[int, int]]:
        """Every uploaded input file with its inode and mtime: a new upload replaces the file."""
        inputs = aml.root / "amlflow" / "tiny" / "inputs"
        return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in inputs.rglob("*") if p.is_file()}

    first = run(tiny_csv, tmp_path)
    assert first["inputs"]["train"]["uploaded"] == "yes"
    uploads = uploaded()
    assert len(uploads) == 1  # train and batch are the same file: one object
    second = run(tiny_csv, tmp_path)
    assert second["ml_model_id"] == first["ml_model_id"]
    assert second["evaluation_id"] == first["evaluation_id"]
    assert second["data_sources"] == first["data_sources"]
    assert aml.counts() == [3, 1, 1, 1]
    assert {role: i["uploaded"] for role, i in second["inputs"].items()} == {"train": "no", "batch": "no"}
    assert uploaded() == uploads, "an unchanged input is not uploaded again"
    third = run(tiny_csv, tmp_path, salt="new")
    assert third["ml_model_id"] != first["ml_model_id"]


class FlakyML:
    """Lets the create reach the service, then loses the response twice with a 500."""

    def __init__(self, inner: Any, failures: int = 2) -> None:
        self.inner = inner
        self.failures = failures

    def create_ml_model(self, **kwargs: Any) -> dict[str, Any]:
        response: dict[str, Any] = self.inner.create_ml_model(**kwargs)
        if self.failures > 0:
            self.failures -= 1
            raise client_error(
                "InternalServerException", "We encountered an internal error.", "CreateMLModel", 500
            )
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_transient_failure_retries_without_duplicating(
    aml: EmbeddedAML, tiny_csv: Path, tmp_path: Path
) -> None:
    flaky = FlakyML(aml.ml)
    with override(ml=flaky):
        result = run(tiny_csv, tmp_path, batch_data=None)
    assert flaky.failures == 0
    assert aml.calls["CreateMLModel"] == 3, "two transient failures, then success"
    assert [m["MLModelId"] for m in aml.describe("MLModel")] == [result["ml_model_id"]], "no duplicate model"
    assert aml.ml.get_ml_model(MLModelId=result["ml_model_id"])["Status"] == "COMPLETED"


def test_invalid_input_fails_the_flow_at_once_with_the_aml_message(
    aml: EmbeddedAML, tiny_csv: Path, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="Member must satisfy enum value set") as info:
        run(tiny_csv, tmp_path, model_type="NOPE")
    assert "InvalidInputException" in str(info.value) or "enum" in str(info.value)
    assert aml.calls["CreateMLModel"] == 1, "permanent errors are not retried"
    assert aml.describe("MLModel") == []


REFUSAL = "stand-in training refused: the recipe's output 'FAIL' is not a group or attribute"


def test_failed_entity_fails_the_flow_with_its_message(
    start_aml: Callable[..., EmbeddedAML], tiny_csv: Path, tmp_path: Path
) -> None:
    aml = start_aml(standin_engine(train_error=lambda schema, params, model_type: TrainingError(REFUSAL)))
    with pytest.raises(EntityFailedError, match=re.escape(f"ended FAILED: {REFUSAL}")):
        run(tiny_csv, tmp_path)
    assert aml.calls["CreateMLModel"] == 1
    (model,) = aml.describe("MLModel")
    assert model["Status"] == "FAILED" and model["Message"] == REFUSAL
    assert aml.describe("Evaluation") == [] and aml.describe("BatchPrediction") == []


def test_the_pipeline_runs_on_a_dask_task_runner(
    start_aml: Callable[..., EmbeddedAML], tiny_csv: Path, tmp_path: Path
) -> None:
    """AMLFLOW_PREFECT_TASK_RUNNER=dask: the same pipeline, its tasks on prefect-dask's DaskTaskRunner."""
    from prefect_dask import DaskTaskRunner

    from flows.task_runners import task_runner_from_env

    runner = task_runner_from_env({"AMLFLOW_PREFECT_TASK_RUNNER": "dask"})
    assert isinstance(runner, DaskTaskRunner)
    start_aml()
    on_dask = aml_pipeline.with_options(task_runner=runner)
    result = on_dask(
        name="tiny",
        train_data=str(tiny_csv),
        data_schema=SCHEMA,
        model_type="BINARY",
        batch_data=str(tiny_csv),
        output_dir=str(tmp_path / "out"),
    )
    assert result["evaluation"]["metric"] == STANDIN_METRIC
    assert set(result["data_sources"]) == {"train", "evaluation", "batch"}
    assert result["batch_prediction"]["Status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", None), ("threads", None), ("dask:tcp://10.0.0.1:8786", "tcp://10.0.0.1:8786")],
)
def test_task_runner_from_env(value: str, expected: str | None) -> None:
    from flows.task_runners import task_runner_from_env

    runner = task_runner_from_env({"AMLFLOW_PREFECT_TASK_RUNNER": value})
    assert (runner.address if runner is not None else None) == expected
    with pytest.raises(ValueError, match="expected threads, dask or dask:tcp://host:port"):
        task_runner_from_env({"AMLFLOW_PREFECT_TASK_RUNNER": "ray"})
