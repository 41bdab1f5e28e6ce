"""The streaming training mode (docs/scale.md): the encoded table in chunks through mini-batch SGD
(:mod:`amlflow.engine.sgd`) when the in-memory matrix would not fit the job's memory budget —
:func:`plan_streaming` sizes the chunks, ``_train_streaming`` runs ``sgd.maxPasses`` passes. Chosen by
:func:`amlflow.engine.model.train`.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from amlflow.engine.errors import TrainingError
from amlflow.engine.limits import (
    format_bytes,
)
from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import FeatureBuilder, Recipe
from amlflow.engine.recipe.features import FeatureBound
from amlflow.engine.schema import Schema, numeric_view
from amlflow.engine.sgd import Chunk, Loss, SGDConfig
from amlflow.engine.sgd import fit as sgd_fit
from amlflow.engine.table import Table
from amlflow.engine.trained import (
    BYTES_PER_NONZERO,
    BYTES_PER_TOKEN_FEATURE,
    BYTES_PER_WEIGHT,
    MAX_CLASSES,
    _codes,
    target_view,
)

__all__ = [
    "MIN_CHUNK_ROWS",
    "STREAM_CHUNK_BYTES",
    "TRAINING_MODES",
    "StreamingPlan",
    "TrainingMode",
    "plan_streaming",
]


def _with_bias(X: sp.csr_matrix) -> sp.csr_matrix:
    """``X`` with a constant-1 column appended (built directly on the CSR arrays)."""
    n, f = X.shape
    counts = np.diff(X.indptr)
    indptr = X.indptr.astype(np.int64) + np.arange(n + 1)
    indices = np.empty(X.nnz + n, dtype=np.int32)
    data = np.empty(X.nnz + n, dtype=np.float32)
    last = indptr[1:] - 1
    keep = np.ones(X.nnz + n, dtype=bool)
    keep[last] = False
    indices[keep] = X.indices
    data[keep] = X.data
    indices[last] = f
    data[last] = 1.0
    del counts
    return sp.csr_matrix((data, indices, indptr), shape=(n, f + 1))


TrainingMode = Literal["auto", "memory", "streaming"]
TRAINING_MODES = ("auto", "memory", "streaming")
#: streaming: the features of one chunk are estimated at most this many bytes (fewer when the budget is small)
STREAM_CHUNK_BYTES = 64 << 20
#: streaming: a chunk holds at least this many rows (the budget must allow for it)
MIN_CHUNK_ROWS = 256
# streaming, per chunk row: its non-zeros are held twice (the chunk, its shuffled copy) plus the builder's
# scratch, and the row's target, weight, scores and gradient (k + 4 float64)
STREAM_COPIES = 3
# streaming, spilled chunk features on disk: a float32 value and an int32 column per non-zero
SPILL_BYTES_PER_NONZERO = 8


@dataclass(frozen=True)
class StreamingPlan:
    """What the streaming mode holds: ``fixed`` bytes (vocabularies, weights and their average, the row
    mask) plus chunks of ``chunk_rows`` rows estimated at ``row_bytes`` each."""

    fixed: int
    row_bytes: int
    chunk_rows: int

    @property
    def needed(self) -> int:
        return self.fixed + self.chunk_rows * self.row_bytes


def plan_streaming(bound: FeatureBound, n_classes: int, budget: int) -> StreamingPlan:
    """The streaming mode's working set for features bounded by ``bound``: the token vocabularies, the
    weights (coefficients, their running average, the L1 bookkeeping), one byte per training row (the valid
    mask) and one chunk, as many rows as fit in :data:`STREAM_CHUNK_BYTES` and in what ``budget`` leaves (at
    least :data:`MIN_CHUNK_ROWS`, at most every row)."""
    k = max(1, n_classes)
    fixed = (
        bound.token_features * BYTES_PER_TOKEN_FEATURE
        + (bound.features + 1) * k * BYTES_PER_WEIGHT
        + bound.rows
    )
    mean_row = math.ceil(bound.nonzeros / max(1, bound.rows)) + 1  # + the intercept column
    row_bytes = mean_row * BYTES_PER_NONZERO * STREAM_COPIES + (k + 4) * 8
    room = min(STREAM_CHUNK_BYTES, max(0, budget - fixed)) // row_bytes
    rows = max(1, min(bound.rows, max(MIN_CHUNK_ROWS, int(room))))
    return StreamingPlan(fixed, row_bytes, rows)


@dataclass
class _Target:
    """The target of the training table, per dictionary entry and per row (nothing of the table's size
    but the valid-row mask): ``entry`` maps a dictionary entry to its value (float: nan = invalid) or class
    index (int: -1 = invalid); ``counts`` counts each entry's rows."""

    name: str
    entry: np.ndarray
    counts: np.ndarray
    valid: np.ndarray
    classes: list[str]

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    def entry_ok(self) -> np.ndarray:
        ok: np.ndarray = self.entry >= 0 if self.entry.dtype.kind == "i" else ~np.isnan(self.entry)
        return ok

    def values(self, table: Table, start: int, stop: int) -> np.ndarray:
        """Targets of the valid rows of ``[start, stop)``."""
        got: np.ndarray = self.entry[_codes(table, self.name, start, stop)][self.valid[start:stop]]
        return got


