"""Rendering the reports: artifact keys, markdown tables and matplotlib figures (Agg, PNG).

A figure is saved as a PNG file (atomically) and embedded in the markdown artifact as a ``data:`` URI, so
the Prefect UI shows it without a file server (:func:`png_markdown`). The ``*_figure`` functions that end in
``png_markdown`` return markdown; :func:`binary_score_figure` returns the figure itself, so its contents can
be checked before it is rendered.

Example:
    >>> md_table(["", "AUC"], [["model", 0.93871]])
    '|  | AUC |\\n|---|---|\\n| model | 0.9387 |'
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from amlflow.storage.atomic import write_file_atomic
from tasks.batch_output import predicted_labels
from tasks.report_formats import (
    ScoreHistogram,
    attribute_rows,
    operating_point,
    roc_points,
    score_histogram,
)

__all__ = [
    "artifact_key",
    "batch_figure",
    "batch_summary_markdown",
    "binary_score_figure",
    "binary_section",
    "confusion_figure",
    "confusion_section",
    "evaluation_header",
    "figure",
    "fmt",
    "insights_markdown",
    "md_table",
    "metric_figure",
    "png_markdown",
    "threshold_figure",
    "threshold_section",
]

#: colours of the figures: model / actual 0, baseline, actual 1, the cut-off
BLUE, GREY, ORANGE, RED = "#2b6cb0", "#a0aec0", "#dd6b20", "#c53030"


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) built from ``parts``."""
    key = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return re.sub(r"-{2,}", "-", key)[:100] or "amlflow"


def fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits (NaN and None as –), the first 6 items of a collection."""
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in list(value.items())[:6])
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value[:6]) + (" …" if len(value) > 6 else "")
    return "–" if value is None else str(value)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; cells through :func:`fmt`, ``|`` escaped."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def png_markdown(fig: Any, path: Path, title: str) -> str:
    """Save a matplotlib figure to ``path`` (atomically) and return markdown embedding it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    write_file_atomic(path, data)
    encoded = base64.b64encode(data).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})\n\nImage file: `{path}`"


