"""The report tasks read the evaluation report and data insights exactly as the real service writes them.

Contract: docs/formats.md ("Data insights", "Evaluation report"). The reports come from the embedded service
(the real engine) on the banking sample's head, so a change of either side's keys fails here. The BINARY
evaluation report task runs for real (Prefect test harness, real artifacts) against that service.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from matplotlib.patches import StepPatch
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

import amlflow
import tasks.report_render
from amlflow.client import override
from tasks.report_formats import cut_off, roc_points, score_histogram
from tasks.reports import _alerts, _attribute_rows, _baseline, _confusion, _threshold_rows, report_evaluation

ROWS = 4000
#: set with UpdateMLModel after the evaluation ran at the default 0.5 (as the banking flow does)
SCORE_THRESHOLD = 0.77
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
    ml.update_ml_model(MLModelId="ml", ScoreThreshold=SCORE_THRESHOLD)
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


def _markdown_artifact(key: str) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert len(found) == 1, [a.key for a in found]
    return str(found[0].data)


def test_binary_report_shows_score_histogram_with_cut_off_and_roc_curve(
    banking: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = banking["report"]
    assert report["threshold"] == 0.5  # the confusion matrix's cut-off: the model's when it was evaluated
    drawn: list[tuple[tuple[Any, ...], Any]] = []
    real_figure = tasks.report_render.binary_score_figure

    def spy(*args: Any) -> Any:  # the real figure, kept to look inside after the task rendered it
        fig = real_figure(*args)
        drawn.append((args, fig))
        return fig

    monkeypatch.setattr(tasks.report_render, "binary_score_figure", spy)

    @flow(name="report-evaluation-test")
    def publish(output_dir: str) -> dict[str, Any]:
        return report_evaluation("ev", output_dir, case="banking-render-test")

    with override(ml=banking["ml"]):
        summary = publish(str(tmp_path))
    auc = float(banking["ev"]["PerformanceMetrics"]["Properties"]["BinaryAUC"])
    assert summary["metric"] == auc

    markdown = _markdown_artifact("banking-render-test-evaluation-report")
    assert markdown.count("data:image/png;base64,") == 2  # the confusion matrix, then histogram + ROC
    section = markdown.split("## Score distribution and ROC curve", 1)[1]
    assert f"Cut-off (the model's `ScoreThreshold`): **{SCORE_THRESHOLD}**." in section
    assert "The confusion matrix above is at the evaluation's cut-off 0.5." in section
    found = re.search(
        r"!\[score histogram and ROC curve\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", section
    )
    assert found is not None
    png = base64.b64decode(found.group(1), validate=True)
    assert png.startswith(PNG_SIGNATURE)
    assert png == (tmp_path / "evaluation-score-roc.png").read_bytes()
    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400
    assert float(pixels.std()) > 0  # not a blank image

    ((args, fig),) = drawn
    ax_hist, ax_roc = fig.axes
    # the histogram: both classes, every evaluated record counted once
    bars = [p for p in ax_hist.patches if isinstance(p, StepPatch)]
    assert [b.get_label().split(" (")[0] for b in bars] == ["actual 0", "actual 1"]
    counts = [np.asarray(b.get_data().values) for b in bars]
    assert int(sum(c.sum() for c in counts)) == report["n_evaluated"] > 1000
    matrix = report["confusion_matrix"]["matrix"]  # rows: actual 0, actual 1
    assert [int(c.sum()) for c in counts] == [sum(matrix[0]), sum(matrix[1])]
    assert list(np.asarray(bars[0].get_data().edges)) == pytest.approx(list(np.linspace(0, 1, 21)))
    # the cut-off: a vertical line at the model's ScoreThreshold (GetMLModel), not the report's 0.5
    threshold = banking["ml"].get_ml_model(MLModelId="ml")["ScoreThreshold"]
    assert threshold == SCORE_THRESHOLD == cut_off(report, {"ScoreThreshold": threshold})
    (line,) = [ln for ln in ax_hist.lines if ln.get_label().startswith("cut-off")]
    assert list(line.get_xdata()) == [SCORE_THRESHOLD, SCORE_THRESHOLD]
    # the ROC curve of the report, the AUC of GetEvaluation in the title
    assert ax_roc.get_title() == f"ROC curve (AUC {auc:.4f})"
    fpr, tpr = roc_points(report) or ([], [])
    model_line = next(ln for ln in ax_roc.lines if ln.get_label() == "model")
    assert list(model_line.get_xdata()) == fpr and list(model_line.get_ydata()) == tpr
    assert 2 < len(fpr) <= 200 and float(np.trapezoid(tpr, fpr)) == pytest.approx(auc, abs=0.01)
    assert args[0] == score_histogram(report)
