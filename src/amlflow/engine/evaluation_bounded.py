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

The work is in three mergeable steps, so that any split of the rows gives the same report (the service
runs the first on Dask workers, one per partition, and the other two itself):

1. :func:`accumulate` — the accumulator of rows ``[start, stop)`` for a :class:`BoundedPlan` (plain data:
   what the pass needs to know beyond the model and the table);
2. :func:`merge` — partial accumulators added into one (counts and sums added, extremes min/max'd; a
   :func:`pack`'ed partial, BINARY's bins as their nonzero entries, merges as its dense form);
3. the finish inside :func:`bounded_evaluation` — the metric, report entries and distribution from the
   merged accumulator.

Every count is an integer, so merged counts are the one-pass counts whatever the split; REGRESSION's sum
of squared residuals is a float sum whose order follows the split (equal to the last bits, 1e-15 relative).
In-process the accumulator of the whole table is one :func:`accumulate` call, batch after batch.

Memory: one batch of scores plus the accumulators (16 MB for BINARY's bins), whatever the number of rows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from amlflow.engine.schema import Schema
from amlflow.engine.streaming import _count_quantiles
from amlflow.engine.table import Table
from amlflow.engine.trained import target_view

__all__ = [
    "AUC_BINS",
    "BATCH_ROWS",
    "LOGIT_RANGE",
    "Accumulator",
    "BoundedPlan",
    "Partials",
    "accumulate",
    "bounded_evaluation",
    "finish_multiclass",
    "merge",
    "new_accumulator",
    "pack",
    "usable_entries",
]

#: rows scored at a time
BATCH_ROWS = 50_000
#: BINARY AUC: bins of the score's logit
AUC_BINS = 1 << 20
LOGIT_RANGE = 40.0

#: an accumulator: name → integer counts (numpy) or a float (sum, minimum or maximum: see :func:`merge`)
Accumulator = dict[str, Any]
#: computes the merged accumulator of the whole table for a plan (default: :func:`accumulate` in-process)
Partials = Callable[["BoundedPlan"], Accumulator]

_MIN = frozenset({"s_lo"})
_MAX = frozenset({"s_hi", "r_max"})
_SPARSE = frozenset({"pos_bins", "neg_bins"})


@dataclass(frozen=True)
class BoundedPlan:
    """What one pass over the rows needs beyond the model and the table; plain data
    (:meth:`to_plain` / :meth:`from_plain`: a dict of strings, floats and lists)."""

    model_type: str
    #: MULTICLASS: the confusion matrix's labels (the evaluation's and the model's classes, sorted)
    labels: tuple[str, ...] = ()
    #: BINARY: the confusion matrix's score threshold, the threshold table's thresholds, histogram edges
    threshold: float = 0.5
    thresholds: tuple[float, ...] = ()
    edges: tuple[float, ...] = ()
    #: REGRESSION: 1 (sums and extremes) or 2 (histograms on ``residual_edges`` and ``score_edges``)
    regression_pass: int = 1
    residual_edges: tuple[float, ...] = ()
    score_edges: tuple[float, ...] = ()

    def to_plain(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> BoundedPlan:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in plain.items()}
        return cls(**values)


def usable_entries(model_type: str, tview: np.ndarray) -> np.ndarray:
    """Which dictionary entries of the target (``target_view``) are usable target values."""
    if model_type == "MULTICLASS":
        return np.array([v is not None for v in tview], dtype=bool)
    ok: np.ndarray = ~np.isnan(tview.astype(np.float64))
    return ok


def _batches(
    model: Any,
    table: Table,
    schema: Schema | None,
    target: str,
    entry_ok: np.ndarray,
    batch_rows: int,
    start: int,
    stop: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(target dictionary entries, scores) of the rows of ``[start, stop)`` with a usable target, batch by
    batch."""
    for a in range(start, stop, batch_rows):
        b = min(a + batch_rows, stop)
        codes = np.asarray(table.codes(target, a, b), dtype=np.int64)
        ok = entry_ok[codes]
        if not ok.any():
            continue
        pred = model.predict_table(table, schema, start=a, stop=b)
        yield codes[ok], np.asarray(pred.scores)[ok]


def _new(plan: BoundedPlan) -> Accumulator:
    mt = plan.model_type
    if mt == "MULTICLASS":
        return {"cm": np.zeros(len(plan.labels) ** 2, dtype=np.int64)}
    if mt == "BINARY":
        return {
            "pos_bins": np.zeros(AUC_BINS, dtype=np.int64),
            "neg_bins": np.zeros(AUC_BINS, dtype=np.int64),
            "at_or_above": np.zeros((2, len(plan.thresholds)), dtype=np.int64),  # [neg, pos] score ≥ t
            "cm": np.zeros((2, 2), dtype=np.int64),
            "hist": np.zeros((2, len(plan.edges) - 1), dtype=np.int64),
            "totals": np.zeros(2, dtype=np.int64),
        }
    if plan.regression_pass == 1:
        return {"sq": 0.0, "s_lo": math.inf, "s_hi": -math.inf, "r_max": 0.0}
    return {
        "r_hist": np.zeros(len(plan.residual_edges) - 1, dtype=np.int64),
        "s_hist": np.zeros(len(plan.score_edges) - 1, dtype=np.int64),
    }


def _logit_bins(s: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        z = np.log(s) - np.log1p(-s)
    z = np.clip(np.nan_to_num(z, nan=0.0, posinf=LOGIT_RANGE, neginf=-LOGIT_RANGE), -LOGIT_RANGE, LOGIT_RANGE)
    out: np.ndarray = np.minimum(
        ((z + LOGIT_RANGE) / (2 * LOGIT_RANGE) * AUC_BINS).astype(np.int64), AUC_BINS - 1
    )
    return out


def accumulate(
    model: Any,
    table: Table,
    plan: BoundedPlan,
    start: int = 0,
    stop: int | None = None,
    *,
    schema: Schema | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Accumulator:
    """The accumulator of ``plan``'s pass over table rows ``[start, stop)`` (the model's target read
    from ``table``), scored :data:`BATCH_ROWS` at a time."""
    mt = plan.model_type
    target = model.schema.target
    assert target is not None
    stop = table.n_rows if stop is None else min(stop, table.n_rows)
    tview = target_view(mt, table.dictionary(target))
    entry_ok = usable_entries(mt, tview)
    acc = _new(plan)
    batches = _batches(model, table, schema, target, entry_ok, batch_rows, start, stop)
    if mt == "MULTICLASS":
        index = {c: i for i, c in enumerate(plan.labels)}
        n_lab = len(plan.labels)
        true_of_entry = np.array(
            [index.get(str(v), -1) if ok else -1 for v, ok in zip(tview, entry_ok, strict=True)],
            dtype=np.int64,
        )
        pred_of_class = np.array([index[c] for c in model.classes], dtype=np.int64)
        for entries, scores in batches:
            t = true_of_entry[entries]
            p = pred_of_class[np.argmax(scores, axis=1)]
            acc["cm"] += np.bincount(t * n_lab + p, minlength=n_lab * n_lab)
    elif mt == "BINARY":
        thresholds, edges = np.asarray(plan.thresholds), np.asarray(plan.edges)
        for entries, scores in batches:
            y = tview[entries].astype(np.int64)
            s = np.asarray(scores, dtype=np.float64)
            bins = _logit_bins(s)
            for cls, key in ((0, "neg_bins"), (1, "pos_bins")):
                sc = s[y == cls]
                acc["totals"][cls] += len(sc)
                acc[key] += np.bincount(bins[y == cls], minlength=AUC_BINS)
                ordered = np.sort(sc)
                acc["at_or_above"][cls] += len(ordered) - np.searchsorted(ordered, thresholds, side="left")
                acc["hist"][cls] += np.histogram(sc, bins=edges)[0]
                above = int((sc >= plan.threshold).sum())
                acc["cm"][cls, 1] += above
                acc["cm"][cls, 0] += len(sc) - above
    elif plan.regression_pass == 1:
        for entries, scores in batches:
            r = tview[entries].astype(np.float64) - scores
            acc["sq"] += float(r @ r)
            acc["s_lo"] = min(acc["s_lo"], float(scores.min()))
            acc["s_hi"] = max(acc["s_hi"], float(scores.max()))
            acc["r_max"] = max(acc["r_max"], float(np.abs(r).max()))
    else:
        r_edges, s_edges = np.asarray(plan.residual_edges), np.asarray(plan.score_edges)
        for entries, scores in batches:
            acc["r_hist"] += np.histogram(tview[entries].astype(np.float64) - scores, bins=r_edges)[0]
            acc["s_hist"] += np.histogram(scores, bins=s_edges)[0]
    return acc


def pack(acc: Accumulator) -> Accumulator:
    """``acc`` to send elsewhere: BINARY's logit bins as ``(indices, counts)`` of their nonzero entries
    (at most one per scored row instead of :data:`AUC_BINS`); :func:`merge` takes either form."""
    out = dict(acc)
    for key in _SPARSE & set(acc):
        at = np.flatnonzero(acc[key])
        out[key] = (at.astype(np.uint32), acc[key][at])
    return out


def merge(into: Accumulator, parts: Iterable[Accumulator]) -> Accumulator:
    """Add the partial accumulators ``parts`` (plain or :func:`pack`'ed) into ``into`` (a plain one, e.g.
    the first part's or a new one) in order, and return it."""
    for part in parts:
        for key, value in part.items():
            if isinstance(value, tuple):  # packed bins
                at, counts = value
                into[key][at.astype(np.int64)] += counts
            elif key in _MIN:
                into[key] = min(into[key], value)
            elif key in _MAX:
                into[key] = max(into[key], value)
            else:
                into[key] = into[key] + value
    return into


def new_accumulator(plan: BoundedPlan) -> Accumulator:
    """The accumulator of no rows (what :func:`merge` adds the partitions' into)."""
    return _new(plan)


# ------------------------------------------------------------------------------------------- finish


def finish_multiclass(
    acc: Accumulator,
    labels_eval: list[str],
    cm_labels: list[str],
    train_dist: Mapping[str, Any],
    metric: str,
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """MULTICLASS's metric, report entries (baseline, confusion matrix, per class) and distribution from
    the confusion counts ``acc["cm"]`` (``cm_labels`` × ``cm_labels``, row-major; actual × predicted)."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    index = {c: i for i, c in enumerate(cm_labels)}
    n_lab = len(cm_labels)
    cm = acc["cm"]
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


def _finish_binary(
    acc: Accumulator, plan: BoundedPlan, metric: str
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    pos_bins, neg_bins, at_or_above = acc["pos_bins"], acc["neg_bins"], acc["at_or_above"]
    cm, hist, totals = acc["cm"], acc["hist"], acc["totals"]
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
    for k, t in enumerate(plan.thresholds):
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
        "threshold": plan.threshold,
        "confusion_matrix": {"labels": ["0", "1"], "matrix": cm.tolist()},
        "threshold_table": rows,
        "score_histogram": {
            "edges": [float(e) for e in plan.edges],
            "actual_0": [int(c) for c in hist[0]],
            "actual_1": [int(c) for c in hist[1]],
        },
        "roc_curve": {"fpr": [float(x) for x in fpr], "tpr": [float(x) for x in tpr]},
        "bounded": {
            "auc": f"from {AUC_BINS:,} bins of the score's logit in [-{LOGIT_RANGE:g}, {LOGIT_RANGE:g}]",
            "roc_curve": "from the same bins",
        },
    }
    dist = {"counts": {"0": n_neg, "1": n_pos}}
    return auc, report, dist


def _regression_edges(acc: Accumulator, bins: int) -> tuple[np.ndarray, np.ndarray]:
    lim = acc["r_max"] or 1.0
    r_edges = np.linspace(-lim, lim, bins + 1)
    s_edges = np.linspace(acc["s_lo"], acc["s_hi"] or 1.0, bins + 1)
    if s_edges[0] == s_edges[-1]:
        s_edges = np.linspace(s_edges[0] - 0.5, s_edges[0] + 0.5, bins + 1)
    return r_edges, s_edges


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
    partials: Partials | None = None,
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """``(metric value, report entries, evaluation target distribution)`` of ``model`` on ``table``, batch
    by batch (``entry_counts``: rows per dictionary entry of ``target``; ``entry_ok``: usable entries).

    ``partials`` computes the merged accumulator of the table's rows for a plan (REGRESSION calls it
    twice, the second plan holding the first pass's edges); default: :func:`accumulate` over the whole
    table in this process."""
    mt = model.model_type

    def run(plan: BoundedPlan) -> Accumulator:
        if partials is not None:
            return partials(plan)
        return accumulate(model, table, plan, schema=schema, batch_rows=batch_rows)

    used = entry_ok & (entry_counts > 0)
    if mt == "MULTICLASS":
        labels_eval = sorted({str(v) for v in tview[used]})
        cm_labels = sorted(set(labels_eval) | set(model.classes))
        acc = run(BoundedPlan(mt, labels=tuple(cm_labels)))
        return finish_multiclass(acc, labels_eval, cm_labels, train_dist, metric)
    if mt == "BINARY":
        edges = np.linspace(0.0, 1.0, histogram_bins + 1)
        plan = BoundedPlan(
            mt,
            threshold=float(threshold),
            thresholds=tuple(float(t) for t in thresholds),
            edges=tuple(float(e) for e in edges),
        )
        return _finish_binary(run(plan), plan, metric)

    vals, cnts = tview[used].astype(np.float64), entry_counts[used]
    n = int(cnts.sum())
    eval_mean = float(vals @ cnts) / n
    mean = train_dist.get("mean")
    mean = eval_mean if mean is None else float(mean)
    base = math.sqrt(float(np.square(vals - mean) @ cnts) / n)
    first = run(BoundedPlan(mt, regression_pass=1))
    value = math.sqrt(first["sq"] / n)
    r_edges, s_edges = _regression_edges(first, histogram_bins)
    second = run(  # the second pass: the histograms on the first pass's edges
        BoundedPlan(
            mt,
            regression_pass=2,
            residual_edges=tuple(float(e) for e in r_edges),
            score_edges=tuple(float(e) for e in s_edges),
        )
    )
    report = {
        "baseline": {
            "metric": metric,
            "value": base,
            "description": f"RMSE of always predicting the training target mean {mean:.6g}",
        },
        "residual_histogram": {
            "edges": r_edges.tolist(),
            "counts": [int(c) for c in second["r_hist"]],
            "description": "residual = actual - predicted",
        },
        "score_histogram": {"edges": s_edges.tolist(), "counts": [int(c) for c in second["s_hist"]]},
    }
    dist = {
        "mean": eval_mean,
        "std": math.sqrt(max(0.0, float(np.square(vals - eval_mean) @ cnts) / n)),
        "quantiles": _count_quantiles(vals, cnts, [0.0, 0.25, 0.5, 0.75, 1.0]),
    }
    return value, report, dist