def figure(width: float = 6.0, height: float = 4.5, *, ncols: int = 1) -> tuple[Any, Any]:
    """A new figure on matplotlib's Agg backend (no display needed) and its axes (a tuple when ncols > 1)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(ncols=ncols, figsize=(width, height))


# --------------------------------------------------------------------------------------------- insights


def insights_markdown(
    label: str, data_source_id: str, ds: Mapping[str, Any], insights: Mapping[str, Any] | None
) -> str:
    """The data-insights report of a datasource: ``GetDataSource``'s facts, then one row per attribute."""
    lines = [
        f"# Data insights: {label} datasource `{data_source_id}`",
        "",
        f"* location: `{ds.get('DataLocationS3', '')}`",
        f"* rearrangement: `{ds.get('DataRearrangement', '') or 'all rows'}`",
        f"* size: {ds.get('DataSizeInBytes', '–')} bytes in {ds.get('NumberOfFiles', '–')} file(s)",
        f"* statistics computed: {ds.get('ComputeStatistics', False)}",
    ]
    if insights:
        rows = insights.get("n_rows")
        if rows is not None:
            lines.append(f"* rows: {rows}")
        if "n_rejected" in insights:
            lines.append(f"* rejected rows: {insights['n_rejected']}")
        target = insights.get("target")
        if target:
            lines.append(f"* target: {fmt(target)}")
        table = attribute_rows(insights)
        if table:
            lines += [
                "",
                md_table(
                    ["attribute", "type", "missing", "invalid", "summary", "correlation with target"], table
                ),
            ]
    else:
        lines += ["", "_Data insights are not available from this AML back end (endpoint or AWS)._"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- evaluation


def evaluation_header(
    evaluation_id: str,
    pretty: str,
    metric: float,
    baseline: float | None,
    higher: bool,
    alerts: Sequence[str],
    has_report: bool,
) -> list[str]:
    """The evaluation report's first lines: the metric next to its baseline, the verdict, the alerts."""
    lines = [
        f"# Evaluation `{evaluation_id}`",
        "",
        md_table(["", pretty], [["model", metric], ["baseline", baseline]]),
    ]
    if baseline is not None:
        better = metric > baseline if higher else metric < baseline
        lines.append(
            f"\nThe model is **{'better' if better else 'not better'}** than the baseline "
            f"({'higher' if higher else 'lower'} is better)."
        )
    else:
        lines.append("\n_No baseline: this AML back end does not expose evaluation reports._")
    lines += ["", "## Evaluation alerts", ""]
    lines += [f"* ⚠ {a}" for a in alerts] if alerts else (["* none"] if has_report else ["* not available"])
    return lines


def confusion_section(labels: list[str], matrix: list[list[float]]) -> list[str]:
    """The confusion matrix as a markdown table (rows: actual, columns: predicted)."""
    return [
        "",
        "## Confusion matrix (rows: actual, columns: predicted)",
        "",
        md_table(
            ["actual \\ predicted", *labels],
            [[lab, *row] for lab, row in zip(labels, matrix, strict=True)],
        ),
    ]


def threshold_section(thresholds: list[Mapping[str, Any]]) -> list[str]:
    """About 20 evenly spaced rows of the threshold table (the table artifact has every row)."""
    step = max(1, len(thresholds) // 20)
    shown = thresholds[::step]
    cols = list(shown[0].keys())
    return ["", "## Threshold table", "", md_table(cols, [[r.get(c) for c in cols] for r in shown])]


def binary_section(report: Mapping[str, Any], cut_off: float, auc: float, path: Path) -> list[str]:
    """BINARY: the score histogram per actual class with ``cut_off`` and the ROC curve, as markdown + PNG.

    Empty when the report has no per-class score histogram (other model types, no report side-channel).
    """
    histogram = score_histogram(report)
    if histogram is None:
        return []
    text = f"Cut-off (the model's `ScoreThreshold`): **{cut_off:.4g}**."
    at = None if report.get("threshold") is None else float(report["threshold"])
    if at is not None and at != cut_off:
        text += f" The confusion matrix above is at the evaluation's cut-off {at:.4g}."
    fig = binary_score_figure(histogram, roc_points(report), cut_off, auc, operating_point(report), at)
    image = png_markdown(fig, path, "score histogram and ROC curve")
    return ["", "## Score distribution and ROC curve", "", text, "", image]


def confusion_figure(labels: list[str], matrix: list[list[float]], path: Path) -> str:
    """The confusion matrix as a heat map with its counts (rows: actual, columns: predicted)."""
    fig, ax = figure(6.5, 5.5)
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            text = f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > top / 2 else "black",
            )
    fig.colorbar(image, ax=ax)
    ax.set_title("Confusion matrix (evaluation datasource)")
    return png_markdown(fig, path, "confusion matrix")


def threshold_figure(rows: list[Mapping[str, Any]], path: Path) -> str | None:
    """Accuracy, precision, recall and false positive rate per cut-off; None without a cut-off column."""
    key_t = next((k for k in ("threshold", "cutoff", "cut_off") if rows and k in rows[0]), None)
    if key_t is None:
        return None
    fig, ax = figure()
    xs = [float(r[key_t]) for r in rows]
    for name in ("accuracy", "precision", "recall", "false_positive_rate", "fpr"):
        if name in rows[0]:
            ax.plot(xs, [float(r[name]) if r[name] is not None else math.nan for r in rows], label=name)
    ax.set_xlabel("score threshold")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title("Threshold table (evaluation datasource)")
    return png_markdown(fig, path, "threshold table")


def metric_figure(name: str, metric: float, baseline: float | None, path: Path) -> str:
    """The metric next to its baseline, as two bars."""
    fig, ax = figure(4.5, 3.5)
    labels, values = ["model"], [metric]
    if baseline is not None:
        labels.append("baseline")
        values.append(baseline)
    ax.bar(labels, values, color=[BLUE, GREY][: len(values)])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.4g}", ha="center", va="bottom")
    ax.set_ylabel(name)
    ax.set_title(f"{name}: model vs baseline")
    return png_markdown(fig, path, f"{name} vs baseline")


