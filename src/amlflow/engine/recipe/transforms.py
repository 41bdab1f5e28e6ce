"""Recipe transformations evaluated per distinct value (docs/aml-reference.md §5).

An expression evaluated on a *dictionary* (the distinct raw strings of one attribute of an encoded table)
gives one value per entry: NUMERIC → float64 (nan = missing/invalid); BINARY/CATEGORICAL → object array of
str or None; TEXT → object array of str or None; TOKENS → object array of lists of str. The feature builder
(:mod:`amlflow.engine.recipe.features`) then gathers these per-entry values by the rows' integer codes.

Also here: the text functions (``no_punct``, ``ngram``, ``osb``) and the fitted statistics of
``normalize`` and ``quantile_bin`` (weighted mean/std, equal-frequency cut points).

Every token list is capped at :data:`~amlflow.engine.limits.MAX_TOKENS_PER_VALUE` tokens (10,000), the
first ones in order: the words of a TEXT value (white-space split), the n-grams of ``ngram`` (all unigrams,
then bigrams, ...), the bigrams of ``osb`` (by position, then distance) and the pairs of ``cartesian``
(by the first operand's token, then the second's). So one value yields a bounded number of features and
feature building is linear in the input; values below the cap are untouched.
"""

from __future__ import annotations

import math
import string
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from amlflow.engine.limits import MAX_TOKENS_PER_VALUE
from amlflow.engine.recipe.parser import Expr
from amlflow.engine.schema import BINARY_FALSE, BINARY_TRUE, binary_view, numeric_view

__all__ = [
    "apply_transform",
    "cartesian_pairs",
    "ngram_count",
    "osb_count",
    "ngrams",
    "no_punct",
    "obj_array",
    "osb",
    "quantile_edges",
    "rows_mean_std",
    "tokens_of",
    "var_values",
    "weighted_mean_std",
    "words",
]

# -------------------------------------------------------------------------------------- text functions

_ASCII_PUNCT = set(string.punctuation)


def _is_punct(c: str) -> bool:
    return c in _ASCII_PUNCT or unicodedata.category(c).startswith("P")


def _strip_punct(token: str) -> str:
    i, j = 0, len(token)
    while i < j and _is_punct(token[i]):
        i += 1
    while j > i and _is_punct(token[j - 1]):
        j -= 1
    return token[i:j]


def no_punct(text: str) -> str:
    """``text`` with punctuation stripped from the start and end of every word (empty words dropped)."""
    return " ".join(t for t in (_strip_punct(w) for w in text.split()) if t)


def words(text: str, cap: int = MAX_TOKENS_PER_VALUE) -> list[str]:
    """The white-space separated words of ``text``, the first ``cap`` of them."""
    out = text.split(maxsplit=cap)
    return out[:cap]


def ngrams(text: str, n: int, cap: int = MAX_TOKENS_PER_VALUE) -> list[str]:
    """Every word n-gram of ``text`` of 1 to ``n`` words (``ngram(x, n)``), the first ``cap`` of them."""
    ws = words(text, cap)
    out: list[str] = []
    for k in range(1, n + 1):
        room = cap - len(out)
        if room <= 0:
            break
        out.extend(" ".join(ws[i : i + k]) for i in range(min(len(ws) - k + 1, room)))
    return out


def ngram_count(n_words: np.ndarray, n: int) -> np.ndarray:
    """How many tokens :func:`ngrams` gives a value of ``n_words`` words (int64 array), capped."""
    w = np.minimum(np.asarray(n_words, dtype=np.int64), MAX_TOKENS_PER_VALUE)
    total = np.zeros_like(w)
    for k in range(1, n + 1):
        total += np.maximum(w - k + 1, 0)
    return np.minimum(total, MAX_TOKENS_PER_VALUE)


def osb(text: str, n: int, cap: int = MAX_TOKENS_PER_VALUE) -> list[str]:
    """Orthogonal sparse bigrams of ``text`` within a window of ``n`` words (``osb(x, n)``: ``a__c``), the
    first ``cap`` of them."""
    ws = words(text, cap)
    out: list[str] = []
    for i, w in enumerate(ws):
        for d in range(1, n):
            if i + d < len(ws):
                if len(out) >= cap:
                    return out
                out.append(w + "_" * d + ws[i + d])
    return out


def osb_count(n_words: np.ndarray, n: int) -> np.ndarray:
    """How many tokens :func:`osb` gives a value of ``n_words`` words (int64 array), capped."""
    w = np.minimum(np.asarray(n_words, dtype=np.int64), MAX_TOKENS_PER_VALUE)
    total = np.zeros_like(w)
    for d in range(1, n):
        total += np.maximum(w - d, 0)
    return np.minimum(total, MAX_TOKENS_PER_VALUE)


def cartesian_pairs(a: Sequence[str], b: Sequence[str], cap: int = MAX_TOKENS_PER_VALUE) -> list[str]:
    """``cartesian``'s tokens: ``x_y`` for each token ``x`` of ``a`` and ``y`` of ``b``, the first ``cap``."""
    out: list[str] = []
    if not b:
        return out
    for x in a:
        room = cap - len(out)
        if room <= 0:
            break
        out.extend(f"{x}_{y}" for y in (b if len(b) <= room else b[:room]))
    return out


