"""Empty data never COMPLETES into a NaN (issue 8, row 11): AML FAILS an input source it cannot accept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.settings import Settings
from tests.server import aml_data
from tests.service.support import wait


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Service, Path]]:
    home = tmp_path_factory.mktemp("empty-home")
    settings = Settings(home=home, max_jobs=2)
    service = Service(settings, endpoint_url="http://127.0.0.1:1")
    root = settings.resolved_storage_root() / "d"
    root.mkdir(parents=True)
    wine = aml_data.wine_binary_csv()
    header, *rows = wine.splitlines(keepends=True)
    (root / "wine.csv").write_bytes(wine)
    (root / "empty.csv").write_bytes(b"")
    (root / "header-only.csv").write_bytes(header)
    (root / "all-rejected.csv").write_bytes(header + b"not,a,row\n" * 20)
    n_cols = header.count(b",") + 1
    blank_target = [b",".join(r.rstrip(b"\r\n").split(b",")[:-1]) + b",\n" for r in rows[:200]]
    assert all(r.count(b",") + 1 == n_cols for r in blank_target)
    (root / "no-target.csv").write_bytes(header + b"".join(blank_target))
    yield build_client(service, settings), service, root
    service.shutdown(timeout=60)


def _datasource(ml: Any, ds_id: str, key: str, **extra: Any) -> None:
    ml.create_data_source_from_s3(
        DataSourceId=ds_id,
        DataSpec={"DataLocationS3": f"s3://d/{key}", "DataSchema": aml_data.wine_binary_schema(), **extra},
        ComputeStatistics=True,
    )


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("empty.csv", "it has no records"),
        ("header-only.csv", "it has no records"),
        ("all-rejected.csv", "all 20 record(s) were rejected"),
    ],
)
def test_a_datasource_without_valid_records_fails(
    env: tuple[Any, Service, Path], key: str, expected: str
) -> None:
    ml, service, _ = env
    ds_id = "ds-" + key.removesuffix(".csv")
    _datasource(ml, ds_id, key)
    out = wait(service, "DataSource", ds_id, timeout=60)
    assert out["Status"] == "FAILED"
    assert "no valid record in s3://d/" + key in out["Message"] and expected in out["Message"]


def test_a_rearrangement_that_selects_nothing_fails(env: tuple[Any, Service, Path]) -> None:
    ml, service, _ = env
    nothing = json.dumps({"splitting": {"percentBegin": 50, "percentEnd": 50}})
    _datasource(ml, "ds-nothing", "wine.csv", DataRearrangement=nothing)
    out = wait(service, "DataSource", "ds-nothing", timeout=60)
    assert out["Status"] == "FAILED", out
    assert "no valid record" in out["Message"]


def test_an_evaluation_with_an_undefined_metric_fails(env: tuple[Any, Service, Path]) -> None:
    ml, service, _ = env
    _datasource(ml, "ds-wine", "wine.csv")
    _datasource(ml, "ds-no-target", "no-target.csv")
    ml.create_ml_model(MLModelId="ml-e", MLModelType="BINARY", TrainingDataSourceId="ds-wine")
    ml.create_evaluation(EvaluationId="ev-e", MLModelId="ml-e", EvaluationDataSourceId="ds-no-target")
    out = wait(service, "Evaluation", "ev-e", timeout=120)
    assert out["Status"] == "FAILED", out.get("PerformanceMetrics")
    assert "BinaryAUC is undefined on datasource ds-no-target" in out["Message"]
