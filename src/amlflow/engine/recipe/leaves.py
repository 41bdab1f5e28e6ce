"""The pieces :class:`~amlflow.engine.recipe.features.FeatureBuilder` is built from (docs/aml-reference.md
§5): the bounds it counts before fitting (:class:`FeatureBound`), one fitted output (``_Leaf``: its
feature columns, vocabulary, mean/std or mode), the per-table cache of dictionaries and per-entry feature
maps (:class:`TableCache`), and the small helpers they share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from amlflow.engine.errors import DataError
from amlflow.engine.recipe.parser import Expr
from amlflow.engine.recipe.transforms import apply_transform, cartesian_pairs, obj_array, var_values
from amlflow.engine.table import Columns, is_value_column

if TYPE_CHECKING:
    from amlflow.engine.recipe.features import FeatureBuilder

__all__ = ["MAX_STANDARDISED", "FeatureBound", "TableCache"]

MAX_STANDARDISED = 1e4  # |standardised NUMERIC feature| cap


@dataclass(frozen=True)
class FeatureBound:
    """Upper bounds of what a recipe makes of a table (:meth:`FeatureBuilder.bound`), counted before fitting.

    Attributes:
        rows: the rows counted.
        nonzeros: non-zeros of the feature matrix (without the intercept column).
        features: feature columns (one-hot categories seen, distinct tokens at most).
        token_features: of ``features``, those of token outputs (each keeps a string in the vocabulary).
        max_row: the most non-zeros one row can have.
    """

    rows: int
    nonzeros: int
    features: int
    token_features: int
    max_row: int


# ---------------------------------------------------------------------------------------------- leaves


@dataclass
class _Leaf:
    """One output expression with its place in the feature vector."""

    expr: Expr
    mode: str  # "numeric" (one real feature), "onehot" (one-of), "bag" (token presence)
    offset: int = 0
    vocab: list[str] = field(default_factory=list)
    implicit: str | None = None  # onehot: the most frequent training category (no feature)
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        self._index = {v: i for i, v in enumerate(self.vocab)}

    @property
    def size(self) -> int:
        if self.mode == "numeric":
            return 1
        return len(self.vocab) + (1 if self.mode == "onehot" and self.implicit is not None else 0)

    @property
    def slots(self) -> int:
        """Features a single-valued leaf can set in one row (onehot: the "≠ mode" flag + the value)."""
        return 2 if self.mode == "onehot" and self.implicit is not None else 1

    def set_vocab(self, vocab: list[str]) -> None:
        self.vocab = vocab
        self._index = {v: i for i, v in enumerate(vocab)}

    def feature_names(self) -> list[str]:
        if self.mode == "numeric":
            return [self.expr.name]
        has_flag = self.mode == "onehot" and self.implicit is not None
        flag = [f"{self.expr.name}!={self.implicit}"] if has_flag else []
        return flag + [f"{self.expr.name}={v}" for v in self.vocab]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"expr": self.expr.name, "mode": self.mode, "offset": self.offset}
        if self.mode == "numeric":
            d.update(mean=self.mean, std=self.std)
        else:
            d.update(vocab=self.vocab, implicit=self.implicit)
        return d

    # single-valued leaves: per dictionary entry, one (column or -1, value) pair per slot
    def single_maps(self, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        if self.mode == "numeric":
            with np.errstate(over="ignore", invalid="ignore"):
                v = (values.astype(np.float64) - self.mean) / self.std
            # extreme outliers (or statistics that overflowed) must not blow up the solver
            v = np.clip(v, -MAX_STANDARDISED, MAX_STANDARDISED, out=v, where=~np.isnan(v))
            cols = np.where(np.isnan(v), -1, self.offset).astype(np.int32)
            return [(cols, np.nan_to_num(v).astype(np.float32))]
        get = self._index.get
        idx = np.fromiter(
            (-1 if v is None else get(v, -1) for v in values), dtype=np.int64, count=len(values)
        )
        ones = np.ones(len(values), dtype=np.float32)
        if self.implicit is None:
            return [(np.where(idx >= 0, idx + self.offset, -1).astype(np.int32), ones)]
        # The mode has no feature of its own; every other value (missing and unseen included) sets the
        # "≠ mode" flag: far fewer non-zeros than a full one-hot (the intercept column makes up for what
        # the mode's share of it would learn: model._intercept_column_value).
        is_mode = np.fromiter((v == self.implicit for v in values), dtype=bool, count=len(values))
        flag = np.where(is_mode, -1, self.offset).astype(np.int32)
        return [(flag, ones), (np.where(idx >= 0, idx + self.offset + 1, -1).astype(np.int32), ones)]

    # bag leaves: per entry CSR (entries × size)
    def bag_matrix(self, token_lists: np.ndarray) -> sp.csr_matrix:
        get = self._index.get
        indptr = np.zeros(len(token_lists) + 1, dtype=np.int64)
        indices: list[int] = []
        for i, toks in enumerate(token_lists):
            cols = {c for t in toks if (c := get(t)) is not None}
            indices.extend(sorted(cols))
            indptr[i + 1] = len(indices)
        ind = np.asarray(indices, dtype=np.int32)
        return sp.csr_matrix(
            (np.ones(len(ind), dtype=np.float32), ind, indptr), shape=(len(token_lists), self.size)
        )


def _leaf_mode(e: Expr) -> str:
    if e.kind == "NUMERIC":
        return "numeric"
    if e.kind in ("CATEGORICAL", "BINARY"):
        return "onehot"
    return "bag"


class TableCache:
    """Per-table cache of dictionaries, of expression values on them (types from the model schema) and of
    each output's per-entry feature maps: :meth:`FeatureBuilder.encoder` makes one for a table read in
    many batches.

    A column stored without a dictionary (a *value column*, :mod:`amlflow.engine.table`) is seen through
    a dictionary of its **intervals**: the union of the fitted ``quantile_bin`` edges over it cuts the line
    into intervals, each represented by its lower edge (``-inf`` for the first), plus a nan entry for the
    missing rows; a row's code is its interval (:meth:`codes`). Every ``quantile_bin`` of the attribute
    (alone or in a ``cartesian``) is a function of the interval, so the per-entry machinery gives the rows'
    exact bins; a NUMERIC output of it (the attribute, ``normalize``) is read per row instead
    (:meth:`row_values`, :meth:`reads_rows`), its mean and deviation summed over the rows."""

    def __init__(self, table: Columns, builder: FeatureBuilder) -> None:
        self.table = table
        self.builder = builder
        self.names = set(table.names)
        self.value_attrs = {a for a in self.names if is_value_column(table, a)}
        for lf in builder.leaves if self.value_attrs else ():
            for e in lf.expr.walk():
                if e.fn == "var" and e.attr in self.value_attrs and e.kind != "NUMERIC":
                    raise DataError(
                        f"{e.attr}: the model reads it as {e.kind}, but this datasource stores it without a "
                        "dictionary (a NUMERIC attribute with very many distinct values), so its text is not "
                        f"kept: type {e.attr} {e.kind} in the datasource's schema, as in the model's",
                        field=e.attr,
                    )
        self._intervals: dict[str, np.ndarray] = {}
        self._dict: dict[str, np.ndarray] = {}
        self._values: dict[Expr, np.ndarray] = {}
        self.single: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # per leaf: (columns, values) maps
        self.bags: dict[int, sp.csr_matrix] = {}  # per bag leaf: entries × features
        self.counts: dict[int, np.ndarray] = {}
        self.bounds: dict[Expr, np.ndarray] = {}  # per single-attribute expression: values per entry, at most

    def intervals(self, attr: str) -> np.ndarray:
        """A value column's interval edges: every fitted ``quantile_bin`` edge over ``attr``, sorted."""
        got = self._intervals.get(attr)
        if got is None:
            edges = [
                np.asarray(self.builder.state[e.name]["edges"], dtype=np.float64) for e in self.binned(attr)
            ]
            got = self._intervals[attr] = np.unique(np.concatenate(edges)) if edges else np.zeros(0)
        return got

    def binned(self, attr: str) -> list[Expr]:
        """The ``quantile_bin`` expressions over value column ``attr``; any other use of it than these,
        the attribute itself and ``normalize`` of it raises a DataError naming it."""
        out: list[Expr] = []
        for lf in self.builder.leaves:
            for e in lf.expr.walk():
                if e.fn == "quantile_bin" and attr in e.attributes():
                    if e.args[0].fn != "var":
                        raise DataError(
                            f"{attr}: {e.name} bins {e.args[0].name}, but {attr} is stored without a "
                            "dictionary (a NUMERIC input with very many distinct values) and only its "
                            f"own values can be binned: use quantile_bin({attr}, {e.n})",
                            field=attr,
                        )
                    out.append(e)
        return out

    def reads_rows(self, lf: _Leaf) -> bool:
        """Whether leaf ``lf`` is a NUMERIC output of a value column (read per row, not per entry)."""
        return lf.mode == "numeric" and any(a in self.value_attrs for a in lf.expr.attributes())

    def row_values(self, e: Expr, start: int, stop: int) -> np.ndarray:
        """A NUMERIC expression's float64 value per row ``[start, stop)`` of a value column."""
        if e.fn == "var":
            assert e.attr is not None
            return np.asarray(self.table.values(e.attr, start, stop), dtype=np.float64)  # type: ignore[attr-defined]
        return np.asarray(apply_transform(e, self.row_values(e.args[0], start, stop), self.builder.state))

    def dictionary(self, attr: str) -> np.ndarray:
        d = self._dict.get(attr)
        if d is None:
            if attr in self.value_attrs:  # its intervals' lower edges, then missing
                d = np.concatenate([[-np.inf], self.intervals(attr), [np.nan]])
            else:
                d = self.table.dictionary(attr) if attr in self.names else obj_array([""])
            self._dict[attr] = d
        return d

    def codes(self, attr: str, start: int, stop: int) -> np.ndarray:
        if attr in self.value_attrs:
            v = np.asarray(self.table.values(attr, start, stop))  # type: ignore[attr-defined]
            edges = self.intervals(attr)
            c = np.searchsorted(edges, v, side="right")
            c[np.isnan(v)] = len(edges) + 1
            return c
        if attr in self.names:
            return np.asarray(self.table.codes(attr, start, stop))
        return np.zeros(stop - start, dtype=np.uint8)

    def values(self, e: Expr) -> np.ndarray:
        """Values of a single-attribute expression per entry of its attribute's dictionary."""
        v = self._values.get(e)
        if v is None:
            if e.fn == "var" and e.attr in self.value_attrs:
                v = self.dictionary(e.attr).astype(np.float64)
            elif e.fn == "var":
                assert e.attr is not None
                v = var_values(e.kind, self.dictionary(e.attr))
            else:
                v = apply_transform(e, self.values(e.args[0]), self.builder.state)
            self._values[e] = v
        return v