def binary_score_figure(
    histogram: ScoreHistogram,
    roc: tuple[list[float], list[float]] | None,
    cut_off: float,
    auc: float,
    operating: tuple[float, float] | None = None,
    operating_cut_off: float | None = None,
) -> Any:
    """AML's console view of a BINARY evaluation: the score histogram per actual class, overlaid, with the
    cut-off as a vertical line (left), and the ROC curve with the AUC in its title (right).

    Args:
        histogram: the report's per-class score histogram (counts per bin of ``edges``).
        roc: (false positive rates, true positive rates), None to leave the ROC panel empty.
        cut_off: the score threshold (the model's ``ScoreThreshold``).
        auc: the evaluation's ``BinaryAUC``.
        operating: (FPR, TPR) of the confusion matrix, marked on the ROC curve.
        operating_cut_off: the cut-off the confusion matrix was computed at (its legend entry).

    Returns:
        The matplotlib figure (render it with :func:`png_markdown`).
    """
    fig, (ax_h, ax_r) = figure(11.0, 4.5, ncols=2)
    for counts, colour, name in ((histogram.actual_0, BLUE, "0"), (histogram.actual_1, ORANGE, "1")):
        ax_h.stairs(
            counts,
            histogram.edges,
            fill=True,
            alpha=0.45,
            color=colour,
            label=f"actual {name} ({sum(counts)})",
        )
    ax_h.axvline(cut_off, color=RED, linestyle="--", linewidth=1.5, label=f"cut-off {cut_off:.4g}")
    ax_h.set_xlim(histogram.edges[0], histogram.edges[-1])
    ax_h.set_xlabel("score")
    ax_h.set_ylabel("records")
    ax_h.legend()
    ax_h.set_title("Score distribution per actual class (evaluation datasource)")
    if roc is not None:
        ax_r.plot(*roc, color=BLUE, label="model")
    ax_r.plot([0, 1], [0, 1], color=GREY, linestyle=":", label="baseline (AUC 0.5)")
    if operating is not None:
        at = "" if operating_cut_off is None else f" (cut-off {operating_cut_off:.4g})"
        ax_r.plot(*operating, "o", color=RED, label=f"confusion matrix{at}")
    ax_r.set_xlim(0, 1)
    ax_r.set_ylim(0, 1.02)
    ax_r.set_xlabel("false positive rate")
    ax_r.set_ylabel("true positive rate")
    ax_r.legend(loc="lower right")
    ax_r.set_title(f"ROC curve (AUC {auc:.4f})")
    return fig


# -------------------------------------------------------------------------------------- batch prediction


def batch_figure(frame: pd.DataFrame, path: Path) -> str:
    """The batch output's score histogram (BINARY, REGRESSION) or predicted-class counts (MULTICLASS)."""
    fig, ax = figure()
    if "score" in frame.columns:
        ax.hist(frame["score"].dropna().astype(float), bins=40, color=BLUE)
        ax.set_xlabel("score")
        ax.set_title("Batch prediction: score histogram")
    else:
        counts = predicted_labels(frame).value_counts().sort_index()
        ax.bar([str(i) for i in counts.index], counts.values, color=BLUE)
        ax.set_xlabel("predicted class")
        ax.set_title("Batch prediction: predicted classes")
    ax.set_ylabel("rows")
    return png_markdown(fig, path, "batch prediction histogram")


def batch_summary_markdown(
    batch_prediction_id: str,
    bp: Mapping[str, Any],
    results: Mapping[str, str],
    local_files: Sequence[str],
    image_md: str,
) -> str:
    """The batch prediction's summary: model, datasource, record counts, result files and their copies."""
    lines = [
        f"# Batch prediction `{batch_prediction_id}`",
        "",
        f"* model: `{bp.get('MLModelId')}`; datasource: `{bp.get('BatchPredictionDataSourceId')}`",
        f"* records: {bp.get('TotalRecordCount', '–')}, invalid: {bp.get('InvalidRecordCount', '–')}",
        *[f"* result: `{uri}` → `{local}`" for uri, local in zip(results.values(), local_files, strict=True)],
        "",
        image_md,
    ]
    return "\n".join(lines)
