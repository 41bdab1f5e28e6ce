"""Reading the documents behind the reports: AML's evaluation report and a datasource's data insights.

Pure functions over the JSON the embedded service keeps (docs/formats.md, "Data insights" and "Evaluation
report") and over ``GetMLModel``'s answer; no Prefect, no plotting. A key the back end did not write reads
as None / empty, so the reports degrade instead of failing.

Example:
    >>> baseline({"baseline": {"value": 0.5}})
    0.5
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "METRICS",
    "ScoreHistogram",
    "alerts",
    "attribute_rows",
    "attribute_summary",
    "baseline",
    "confusion",
    "cut_off",
    "operating_point",
    "roc_points",
    "score_histogram",
    "threshold_rows",
]

#: Metric key → (label, higher is better).
METRICS: dict[str, tuple[str, bool]] = {
    "BinaryAUC": ("AUC", True),
    "MulticlassAvgFScore": ("macro-average F1", True),
    "RegressionRMSE": ("RMSE", False),
}


# --------------------------------------------------------------------------------------------- insights


def attribute_summary(attr: Mapping[str, Any]) -> dict[str, Any]:
    """The type-specific part of one attribute's insights (docs/formats.md, "Data insights")."""
    kind = attr.get("type")
    if kind == "NUMERIC":
        keys: tuple[str, ...] = ("min", "max", "mean", "median")
    elif kind == "CATEGORICAL":
        keys = ("distinct", "top_categories")
    elif kind == "BINARY":
        keys = ("true", "false")
    elif kind == "TEXT":
        keys = ("tokens", "distinct_tokens", "top_tokens")
    else:
        keys = ()
    summary = {k: attr[k] for k in keys if attr.get(k) is not None}
    for key in ("top_categories", "top_tokens"):
        if key in summary:  # the first three, as value (count)
            summary[key] = ", ".join(f"{c['value']} ({c['count']})" for c in summary[key][:3])
    return summary


def attribute_rows(insights: Mapping[str, Any]) -> list[list[Any]]:
    """One table row per attribute: name, type, missing, invalid, summary, correlation with the target."""
    return [
        [
            a["name"],
            a.get("type", ""),
            a.get("missing"),
            a.get("invalid"),
            attribute_summary(a) or "",
            a.get("correlation"),
        ]
        for a in insights.get("attributes") or []
    ]


# ------------------------------------------------------------------------------------------- evaluation


def confusion(report: Mapping[str, Any]) -> tuple[list[str], list[list[float]]] | None:
    """``confusion_matrix`` of an evaluation report (docs/formats.md): labels, rows (actual × predicted)."""
    cm = report.get("confusion_matrix")
    if not cm:
        return None
    return [str(label) for label in cm["labels"]], [[float(x) for x in row] for row in cm["matrix"]]


def threshold_rows(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``threshold_table`` of a BINARY evaluation report: one mapping per cut-off (empty otherwise)."""
    return list(report.get("threshold_table") or [])


def baseline(report: Mapping[str, Any]) -> float | None:
    """The baseline's value (``baseline.value``), None without a report or when undefined."""
    value = (report.get("baseline") or {}).get("value")
    return None if value is None else float(value)


def alerts(report: Mapping[str, Any]) -> list[str]:
    """The messages of the triggered evaluation alerts."""
    return [str(a.get("message") or a["name"]) for a in report.get("alerts") or [] if a.get("triggered")]


@dataclass(frozen=True)
class ScoreHistogram:
    """A BINARY report's ``score_histogram``: bin ``edges`` over [0, 1] and the counts per actual class."""

    edges: list[float]
    actual_0: list[int]
    actual_1: list[int]

    @property
    def total(self) -> int:
        """Records counted (both classes)."""
        return sum(self.actual_0) + sum(self.actual_1)


def score_histogram(report: Mapping[str, Any]) -> ScoreHistogram | None:
    """The per-class score histogram of a BINARY report, None for other model types or without a report."""
    hist = report.get("score_histogram") or {}
    if "actual_0" not in hist or "actual_1" not in hist:
        return None
    return ScoreHistogram(
        edges=[float(e) for e in hist["edges"]],
        actual_0=[int(c) for c in hist["actual_0"]],
        actual_1=[int(c) for c in hist["actual_1"]],
    )


def roc_points(report: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    """The ROC curve of a BINARY report as (false positive rates, true positive rates).

    The report's ``roc_curve`` when present; a report written before it existed falls back to the 101
    cut-offs of ``threshold_table`` (false positive rate, recall), from (0, 0) to (1, 1).
    """
    roc = report.get("roc_curve") or {}
    if roc.get("fpr") and roc.get("tpr"):
        return [float(x) for x in roc["fpr"]], [float(y) for y in roc["tpr"]]
    rows = [r for r in threshold_rows(report) if "false_positive_rate" in r and "recall" in r]
    if not rows:
        return None
    points = sorted({(float(r["false_positive_rate"]), float(r["recall"])) for r in rows} | {(0, 0), (1, 1)})
    return [float(p[0]) for p in points], [float(p[1]) for p in points]


def cut_off(report: Mapping[str, Any], model: Mapping[str, Any] | None) -> float:
    """The score threshold in force: the model's ``ScoreThreshold`` (``GetMLModel``), else the report's.

    AML's console drew the model's threshold on the score histogram; the report's ``threshold`` is the one
    its confusion matrix was computed at (the model's when the evaluation ran).
    """
    value = (model or {}).get("ScoreThreshold")
    if value is None:
        value = report.get("threshold", 0.5)
    return float(value)


def operating_point(report: Mapping[str, Any]) -> tuple[float, float] | None:
    """(false positive rate, true positive rate) of a BINARY report's confusion matrix, at ``threshold``."""
    cm = confusion(report)
    if cm is None or cm[0] != ["0", "1"]:
        return None
    (tn, fp), (fn, tp) = cm[1]
    if not (tn + fp) or not (tp + fn):
        return None
    return fp / (tn + fp), tp / (tp + fn)
