"""The report tasks read the evaluation report and data insights exactly as the real service writes them.

Contract: docs/formats.md ("Data insights", "Evaluation report"). The reports come from the embedded service
(the real engine) on the banking sample's head, so a change of either side's keys fails here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import amlflow
from tasks.reports import _alerts, _attribute_rows, _baseline, _confusion, _threshold_rows

ROWS = 4000


def _wait(ml: Any, getter: str, key: str, entity_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        out = getattr(ml, getter)(**{key: entity_id})
        if out["Status"] in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
            assert out["Status"] == "COMPLETED", out.get("Message")
            return out
        time.sleep(0.05)


@pytest.fixture(scope="module")
def banking(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A BINARY banking model (first 4,000 rows, 70/30) with its evaluation and training datasource."""
    data_dir = Path(request.config.rootpath) / "data" / "aml-banking"
    home = tmp_path_factory.mktemp("report-home")
    ml = amlflow.connect(home=home, storage_root=home / "s3")
    target = home / "s3" / "b" / "banking.csv"
    target.parent.mkdir(parents=True)
    target.write_bytes(
        b"".join((data_dir / "banking.csv").read_bytes().splitlines(keepends=True)[: ROWS + 1])
    )
    schema = (data_dir / "banking.csv.schema").read_text()
    for ds_id, rearr in (("ds-tr", (0, 70)), ("ds-ev", (70, 100))):
        ml.create_data_source_from_s3(
            DataSourceId=ds_id,
            ComputeStatistics=True,
            DataSpec={
                "DataLocationS3": "s3://b/banking.csv",
                "DataSchema": schema,
                "DataRearrangement": json.dumps(
                    {"splitting": {"percentBegin": rearr[0], "percentEnd": rearr[1]}}
                ),
            },
        )
    _wait(ml, "get_data_source", "DataSourceId", "ds-tr")
    ml.create_ml_model(
        MLModelId="ml",
        MLModelType="BINARY",
        TrainingDataSourceId="ds-tr",
        Recipe=(data_dir / "recipe.json").read_text(),
    )
    _wait(ml, "get_ml_model", "MLModelId", "ml")
    ml.create_evaluation(EvaluationId="ev", MLModelId="ml", EvaluationDataSourceId="ds-ev")
    ev = _wait(ml, "get_evaluation", "EvaluationId", "ev")
    return {
        "ml": ml,
        "ev": ev,
        "report": ml.service.get_evaluation_report("ev"),
        "insights": ml.service.get_data_insights("ds-tr"),
        "csv": target,
    }


def test_binary_report_parts(banking: dict[str, Any]) -> None:
    report = banking["report"]
    assert _baseline(report) == pytest.approx(0.5)  # AML's baseline AUC
    labels, matrix = _confusion(report) or ([], [])
    assert sorted(labels) == ["0", "1"] and len(matrix) == 2 and all(len(r) == 2 for r in matrix)
    assert sum(map(sum, matrix)) == report["n_evaluated"]
    rows = _threshold_rows(report)
    assert len(rows) == 101 and {"threshold", "precision", "recall", "false_positive_rate"} <= set(rows[0])
    triggered = [a["message"] for a in report["alerts"] if a["triggered"]]
    assert _alerts(report) == triggered


def test_insights_rows_summarise_every_type(banking: dict[str, Any]) -> None:
    insights = banking["insights"]
    frame = pd.read_csv(banking["csv"], dtype=str).head(insights["n_rows"])
    rows = {r[0]: r for r in _attribute_rows(insights)}
    assert set(rows) == set(frame.columns) - {"y"}
    age = rows["age"]
    assert age[1] == "NUMERIC" and age[4]["min"] == float(frame["age"].astype(float).min())
    job = rows["job"]
    top = frame["job"].value_counts()
    assert job[1] == "CATEGORICAL" and job[4]["top_categories"].startswith(f"{top.index[0]} ({top.iloc[0]})")
    binary = next(r for r in rows.values() if r[1] == "BINARY")
    assert {"true", "false"} <= set(binary[4])
    assert all(r[5] is None or -1.0 <= r[5] <= 1.0 for r in rows.values())
