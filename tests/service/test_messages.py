"""What users see never names a server path (issue 8, rows 8 and 9): lost files, links, FAILED messages."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.service.layout import PathRedactor, entity_dir_name
from amlflow.settings import Settings
from tests.server import aml_data
from tests.service.support import wait


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Any, Service, Path]]:
    settings = Settings(home=tmp_path / "home", max_jobs=2)
    service = Service(settings, endpoint_url="http://127.0.0.1:1")
    root = settings.resolved_storage_root() / "d"
    root.mkdir(parents=True)
    (root / "wine.csv").write_bytes(aml_data.wine_binary_csv())
    yield build_client(service, settings), service, tmp_path
    service.shutdown(timeout=60)


def _no_paths(message: str, *roots: Path) -> None:
    for root in roots:
        assert str(root) not in message and str(root.resolve()) not in message, message


def _trained(ml: Any, service: Service) -> None:
    spec = {"DataLocationS3": "s3://d/wine.csv", "DataSchema": aml_data.wine_binary_schema()}
    ml.create_data_source_from_s3(DataSourceId="ds-w", DataSpec=spec, ComputeStatistics=True)
    ml.create_ml_model(MLModelId="ml-w", MLModelType="BINARY", TrainingDataSourceId="ds-w")
    assert wait(service, "MLModel", "ml-w", timeout=120)["Status"] == "COMPLETED"


def test_a_link_under_a_data_prefix_is_an_input_error(env: tuple[Any, Service, Path]) -> None:
    ml, service, tmp = env
    outside = tmp / "secret.csv"
    outside.write_bytes(b"a,b\n1,2\n")
    (service.settings.resolved_storage_root() / "d" / "link.csv").symlink_to(outside)
    spec = {"DataLocationS3": "s3://d/link.csv", "DataSchema": aml_data.wine_binary_schema()}
    with pytest.raises(ClientError) as info:
        ml.create_data_source_from_s3(DataSourceId="ds-link", DataSpec=spec)
    error = info.value.response["Error"]
    assert error["Code"] == "InvalidInputException"
    assert "DataSpec.DataLocationS3: 's3://d/link.csv': resolves outside the storage root" in error["Message"]
    _no_paths(error["Message"], tmp)


def test_a_link_among_a_prefix_s_objects_fails_the_job(env: tuple[Any, Service, Path]) -> None:
    """A prefix is listed by the job, not at create: a link among its objects FAILS it as an input error."""
    ml, service, tmp = env
    parts = service.settings.resolved_storage_root() / "d" / "parts"
    parts.mkdir()
    (parts / "a.csv").write_bytes(aml_data.wine_binary_csv())
    outside = tmp / "secret.csv"
    outside.write_bytes(b"a,b\n1,2\n")
    (parts / "b.csv").symlink_to(outside)
    spec = {"DataLocationS3": "s3://d/parts/", "DataSchema": aml_data.wine_binary_schema()}
    ml.create_data_source_from_s3(DataSourceId="ds-link2", DataSpec=spec)
    out = wait(service, "DataSource", "ds-link2", timeout=60)
    assert out["Status"] == "FAILED"
    assert out["Message"].startswith("DataLocationS3: 's3://d/parts/b.csv': resolves outside"), out["Message"]
    _no_paths(out["Message"], tmp)


def test_predict_on_a_model_whose_files_are_gone(env: tuple[Any, Service, Path]) -> None:
    ml, service, tmp = env
    _trained(ml, service)
    shutil.rmtree(service.home / "models" / entity_dir_name("MLModel", "ml-w"))
    # a fresh service on the same home has no copy in memory
    service.shutdown(timeout=60)
    fresh = Service(service.settings, endpoint_url="http://127.0.0.1:1")
    try:
        client = build_client(fresh, fresh.settings)
        with pytest.raises(ClientError) as info:
            client.create_realtime_endpoint(MLModelId="ml-w")
        error = info.value.response["Error"]
        assert error["Code"] == "PredictorNotMountedException"
        assert "ML model ml-w" in error["Message"] and "missing or damaged" in error["Message"]
        _no_paths(error["Message"], tmp)
        client.create_evaluation(EvaluationId="ev-w", MLModelId="ml-w", EvaluationDataSourceId="ds-w")
        out = wait(fresh, "Evaluation", "ev-w", timeout=60)
        assert out["Status"] == "FAILED" and "ML model ml-w" in out["Message"]
        _no_paths(out["Message"], tmp)
    finally:
        fresh.shutdown(timeout=60)


def test_training_on_a_datasource_whose_table_is_gone(env: tuple[Any, Service, Path]) -> None:
    ml, service, tmp = env
    spec = {"DataLocationS3": "s3://d/wine.csv", "DataSchema": aml_data.wine_binary_schema()}
    ml.create_data_source_from_s3(DataSourceId="ds-gone", DataSpec=spec, ComputeStatistics=True)
    assert wait(service, "DataSource", "ds-gone", timeout=60)["Status"] == "COMPLETED"
    shutil.rmtree(service.home / "datasources" / entity_dir_name("DataSource", "ds-gone") / "table")
    ml.create_ml_model(MLModelId="ml-gone", MLModelType="BINARY", TrainingDataSourceId="ds-gone")
    out = wait(service, "MLModel", "ml-gone", timeout=60)
    assert out["Status"] == "FAILED"
    assert "datasource ds-gone" in out["Message"] and "missing or damaged" in out["Message"]
    _no_paths(out["Message"], tmp)


def test_the_redactor_turns_storage_paths_into_s3_uris(tmp_path: Path) -> None:
    redact = PathRedactor(home=tmp_path / "h", storage_root=tmp_path / "h" / "s3")
    text = f"bad {tmp_path}/h/s3/b/k.csv and {tmp_path}/h/datasources/x/table"
    assert redact(text) == "bad s3://b/k.csv and <amlflow home>/datasources/x/table"
