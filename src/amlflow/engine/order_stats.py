"""Exact order statistics and moments of a column too large to hold, by passes over its rows.

A column stored without a dictionary (:mod:`amlflow.engine.table`, a *value column*) is read in chunks
of float64 rows (nan = missing); its median, histogram, ``quantile_bin`` edges and mean/std are the
same figures the dictionary path computes from per-value counts (:mod:`amlflow.engine.stats`,
:func:`~amlflow.engine.recipe.transforms.quantile_edges`), exactly, in memory bounded by
:data:`COLLECT_VALUES` whatever the rows.

:func:`order_statistics` is a radix selection on the floats' order-preserving 64-bit keys: each pass
counts the rows of every still-open key range by its next 8 or 16 bits and narrows each wanted rank to
one sub-range, until the rows left in the open ranges fit in memory; one more pass collects and sorts
those. A column with fewer than :data:`COLLECT_VALUES` values takes that one pass only.

Example:
    >>> import numpy as np
    >>> x = np.array([5.0, np.nan, -1.0, 3.0, 3.0, 10.0])
    >>> order_statistics(lambda: [x[:3], x[3:]], [0, 2, 4], collect=2).tolist()
    [-1.0, 3.0, 10.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

__all__ = ["COLLECT_VALUES", "Chunks", "Moments", "moments", "order_statistics"]

#: rows a selection pass may hold at once (32 MB of keys)
COLLECT_VALUES = 1 << 22

Chunks = Callable[[], Iterable[np.ndarray]]  # each call: a new pass over the same float64 chunks


def _keys(x: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of finite float64 values (negative: bits inverted; else sign set)."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    neg = (bits >> np.uint64(63)).astype(bool)
    keys: np.ndarray = np.where(neg, ~bits, bits | np.uint64(1 << 63))
    return keys


def _floats(keys: np.ndarray) -> np.ndarray:
    keys = np.asarray(keys, dtype=np.uint64)
    pos = (keys >> np.uint64(63)).astype(bool)
    bits = np.where(pos, keys & np.uint64((1 << 63) - 1), ~keys)
    out: np.ndarray = bits.view(np.float64)
    return out


def _valid(chunks: Chunks) -> Iterable[np.ndarray]:
    for c in chunks():
        c = np.asarray(c, dtype=np.float64)
        yield c[~np.isnan(c)]


def order_statistics(
    chunks: Chunks, ranks: Sequence[int], *, n: int | None = None, collect: int | None = None
) -> np.ndarray:
    """The values at 0-based ``ranks`` of the sorted non-nan values of ``chunks()`` (float64 array).

    Args:
        chunks: called once per pass; yields the column's float64 rows in chunks (nan ignored).
        ranks: each in ``[0, n)``, n the non-nan rows (the caller has counted them).
        n: that count, when known (at most ``collect``: one pass only).
        collect: at most this many rows are held at once (the last pass's; None:
            :data:`COLLECT_VALUES`).
    """
    collect = COLLECT_VALUES if collect is None else collect
    want = np.asarray(ranks, dtype=np.int64)
    if not len(want):
        return np.zeros(0, dtype=np.float64)
    # every wanted rank: its key range as (prefix, shift): keys k with k >> shift == prefix; its rank in
    # it; and how many rows the range holds (None: not counted yet)
    prefix = np.zeros(len(want), dtype=np.uint64)
    shift = 64
    rank = want.copy()
    held: int | None = n
    while True:
        if shift == 0:
            return _floats(prefix)
        if held is not None and held <= collect:
            return _collect(chunks, prefix, shift, rank)
        open_ = np.unique(prefix)
        bits = min(shift, 16 if len(open_) * (1 << 16) <= 1 << 21 else 8)
        counts = np.zeros(len(open_) << bits, dtype=np.int64)
        sub = shift - bits
        for c in _valid(chunks):
            keys = _keys(c)
            if shift < 64:
                top = keys >> np.uint64(shift)
                j = np.minimum(np.searchsorted(open_, top), len(open_) - 1)
                inside = open_[j] == top
                keys, j = keys[inside], j[inside]
            else:
                j = np.zeros(len(keys), dtype=np.int64)
            digit = (keys >> np.uint64(sub)) & np.uint64((1 << bits) - 1)
            counts += np.bincount((j << bits) + digit.astype(np.int64), minlength=len(counts))
        per = counts.reshape(len(open_), 1 << bits)
        cum = np.cumsum(per, axis=1)
        j = np.searchsorted(open_, prefix)
        if np.any(rank >= cum[j, -1]):
            raise ValueError("order_statistics: a rank is not below the number of non-nan values")
        digit = np.array([np.searchsorted(cum[a], r, side="right") for a, r in zip(j, rank, strict=True)])
        below = np.where(digit > 0, cum[j, np.maximum(digit - 1, 0)], 0)
        rank = rank - below
        prefix = (prefix << np.uint64(bits)) | digit.astype(np.uint64)
        shift = sub
        new = np.unique(prefix)
        pj = np.searchsorted(open_, new >> np.uint64(bits))
        held = int(per[pj, (new & np.uint64((1 << bits) - 1)).astype(np.int64)].sum())


def _collect(chunks: Chunks, prefix: np.ndarray, shift: int, rank: np.ndarray) -> np.ndarray:
    open_ = np.unique(prefix)
    got: list[np.ndarray] = []
    for c in _valid(chunks):
        keys = _keys(c)
        if shift < 64:
            top = keys >> np.uint64(shift)
            j = np.minimum(np.searchsorted(open_, top), len(open_) - 1)
            keys = keys[open_[j] == top]
        got.append(keys)
    kept = np.sort(np.concatenate(got)) if got else np.zeros(0, dtype=np.uint64)
    start = np.searchsorted(kept, prefix << np.uint64(shift)) if shift < 64 else np.zeros(len(prefix), int)
    return _floats(kept[start + rank])


class Moments:
    """Count, extremes, mean and variance of a column's non-nan rows (:func:`moments`)."""

    def __init__(self, n: int, lo: float, hi: float, mean: float, var: float) -> None:
        self.n, self.min, self.max, self.mean, self.var = n, lo, hi, mean, var


def moments(chunks: Chunks) -> Moments:
    """Two passes: the count, extremes and mean, then the mean squared deviation (as
    ``stats._numeric_summary`` computes them from a dictionary: ``Σ(v - mean)² / n``)."""
    n, total, lo, hi = 0, 0.0, math.inf, -math.inf
    for c in _valid(chunks):
        if len(c):
            n += len(c)
            total += float(c.sum())
            lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
    if n == 0:
        return Moments(0, math.nan, math.nan, math.nan, math.nan)
    mean = total / n
    sq = sum(float(((c - mean) ** 2).sum()) for c in _valid(chunks))
    return Moments(n, lo, hi, mean, sq / n)
