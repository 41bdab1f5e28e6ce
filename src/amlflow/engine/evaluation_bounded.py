"""Evaluation in bounded memory: the metric and report of :func:`amlflow.engine.evaluation.evaluate` from
batches of scores, when the evaluation's scores would not fit its share of the job's memory budget.

``evaluate`` keeps every score of the evaluation rows when they fit (the exact path, the figures of the
README). Above that it calls :func:`bounded_evaluation`, which reads the table in batches of rows, scores
each batch and keeps only what the report needs:

* **MULTICLASS** — the confusion counts (classes × classes). Macro-F1, the per-class precision, recall
  and F1, the baseline and the distribution follow from them exactly: scikit-learn's own functions are
  given one (actual, predicted) pair per non-empty cell weighted by its count, integer sums in float64, so
  the metric is the exact path's (tests/engine/test_evaluation_bounded.py checks it to the last digit).
* **BINARY** — exact counts at the report's 101 thresholds, the confusion matrix at the score threshold
  and the 20-bin score histograms; the AUC and the ROC curve from per-class counts over
  :data:`AUC_BINS` equal bins of the logit of the score in [-:data:`LOGIT_RANGE`, +:data:`LOGIT_RANGE`]
  (pairs of a positive and a negative record in the same bin count one half, as ties do: the AUC is within
  the share of such pairs of the exact one; measured below 1e-5 on the reference cases). The report says
  so (``bounded``).
* **REGRESSION** — two passes: sums for the RMSE and the extremes of the scores and residuals, then the two
  histograms on those edges. The baseline and the target distribution come from the target's dictionary
  and its counts (no scoring).

Memory: one batch of scores plus the accumulators (16 MB for BINARY's bins), whatever the number of rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from amlflow.engine.schema import Schema
from amlflow.engine.streaming import _count_quantiles
from amlflow.engine.table import Table

__all__ = ["AUC_BINS", "BATCH_ROWS", "LOGIT_RANGE", "bounded_evaluation"]

#: rows scored at a time
BATCH_ROWS = 50_000
#: BINARY AUC: bins of the score's logit
AUC_BINS = 1 << 20
LOGIT_RANGE = 40.0


def _batches(
    model: Any, table: Table, schema: Schema, target: str, entry_ok: np.ndarray, batch_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(target dictionary entries, scores) of the rows with a usable target, batch by batch."""
    for a in range(0, table.n_rows, batch_rows):
        b = min(a + batch_rows, table.n_rows)
        codes = np.asarray(table.codes(target, a, b), dtype=np.int64)
        ok = entry_ok[codes]
        if not ok.any():
            continue
        pred = model.predict_table(table, schema, start=a, stop=b)
        yield codes[ok], np.asarray(pred.scores)[ok]


def _multiclass(
    model: Any,
    batches: Iterator[tuple[np.ndarray, np.ndarray]],
    tview: np.ndarray,
    entry_counts: np.ndarray,
    entry_ok: np.ndarray,
    train_dist: Mapping[str, Any],
    metric: str,
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    used = entry_ok & (entry_counts > 0)
    labels_eval = sorted({str(v) for v in tview[used]})
    cm_labels = sorted(set(labels_eval) | set(model.classes))
    index = {c: i for i, c in enumerate(cm_labels)}
    true_of_entry = np.array([index[str(v)] if ok else -1 for v, ok in zip(tview, used, strict=True)])
    pred_of_class = np.array([index[c] for c in model.classes], dtype=np.int64)
    n_lab = len(cm_labels)
    cm = np.zeros(n_lab * n_lab, dtype=np.int64)
    for entries, scores in batches:
        t = true_of_entry[entries]
        p = pred_of_class[np.argmax(scores, axis=1)]
        cm += np.bincount(t * n_lab + p, minlength=n_lab * n_lab)
    cm2 = cm.reshape(n_lab, n_lab)
    cells = np.flatnonzero(cm)
    labels = np.array(cm_labels, dtype=object)
    yt, yp, w = labels[cells // n_lab].astype(str), labels[cells % n_lab].astype(str), cm[cells]
    value = float(f1_score(yt, yp, labels=labels_eval, average="macro", zero_division=0, sample_weight=w))
    p, r, f, sup = precision_recall_fscore_support(
        yt, yp, labels=labels_eval, zero_division=0, sample_weight=w
    )
    per_label = cm2.sum(axis=1)
    counts = dict(train_dist.get("counts", {}))
    majority = min(counts, key=lambda k: (-counts[k], k)) if counts else labels_eval[0]
    present = np.flatnonzero(per_label)
    base_t = labels[present].astype(str)
    base = float(
        f1_score(
            base_t,
            np.full(len(base_t), majority),
            labels=labels_eval,
            average="macro",
            zero_division=0,
            sample_weight=per_label[present],
        )
    )
    report = {
        "baseline": {
            "metric": metric,
            "value": base,
            "description": f"macro F1 of always predicting the most frequent training class {majority!r}",
        },
        "confusion_matrix": {"labels": cm_labels, "matrix": cm2.tolist()},
        "per_class": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(sup[i])}
            for i, lab in enumerate(labels_eval)
        },
    }
    dist = {"counts": {c: int(per_label[index[c]]) for c in cm_labels}}
    return value, report, dist


