"""Mini-batch SGD over a stream of chunks (docs/aml-reference.md §6): the learner of the streaming training
mode (``model.train(mode="streaming")``, chosen when the in-memory matrix would not fit the job's budget).

AML trained with online SGD over its data, ``sgd.maxPasses`` times, in table order or shuffled
(``sgd.shuffleType``). :func:`fit` does the same with a bounded working set: the caller hands it the data as
:class:`Chunks` (a few thousand rows of features at a time, built on demand) and only one chunk, the weights
and their running average are held at once.

* **Losses**: ``squared`` (REGRESSION, ``½(z − y)²``), ``logistic`` (BINARY) and ``softmax`` (MULTICLASS,
  multinomial; ``K`` weight columns). The objective is the one the in-memory mode fits: the mean loss over
  the records (weighted by ``rowWeight``) plus ``λ₂/2 · ‖w‖²`` or ``λ₁ · ‖w‖₁`` — AML's per-record λ.
* **Passes and order**: ``passes`` epochs. ``shuffle=False`` (``sgd.shuffleType=none``): chunks and rows in
  table order every pass (no randomness at all: the seed does not matter). ``shuffle=True`` (``auto``): each
  pass visits the chunks in a new random order and the rows of each chunk in a new random order (NumPy's
  ``default_rng(seed)``).
* **Steps**: mini-batches of :data:`BATCH_ROWS` rows; the gradient of a batch is its mean. The step size
  follows the data's scale, measured on the first pass as the mean squared norm ``L`` of the feature rows
  (running mean over the chunks seen): classification uses ``min(STEP · B / (c · L), MAX_STEP)`` (``c`` the
  loss's curvature bound: ¼ logistic, ½ softmax), a constant step; squared loss uses ``1 / max(L, Lᵦ)``
  with ``Lᵦ`` the batch's own mean squared norm, which keeps every step stable. Measured on the reference
  cases (docs/scale.md): larger steps help MNIST's rare pixel values, the cap keeps banking and wine close
  to the in-memory fit.
* **Regularisation** costs nothing per untouched weight: L2 as a global scale of the weights (``w = s·v``),
  L1 as a cumulative penalty applied to a weight when its feature next appears (Tsuruoka et al., 2009) and
  to every weight at each snapshot and at the end.
* **Averaging** (Polyak–Ruppert): the result is the mean of weight snapshots taken from the first step on,
  one each time the batches since the last one have touched as many weight rows as there are features
  (so averaging costs at most as much as the gradient steps). Measured to help every reference case with L2
  or no penalty; with L1 the last weights are better (sparse, and a higher AUC), so ``model.train`` averages
  only when λ₁ = 0.

The first column the caller's features end with is expected to be a constant 1 (the intercept), learnt as
an ordinary, regularised weight, as in the in-memory mode.

**Data-parallel fits** (docs/scale.md, "Training on Dask") are built from the same learner: its state between
two parts of a fit is plain data (:class:`SGDState`); :func:`run_pass` runs one pass (or a part of one) over
some chunks from a given state — :func:`fit` is a loop of it —, :func:`run_shard` one shard's part of a
pass (its chunk order and row shuffles seeded by pass and shard, the step from a measured mean squared
norm), :func:`combine` averages the shards' states (weights by rows, the Polyak averages over all
snapshots), :func:`fit_parallel` is the loop of passes and syncs over a caller's ``step`` (in-process, or
on a cluster's workers), :func:`finish` the result.

This module holds the loops of passes: :func:`fit` and the data-parallel pieces (:func:`shard_config`,
:func:`shard_order`, :func:`run_shard`, :func:`combine`, :func:`fit_parallel`). The learner they drive — the
data types (:class:`SGDConfig`, :class:`Chunk`, :class:`Chunks`, :class:`SGDState`, :class:`SGDResult`),
the step, regularisation and averaging described above, :func:`run_pass`, :func:`initial_state` and
:func:`finish` — is :mod:`amlflow.engine.sgd_learner`; every name of it stays importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from amlflow.engine.sgd_learner import _GRADIENTS as _GRADIENTS
from amlflow.engine.sgd_learner import (
    BATCH_ROWS,
    MAX_STEP,
    STEP,
    Chunk,
    Chunks,
    Loss,
    SGDConfig,
    SGDResult,
    SGDState,
    finish,
    initial_state,
    load_state,
    run_pass,
    save_state,
)
from amlflow.engine.sgd_learner import CURVATURE as CURVATURE
from amlflow.engine.sgd_learner import MIN_SCALE as MIN_SCALE
from amlflow.engine.sgd_learner import SNAPSHOT_TOUCH as SNAPSHOT_TOUCH
from amlflow.engine.sgd_learner import _diverged as _diverged
from amlflow.engine.sgd_learner import _Learner as _Learner
from amlflow.engine.sgd_learner import _logistic_grad as _logistic_grad
from amlflow.engine.sgd_learner import _row_sq_norms as _row_sq_norms
from amlflow.engine.sgd_learner import _softmax_grad as _softmax_grad
from amlflow.engine.sgd_learner import _squared_grad as _squared_grad

__all__ = [
    "BATCH_ROWS",
    "MAX_STEP",
    "STEP",
    "Chunk",
    "Chunks",
    "Loss",
    "SGDConfig",
    "SGDResult",
    "SGDState",
    "ShardStep",
    "combine",
    "finish",
    "fit",
    "fit_parallel",
    "initial_state",
    "load_state",
    "run_pass",
    "run_shard",
    "save_state",
    "shard_config",
    "shard_order",
]

#: data-parallel: a shard's mini-batches have at least this many rows
MIN_SHARD_BATCH_ROWS = 16


def fit(
    chunks: Chunks,
    n_columns: int,
    config: SGDConfig,
    *,
    log: Callable[[str], None] | None = None,
) -> SGDResult:
    """Learn ``n_columns × config.n_outputs`` weights from ``chunks`` by mini-batch SGD (see the module
    docstring): ``config.passes`` passes, each visiting every chunk once.

    Raises:
        TrainingError: the weights stopped being finite numbers (a diverged fit is never returned).
    """
    say = log or (lambda _msg: None)
    state = initial_state(n_columns, config)
    rng = np.random.default_rng(config.seed)
    for p in range(config.passes):
        state = run_pass(chunks, state, config, rng=rng, first_pass=p == 0)
        if not state.finite():
            raise _diverged(f"pass {p + 1}")
        if p == 0:
            learner = _Learner(state, config)
            say(
                f"streaming: pass 1 of {config.passes}: rows={state.rows_seen} "
                f"mean-squared-norm={learner.mean_sq_norm():.4g} step={learner.step_size():.4g}"
            )
    return finish(state, config)


# ------------------------------------------------------------------------------------ data-parallel

#: ``step(pass_index, sync_index, state)``: every shard's state after its part of that sync of that pass,
#: started from ``state``, in shard order (:func:`run_shard` on each shard, in-process or elsewhere)
ShardStep = Callable[[int, int, SGDState], Sequence[SGDState]]


def shard_config(config: SGDConfig, shards: int) -> SGDConfig:
    """The configuration of each of ``shards`` shards of a data-parallel fit: batches of
    ``batch_rows / shards`` rows (at least :data:`MIN_SHARD_BATCH_ROWS`) with the step of ``batch_rows``.

    Averaging the shards after each went its own way over its rows is, to first order, one step on the
    union of their batches: with batches of ``batch_rows`` each, ``shards`` of them averaged make one
    update per ``shards × batch_rows`` rows with the step of one batch, i.e. a smaller step per row (MNIST
    macro-F1 0.9143 for 2 shards against 0.9150 streaming; banking AUC 0.9378 against 0.9396, what
    streaming batches of 128 rows gave). With ``batch_rows / shards`` rows each, the averaged update spans
    ``batch_rows`` rows as in :func:`fit` (2 shards: 0.9158, 0.9395; docs/scale.md). One shard is
    :func:`fit`'s configuration."""
    if shards <= 1:
        return config
    rows = max(MIN_SHARD_BATCH_ROWS, config.batch_rows // shards)
    step_rows = config.batch_rows if config.step_rows is None else config.step_rows
    return replace(config, batch_rows=min(rows, config.batch_rows), step_rows=step_rows)


def shard_order(
    n_chunks: int, config: SGDConfig, pass_index: int, shard: int, syncs: int = 1
) -> list[list[int]]:
    """The chunks a shard visits in pass ``pass_index``, cut into ``syncs`` consecutive groups (one per
    sync): table order, or (``config.shuffle``) a random order seeded by (seed, pass, shard)."""
    if config.shuffle:
        order = np.random.default_rng([config.seed, pass_index, shard]).permutation(n_chunks)
    else:
        order = np.arange(n_chunks)
    return [g.tolist() for g in np.array_split(order, max(1, syncs))]


def run_shard(
    chunks: Chunks,
    state: SGDState,
    config: SGDConfig,
    *,
    pass_index: int,
    shard: int,
    sync: int = 0,
    syncs: int = 1,
    mean_sq_norm: float | None = None,
) -> SGDState:
    """A shard's part of a data-parallel pass: from ``state``, the chunks of group ``sync`` of
    :func:`shard_order`, each chunk's rows shuffled (``config.shuffle``) by an rng seeded by (seed, pass,
    shard, sync), the step from ``mean_sq_norm`` (the mean squared row norm over every shard; None: this
    shard's running mean, as :func:`fit`). The result depends on these arguments only, not on where it
    runs."""
    groups = shard_order(len(chunks), config, pass_index, shard, syncs)
    rng = np.random.default_rng([config.seed, pass_index, shard, sync, 1])
    return run_pass(
        chunks,
        state,
        config,
        rng=rng,
        order=groups[sync],
        first_pass=pass_index == 0,
        mean_sq_norm=mean_sq_norm,
    )


def _settled(state: SGDState, config: SGDConfig) -> tuple[np.ndarray, float]:
    """``(a, f)`` with ``f · a`` the weights of ``state``, every owed L1 penalty applied (not a copy when
    there is no L1 penalty: ``state.v`` and its scale)."""
    if state.l1_given is None:
        return state.v, state.scale
    learner = _Learner(state, config)
    learner._l1_apply(slice(None))
    return learner.v, learner.scale


def combine(start: SGDState, parts: Sequence[SGDState], config: SGDConfig) -> SGDState:
    """The states of shards that each went on from ``start``, averaged into one: the weights weighted by
    the rows each shard saw since ``start`` (every owed L1 penalty applied first; the new state owes
    none), the Polyak average the mean of every snapshot (``start``'s and each shard's new ones), the
    counters summed. One part is returned as it is (one shard is :func:`fit`'s own path); shards that saw
    no row weigh nothing."""
    if len(parts) == 1:
        return parts[0]
    rows = np.array([p.rows_seen - start.rows_seen for p in parts], dtype=np.float64)
    if not parts or rows.sum() <= 0:
        return start
    share = rows / rows.sum()
    # full-matrix arithmetic in place, one scratch array (MNIST: 1.3 M weights per array)
    scratch = np.empty_like(start.v)

    def add(into: np.ndarray | None, a: np.ndarray, factor: float) -> np.ndarray:
        if into is None:
            out: np.ndarray = np.multiply(a, factor)
            return out
        np.multiply(a, factor, out=scratch)
        into += scratch
        return into

    v: np.ndarray | None = None
    for p, f in zip(parts, share, strict=True):
        if f > 0:
            weights, scale = _settled(p, config)
            v = add(v, weights, float(f * scale))
    assert v is not None
    average = None
    snapshots = start.snapshots + sum(p.snapshots - start.snapshots for p in parts)
    if start.average is not None:
        # the sum of every snapshot: start's S₀ plus each shard's new ones, Σₖ Sₖ·avgₖ − (m − 1)·S₀·avg₀
        # over the m shards that took any (the others' average is start's)
        moved = [p for p in parts if p.snapshots > start.snapshots]
        total: np.ndarray | None = None
        for p in moved:
            assert p.average is not None
            total = add(total, p.average, float(p.snapshots))
        if len(moved) != 1:
            total = add(total, start.average, -float((len(moved) - 1) * start.snapshots))
        assert total is not None
        if snapshots:
            total /= snapshots
        average = total
    return SGDState(
        v=v,
        scale=1.0,
        average=average,
        snapshots=snapshots,
        touched=max(p.touched for p in parts),
        l1_total=0.0,
        l1_given=None if start.l1_given is None else np.zeros_like(start.l1_given),
        steps=start.steps + sum(p.steps - start.steps for p in parts),
        rows_seen=start.rows_seen + sum(p.rows_seen - start.rows_seen for p in parts),
        sq_sum=start.sq_sum + sum(p.sq_sum - start.sq_sum for p in parts),
        sq_rows=start.sq_rows + sum(p.sq_rows - start.sq_rows for p in parts),
    )


def fit_parallel(
    step: ShardStep,
    n_columns: int,
    config: SGDConfig,
    *,
    syncs: int = 1,
    mean_sq_norm: float | None = None,
    log: Callable[[str], None] | None = None,
) -> SGDResult:
    """A data-parallel :func:`fit`: ``config.passes`` passes, each in ``syncs`` parts; in each part every
    shard goes on from the current state over its share of the part (``step``), then the shards' states are
    averaged (:func:`combine`) into the state the next part starts from.

    Raises:
        TrainingError: the weights stopped being finite numbers.
    """
    say = log or (lambda _msg: None)
    state = initial_state(n_columns, config)
    for p in range(config.passes):
        for s in range(syncs):
            state = combine(state, step(p, s, state), config)
        if not state.finite():
            raise _diverged(f"pass {p + 1}")
        if p == 0:
            learner = _Learner(state, config, mean_sq_norm)
            say(
                f"data-parallel: pass 1 of {config.passes}: rows={state.rows_seen} "
                f"mean-squared-norm={learner.mean_sq_norm():.4g} step={learner.step_size():.4g}"
            )
    return finish(state, config, mean_sq_norm)