def _target(model_type: str, table: Table, target: str, batch_rows: int = 1 << 20) -> _Target:
    """Read the target column in batches (as ``train`` always did, per dictionary entry then per row)."""
    tview = target_view(model_type, table.dictionary(target))
    counts = np.zeros(len(tview), dtype=np.int64)
    for a, b in table.iter_row_batches(batch_rows):
        counts += np.bincount(_codes(table, target, a, b), minlength=len(tview))
    classes: list[str] = []
    if model_type == "MULTICLASS":
        present = np.array([v is not None for v in tview], dtype=bool)
        names = sorted({tview[i] for i in np.flatnonzero(present & (counts > 0))})
        if len(names) > MAX_CLASSES:
            raise TrainingError(
                f"{target}: {len(names)} distinct target values; "
                f"a MULTICLASS model allows at most {MAX_CLASSES}",
                field=target,
            )
        index = {c: i for i, c in enumerate(names)}
        entry = np.array([index.get(v, -1) if v is not None else -1 for v in tview], dtype=np.int64)
        classes = names
    else:
        entry = np.asarray(tview, dtype=np.float64)
        classes = ["0", "1"] if model_type == "BINARY" else []
    ok = entry >= 0 if model_type == "MULTICLASS" else ~np.isnan(entry)
    valid = np.empty(table.n_rows, dtype=bool)
    for a, b in table.iter_row_batches(batch_rows):
        valid[a:b] = ok[_codes(table, target, a, b)]
    return _Target(target, entry, counts, valid, classes)


def _check_target(model_type: str, tgt: _Target) -> None:
    target = tgt.name
    if tgt.n_valid == 0:
        raise TrainingError(f"{target}: no training record has a valid target value", field=target)
    used = np.flatnonzero(tgt.entry_ok() & (tgt.counts > 0))
    if model_type == "BINARY":
        seen = np.unique(tgt.entry[used])
        if len(seen) < 2:
            raise TrainingError(
                f"{target}: every valid training record has target {int(seen[0])}; "
                "a BINARY model needs both 0 and 1",
                field=target,
            )
    elif model_type == "MULTICLASS" and len(tgt.classes) < 2:
        raise TrainingError(
            f"{target}: only one target class ({tgt.classes[0]!r}); a MULTICLASS model needs at least 2",
            field=target,
        )


def _choose_mode(mode: str, needed: int, budget: int, plan: StreamingPlan) -> tuple[str, str]:
    """The training mode and why, for the job log."""
    est = f"in-memory estimate {format_bytes(needed)}"
    lim = f"the budget of {format_bytes(budget)}"
    stream = f"streaming estimate {format_bytes(plan.needed)}, chunks of {plan.chunk_rows:,} rows"
    if mode == "memory":
        return "memory", f"requested; {est}, {lim}"
    if mode == "streaming":
        return "streaming", f"requested; {est}, {stream}, {lim}"
    if needed <= budget:
        return "memory", f"{est} within {lim}"
    return "streaming", f"{est} over {lim}; {stream}"