def _num_scalar(raw: str) -> float:
    s = raw.strip()
    if not s or any(c not in "0123456789+-.eE" for c in s):
        return math.nan
    try:
        v = float(s)
    except ValueError:
        return math.nan
    return v if math.isfinite(v) else math.nan


def _bin_scalar(raw: str) -> float:
    s = raw.strip().lower()
    if s in BINARY_TRUE:
        return 1.0
    if s in BINARY_FALSE:
        return 0.0
    return math.nan


def obj_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of ``values`` (never a 2-d array, even for lists of equal length)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


# ------------------------------------------------------------------------------------ value evaluation


def var_values(kind: str, dictionary: np.ndarray) -> np.ndarray:
    """Values of a variable of type ``kind`` per entry of its ``dictionary`` (see the module docstring)."""
    small = len(dictionary) <= 8
    if kind == "NUMERIC":
        if small:
            return np.array([_num_scalar(str(v)) for v in dictionary], dtype=np.float64)
        return numeric_view(dictionary)
    if kind == "BINARY":
        b = np.array([_bin_scalar(str(v)) for v in dictionary]) if small else binary_view(dictionary)
        return obj_array([None if math.isnan(x) else ("1" if x == 1.0 else "0") for x in b])
    # CATEGORICAL, TEXT: the stripped raw string, "" = missing
    return obj_array([(s if (s := str(v).strip()) else None) for v in dictionary])


def apply_transform(e: Expr, child: np.ndarray, state: Mapping[str, Any]) -> np.ndarray:
    """Values of ``e`` (a one-argument transformation) from its argument's values ``child``; ``state`` holds
    the fitted ``normalize`` statistics and ``quantile_bin`` edges by expression name."""
    fn = e.fn
    if fn == "lowercase":
        return obj_array([None if v is None else v.lower() for v in child])
    if fn == "no_punct":
        return obj_array([None if v is None else (no_punct(v) or None) for v in child])
    if fn == "ngram":
        assert e.n is not None
        return obj_array([[] if v is None else ngrams(v, e.n) for v in child])
    if fn == "osb":
        assert e.n is not None
        return obj_array([[] if v is None else osb(v, e.n) for v in child])
    if fn == "normalize":
        st = state[e.name]
        normalised: np.ndarray = (child - st["mean"]) / st["std"]
        return normalised
    if fn == "quantile_bin":
        edges = np.asarray(state[e.name]["edges"], dtype=np.float64)
        idx = np.searchsorted(edges, child, side="right")
        return obj_array(
            [None if math.isnan(x) else f"bin_{int(i)}" for x, i in zip(child, idx, strict=True)]
        )
    raise AssertionError(fn)  # pragma: no cover


def tokens_of(kind: str, values: np.ndarray) -> np.ndarray:
    """Values of any non-numeric kind as token lists (TEXT split on white space)."""
    if kind == "TOKENS":
        return values
    if kind == "TEXT":
        return obj_array([[] if v is None else words(v) for v in values])
    return obj_array([[] if v is None else [v] for v in values])


def weighted_mean_std(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of values ``x`` with counts ``w`` (nan ignored; std 1 when degenerate)."""
    ok = ~np.isnan(x) & (w > 0)
    if not ok.any():
        return 0.0, 1.0
    xs, ws = x[ok], w[ok]
    scale = float(np.max(np.abs(xs))) or 1.0  # scaled so huge values cannot overflow the squares
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(np.average(xs / scale, weights=ws))
        std = math.sqrt(float(np.average((xs / scale - mean) ** 2, weights=ws))) * scale
    mean *= scale
    if not math.isfinite(mean):
        mean = 0.0
    return mean, (std if std > 0 and math.isfinite(std) else 1.0)


def rows_mean_std(chunks: Callable[[], Iterable[np.ndarray]]) -> tuple[float, float]:
    """:func:`weighted_mean_std` of rows read in chunks (``chunks()``: one pass each; nan ignored):
    three passes, the extreme, the mean, the deviation, summed per chunk."""
    n, scale = 0, 0.0
    for c in chunks():
        c = c[~np.isnan(c)]
        if len(c):
            n, scale = n + len(c), max(scale, float(np.max(np.abs(c))))
    if n == 0:
        return 0.0, 1.0
    scale = scale or 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        mean = sum(float((c[~np.isnan(c)] / scale).sum()) for c in chunks()) / n
        sq = sum(float(((c[~np.isnan(c)] / scale - mean) ** 2).sum()) for c in chunks())
        std = math.sqrt(sq / n) * scale
    mean *= scale
    if not math.isfinite(mean):
        mean = 0.0
    return mean, (std if std > 0 and math.isfinite(std) else 1.0)


def quantile_edges(x: np.ndarray, w: np.ndarray, n: int) -> list[float]:
    """Cut points of ``n`` equal-frequency bins over values ``x`` with counts ``w`` (duplicates collapse)."""
    ok = ~np.isnan(x) & (w > 0)
    if not ok.any():
        return []
    xs, ws = x[ok], w[ok]
    order = np.argsort(xs, kind="stable")
    xs, cum = xs[order], np.cumsum(ws[order])
    total = cum[-1]
    targets = total * np.arange(1, n) / n
    pos = np.searchsorted(cum, targets, side="right")
    pos = np.minimum(pos, len(xs) - 1)
    edges = np.unique(xs[pos])
    # a bin's upper edge is exclusive; an edge equal to the minimum would leave an empty first bin
    edges = edges[edges > xs[0]]
    return [float(v) for v in edges]
