"""The pipeline's wiring on a fake AML client: concurrency, idempotent re-runs, retries, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)

from amlflow.client import override
from flows.pipeline import aml_pipeline
from tasks._common import EntityFailedError
from tests.flows.fake_aml import FakeML, client_error

pytestmark = pytest.mark.prefect

SCHEMA = (
    '{"version":"1.0","dataFormat":"CSV","dataFileContainsHeader":true,"targetAttributeName":"y",'
    '"attributes":[{"attributeName":"x","attributeType":"NUMERIC"},{"attributeName":"y","attributeType":"BINARY"}]}'
)


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


def test_pipeline_runs_evaluation_and_batch_prediction_in_parallel(
    fake_aml: FakeML, tiny_csv: Path, tmp_path: Path
) -> None:
    state = run(tiny_csv, tmp_path, score_threshold=0.6, return_state=True)
    result = state.result()
    assert result["ml_model_id"].startswith("ml-")
    assert set(result["data_sources"]) == {"train", "evaluation", "batch"}
    assert result["evaluation"]["metric_name"] == "BinaryAUC"
    assert result["evaluation"]["baseline"] is None  # no report side-channel on this back end
    assert Path(result["batch"]["local_files"][0]).exists()
    assert fake_aml.entities["MLModel"][result["ml_model_id"]]["params"]["ScoreThreshold"] == 0.6
    # 3 datasources, 1 model, 1 evaluation, 1 batch prediction
    assert [
        len(fake_aml.entities[k]) for k in ("DataSource", "MLModel", "Evaluation", "BatchPrediction")
    ] == [3, 1, 1, 1]

    runs = {r.name.rsplit("-", 1)[0]: r for r in task_runs(state.state_details.flow_run_id)}
    ev, bp = runs["wait_for_evaluation"], runs["wait_for_batch_prediction"]
    assert ev.start_time < bp.end_time and bp.start_time < ev.end_time, (
        "evaluation and batch prediction overlap"
    )
    model = runs["wait_for_ml_model"]
    assert model.end_time <= runs["create_evaluation"].start_time
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
    assert "No baseline" in report.data
    assert "not available from this AML back end" in published["tiny-insights-train"].data


def test_pipeline_rerun_reattaches_to_the_same_entities(
    fake_aml: FakeML, tiny_csv: Path, tmp_path: Path
) -> None:
    first = run(tiny_csv, tmp_path)
    uploads = fake_aml.storage.writes
    second = run(tiny_csv, tmp_path)
    assert second["ml_model_id"] == first["ml_model_id"]
    assert second["evaluation_id"] == first["evaluation_id"]
    assert [
        len(fake_aml.entities[k]) for k in ("DataSource", "MLModel", "Evaluation", "BatchPrediction")
    ] == [3, 1, 1, 1]
    assert fake_aml.storage.writes == uploads, "an unchanged input is not uploaded again"
    third = run(tiny_csv, tmp_path, salt="new")
    assert third["ml_model_id"] != first["ml_model_id"]


class FlakyML:
    """Lets the create reach the service, then loses the response twice with a 500."""

    def __init__(self, inner: FakeML, failures: int = 2) -> None:
        self.inner = inner
        self.failures = failures

    def create_ml_model(self, **kwargs: Any) -> dict[str, Any]:
        self.inner.create_ml_model(**kwargs)
        if self.failures > 0:
            self.failures -= 1
            raise client_error(
                "InternalServerException", "We encountered an internal error.", "CreateMLModel", 500
            )
        return {"MLModelId": kwargs["MLModelId"]}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_transient_failure_retries_without_duplicating(
    fake_aml: FakeML, tiny_csv: Path, tmp_path: Path
) -> None:
    flaky = FlakyML(fake_aml)
    with override(ml=flaky):
        result = run(tiny_csv, tmp_path, batch_data=None)
    assert flaky.failures == 0
    assert fake_aml.count("CreateMLModel") == 3, "two transient failures, then success"
    assert list(fake_aml.entities["MLModel"]) == [result["ml_model_id"]], "no duplicate model"


def test_invalid_input_fails_the_flow_at_once_with_the_aml_message(
    fake_aml: FakeML, tiny_csv: Path, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="Member must satisfy enum value set") as info:
        run(tiny_csv, tmp_path, model_type="NOPE")
    assert "InvalidInputException" in str(info.value) or "enum" in str(info.value)
    assert fake_aml.count("CreateMLModel:attempt") == 1, "permanent errors are not retried"


def test_failed_entity_fails_the_flow_with_its_message(
    fake_aml: FakeML, tiny_csv: Path, tmp_path: Path
) -> None:
    with pytest.raises(EntityFailedError, match="ended FAILED: Training failed: the recipe's output 'FAIL'"):
        run(tiny_csv, tmp_path, name="case-FAIL")
    assert fake_aml.count("CreateMLModel:attempt") == 1
