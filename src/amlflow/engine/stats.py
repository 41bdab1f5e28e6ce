"""Data insights: per-attribute statistics of an encoded table (AML's "data insights", DG data-insights).

Everything is computed from each column's dictionary (small) and ``np.bincount`` of its codes — no Python
loop over rows. A NUMERIC column stored without a dictionary (a value column, :mod:`amlflow.engine.table`)
gets the same figures from passes over its rows in chunks (:mod:`amlflow.engine.order_stats`: the median
exactly, the mean and deviations summed per chunk, so equal to the dictionary path's to rounding).

The result is plain JSON (documented in docs/formats.md, "Data insights")::

    {"n_rows": int, "n_rejected": int (when known),
     "target": {"name", "type", "missing", "invalid", "distribution": [{"value", "count"}]
                (BINARY/CATEGORICAL) or "summary": {numeric summary} (NUMERIC)} or null,
     "attributes": [{"name", "type", "role", "missing", "invalid", "correlation", ...type-specific...}]}

Type-specific keys: NUMERIC ``min max mean median std histogram{edges, counts}``; CATEGORICAL
``distinct top_categories``; BINARY ``true false``; TEXT ``tokens distinct_tokens top_tokens``.

``correlation`` (with the target; null when undefined, e.g. a constant column or no target):
* NUMERIC attribute vs NUMERIC or BINARY target: Pearson's r (signed; point-biserial for BINARY);
* NUMERIC attribute vs CATEGORICAL target, or CATEGORICAL/BINARY attribute vs NUMERIC target: the
  correlation ratio η (0..1);
* CATEGORICAL/BINARY attribute vs CATEGORICAL/BINARY target: Cramér's V (0..1);
* TEXT attributes: null.
Rows where either value is missing or invalid are left out of the pair.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from typing import Any

import numpy as np

from amlflow.engine.order_stats import Chunks, moments, order_statistics
from amlflow.engine.schema import Schema, binary_view, is_invalid, numeric_view
from amlflow.engine.table import Table, is_value_column

__all__ = ["compute_statistics"]

TOP = 10
BINS = 10
CHUNK_ROWS = 1 << 20  # rows read at once: nothing is held per row of the whole table

Rows = Callable[[int, int], np.ndarray]  # an attribute's rows [a, b) in the form a statistic reads them
Pairs = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]  # one pass: (x, y) chunks of rows


def _num(x: Any) -> float | None:
    """A JSON-safe float (None for nan/inf)."""
    v = float(x)
    return v if math.isfinite(v) else None


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float | None:
    """Median of ``values`` repeated ``weights`` times (the mean of the two middle ones when even)."""
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    n = int(cum[-1]) if len(cum) else 0
    if n == 0:
        return None
    lo = v[np.searchsorted(cum, (n - 1) // 2, side="right")]
    hi = v[np.searchsorted(cum, n // 2, side="right")]
    return _num((lo + hi) / 2)


def _numeric_summary(values: np.ndarray, counts: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """min/max/mean/median/std and a histogram of dictionary ``values`` weighted by row ``counts``."""
    ok = ~np.isnan(values) & (counts > 0)
    v, w = values[ok], counts[ok].astype(np.float64)
    if not len(v):
        return {
            "min": None,
            "max": None,
            "mean": None,
            "median": None,
            "std": None,
            "histogram": {"edges": [], "counts": []},
        }
    n = w.sum()
    mean = float((v * w).sum() / n)
    var = float((w * (v - mean) ** 2).sum() / n)
    hist, edges = np.histogram(v, bins=bins, weights=w)
    return {
        "min": _num(v.min()),
        "max": _num(v.max()),
        "mean": _num(mean),
        "median": _weighted_median(v, w),
        "std": _num(math.sqrt(var)),
        "histogram": {"edges": [_num(e) for e in edges], "counts": [int(c) for c in hist]},
    }


def _top(dictionary: np.ndarray, counts: np.ndarray, k: int = TOP) -> list[dict[str, Any]]:
    present = np.flatnonzero((counts > 0) & (dictionary != ""))
    order = present[np.lexsort((dictionary[present].astype(str), -counts[present]))][:k]
    return [{"value": str(dictionary[i]), "count": int(counts[i])} for i in order]


def _pearson(pairs: Pairs) -> float | None:
    """Pearson's r of the (x, y) chunks ``pairs()`` yields (two passes; rows with a nan left out)."""
    n, sx, sy = 0, 0.0, 0.0
    for x, y in pairs():
        m = ~(np.isnan(x) | np.isnan(y))
        n += int(m.sum())
        sx, sy = sx + float(x[m].sum()), sy + float(y[m].sum())
    if n < 2:
        return None
    mx, my = sx / n, sy / n
    sab = saa = sbb = 0.0
    for x, y in pairs():
        m = ~(np.isnan(x) | np.isnan(y))
        a, b = x[m] - mx, y[m] - my
        sab, saa, sbb = sab + float((a * b).sum()), saa + float((a * a).sum()), sbb + float((b * b).sum())
    den = math.sqrt(saa * sbb)
    return _num(sab / den) if den > 0 else None