class _TableChunks:
    """The training table as :class:`amlflow.engine.sgd.Chunks`: features of ``chunk_rows`` rows at a time
    built with the fitted builder (valid rows only, the constant-1 column last), their targets and weights.

    With a ``spill`` directory, each chunk is written there (plain ``.npy`` arrays) the first time it is
    built and read back on later passes instead of being built again; without one every pass builds it."""

    def __init__(
        self,
        table: Table,
        builder: FeatureBuilder,
        tgt: _Target,
        chunk_rows: int,
        model_type: str,
        center: float,
        weight: tuple[str, np.ndarray, float] | None,
        spill: Path | None = None,
    ) -> None:
        self.table = table
        self.builder = builder
        self.enc = builder.encoder(table)
        self.tgt = tgt
        self.ranges = list(table.iter_row_batches(chunk_rows))
        self.model_type = model_type
        self.center = center
        self.weight = weight  # (attribute, weight per dictionary entry, the largest weight)
        self.spill = spill
        self.spilled: set[int] = set()
        self.kept: Chunk | None = None

    def __len__(self) -> int:
        return len(self.ranges)

    def chunk(self, i: int) -> Chunk:
        if self.kept is not None:  # a single chunk: held between passes (no more memory than within one)
            return self.kept
        if i in self.spilled:
            return self._read(i)
        a, b = self.ranges[i]
        sel = self.tgt.valid[a:b]
        X = self.builder.transform(self.table, a, b, _dicts=self.enc)
        X = _with_bias(X if sel.all() else X[sel])
        y = self.tgt.values(self.table, a, b)
        if self.model_type == "REGRESSION":
            y = y - self.center
        w = None
        if self.weight is not None:
            name, per_entry, top = self.weight
            w = per_entry[_codes(self.table, name, a, b)][sel] / top
        out = Chunk(X, y, w)
        if len(self.ranges) == 1:
            self.kept = out
        elif self.spill is not None:
            self._write(i, X, y, w)
        return out

    def _arrays(self, i: int) -> dict[str, Path]:
        assert self.spill is not None
        return {k: self.spill / f"{i}.{k}.npy" for k in ("data", "indices", "indptr", "y", "w")}

    def _write(self, i: int, X: sp.csr_matrix, y: np.ndarray, w: np.ndarray | None) -> None:
        paths = self._arrays(i)
        for key, arr in (("data", X.data), ("indices", X.indices), ("indptr", X.indptr), ("y", y), ("w", w)):
            if arr is not None:
                np.save(paths[key], arr, allow_pickle=False)
        self.spilled.add(i)

    def _read(self, i: int) -> Chunk:
        paths = self._arrays(i)
        indptr = np.load(paths["indptr"], allow_pickle=False)
        X = sp.csr_matrix(
            (
                np.load(paths["data"], allow_pickle=False),
                np.load(paths["indices"], allow_pickle=False),
                indptr,
            ),
            shape=(len(indptr) - 1, self.builder.n_features + 1),
        )
        w = np.load(paths["w"], allow_pickle=False) if paths["w"].exists() else None
        return Chunk(X, np.load(paths["y"], allow_pickle=False), w)


def _weight_entries(table: Table, schema: Schema) -> tuple[str, np.ndarray] | None:
    if schema.row_weight is None or schema.row_weight not in table.names:
        return None
    wv = numeric_view(table.dictionary(schema.row_weight))
    return schema.row_weight, np.where(np.isnan(wv) | (wv < 0), 1.0, wv)


def _count_quantiles(values: np.ndarray, counts: np.ndarray, qs: Sequence[float]) -> list[float]:
    """``np.quantile`` (linear) of ``values`` repeated ``counts`` times, without repeating them."""
    order = np.argsort(values, kind="stable")
    v, c = values[order], counts[order]
    ends = np.cumsum(c)
    n = int(ends[-1])
    out = []
    for q in qs:
        h = (n - 1) * q
        lo = math.floor(h)
        a = float(v[np.searchsorted(ends, lo, side="right")])
        b = float(v[np.searchsorted(ends, min(lo + 1, n - 1), side="right")])
        out.append(a + (h - lo) * (b - a))
    return out


def _spill_dir(
    stack: contextlib.ExitStack[Any],
    bound: FeatureBound,
    *,
    n_classes: int,
    passes: int,
    chunk_rows: int,
    scratch: Path | str | None,
    say: Callable[[str], None],
) -> Path | None:
    """A temporary directory (removed with ``stack``) to keep the chunks' features between passes, when
    there is more than one pass and the disk under ``scratch`` (None: the system's temporary directory) has
    twice the room the features need; otherwise None (every pass builds them again; a single chunk is kept in
    memory)."""
    if passes < 2 or bound.rows <= chunk_rows:
        return None
    need = (bound.nonzeros + bound.rows) * SPILL_BYTES_PER_NONZERO + bound.rows * 8 * (n_classes + 2)
    where = Path(scratch) if scratch is not None else Path(tempfile.gettempdir())
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = 0
    if free < 2 * need:
        say(f"streaming: chunk features rebuilt every pass (~{format_bytes(need)} would not fit on disk)")
        return None
    path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".amlflow-stream-", dir=where)))
    say(f"streaming: chunk features kept on disk between passes (~{format_bytes(need)})")
    return path