def _logit_bins(s: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        z = np.log(s) - np.log1p(-s)
    z = np.clip(np.nan_to_num(z, nan=0.0, posinf=LOGIT_RANGE, neginf=-LOGIT_RANGE), -LOGIT_RANGE, LOGIT_RANGE)
    out: np.ndarray = np.minimum(
        ((z + LOGIT_RANGE) / (2 * LOGIT_RANGE) * AUC_BINS).astype(np.int64), AUC_BINS - 1
    )
    return out


def _binary(
    batches: Iterator[tuple[np.ndarray, np.ndarray]],
    tview: np.ndarray,
    threshold: float,
    thresholds: np.ndarray,
    edges: np.ndarray,
    metric: str,
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    pos_bins = np.zeros(AUC_BINS, dtype=np.int64)
    neg_bins = np.zeros(AUC_BINS, dtype=np.int64)
    at_or_above = np.zeros((2, len(thresholds)), dtype=np.int64)  # [neg, pos] with score ≥ t
    cm = np.zeros((2, 2), dtype=np.int64)
    hist = np.zeros((2, len(edges) - 1), dtype=np.int64)
    totals = np.zeros(2, dtype=np.int64)
    for entries, scores in batches:
        y = tview[entries].astype(np.int64)
        s = np.asarray(scores, dtype=np.float64)
        bins = _logit_bins(s)
        for cls, acc in ((0, neg_bins), (1, pos_bins)):
            sc = s[y == cls]
            totals[cls] += len(sc)
            acc += np.bincount(bins[y == cls], minlength=AUC_BINS)
            ordered = np.sort(sc)
            at_or_above[cls] += len(ordered) - np.searchsorted(ordered, thresholds, side="left")
            hist[cls] += np.histogram(sc, bins=edges)[0]
            above = int((sc >= threshold).sum())
            cm[cls, 1] += above
            cm[cls, 0] += len(sc) - above
    n_neg, n_pos = int(totals[0]), int(totals[1])
    if n_pos == 0 or n_neg == 0:
        return math.nan, {}, {}
    # AUC: P(score_pos > score_neg) + ½ P(same bin)
    neg_below = np.concatenate([[0], np.cumsum(neg_bins)[:-1]])
    auc = float((pos_bins * neg_below).sum() + 0.5 * (pos_bins * neg_bins).sum()) / (n_pos * n_neg)
    # ROC from the highest bin down: (fpr, tpr) after each bin
    tp = np.concatenate([[0], np.cumsum(pos_bins[::-1])])
    fp = np.concatenate([[0], np.cumsum(neg_bins[::-1])])
    step = np.flatnonzero(np.diff(tp) | np.diff(fp)) + 1
    keep = np.concatenate([[0], step])
    fpr, tpr = fp[keep] / n_neg, tp[keep] / n_pos
    if len(fpr) > 200:
        pick = np.unique(np.round(np.linspace(0, len(fpr) - 1, 200)).astype(np.int64))
        fpr, tpr = fpr[pick], tpr[pick]
    rows = []
    for k, t in enumerate(thresholds.tolist()):
        tpk, fpk = int(at_or_above[1, k]), int(at_or_above[0, k])
        fnk, tnk = n_pos - tpk, n_neg - fpk
        precision = tpk / (tpk + fpk) if tpk + fpk else 1.0
        recall = tpk / n_pos
        rows.append(
            {
                "threshold": float(t),
                "accuracy": (tpk + tnk) / max(1, n_pos + n_neg),
                "precision": precision,
                "recall": recall,
                "false_positive_rate": fpk / n_neg,
                "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
                "tp": tpk,
                "fp": fpk,
                "tn": tnk,
                "fn": fnk,
            }
        )
    report = {
        "baseline": {
            "metric": metric,
            "value": 0.5,
            "description": "AUC of a model that gives every record the same score",
        },
        "threshold": threshold,
        "confusion_matrix": {"labels": ["0", "1"], "matrix": cm.tolist()},
        "threshold_table": rows,
        "score_histogram": {
            "edges": edges.tolist(),
            "actual_0": [int(c) for c in hist[0]],
            "actual_1": [int(c) for c in hist[1]],
        },
        "roc_curve": {"fpr": [float(x) for x in fpr], "tpr": [float(x) for x in tpr]},
    }
    dist = {"counts": {"0": n_neg, "1": n_pos}}
    return auc, report, dist


def _regression(
    batches: Any,
    tview: np.ndarray,
    entry_counts: np.ndarray,
    entry_ok: np.ndarray,
    train_dist: Mapping[str, Any],
    metric: str,
    bins: int,
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    used = entry_ok & (entry_counts > 0)
    vals, cnts = tview[used].astype(np.float64), entry_counts[used]
    n = int(cnts.sum())
    eval_mean = float(vals @ cnts) / n
    mean = train_dist.get("mean")
    mean = eval_mean if mean is None else float(mean)
    base = math.sqrt(float(np.square(vals - mean) @ cnts) / n)
    sq = 0.0
    s_lo, s_hi, r_max = math.inf, -math.inf, 0.0
    for entries, scores in batches():
        r = tview[entries].astype(np.float64) - scores
        sq += float(r @ r)
        s_lo, s_hi = min(s_lo, float(scores.min())), max(s_hi, float(scores.max()))
        r_max = max(r_max, float(np.abs(r).max()))
    value = math.sqrt(sq / n)
    lim = r_max or 1.0
    r_edges = np.linspace(-lim, lim, bins + 1)
    s_edges = np.linspace(s_lo, s_hi or 1.0, bins + 1)
    if s_edges[0] == s_edges[-1]:
        s_edges = np.linspace(s_edges[0] - 0.5, s_edges[0] + 0.5, bins + 1)
    r_hist = np.zeros(bins, dtype=np.int64)
    s_hist = np.zeros(bins, dtype=np.int64)
    for entries, scores in batches():  # the second pass: the histograms on the first pass's edges
        r_hist += np.histogram(tview[entries].astype(np.float64) - scores, bins=r_edges)[0]
        s_hist += np.histogram(scores, bins=s_edges)[0]
    report = {
        "baseline": {
            "metric": metric,
            "value": base,
            "description": f"RMSE of always predicting the training target mean {mean:.6g}",
        },
        "residual_histogram": {
            "edges": r_edges.tolist(),
            "counts": [int(c) for c in r_hist],
            "description": "residual = actual - predicted",
        },
        "score_histogram": {"edges": s_edges.tolist(), "counts": [int(c) for c in s_hist]},
    }
    dist = {
        "mean": eval_mean,
        "std": math.sqrt(max(0.0, float(np.square(vals - eval_mean) @ cnts) / n)),
        "quantiles": _count_quantiles(vals, cnts, [0.0, 0.25, 0.5, 0.75, 1.0]),
    }
    return value, report, dist


def bounded_evaluation(
    model: Any,
    table: Table,
    schema: Schema,
    *,
    target: str,
    tview: np.ndarray,
    entry_ok: np.ndarray,
    entry_counts: np.ndarray,
    train_dist: Mapping[str, Any],
    metric: str,
    threshold: float,
    thresholds: np.ndarray,
    histogram_bins: int,
    batch_rows: int = BATCH_ROWS,
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """``(metric value, report entries, evaluation target distribution)`` of ``model`` on ``table``, batch
    by batch (``entry_counts``: rows per dictionary entry of ``target``; ``entry_ok``: usable entries)."""
    mt = model.model_type

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return _batches(model, table, schema, target, entry_ok, batch_rows)

    if mt == "MULTICLASS":
        return _multiclass(model, batches(), tview, entry_counts, entry_ok, train_dist, metric)
    if mt == "BINARY":
        edges = np.linspace(0.0, 1.0, histogram_bins + 1)
        value, report, dist = _binary(batches(), tview, threshold, thresholds, edges, metric)
        if report:
            report["bounded"] = {
                "auc": f"from {AUC_BINS:,} bins of the score's logit in [-{LOGIT_RANGE:g}, {LOGIT_RANGE:g}]",
                "roc_curve": "from the same bins",
            }
        return value, report, dist
    return _regression(batches, tview, entry_counts, entry_ok, train_dist, metric, histogram_bins)