def _eta(pairs: Pairs, n_groups: int) -> float | None:
    """Correlation ratio of numeric ``y`` grouped by integer ``groups`` (-1 = left out), from the
    (groups, y) chunks ``pairs()`` yields (two passes)."""
    cnt, sums = np.zeros(n_groups), np.zeros(n_groups)
    n, total_sum = 0, 0.0
    for groups, y in pairs():
        m = (groups >= 0) & ~np.isnan(y)
        g, v = groups[m], y[m]
        cnt += np.bincount(g, minlength=n_groups)
        sums += np.bincount(g, weights=v, minlength=n_groups)
        n, total_sum = n + len(v), total_sum + float(v.sum())
    if n < 2:
        return None
    mean = total_sum / n
    total = 0.0
    for groups, y in pairs():
        total += float(((y[(groups >= 0) & ~np.isnan(y)] - mean) ** 2).sum())
    if total <= 0:
        return None
    nz = cnt > 0
    between = float((cnt[nz] * (sums[nz] / cnt[nz] - mean) ** 2).sum())
    return _num(math.sqrt(min(1.0, between / total)))


def _cramers_v(pairs: Pairs, na: int, nb: int) -> float | None:
    """Cramér's V of two integer-coded variables (-1 = left out) from the chunks ``pairs()`` yields;
    only non-empty cells are kept, so high-cardinality pairs stay small: chi² = n·(Σ O²/(R·C) − 1)."""
    rows, cols = np.zeros(na), np.zeros(nb)
    dense = na * nb <= 1 << 22
    observed = np.zeros(na * nb if dense else 0, dtype=np.int64)
    cells_seen, counts_seen = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n = 0
    for a, b in pairs():
        m = (a >= 0) & (b >= 0)
        a, b = a[m].astype(np.int64), b[m].astype(np.int64)
        n += len(a)
        rows += np.bincount(a, minlength=na)
        cols += np.bincount(b, minlength=nb)
        cells = a * nb + b
        if dense:
            observed += np.bincount(cells, minlength=na * nb)
        else:  # merge this chunk's distinct cells into those seen
            u, k = np.unique(cells, return_counts=True)
            cells_seen, inv = np.unique(np.concatenate([cells_seen, u]), return_inverse=True)
            merged = np.bincount(inv.reshape(-1), weights=np.concatenate([counts_seen, k]))
            counts_seen = merged.astype(np.int64)
    if n < 2:
        return None
    r, c = int(np.count_nonzero(rows)), int(np.count_nonzero(cols))
    if r < 2 or c < 2:
        return None
    if dense:
        nz = np.flatnonzero(observed)
        obs = observed[nz].astype(np.float64)
    else:
        nz, obs = cells_seen, counts_seen.astype(np.float64)
    chi2 = n * (float((obs * obs / (rows[nz // nb] * cols[nz % nb])).sum()) - 1.0)
    return _num(math.sqrt(min(1.0, max(0.0, chi2) / (n * (min(r, c) - 1)))))


def _counts(table: Table, name: str, n_values: int) -> np.ndarray:
    """Rows per dictionary entry, counted in chunks of rows."""
    counts = np.zeros(n_values, dtype=np.int64)
    for a, b in table.iter_row_batches(CHUNK_ROWS):
        counts += np.bincount(np.asarray(table.codes(name, a, b)), minlength=n_values)
    return counts


class _Target:
    """The target's values per dictionary entry, in the forms the correlations need, read per chunk of
    rows (nothing is held per row)."""

    def __init__(self, table: Table, name: str, type_: str) -> None:
        self.table, self.name, self.type = table, name, type_
        d = table.dictionary(name)
        self._numeric: np.ndarray | None = None
        self._groups: np.ndarray | None = None
        self.n_groups = 0
        if type_ == "NUMERIC":
            self._numeric = numeric_view(d)
        elif type_ == "BINARY":
            view = binary_view(d)
            self._numeric = view
            self._groups, self.n_groups = np.where(np.isnan(view), -1, view).astype(np.int64), 2
        elif type_ == "CATEGORICAL":
            g = np.arange(len(d), dtype=np.int64)
            g[d == ""] = -1
            self._groups, self.n_groups = g, len(d)

    def numeric(self, a: int, b: int) -> np.ndarray:
        assert self._numeric is not None
        out: np.ndarray = self._numeric[self.table.codes(self.name, a, b)]
        return out

    def groups(self, a: int, b: int) -> np.ndarray:
        assert self._groups is not None
        out: np.ndarray = self._groups[self.table.codes(self.name, a, b)]
        return out

    def correlation(self, type_: str, x: Rows, n_x: int = 0) -> float | None:
        """Correlation of an attribute of ``type_`` whose rows ``x(a, b)`` gives: its numeric values
        (NUMERIC), or its group of ``n_x`` (-1: left out; CATEGORICAL, BINARY)."""
        ranges = list(self.table.iter_row_batches(CHUNK_ROWS))

        def pairs(f: Rows, g: Rows) -> Pairs:
            return lambda: ((f(a, b), g(a, b)) for a, b in ranges)

        if type_ == "NUMERIC":
            if self.type in ("NUMERIC", "BINARY") and self._numeric is not None:
                return _pearson(pairs(x, self.numeric))
            if self._groups is not None:
                return _eta(pairs(self.groups, x), self.n_groups)
            return None
        if type_ in ("CATEGORICAL", "BINARY"):
            if self.type == "NUMERIC" and self._numeric is not None:
                return _eta(pairs(x, self.numeric), n_x)
            if self._groups is not None:
                return _cramers_v(pairs(x, self.groups), n_x, self.n_groups)
        return None


def _text_stats(dictionary: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    tokens: Counter[str] = Counter()
    for value, c in zip(dictionary.tolist(), counts.tolist(), strict=True):
        if c and value:
            for tok in value.split():
                tokens[tok] += c
    top = sorted(tokens.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
    return {
        "tokens": int(sum(tokens.values())),
        "distinct_tokens": len(tokens),
        "top_tokens": [{"value": t, "count": int(c)} for t, c in top],
    }


def _value_chunks(table: Table, name: str, rows: np.ndarray | None = None) -> Chunks:
    """The pass function of a value column for :mod:`~amlflow.engine.order_stats` (``rows``: a boolean
    mask of the rows to keep)."""

    def chunks() -> Iterator[np.ndarray]:
        for a, b in table.iter_row_batches(CHUNK_ROWS):
            x = table.values(name, a, b)
            yield x if rows is None else x[rows[a:b]]

    return chunks


def _value_summary(table: Table, name: str, bins: int = BINS) -> dict[str, Any]:
    """:func:`_numeric_summary` of a value column, from passes over its rows."""
    chunks = _value_chunks(table, name)
    m = moments(chunks)
    if m.n == 0:
        return _numeric_summary(np.zeros(0), np.zeros(0))
    lo, hi = order_statistics(chunks, [(m.n - 1) // 2, m.n // 2], n=m.n)
    edges = np.histogram_bin_edges(np.array([m.min, m.max]), bins=bins)
    hist = np.zeros(bins, dtype=np.int64)
    for c in chunks():
        hist += np.histogram(c[~np.isnan(c)], bins=edges)[0]
    return {
        "min": _num(m.min),
        "max": _num(m.max),
        "mean": _num(m.mean),
        "median": _num((lo + hi) / 2),
        "std": _num(math.sqrt(m.var)),
        "histogram": {"edges": [_num(e) for e in edges], "counts": [int(c) for c in hist]},
    }


def _value_attribute(table: Table, name: str, target: _Target | None) -> dict[str, Any]:
    counts = table.value_counts(name)
    out: dict[str, Any] = {"name": name, "type": "NUMERIC", **counts}
    out.update(_value_summary(table, name))
    out["correlation"] = (
        target.correlation("NUMERIC", lambda a, b: table.values(name, a, b))
        if target is not None and table.n_rows
        else None
    )
    return out


def _attribute(table: Table, name: str, type_: str, target: _Target | None) -> dict[str, Any]:
    if is_value_column(table, name):
        return _value_attribute(table, name, target)
    d = table.dictionary(name)
    counts = _counts(table, name, len(d))
    missing_mask = d == ""
    view = numeric_view(d) if type_ == "NUMERIC" else binary_view(d) if type_ == "BINARY" else None
    invalid_mask = np.isnan(view) & ~missing_mask if view is not None else np.zeros(len(d), dtype=bool)
    out: dict[str, Any] = {
        "name": name,
        "type": type_,
        "missing": int(counts[missing_mask].sum()),
        "invalid": int(counts[invalid_mask].sum()),
    }
    if type_ == "NUMERIC" and view is not None:
        out.update(_numeric_summary(view, counts))
    elif type_ == "CATEGORICAL":
        out["distinct"] = int(np.count_nonzero((counts > 0) & ~missing_mask))
        out["top_categories"] = _top(d, counts)
    elif type_ == "BINARY" and view is not None:
        out["true"] = int(counts[view == 1].sum())
        out["false"] = int(counts[view == 0].sum())
    elif type_ == "TEXT":
        out.update(_text_stats(d, counts))
    out["correlation"] = (
        target.correlation(type_, *_rows_of(table, name, type_, view, d))
        if target is not None and table.n_rows
        else None
    )
    return out


def _rows_of(table: Table, name: str, type_: str, view: np.ndarray | None, d: np.ndarray) -> tuple[Rows, int]:
    """An attribute's rows as :meth:`_Target.correlation` reads them, and its number of groups."""
    if type_ == "NUMERIC" and view is not None:
        lut, n_x = view, 0
    elif type_ == "BINARY" and view is not None:
        lut, n_x = np.where(np.isnan(view), -1, view).astype(np.int64), 2
    else:
        lut = np.arange(len(d), dtype=np.int64)
        lut[d == ""] = -1
        n_x = len(d)
    return (lambda a, b: lut[table.codes(name, a, b)]), n_x


def compute_statistics(
    table: Table, schema: Schema, *, only: Collection[str] | None = None
) -> dict[str, Any]:
    """The data insights of ``table`` read with ``schema``'s types (JSON-serialisable dict).

    Args:
        table: an :class:`amlflow.engine.dataset.EncodedTable` (anything with ``n_rows``,
            ``dictionary(name)``, ``codes(name)``; ``info["n_rejected"]`` is reported when present).
        schema: the datasource's :class:`amlflow.engine.schema.Schema`.
        only: these attributes' entries only (None: every one's). Each entry depends on its own
            column and the target's only, so the insights of disjoint groups of attributes, their
            ``attributes`` lists put back in schema order, are the insights of all of them.
    """
    out: dict[str, Any] = {"n_rows": int(table.n_rows)}
    info = getattr(table, "info", None) or {}
    if "n_rejected" in info:
        out["n_rejected"] = int(info["n_rejected"])
    roles = {schema.row_id: "rowId", schema.row_weight: "rowWeight"}
    roles.update(dict.fromkeys(schema.excluded, "excluded"))
    target: _Target | None = None
    out["target"] = None
    if schema.target is not None:
        ttype = schema.type_of(schema.target)
        d = table.dictionary(schema.target)
        counts = _counts(table, schema.target, len(d))
        tinfo: dict[str, Any] = {
            "name": schema.target,
            "type": ttype,
            "missing": int(counts[d == ""].sum()),
            "invalid": int(counts[is_invalid(d, ttype)].sum()),
        }
        if ttype == "NUMERIC":
            tinfo["summary"] = _numeric_summary(numeric_view(d), counts)
        elif ttype == "BINARY":
            view = binary_view(d)
            tinfo["distribution"] = [
                {"value": "1", "count": int(counts[view == 1].sum())},
                {"value": "0", "count": int(counts[view == 0].sum())},
            ]
        else:
            tinfo["distribution"] = _top(d, counts, k=len(d))
        out["target"] = tinfo
        target = _Target(table, schema.target, ttype)
    attributes = []
    for attr in schema.attributes:
        if attr.name == schema.target or (only is not None and attr.name not in only):
            continue
        entry = _attribute(table, attr.name, attr.type, target)
        entry["role"] = roles.get(attr.name, "input")
        attributes.append(entry)
    out["attributes"] = attributes
    return out