def _train_streaming(
    table: Table,
    recipe: Recipe,
    schema: Schema,
    params: TrainingParameters,
    model_type: str,
    tgt: _Target,
    plan: StreamingPlan,
    bound: FeatureBound,
    seed: int,
    scratch: Path | str | None,
    say: Callable[[str], None],
    t0: float,
) -> tuple[FeatureBuilder, np.ndarray, np.ndarray, dict[str, Any], float, float]:
    """Fit by mini-batch SGD over chunks (:mod:`amlflow.engine.sgd`); returns the builder, coef, intercept,
    the target distribution and the feature / fit times."""
    used = tgt.entry_ok() & (tgt.counts > 0)
    weights = _weight_entries(table, schema)
    weight: tuple[str, np.ndarray, float] | None = None
    wsum = float(tgt.n_valid)
    ysum = 0.0
    if weights is not None:  # the largest weight and the weighted target mean, in one pass of codes
        name, per_entry = weights
        top, wsum, ysum = 0.0, 0.0, 0.0
        for a, b in table.iter_row_batches(1 << 20):
            sel = tgt.valid[a:b]
            wb = per_entry[_codes(table, name, a, b)][sel]
            if len(wb):
                top = max(top, float(wb.max()))
                wsum += float(wb.sum())
                if model_type == "REGRESSION":
                    ysum += float(wb @ tgt.values(table, a, b))
        weight = (name, per_entry, top if top > 0 else 1.0)
    elif model_type == "REGRESSION":
        ysum = float(tgt.entry[used] @ tgt.counts[used])
    center = ysum / wsum if model_type == "REGRESSION" and wsum > 0 else 0.0
    l1, l2 = params.l1, params.l2
    if weight is not None:  # weights ≤ 1 and λ / top: the same objective as the in-memory mode
        l1, l2 = l1 / weight[2], l2 / weight[2]

    builder = FeatureBuilder.fit(recipe, schema, table, tgt.valid)
    t_features = time.perf_counter() - t0
    say(
        f"features: outputs={len(builder.leaves)} features={builder.n_features} "
        f"built-per-chunk chunk-rows={plan.chunk_rows} vocabularies-in={t_features:.2f}s"
    )
    k = len(tgt.classes) if model_type == "MULTICLASS" else 1
    loss: Loss = (
        "squared" if model_type == "REGRESSION" else "logistic" if model_type == "BINARY" else "softmax"
    )
    config = SGDConfig(
        loss=loss,
        n_outputs=k,
        passes=params.max_passes,
        shuffle=params.shuffle_type == "auto",
        l1=l1,
        l2=l2,
        seed=seed,
        # averaging helps without L1 (banking, wine, MNIST) but undoes L1's zeros and its AUC (docs/scale.md)
        average=l1 == 0,
    )
    with contextlib.ExitStack() as stack:
        spill = _spill_dir(
            stack,
            bound,
            n_classes=k,
            passes=config.passes,
            chunk_rows=plan.chunk_rows,
            scratch=scratch,
            say=say,
        )
        chunks = _TableChunks(table, builder, tgt, plan.chunk_rows, model_type, center, weight, spill)
        t1 = time.perf_counter()
        result = sgd_fit(chunks, builder.n_features + 1, config, log=say)
        t_fit = time.perf_counter() - t1
    say(
        f"streaming: passes={config.passes} shuffle={params.shuffle_type} chunks={len(chunks)} "
        f"batch-rows={config.batch_rows} steps={result.steps} step={result.step_size:.4g} "
        f"averaged-snapshots={result.snapshots}"
    )
    coef = np.ascontiguousarray(result.weights[:-1])
    intercept = result.weights[-1].copy()
    if model_type == "REGRESSION":
        intercept = intercept + center
        vals, cnts = tgt.entry[used], tgt.counts[used]
        mean = float(vals @ cnts) / float(cnts.sum())
        dist: dict[str, Any] = {
            "mean": mean,
            "std": math.sqrt(max(0.0, float(np.square(vals - mean) @ cnts) / float(cnts.sum()))),
            "quantiles": _count_quantiles(vals, cnts, [0.0, 0.25, 0.5, 0.75, 1.0]),
        }
    else:
        per_class = np.zeros(len(tgt.classes), dtype=np.int64)
        np.add.at(per_class, tgt.entry[used].astype(np.int64), tgt.counts[used])
        dist = {"counts": {c: int(n) for c, n in zip(tgt.classes, per_class, strict=True)}}
    return builder, coef, intercept, dist, t_features, t_fit
