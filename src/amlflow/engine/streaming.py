"""The streaming training mode (docs/scale.md): the encoded table in chunks through mini-batch SGD
(:mod:`amlflow.engine.sgd`) when the in-memory matrix would not fit the job's memory budget —
:func:`plan_streaming` sizes the chunks, ``_train_streaming`` runs ``sgd.maxPasses`` passes. Chosen by
:func:`amlflow.engine.model.train`.

A data-parallel fit (docs/scale.md, "Training on Dask") prepares the same fit in one place and runs its
passes over shards elsewhere: :class:`ShardSpec` is what a shard needs besides the table (plain JSON: the
fitted builder as ``model.json`` stores it, the target's classes, the SGD configuration),
:func:`shard_ranges` deals the table's rows to the shards and :func:`open_shard` gives a shard's rows as
:class:`~amlflow.engine.sgd.Chunks`, built exactly as the streaming mode builds its chunks.

This module holds the mode's plan and choice (:func:`plan_streaming`, ``_choose_mode``), the fit around the
passes (``_streaming_setup``, ``_train_streaming``, ``_streaming_result`` with ``_count_quantiles``) and the
data-parallel pieces above. The table as the learner sees it — the target (``_Target``), the row weights,
the intercept column and the chunks themselves with their spill to disk (``_TableChunks``, ``_spill_dir``)
— is :mod:`amlflow.engine.training_data`; those names stay importable from here.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from amlflow.engine.errors import TrainingError
from amlflow.engine.limits import format_bytes
from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import FeatureBuilder, Recipe
from amlflow.engine.recipe.features import FeatureBound
from amlflow.engine.schema import Schema, parse_schema
from amlflow.engine.sgd import Chunks, Loss, SGDConfig
from amlflow.engine.sgd import fit as sgd_fit
from amlflow.engine.table import Table
from amlflow.engine.trained import (
    BYTES_PER_NONZERO,
    BYTES_PER_TOKEN_FEATURE,
    BYTES_PER_WEIGHT,
    _codes,
    target_view,
)
from amlflow.engine.training_data import SPILL_BYTES_PER_NONZERO as SPILL_BYTES_PER_NONZERO
from amlflow.engine.training_data import _check_target as _check_target
from amlflow.engine.training_data import _entries as _entries
from amlflow.engine.training_data import _spill_dir as _spill_dir
from amlflow.engine.training_data import _TableChunks as _TableChunks
from amlflow.engine.training_data import _Target as _Target
from amlflow.engine.training_data import _target as _target
from amlflow.engine.training_data import _weight_entries as _weight_entries
from amlflow.engine.training_data import _with_bias as _with_bias

__all__ = [
    "MIN_CHUNK_ROWS",
    "PIECES_PER_SHARD",
    "STREAM_CHUNK_BYTES",
    "TRAINING_MODES",
    "ShardSpec",
    "StreamingPlan",
    "TrainingMode",
    "measure_shard",
    "open_shard",
    "plan_streaming",
    "shard_ranges",
    "shard_spill_bytes",
]


TrainingMode = Literal["auto", "memory", "streaming"]
TRAINING_MODES = ("auto", "memory", "streaming")
#: streaming: the features of one chunk are estimated at most this many bytes (fewer when the budget is small)
STREAM_CHUNK_BYTES = 64 << 20
#: streaming: a chunk holds at least this many rows (the budget must allow for it)
MIN_CHUNK_ROWS = 256
# streaming, per chunk row: its non-zeros are held twice (the chunk, its shuffled copy) plus the builder's
# scratch, and the row's target, weight, scores and gradient (k + 4 float64)
STREAM_COPIES = 3
#: data-parallel: the table is dealt to the shards in pieces, at least this many per shard when the rows
#: allow (pieces of at least MIN_CHUNK_ROWS rows), so that each shard's rows come from all over the table
PIECES_PER_SHARD = 4


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


@dataclass
class _StreamSetup:
    """A streaming fit before its passes: the fitted builder, the SGD configuration, the regression
    target's centre, the row weights (attribute, weight per dictionary entry, the largest weight)."""

    builder: FeatureBuilder
    config: SGDConfig
    center: float
    weight: tuple[str, np.ndarray, float] | None
    t_features: float


