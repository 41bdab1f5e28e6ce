"""Evaluation (docs/aml-reference.md §7): AML's metric, plus the console-only insights as a report.

``evaluate`` scores a table that holds the target and returns

* ``properties``: AML's ``PerformanceMetrics.Properties``, exactly one key — ``BinaryAUC`` (ROC AUC, ties
  counted half), ``MulticlassAvgFScore`` (macro F1 over the classes of the evaluation data; a class never
  predicted has F1 0) or ``RegressionRMSE`` — its value a string holding the full-precision double
  (``repr``);
* ``report``: baseline, confusion matrix, threshold table, histograms, the ROC curve (BINARY), per-class
  scores and the five evaluation alerts (documented in docs/formats.md, "Evaluation report").

Records whose target is missing or invalid are not scored; they are counted in ``n_invalid`` and raise
the "All records from evaluation files were used" alert.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from amlflow.engine.errors import DataError
from amlflow.engine.evaluation_bounded import Partials, bounded_evaluation, finish_multiclass, usable_entries
from amlflow.engine.limits import default_memory_budget
from amlflow.engine.model import TrainedModel, target_view
from amlflow.engine.schema import Schema, parse_schema
from amlflow.engine.table import Table

__all__ = ["ALERTS", "METRICS", "EvaluationResult", "evaluate", "evaluation_mode", "exact_evaluation_bytes"]

METRICS = {"BINARY": "BinaryAUC", "MULTICLASS": "MulticlassAvgFScore", "REGRESSION": "RegressionRMSE"}
ALERTS = (
    "Evaluation of ML model is done on held-out data",
    "Sufficient data was used for the evaluation",
    "Schema matched",
    "All records from evaluation files were used",
    "Distribution of target variable",
)
N_THRESHOLDS = 101
HISTOGRAM_BINS = 20
#: at most this many (false positive rate, true positive rate) points of the BINARY ROC curve are kept
ROC_POINTS = 200
#: distribution alert: total variation distance between class shares (classification) ...
TV_LIMIT = 0.1
#: ... or shift of the mean in training standard deviations / std ratio (regression)
MEAN_SHIFT_LIMIT = 0.25
STD_RATIO_LIMIT = 2.0


@dataclass
class EvaluationResult:
    """``properties`` (AML's ``PerformanceMetrics.Properties``) and the evaluation ``report``."""

    properties: dict[str, str]
    report: dict[str, Any]


def _metric_text(x: float) -> str:
    return "NaN" if math.isnan(x) else repr(float(x))


# ----------------------------------------------------------------------------------------------- binary


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return math.nan
    return float(roc_auc_score(y, s))


def _threshold_table(y: np.ndarray, s: np.ndarray) -> list[dict[str, float]]:
    pos_scores = np.sort(s[y == 1])
    neg_scores = np.sort(s[y == 0])
    n_pos, n_neg = len(pos_scores), len(neg_scores)
    rows = []
    for t in np.round(np.linspace(0.0, 1.0, N_THRESHOLDS), 2):
        tp = n_pos - int(np.searchsorted(pos_scores, t, side="left"))
        fp = n_neg - int(np.searchsorted(neg_scores, t, side="left"))
        fn, tn = n_pos - tp, n_neg - fp
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / n_pos if n_pos else 0.0
        rows.append(
            {
                "threshold": float(t),
                "accuracy": (tp + tn) / max(1, n_pos + n_neg),
                "precision": precision,
                "recall": recall,
                "false_positive_rate": fp / n_neg if n_neg else 0.0,
                "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
                "tp": tp,
                "fp": fp,
                "tn": tn,
                "fn": fn,
            }
        )
    return rows


def _roc_curve(y: np.ndarray, s: np.ndarray, max_points: int = ROC_POINTS) -> dict[str, list[float]]:
    """The ROC curve (``sklearn.metrics.roc_curve``, collinear points dropped), thinned to ``max_points``.

    Thinning keeps evenly spaced points of the curve, always the first (0, 0) and the last (1, 1); it
    changes only the drawing, never the metric (``BinaryAUC`` is computed from every score).
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    if len(fpr) > max_points:
        keep = np.unique(np.round(np.linspace(0, len(fpr) - 1, max_points)).astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [float(x) for x in fpr], "tpr": [float(x) for x in tpr]}


def _hist(values: np.ndarray, edges: np.ndarray) -> list[int]:
    return [int(c) for c in np.histogram(values, bins=edges)[0]]


# -------------------------------------------------------------------------------------------- evaluate


def _distribution(model_type: str, y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    if model_type == "REGRESSION":
        if len(y) == 0:
            return {"mean": math.nan, "std": math.nan, "quantiles": []}
        return {
            "mean": float(y.mean()),
            "std": float(y.std()),
            "quantiles": [float(q) for q in np.quantile(y, [0.0, 0.25, 0.5, 0.75, 1.0])],
        }
    return {"counts": {c: int((y == c).sum()) for c in classes}}


def _distribution_alert(model_type: str, train: Mapping[str, Any], ev: Mapping[str, Any]) -> tuple[bool, str]:
    if not train:
        return False, "Training target distribution unknown; not compared."
    if model_type == "REGRESSION":
        m0, s0, m1, s1 = train.get("mean"), train.get("std"), ev.get("mean"), ev.get("std")
        if m0 is None or s0 is None or m1 is None or s1 is None or math.isnan(m1):
            return False, "Target distributions could not be compared."
        scale = s0 if s0 > 0 else 1.0
        shift = abs(m1 - m0) / scale
        ratio = (max(s0, s1) / min(s0, s1)) if min(s0, s1) > 0 else (1.0 if s0 == s1 else math.inf)
        bad = shift > MEAN_SHIFT_LIMIT or ratio > STD_RATIO_LIMIT
        text = f"Training target mean {m0:.6g} (std {s0:.6g}), evaluation mean {m1:.6g} (std {s1:.6g})."
        verdict = "The target distributions differ. " if bad else "The target distributions match. "
        return bad, verdict + text
    tc, ec = dict(train.get("counts", {})), dict(ev.get("counts", {}))
    nt, ne = sum(tc.values()), sum(ec.values())
    if not nt or not ne:
        return False, "Target distributions could not be compared."
    labels = sorted(set(tc) | set(ec))
    tv = 0.5 * sum(abs(tc.get(k, 0) / nt - ec.get(k, 0) / ne) for k in labels)
    shares = ", ".join(f"{k}: {tc.get(k, 0) / nt:.1%} vs {ec.get(k, 0) / ne:.1%}" for k in labels)
    bad = tv > TV_LIMIT
    return bad, (
        ("The target distributions differ" if bad else "The target distributions match")
        + f" (total variation {tv:.3f}; training vs evaluation share per class: {shares})."
    )


def _schema_of(value: Any, default: Schema) -> Schema:
    if value is None:
        return default
    if isinstance(value, Schema):
        return value
    return parse_schema(value)


def _undefined(metric: str, info: Mapping[str, Any], why: str) -> DataError:
    """The error of an evaluation whose metric is undefined (named after the evaluation datasource)."""
    ds = info.get("evaluation_datasource_id")
    where = f"datasource {ds}" if ds else "the evaluation data"
    return DataError(
        f"EvaluationDataSourceId: {metric} is undefined on {where}: {why}.", field="EvaluationDataSourceId"
    )


def exact_evaluation_bytes(model_type: str, n_classes: int, n_rows: int) -> int:
    """What the exact path holds for ``n_rows`` evaluation rows: their scores, targets and the metric
    functions' copies (8 bytes × (outputs + 3) × 3 per row)."""
    k = n_classes if model_type == "MULTICLASS" else 1
    return n_rows * 8 * (k + 3) * 3


def evaluation_mode(model_type: str, n_classes: int, n_eval: int, budget: int) -> tuple[str, str]:
    """``("exact" | "bounded", why)``: the exact path unless its scores
    (:func:`exact_evaluation_bytes`) would take more than a quarter of ``budget`` bytes."""
    need = exact_evaluation_bytes(model_type, n_classes, n_eval)
    share = budget // 4
    mb = 1 << 20
    if need > share:
        return "bounded", (
            f"the exact scores of {n_eval:,} rows would take {need / mb:,.1f} MB, more than a quarter of "
            f"the memory budget ({budget / mb:,.0f} MB): accumulators batch by batch"
        )
    return "exact", (
        f"the exact scores of {n_eval:,} rows take {need / mb:,.1f} MB, within a quarter of the memory "
        f"budget ({budget / mb:,.0f} MB)"
    )


def evaluate(
    model: TrainedModel,
    table: Table,
    schema: Schema,
    *,
    training_info: Mapping[str, Any] | None = None,
    memory_budget: int | None = None,
) -> EvaluationResult:
    """Evaluate ``model`` on ``table`` (read with the model's types; ``schema`` is the evaluation
    datasource's own schema, used for the schema alert).

    ``training_info`` (all keys optional): ``training_datasource_id`` and ``evaluation_datasource_id``
    (held-out alert), ``training_rows`` (sufficient-data alert; default: the model's valid training rows),
    ``target_distribution`` (default: the model's), ``training_schema`` (Schema, dict or JSON text;
    default: the model's), ``score_threshold`` (BINARY confusion matrix; default 0.5).

    The metric is never NaN: an evaluation it would be undefined for (no record with a usable target value;
    BINARY: a single target class) raises instead, as AML FAILS an evaluation it cannot compute.

    ``memory_budget`` (bytes; None: :func:`amlflow.engine.limits.default_memory_budget`): when the exact
    path's scores (:func:`exact_evaluation_bytes`) would take more than a quarter of it, the evaluation is
    computed batch by batch in bounded memory (:mod:`amlflow.engine.evaluation_bounded`; the report says
    ``"evaluation_mode": "bounded"``). A model with a ``bounded_partials`` attribute (a
    :data:`~amlflow.engine.evaluation_bounded.Partials`: the service's model on a Dask cluster) computes
    the bounded path's merged accumulators itself, e.g. partition by partition elsewhere.

    Raises:
        DataError: the table has no column for the model's target, or the metric is undefined on it.
    """
    info = dict(training_info or {})
    mt = model.model_type
    target = model.schema.target
    assert target is not None
    if target not in table.names:
        raise DataError(
            f"targetAttributeName: the evaluation data has no column {target!r} (the model's target)",
            field="targetAttributeName",
        )
    tview = target_view(mt, table.dictionary(target))
    entry_ok = usable_entries(mt, tview)
    entry_counts = np.zeros(len(tview), dtype=np.int64)
    for a, b in table.iter_row_batches(1 << 20):
        entry_counts += np.bincount(
            np.asarray(table.codes(target, a, b), dtype=np.int64), minlength=len(tview)
        )
    n_eval = int(entry_counts[entry_ok].sum())
    if n_eval == 0:
        raise _undefined(METRICS[mt], info, f"it has no record with a usable target value {target!r}")
    n_invalid = int(table.n_rows - n_eval) + len(table.rejected_positions)
    metric = METRICS[mt]
    train_dist = info.get("target_distribution") or model.training_info.get("target_distribution", {})
    report: dict[str, Any] = {
        "model_type": mt,
        "metric": metric,
        "n_evaluated": n_eval,
        "n_invalid": n_invalid,
    }
    budget = memory_budget if memory_budget is not None else default_memory_budget()
    if evaluation_mode(mt, len(model.classes), n_eval, budget)[0] == "bounded":
        partials: Partials | None = getattr(model, "bounded_partials", None)
        threshold = float(info.get("score_threshold", 0.5))
        value, parts, eval_dist = bounded_evaluation(
            model,
            table,
            schema,
            target=target,
            tview=tview,
            entry_ok=entry_ok,
            entry_counts=entry_counts,
            train_dist=train_dist,
            metric=metric,
            threshold=threshold,
            thresholds=np.round(np.linspace(0.0, 1.0, N_THRESHOLDS), 2),
            histogram_bins=HISTOGRAM_BINS,
            partials=partials,
        )
        if math.isnan(value):  # BINARY with one class: as the exact path says it
            only = int(tview[entry_ok & (entry_counts > 0)][0])
            raise _undefined(
                metric,
                info,
                f"every record with a usable target value has {target!r} = {only} (AUC needs both)",
            )
        report["evaluation_mode"] = "bounded"
        report.update(parts)
        return _finish(model, schema, info, report, value, train_dist, eval_dist, n_eval, n_invalid)

    codes = np.asarray(table.codes(target), dtype=np.int64)
    valid = entry_ok[codes]
    pred = model.predict_table(table, schema)
    scores = pred.scores[valid]
    y = tview[codes[valid]]
    report["evaluation_mode"] = "exact"

    if mt == "BINARY":
        from sklearn.metrics import confusion_matrix

        yb = y.astype(np.int64)
        value = _auc(yb, scores)
        if math.isnan(value):
            only = int(yb[0])
            raise _undefined(
                metric,
                info,
                f"every record with a usable target value has {target!r} = {only} (AUC needs both)",
            )
        threshold = float(info.get("score_threshold", 0.5))
        predicted = (scores >= threshold).astype(np.int64)
        cm = confusion_matrix(yb, predicted, labels=[0, 1]) if n_eval else np.zeros((2, 2), dtype=int)
        edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
        report.update(
            baseline={
                "metric": metric,
                "value": 0.5,
                "description": "AUC of a model that gives every record the same score",
            },
            threshold=threshold,
            confusion_matrix={"labels": ["0", "1"], "matrix": cm.tolist()},
            threshold_table=_threshold_table(yb, scores),
            score_histogram={
                "edges": edges.tolist(),
                "actual_0": _hist(scores[yb == 0], edges),
                "actual_1": _hist(scores[yb == 1], edges),
            },
            roc_curve=_roc_curve(yb, scores),
        )
        eval_dist = _distribution(mt, np.where(yb == 1, "1", "0").astype(object), ["0", "1"])
    elif mt == "MULTICLASS":
        # the confusion counts of every record, then scikit-learn on the weighted non-empty cells
        # (evaluation_bounded.finish_multiclass): integer sums in float64, so the metric, per-class scores
        # and baseline of scikit-learn on every record's labels to the last digit, without encoding the
        # records' string labels four times (~0.1 s of the service's time per 12,600 MNIST rows)
        labels_eval = sorted({str(v) for v in y})
        cm_labels = sorted(set(labels_eval) | set(model.classes))
        index = {c: i for i, c in enumerate(cm_labels)}
        n_lab = len(cm_labels)
        true_of_entry = np.array(
            [index.get(str(v), -1) if ok else -1 for v, ok in zip(tview, entry_ok, strict=True)],
            dtype=np.int64,
        )
        pred_of_class = np.array([index[c] for c in model.classes], dtype=np.int64)
        t = true_of_entry[codes[valid]]
        p = pred_of_class[np.argmax(scores, axis=1)]
        cm = np.bincount(t * n_lab + p, minlength=n_lab * n_lab)
        value, parts, eval_dist = finish_multiclass({"cm": cm}, labels_eval, cm_labels, train_dist, metric)
        report.update(parts)
    else:
        yr = y.astype(np.float64)
        value = float(np.sqrt(np.mean((yr - scores) ** 2))) if n_eval else math.nan
        mean = train_dist.get("mean")
        if mean is None:
            mean = float(yr.mean()) if n_eval else math.nan
        base = float(np.sqrt(np.mean((yr - mean) ** 2))) if n_eval else math.nan
        residuals = yr - scores
        if n_eval:
            lim = float(np.max(np.abs(residuals))) or 1.0
            r_edges = np.linspace(-lim, lim, HISTOGRAM_BINS + 1)
            s_edges = np.linspace(float(scores.min()), float(scores.max()) or 1.0, HISTOGRAM_BINS + 1)
            if s_edges[0] == s_edges[-1]:
                s_edges = np.linspace(s_edges[0] - 0.5, s_edges[0] + 0.5, HISTOGRAM_BINS + 1)
        else:
            r_edges = s_edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
        report.update(
            baseline={
                "metric": metric,
                "value": base,
                "description": f"RMSE of always predicting the training target mean {mean:.6g}",
            },
            residual_histogram={
                "edges": r_edges.tolist(),
                "counts": _hist(residuals, r_edges),
                "description": "residual = actual - predicted",
            },
            score_histogram={"edges": s_edges.tolist(), "counts": _hist(scores, s_edges)},
        )
        eval_dist = _distribution(mt, yr, [])
    return _finish(model, schema, info, report, value, train_dist, eval_dist, n_eval, n_invalid)


def _finish(
    model: TrainedModel,
    schema: Schema,
    info: Mapping[str, Any],
    report: dict[str, Any],
    value: float,
    train_dist: Mapping[str, Any],
    eval_dist: Mapping[str, Any],
    n_eval: int,
    n_invalid: int,
) -> EvaluationResult:
    """The report's common part (value, distributions, the five alerts) and the result."""
    mt, metric = model.model_type, METRICS[model.model_type]
    # strict JSON: an undefined metric (AUC of one class, no valid record) is null in the report
    report["value"] = None if math.isnan(value) else value
    if isinstance(report["baseline"]["value"], float) and math.isnan(report["baseline"]["value"]):
        report["baseline"]["value"] = None
    report["target_distribution"] = {"training": train_dist, "evaluation": eval_dist}

    # ---- alerts (Developer Guide, "Evaluation alerts")
    alerts = []
    tid, eid = info.get("training_datasource_id"), info.get("evaluation_datasource_id")
    same = tid is not None and tid == eid
    alerts.append(
        (
            ALERTS[0],
            same,
            f"The evaluation datasource {eid} is the training datasource."
            if same
            else "The evaluation data is not the training datasource.",
        )
    )
    n_train = int(info.get("training_rows") or model.training_info.get("n_valid") or 0)
    few = n_train > 0 and n_eval < 0.1 * n_train
    alerts.append(
        (
            ALERTS[1],
            few,
            f"{n_eval} evaluation records for {n_train} training records"
            + (" (fewer than 10%)." if few else " (at least 10%)."),
        )
    )
    tschema = _schema_of(info.get("training_schema"), model.schema)
    t_names, e_names = set(tschema.names), set(schema.names)
    missing, extra = sorted(t_names - e_names), sorted(e_names - t_names)
    retyped = sorted(n for n in t_names & e_names if tschema.type_of(n) != schema.type_of(n))
    parts = []
    if missing:
        parts.append(f"missing attributes: {', '.join(missing)}")
    if extra:
        parts.append(f"extra attributes: {', '.join(extra)}")
    text = "; ".join(parts) if parts else "The evaluation schema has the training schema's attributes"
    if retyped:
        text += f" ({', '.join(retyped)} read with the training types)"
    alerts.append((ALERTS[2], bool(parts), text + ("." if not text.endswith(")") else ".")))
    alerts.append(
        (
            ALERTS[3],
            n_invalid > 0,
            f"{n_invalid} records were not used (missing/invalid target or unreadable)."
            if n_invalid
            else "Every evaluation record was used.",
        )
    )
    bad, text = _distribution_alert(mt, train_dist, eval_dist)
    alerts.append((ALERTS[4], bad, text))
    report["alerts"] = [{"name": n, "triggered": bool(t), "message": m} for n, t, m in alerts]
    if not math.isfinite(value):  # e.g. an RMSE that overflowed
        raise _undefined(metric, info, f"it came out as {value!r}")
    return EvaluationResult({metric: _metric_text(value)}, report)
