"""Limits at the service's boundaries (issue 8): a job over its memory budget FAILS saying so; documents
read from storage (RecipeUri, DataSchemaLocationS3) are checked like inline ones; an over-limit record or
recipe is InvalidInputException naming the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.settings import Settings
from tests.server import aml_data
from tests.service.support import wait


def _env(home: Path, **settings: Any) -> tuple[Any, Service, Path]:
    resolved = Settings(home=home, max_jobs=2, **settings)
    service = Service(resolved, endpoint_url="http://127.0.0.1:1")
    root = resolved.resolved_storage_root() / "d"
    root.mkdir(parents=True)
    (root / "wine.csv").write_bytes(aml_data.wine_binary_csv())
    return build_client(service, resolved), service, root


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[tuple[Any, Service, Path]]:
    """A service whose jobs may plan for 64 KB (AMLFLOW_MEMORY_LIMIT=64KiB)."""
    ml, service, root = _env(tmp_path / "home", memory_limit="64KiB")
    yield ml, service, root
    service.shutdown(timeout=60)


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Service, Path]]:
    ml, service, root = _env(tmp_path_factory.mktemp("limits-home"))
    yield ml, service, root
    service.shutdown(timeout=60)


def _train(ml: Any, service: Service, suffix: str, **extra: Any) -> dict[str, Any]:
    ml.create_data_source_from_s3(
        DataSourceId=f"ds-{suffix}",
        DataSpec={"DataLocationS3": "s3://d/wine.csv", "DataSchema": aml_data.wine_binary_schema()},
        ComputeStatistics=True,
    )
    ml.create_ml_model(
        MLModelId=f"ml-{suffix}", MLModelType="BINARY", TrainingDataSourceId=f"ds-{suffix}", **extra
    )
    wait(service, "MLModel", f"ml-{suffix}")
    model: dict[str, Any] = ml.get_ml_model(MLModelId=f"ml-{suffix}")
    return model


def test_a_training_job_over_the_memory_limit_fails_saying_so(tight: tuple[Any, Service, Path]) -> None:
    ml, service, _ = tight
    model = _train(ml, service, "tight")
    assert model["Status"] == "FAILED"
    assert "over the job memory budget of 64.0 KB; " in model["Message"], model["Message"]
    assert "MemoryError" not in model["Message"]


def test_the_same_job_completes_under_the_default_budget(roomy: tuple[Any, Service, Path]) -> None:
    ml, service, _ = roomy
    assert _train(ml, service, "roomy")["Status"] == "COMPLETED"


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_deep_recipe_file_is_an_input_error_on_recipe_uri(
    roomy: tuple[Any, Service, Path], depth: int
) -> None:
    ml, service, root = roomy
    (root / f"deep-{depth}.recipe").write_text(
        '{"groups": {}, "assignments": {}, "outputs": ' + _deep(depth) + "}"
    )
    ml.create_data_source_from_s3(
        DataSourceId="ds-recipe",
        DataSpec={"DataLocationS3": "s3://d/wine.csv", "DataSchema": aml_data.wine_binary_schema()},
        ComputeStatistics=True,
    )
    with pytest.raises(ClientError) as info:
        ml.create_ml_model(
            MLModelId=f"ml-deep-{depth}",
            MLModelType="BINARY",
            TrainingDataSourceId="ds-recipe",
            RecipeUri=f"s3://d/deep-{depth}.recipe",
        )
    error = info.value.response["Error"]
    assert error["Code"] == "InvalidInputException"
    assert error["Message"].startswith("RecipeUri"), error["Message"]


def test_a_deep_schema_file_is_an_input_error_on_the_schema_location(
    roomy: tuple[Any, Service, Path],
) -> None:
    ml, _, root = roomy
    schema = json.loads(aml_data.wine_binary_schema())
    text = json.dumps(schema)[:-1] + ', "extra": ' + _deep(5_000) + "}"
    (root / "deep.schema").write_text(text)
    with pytest.raises(ClientError) as info:
        ml.create_data_source_from_s3(
            DataSourceId="ds-deep-schema",
            DataSpec={"DataLocationS3": "s3://d/wine.csv", "DataSchemaLocationS3": "s3://d/deep.schema"},
        )
    error = info.value.response["Error"]
    assert error["Code"] == "InvalidInputException"
    assert error["Message"].startswith("DataSpec.DataSchemaLocationS3"), error["Message"]
    assert ml.describe_data_sources(FilterVariable="Name", EQ="ds-deep-schema")["Results"] == []


@pytest.mark.parametrize(("size", "ok"), [(1_000, True), (100 * 1024 + 1, False)])
def test_predict_refuses_a_record_over_100_kb_naming_record(
    roomy: tuple[Any, Service, Path], size: int, ok: bool
) -> None:
    ml, service, _ = roomy
    known = {m["MLModelId"]: m["Status"] for m in ml.describe_ml_models()["Results"]}
    if known.get("ml-roomy") != "COMPLETED":  # the model of the test above, when it did not run first
        _train(ml, service, "roomy")
    endpoint = ml.create_realtime_endpoint(MLModelId="ml-roomy")["RealtimeEndpointInfo"]["EndpointUrl"]
    # UTF-8 bytes count, not characters: 51,201 "é" are 102,402 bytes
    record = {"fixed acidity": "7.4", "note": "é" * (size // 2 + 1)}
    if ok:
        assert (
            "predictedLabel"
            in ml.predict(MLModelId="ml-roomy", Record=record, PredictEndpoint=endpoint)["Prediction"]
        )
        return
    with pytest.raises(ClientError) as info:
        ml.predict(MLModelId="ml-roomy", Record=record, PredictEndpoint=endpoint)
    error = info.value.response["Error"]
    assert error["Code"] == "InvalidInputException"
    assert error["Message"].startswith("Record: ") and "100 KB" in error["Message"], error["Message"]