def _streaming_setup(
    table: Table,
    recipe: Recipe,
    schema: Schema,
    params: TrainingParameters,
    model_type: str,
    tgt: _Target,
    plan: StreamingPlan,
    seed: int,
    say: Callable[[str], None],
    t0: float,
) -> _StreamSetup:
    """Everything a streaming fit settles before its first pass (one pass of codes for the weights and the
    regression centre, the vocabularies, the SGD configuration)."""
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
    return _StreamSetup(builder, config, center, weight, t_features)


def _streaming_result(
    model_type: str, tgt: _Target, center: float, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """coef, intercept (the last row of ``weights``, plus the centre for REGRESSION) and the target
    distribution of a streamed fit."""
    used = tgt.entry_ok() & (tgt.counts > 0)
    coef = np.ascontiguousarray(weights[:-1])
    intercept = weights[-1].copy()
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
    return coef, intercept, dist


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
    setup = _streaming_setup(table, recipe, schema, params, model_type, tgt, plan, seed, say, t0)
    builder, config = setup.builder, setup.config
    with contextlib.ExitStack() as stack:
        spill = _spill_dir(
            stack,
            bound,
            n_classes=config.n_outputs,
            passes=config.passes,
            chunk_rows=plan.chunk_rows,
            scratch=scratch,
            say=say,
        )
        chunks = _TableChunks(
            table, builder, tgt, plan.chunk_rows, model_type, setup.center, setup.weight, spill
        )
        t1 = time.perf_counter()
        result = sgd_fit(chunks, builder.n_features + 1, config, log=say)
        t_fit = time.perf_counter() - t1
    say(
        f"streaming: passes={config.passes} shuffle={params.shuffle_type} chunks={len(chunks)} "
        f"batch-rows={config.batch_rows} steps={result.steps} step={result.step_size:.4g} "
        f"averaged-snapshots={result.snapshots}"
    )
    coef, intercept, dist = _streaming_result(model_type, tgt, setup.center, result.weights)
    return builder, coef, intercept, dist, setup.t_features, t_fit


# ------------------------------------------------------------------------------------ data-parallel


@dataclass(frozen=True)
class ShardSpec:
    """What a shard of a data-parallel fit needs besides the table: plain data (:meth:`to_json`), never
    a pickle. ``builder`` is the fitted feature builder as ``model.json`` stores it, ``schema`` the
    training schema's JSON, ``classes`` the target's classes (MULTICLASS), ``center`` the REGRESSION
    target's centre, ``weight_top`` the largest row weight (None: no ``rowWeight``), ``config`` the
    :class:`~amlflow.engine.sgd.SGDConfig` (:meth:`~amlflow.engine.sgd.SGDConfig.to_json`),
    ``nonzeros_per_row`` the features' estimated non-zeros per row (for the spill's size)."""

    model_type: str
    schema: str
    builder: dict[str, Any]
    target: str
    classes: list[str]
    center: float
    weight_top: float | None
    chunk_rows: int
    config: dict[str, Any]
    n_columns: int
    nonzeros_per_row: float

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> ShardSpec:
        return cls(**json.loads(text))

    def sgd_config(self) -> SGDConfig:
        return SGDConfig.from_json(self.config)


def _shard_spec(
    setup: _StreamSetup,
    schema: Schema,
    model_type: str,
    tgt: _Target,
    plan: StreamingPlan,
    bound: FeatureBound,
) -> ShardSpec:
    return ShardSpec(
        model_type=model_type,
        schema=schema.to_json(),
        builder=setup.builder.to_json(),
        target=tgt.name,
        classes=list(tgt.classes),
        center=setup.center,
        weight_top=None if setup.weight is None else setup.weight[2],
        chunk_rows=plan.chunk_rows,
        config=setup.config.to_json(),
        n_columns=setup.builder.n_features + 1,
        nonzeros_per_row=(bound.nonzeros + bound.rows) / max(1, bound.rows),
    )


def shard_ranges(n_rows: int, chunk_rows: int, shards: int) -> list[list[tuple[int, int]]]:
    """The rows ``[0, n_rows)`` dealt to ``shards`` shards: pieces of at most ``chunk_rows`` rows (at least
    :data:`PIECES_PER_SHARD` per shard where pieces of :data:`MIN_CHUNK_ROWS` rows allow), piece ``j`` to
    shard ``j mod shards``; a shard's pieces are its chunks, in table order."""
    shards = max(1, shards)
    size = math.ceil(n_rows / (shards * PIECES_PER_SHARD)) if n_rows else 1
    size = max(1, min(chunk_rows, max(MIN_CHUNK_ROWS, size)))
    out: list[list[tuple[int, int]]] = [[] for _ in range(shards)]
    for j, a in enumerate(range(0, n_rows, size)):
        out[j % shards].append((a, min(a + size, n_rows)))
    return out


def _shard_target(table: Table, spec: ShardSpec, ranges: Sequence[tuple[int, int]]) -> _Target:
    """The target of the rows in ``ranges`` (the valid mask is false elsewhere)."""
    tview = target_view(spec.model_type, table.dictionary(spec.target))
    entry = _entries(spec.model_type, tview, spec.classes)
    ok = entry >= 0 if spec.model_type == "MULTICLASS" else ~np.isnan(entry)
    valid = np.zeros(table.n_rows, dtype=bool)
    for a, b in ranges:
        valid[a:b] = ok[_codes(table, spec.target, a, b)]
    return _Target(spec.target, entry, np.zeros(len(entry), dtype=np.int64), valid, list(spec.classes))


def shard_spill_bytes(spec: ShardSpec, ranges: Sequence[tuple[int, int]]) -> int:
    """Disk the features of a shard's chunks take when kept between passes (an estimate)."""
    rows = sum(b - a for a, b in ranges)
    k = max(1, len(spec.classes)) if spec.model_type == "MULTICLASS" else 1
    return int(rows * (spec.nonzeros_per_row * SPILL_BYTES_PER_NONZERO + 8 * (k + 2)))


def open_shard(
    table: Table, spec: ShardSpec, ranges: Sequence[tuple[int, int]], *, spill: Path | None = None
) -> Chunks:
    """The rows ``ranges`` of ``table`` as chunks (one per range), built as the streaming mode builds them:
    the builder of ``spec`` (from its JSON), valid targets only, the constant-1 column last, the
    REGRESSION target centred, the row weights scaled by the largest. With ``spill`` (a directory) each
    chunk's features are kept there after their first build."""
    schema = parse_schema(spec.schema)
    builder = FeatureBuilder.from_json(spec.builder, schema)
    tgt = _shard_target(table, spec, ranges)
    weight: tuple[str, np.ndarray, float] | None = None
    if spec.weight_top is not None:
        entries = _weight_entries(table, schema)
        if entries is None:
            raise TrainingError(f"the shard's table has no rowWeight column {schema.row_weight!r}")
        weight = (entries[0], entries[1], spec.weight_top)
    return _TableChunks(
        table, builder, tgt, spec.chunk_rows, spec.model_type, spec.center, weight, spill, ranges=ranges
    )


def measure_shard(chunks: Chunks) -> tuple[float, int]:
    """The sum of the squared norms of a shard's feature rows and their number (every chunk is built once:
    the spill, if any, is filled)."""
    total, rows = 0.0, 0
    for i in range(len(chunks)):
        X = chunks.chunk(i).X
        sq = np.square(X.data, dtype=np.float64)
        total += float(sq.sum())
        rows += int(X.shape[0])
    return total, rows
