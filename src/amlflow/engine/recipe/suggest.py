"""Suggested recipes (docs/aml-reference.md §5.4): :func:`suggest_recipe`, the recipe AML proposes for a
training datasource when the caller gives none."""

from __future__ import annotations

import json
import math

import numpy as np

from amlflow.engine.recipe.transforms import quantile_edges
from amlflow.engine.schema import Schema, binary_view, numeric_view
from amlflow.engine.table import Table, is_value_column

__all__ = ["SUGGESTED_BINS", "suggest_recipe"]

SUGGESTED_BINS = (10, 20, 50, 100, 200, 500)


def suggest_recipe(table: Table, schema: Schema, *, max_rows: int = 200_000) -> str:
    """AML-style suggested recipe (docs/aml-reference.md §5.4) for ``table`` read with ``schema``.

    Every NUMERIC input is binned with ``quantile_bin``; its bin count is the one of 10, 20, 50, 100, 200,
    500 whose bins best explain the target on the table (bias-corrected mutual information for a
    categorical/binary target, adjusted R² of the bin means for a numeric target; ties → fewer bins; 10
    when the schema has no usable target). Outputs: ``ALL_BINARY`` (when binary inputs exist),
    ``ALL_CATEGORICAL``, one ``quantile_bin(NUMERIC_VARS_QB_<n>,<n>)`` per bin count in use, ``ALL_TEXT``
    (when text inputs exist).
    """
    inputs = schema.input_names()
    numeric = [a for a in inputs if schema.type_of(a) == "NUMERIC"]
    n = min(table.n_rows, max_rows)
    target = _suggest_target(table, schema, n)
    by_bins: dict[int, list[str]] = {}
    for a in numeric:
        best = SUGGESTED_BINS[0]
        if target is not None and a in table.names and is_value_column(table, a):
            # a column without a dictionary: the first rows' own distinct values stand for one
            x, codes = np.unique(np.asarray(table.values(a, 0, n)), return_inverse=True)
            best = _best_bins(x, codes.reshape(-1).astype(np.int64), *target)
        elif target is not None and a in table.names:
            x = numeric_view(table.dictionary(a))
            best = _best_bins(x, np.asarray(table.codes(a, 0, n), dtype=np.int64), *target)
        by_bins.setdefault(best, []).append(a)
    groups = {
        f"NUMERIC_VARS_QB_{b}": "group(" + ",".join(_quote(a) for a in by_bins[b]) + ")"
        for b in sorted(by_bins)
    }
    outputs: list[str] = []
    if any(schema.type_of(a) == "BINARY" for a in inputs):
        outputs.append("ALL_BINARY")
    outputs.append("ALL_CATEGORICAL")
    outputs.extend(f"quantile_bin(NUMERIC_VARS_QB_{b},{b})" for b in sorted(by_bins))
    if any(schema.type_of(a) == "TEXT" for a in inputs):
        outputs.append("ALL_TEXT")
    return json.dumps({"groups": groups, "assignments": {}, "outputs": outputs}, indent=2)


def _quote(name: str) -> str:
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _suggest_target(table: Table, schema: Schema, n: int) -> tuple[str, np.ndarray] | None:
    t = schema.target
    if t is None or t not in table.names or n == 0:
        return None
    codes = np.asarray(table.codes(t, 0, n), dtype=np.int64)
    d = table.dictionary(t)
    kind = schema.type_of(t)
    if kind == "NUMERIC":
        return "numeric", numeric_view(d)[codes]
    if kind == "BINARY":
        return "classes", binary_view(d)[codes]
    cls = np.where(np.array([str(v).strip() != "" for v in d]), np.arange(len(d)), np.nan)
    return "classes", cls[codes].astype(np.float64)


def _best_bins(x: np.ndarray, codes: np.ndarray, mode: str, y: np.ndarray) -> int:
    """The suggested bin count for one NUMERIC variable: ``x`` per dictionary entry, ``codes`` per row,
    ``y`` the target per row (nan = missing). Works on per-entry statistics, not rows."""
    ok = ~np.isnan(y) & ~np.isnan(x[codes])
    codes, yv = codes[ok], y[ok]
    n = len(yv)
    if n < 2:
        return SUGGESTED_BINS[0]
    n_entries = len(x)
    if mode == "numeric":
        cnt = np.bincount(codes, minlength=n_entries).astype(np.float64)
        s1 = np.bincount(codes, weights=yv, minlength=n_entries)
        s2 = np.bincount(codes, weights=yv * yv, minlength=n_entries)
        sst = float(s2.sum() - s1.sum() ** 2 / n)
        joint = None
    else:
        _, yc = np.unique(yv, return_inverse=True)
        n_cls = int(yc.max()) + 1
        joint = np.bincount(codes * n_cls + yc, minlength=n_entries * n_cls).reshape(n_entries, n_cls)
        cnt = joint.sum(axis=1).astype(np.float64)
    used_entries = np.flatnonzero(cnt > 0)
    xe = x[used_entries]
    best, best_score = SUGGESTED_BINS[0], -math.inf
    for b in SUGGESTED_BINS:
        edges = np.asarray(quantile_edges(xe, cnt[used_entries], b))
        k = len(edges) + 1
        bin_of = np.searchsorted(edges, xe, side="right")
        nb = np.bincount(bin_of, weights=cnt[used_entries], minlength=k)
        n_used = int((nb > 0).sum())
        if joint is None:
            b1 = np.bincount(bin_of, weights=s1[used_entries], minlength=k)
            b2 = np.bincount(bin_of, weights=s2[used_entries], minlength=k)
            nz = nb > 0
            sse = float((b2[nz] - b1[nz] ** 2 / nb[nz]).sum())
            # adjusted R² of the bin means (undefined: never chosen)
            score = -math.inf if sst <= 0 or n <= n_used else 1 - (sse / (n - n_used)) / (sst / (n - 1))
        else:
            jb = np.zeros((k, joint.shape[1]))
            np.add.at(jb, bin_of, joint[used_entries])
            p = jb / n
            px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
            nz = p > 0
            mi = float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())
            score = mi - (n_used - 1) * (joint.shape[1] - 1) / (2 * n)
        if score > best_score + 1e-12:
            best, best_score = b, score
    return best
