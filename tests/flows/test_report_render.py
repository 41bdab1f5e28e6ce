"""tasks.report_render and tasks.report_formats on small hand-made reports: the BINARY score/ROC image, its
PNG embedding, and the fallbacks for reports written before ``roc_curve`` existed or without a report.

The same image on a real evaluation, through the Prefect task, is checked in test_report_format.py.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.patches import StepPatch

from tasks import reports
from tasks.report_formats import ScoreHistogram, cut_off, operating_point, roc_points, score_histogram
from tasks.report_render import binary_score_figure, binary_section, png_markdown

EDGES = [i / 4 for i in range(5)]  # 4 bins over [0, 1]


def _report(**extra: Any) -> dict[str, Any]:
    """A BINARY report of 10 records: 6 actual 0, 4 actual 1; confusion matrix at 0.5."""
    return {
        "model_type": "BINARY",
        "n_evaluated": 10,
        "threshold": 0.5,
        "confusion_matrix": {"labels": ["0", "1"], "matrix": [[5, 1], [1, 3]]},
        "score_histogram": {"edges": EDGES, "actual_0": [3, 2, 1, 0], "actual_1": [0, 1, 1, 2]},
        "roc_curve": {"fpr": [0.0, 0.0, 1 / 6, 0.5, 1.0], "tpr": [0.0, 0.5, 0.75, 1.0, 1.0]},
        **extra,
    }


def test_binary_score_figure_draws_both_classes_the_cut_off_and_the_roc_curve() -> None:
    report = _report()
    hist = score_histogram(report)
    assert hist == ScoreHistogram(EDGES, [3, 2, 1, 0], [0, 1, 1, 2]) and hist.total == 10
    fig = binary_score_figure(hist, roc_points(report), 0.62, 0.875, operating_point(report), 0.5)
    ax_hist, ax_roc = fig.axes
    bars = [p for p in ax_hist.patches if isinstance(p, StepPatch)]
    assert [list(b.get_data().values) for b in bars] == [[3, 2, 1, 0], [0, 1, 1, 2]]
    assert [b.get_label() for b in bars] == ["actual 0 (6)", "actual 1 (4)"]
    (line,) = [ln for ln in ax_hist.lines if ln.get_label() == "cut-off 0.62"]
    assert list(line.get_xdata()) == [0.62, 0.62]
    assert ax_roc.get_title() == "ROC curve (AUC 0.8750)"
    model = next(ln for ln in ax_roc.lines if ln.get_label() == "model")
    assert list(model.get_ydata()) == [0.0, 0.5, 0.75, 1.0, 1.0]
    point = next(ln for ln in ax_roc.lines if ln.get_label() == "confusion matrix (cut-off 0.5)")
    assert (list(point.get_xdata()), list(point.get_ydata())) == ([1 / 6], [0.75])  # fp 1 of 6, tp 3 of 4


def test_binary_section_embeds_a_valid_png_and_writes_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "ev-score-roc.png"
    lines = binary_section(_report(), 0.5, 0.875, path)
    markdown = "\n".join(lines)
    assert lines[1] == "## Score distribution and ROC curve"
    assert "Cut-off (the model's `ScoreThreshold`): **0.5**." in markdown
    assert "confusion matrix above is at" not in markdown  # the same cut-off: nothing to explain
    found = re.search(
        r"!\[score histogram and ROC curve\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown
    )
    assert found is not None and f"Image file: `{path}`" in markdown
    png = base64.b64decode(found.group(1), validate=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == path.read_bytes()
    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100 and float(pixels.std()) > 0


def test_binary_section_says_when_the_model_threshold_moved(tmp_path: Path) -> None:
    text = binary_section(_report(), 0.77, 0.875, tmp_path / "x.png")[3]
    assert text == (
        "Cut-off (the model's `ScoreThreshold`): **0.77**. "
        "The confusion matrix above is at the evaluation's cut-off 0.5."
    )


def test_no_binary_section_without_a_per_class_histogram(tmp_path: Path) -> None:
    regression = {"model_type": "REGRESSION", "score_histogram": {"edges": EDGES, "counts": [1, 2, 3, 4]}}
    for report in ({}, regression, {"model_type": "MULTICLASS", "confusion_matrix": {"labels": ["a"]}}):
        assert score_histogram(report) is None
        assert binary_section(report, 0.5, 0.9, tmp_path / "none.png") == []
    assert not (tmp_path / "none.png").exists()


def test_cut_off_is_the_models_score_threshold_else_the_reports() -> None:
    assert cut_off(_report(), {"MLModelId": "ml", "ScoreThreshold": 0.77}) == 0.77
    assert cut_off(_report(), {"MLModelId": "ml"}) == 0.5  # GetMLModel without a threshold
    assert cut_off(_report(threshold=0.3), None) == 0.3
    assert cut_off({}, None) == 0.5


def test_roc_points_fall_back_to_the_threshold_table() -> None:
    table = [
        {"threshold": t, "false_positive_rate": fpr, "recall": tpr}
        for t, fpr, tpr in ((0.0, 1.0, 1.0), (0.5, 0.25, 0.75), (0.9, 0.0, 0.25), (1.0, 0.0, 0.0))
    ]
    old = {k: v for k, v in _report(threshold_table=table).items() if k != "roc_curve"}
    assert roc_points(old) == ([0.0, 0.0, 0.25, 1.0], [0.0, 0.25, 0.75, 1.0])
    assert roc_points({"threshold_table": []}) is None


def test_operating_point_needs_both_classes() -> None:
    assert operating_point(_report()) == (pytest.approx(1 / 6), 0.75)
    one_class = _report(confusion_matrix={"labels": ["0", "1"], "matrix": [[5, 1], [0, 0]]})
    assert operating_point(one_class) is None
    assert operating_point({}) is None


def test_png_markdown_renders_any_figure(tmp_path: Path) -> None:
    fig = binary_score_figure(ScoreHistogram(EDGES, [1, 0, 0, 0], [0, 0, 0, 1]), None, 0.5, 1.0)
    markdown = png_markdown(fig, tmp_path / "a.png", "title")
    assert markdown.startswith("![title](data:image/png;base64,")
    assert np.asarray(imread(tmp_path / "a.png")).size > 0


def test_the_names_flows_and_tests_import_stay_in_tasks_reports() -> None:
    names = (
        "accuracy_from_batch_output",
        "artifact_key",
        "batch_result_frame",
        "kaggle_submission",
        "report_batch_prediction",
        "report_data_insights",
        "report_evaluation",
        "_alerts",
        "_attribute_rows",
        "_baseline",
        "_confusion",
        "_threshold_rows",
    )
    missing = [n for n in names if not hasattr(reports, n)]
    assert missing == []
    assert reports.artifact_key("Wine Binary", "evaluation", "report") == "wine-binary-evaluation-report"