def _mode_and_vocab(values: np.ndarray, w: np.ndarray) -> tuple[str | None, list[str]]:
    """A one-hot output's most frequent value (ties: the smallest) and the other values seen, sorted, from
    its ``values`` and the selected rows' count ``w`` per dictionary entry."""
    totals: dict[str, float] = {}
    for v, cnt in zip(values.tolist(), w.tolist(), strict=True):
        if v is not None and cnt > 0:
            totals[v] = totals.get(v, 0.0) + cnt
    implicit = min(totals, key=lambda k: (-totals[k], k)) if totals else None
    return implicit, sorted(k for k in totals if k != implicit)


def _pair_tokens(a: list[str], b: list[str]) -> list[str]:
    return cartesian_pairs(a, b)


class _OneRow:
    """A one-row stand-in for an encoded table (realtime records)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self.names = list(values)
        self.n_rows = 1

    def dictionary(self, name: str) -> np.ndarray:
        return obj_array([self._values[name]])

    def codes(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        return np.zeros(1, dtype=np.uint8)[start:stop]


def _vstack_csr(parts: list[sp.csr_matrix], n_cols: int) -> sp.csr_matrix:
    """Concatenate CSR row blocks into one matrix, freeing each block as it is copied."""
    n_rows = sum(p.shape[0] for p in parts)
    nnz = sum(p.nnz for p in parts)
    data = np.empty(nnz, dtype=np.float32)
    indices = np.empty(nnz, dtype=np.int32)
    indptr = np.empty(n_rows + 1, dtype=np.int64 if nnz >= 2**31 else np.int32)
    indptr[0] = 0
    r = z = 0
    while parts:
        p = parts.pop(0)
        k, m = p.shape[0], p.nnz
        data[z : z + m] = p.data
        indices[z : z + m] = p.indices
        indptr[r + 1 : r + k + 1] = p.indptr[1:] + z
        r += k
        z += m
        del p
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))
