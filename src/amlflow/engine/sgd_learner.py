"""The learner of :mod:`amlflow.engine.sgd` (its docstring describes the algorithm): the data types a fit
is made of — :class:`SGDConfig`, the data as :class:`Chunks` of :class:`Chunk`, the state between two parts
of a fit (:class:`SGDState`, plain arrays), the :class:`SGDResult` — and the mechanics: the losses'
gradients, the step size, the L2 scale, the L1 cumulative penalty and the Polyak averaging (``_Learner``),
:func:`run_pass` (one pass, or a part of one, over some chunks from a state), :func:`initial_state` and
:func:`finish`. The loops of passes over them (:func:`~amlflow.engine.sgd.fit`, the data-parallel
:func:`~amlflow.engine.sgd.fit_parallel`) are in :mod:`amlflow.engine.sgd`, which re-exports every name here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import scipy.sparse as sp

from amlflow.engine.errors import TrainingError

__all__ = [
    "BATCH_ROWS",
    "CURVATURE",
    "MAX_STEP",
    "MIN_SCALE",
    "SNAPSHOT_TOUCH",
    "STEP",
    "Chunk",
    "Chunks",
    "Loss",
    "SGDConfig",
    "SGDResult",
    "SGDState",
    "finish",
    "initial_state",
    "load_state",
    "run_pass",
    "save_state",
]


Loss = Literal["squared", "logistic", "softmax"]

#: rows per mini-batch
BATCH_ROWS = 64
#: classification: the step per record, in units of 1 / (curvature · mean squared row norm)
STEP = 0.75
#: classification: the largest step of a batch's mean gradient
MAX_STEP = 1.0
#: a bound of the loss's second derivative in z (squared loss: 1)
CURVATURE = {"squared": 1.0, "logistic": 0.25, "softmax": 0.5}
#: averaging: a snapshot each time the batches since the last one touched this many weight rows per feature
SNAPSHOT_TOUCH = 1.0
#: the L2 scale is folded back into the weights when it falls below this
MIN_SCALE = 1e-9


@dataclass(frozen=True)
class SGDConfig:
    """What :func:`~amlflow.engine.sgd.fit` learns and how.

    Attributes:
        loss: ``squared``, ``logistic`` or ``softmax``.
        n_outputs: weight columns (1, or the number of classes for ``softmax``).
        passes: epochs over the data (``sgd.maxPasses``).
        shuffle: ``sgd.shuffleType=auto`` (True) or ``none`` (False).
        l1: λ₁ of ``λ₁ · ‖w‖₁`` (per record), 0 for none.
        l2: λ₂ of ``λ₂/2 · ‖w‖²`` (per record), 0 for none.
        seed: the shuffling seed.
        batch_rows: rows per mini-batch.
        step_rows: the batch size the classification step is sized for (None: ``batch_rows``); a
            data-parallel fit's shards take batches of ``batch_rows / shards`` rows with the step of
            ``batch_rows`` (:func:`~amlflow.engine.sgd.shard_config`).
        average: return the average of the weight snapshots (True) or the last weights.
    """

    loss: Loss
    n_outputs: int = 1
    passes: int = 10
    shuffle: bool = False
    l1: float = 0.0
    l2: float = 0.0
    seed: int = 0
    batch_rows: int = BATCH_ROWS
    average: bool = True
    step_rows: int | None = None

    def to_json(self) -> dict[str, object]:
        """Plain JSON (what a data-parallel fit ships to its shards)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> SGDConfig:
        """The config :meth:`to_json` wrote."""
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Chunk:
    """One chunk of training rows: features (CSR, the constant-1 column last), targets and weights.

    ``y`` is float64 for ``squared`` and ``logistic`` (0/1), int64 class indices for ``softmax``; ``w`` the
    per-row weights (None: all 1).
    """

    X: sp.csr_matrix
    y: np.ndarray
    w: np.ndarray | None = None


class Chunks(Protocol):
    """The training data as a sequence of chunks, each built when asked for (and dropped after use)."""

    def __len__(self) -> int:
        """The number of chunks."""

    def chunk(self, i: int) -> Chunk:
        """Chunk ``i`` (0 ≤ i < len), its rows in table order."""


@dataclass(frozen=True)
class SGDResult:
    """The learnt weights (``n_columns × n_outputs``, the intercept in the last row) and a summary."""

    weights: np.ndarray
    steps: int
    rows_seen: int
    step_size: float
    mean_sq_norm: float
    snapshots: int


@dataclass
class SGDState:
    """The learner between two parts of a fit (plain arrays and numbers; :func:`run_pass` never changes
    the state it is given). The weights are ``scale · v`` with the L1 penalty owed to each weight
    (``l1_total − |l1_given|``, Tsuruoka et al.) still to be applied; ``average`` is the mean of
    ``snapshots`` weight snapshots (None without averaging), ``touched`` the weight rows touched since the
    last one; ``sq_sum`` / ``sq_rows`` the squared row norms summed over the first pass's rows.
    """

    v: np.ndarray
    scale: float
    average: np.ndarray | None
    snapshots: int
    touched: int
    l1_total: float
    l1_given: np.ndarray | None
    steps: int
    rows_seen: int
    sq_sum: float
    sq_rows: int

    @property
    def n_columns(self) -> int:
        return int(self.v.shape[0])

    def finite(self) -> bool:
        """The weights are finite numbers (a diverged fit is not)."""
        return bool(np.isfinite(self.v).all()) and math.isfinite(self.scale)


def initial_state(n_columns: int, config: SGDConfig) -> SGDState:
    """The state a fit starts from: zero weights, no snapshot, nothing seen."""
    k = config.n_outputs
    return SGDState(
        v=np.zeros((n_columns, k)),
        scale=1.0,
        average=np.zeros((n_columns, k)) if config.average else None,
        snapshots=0,
        touched=0,
        l1_total=0.0,
        l1_given=np.zeros((n_columns, k)) if config.l1 > 0 else None,
        steps=0,
        rows_seen=0,
        sq_sum=0.0,
        sq_rows=0,
    )


_STATE_FLOATS = ("scale", "l1_total", "sq_sum")
_STATE_INTS = ("snapshots", "touched", "steps", "rows_seen", "sq_rows")


def save_state(state: SGDState, path: Path | str) -> None:
    """Write ``state`` to ``path`` as an uncompressed ``.npz`` of plain arrays (no pickles), so another
    process can go on from it (:func:`load_state`); the numbers keep their exact values."""
    arrays: dict[str, np.ndarray] = {"v": state.v}
    if state.average is not None:
        arrays["average"] = state.average
    if state.l1_given is not None:
        arrays["l1_given"] = state.l1_given
    for name in _STATE_FLOATS:
        arrays[name] = np.array(float(getattr(state, name)), dtype=np.float64)
    for name in _STATE_INTS:
        arrays[name] = np.array(int(getattr(state, name)), dtype=np.int64)
    with open(path, "wb") as fh:
        np.savez(fh, allow_pickle=False, **arrays)


def load_state(path: Path | str) -> SGDState:
    """The state :func:`save_state` wrote at ``path``."""
    with np.load(path, allow_pickle=False) as f:
        return SGDState(
            v=f["v"],
            average=f["average"] if "average" in f.files else None,
            l1_given=f["l1_given"] if "l1_given" in f.files else None,
            scale=float(f["scale"]),
            l1_total=float(f["l1_total"]),
            sq_sum=float(f["sq_sum"]),
            snapshots=int(f["snapshots"]),
            touched=int(f["touched"]),
            steps=int(f["steps"]),
            rows_seen=int(f["rows_seen"]),
            sq_rows=int(f["sq_rows"]),
        )


def _softmax_grad(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    z[np.arange(len(y)), y] -= 1.0
    return z


def _logistic_grad(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    # σ(z) − y, computed without overflow for large |z|
    zz = z[:, 0]
    out = np.empty_like(zz)
    pos = zz >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-zz[pos]))
    ez = np.exp(zz[~pos])
    out[~pos] = ez / (1.0 + ez)
    out -= y
    return out[:, None]


def _squared_grad(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    z[:, 0] -= y
    return z


_GRADIENTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "squared": _squared_grad,
    "logistic": _logistic_grad,
    "softmax": _softmax_grad,
}


def _row_sq_norms(X: sp.csr_matrix) -> np.ndarray:
    """Squared norm of each row of ``X`` (float64)."""
    sq = np.square(X.data, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(sq)])
    out: np.ndarray = csum[X.indptr[1:]] - csum[X.indptr[:-1]]
    return out


class _Learner:
    """The weights, their L2 scale, L1 penalty bookkeeping and running average, started from a copy of
    ``state``; ``mean_sq_norm``, when given, fixes the step size (else: the running mean of the first
    pass's squared row norms)."""

    def __init__(self, state: SGDState, config: SGDConfig, mean_sq_norm: float | None = None) -> None:
        n_columns = state.n_columns
        self.config = config
        self.n_columns = n_columns
        self.grad = _GRADIENTS[config.loss]
        self.v = state.v.copy()
        self.scale = state.scale  # the weights are scale · v (L2 decay without touching every weight)
        self.l1_total = state.l1_total  # L1: the penalty every weight should have received so far ...
        self.l1_given = None if state.l1_given is None else state.l1_given.copy()  # ... and what each has
        self.avg = None if state.average is None else state.average.copy()
        self.snapshots = state.snapshots
        self.touched = state.touched  # weight rows touched since the last snapshot
        self.steps = state.steps
        self.rows_seen = state.rows_seen
        self.sq_sum = state.sq_sum  # first pass: the running mean squared row norm
        self.sq_rows = state.sq_rows
        self.fixed_sq_norm = mean_sq_norm
        self.mark = np.zeros(n_columns, dtype=bool)
        self.pos = np.zeros(n_columns, dtype=np.int64)

    def state(self) -> SGDState:
        """The learner's state now (its own arrays: the learner is not used after this)."""
        return SGDState(
            v=self.v,
            scale=self.scale,
            average=self.avg,
            snapshots=self.snapshots,
            touched=self.touched,
            l1_total=self.l1_total,
            l1_given=self.l1_given,
            steps=self.steps,
            rows_seen=self.rows_seen,
            sq_sum=self.sq_sum,
            sq_rows=self.sq_rows,
        )

    # ------------------------------------------------------------------------------------- steps

    def mean_sq_norm(self) -> float:
        if self.fixed_sq_norm is not None:
            return self.fixed_sq_norm
        return self.sq_sum / self.sq_rows if self.sq_rows else 1.0

    def step_size(self) -> float:
        """Classification: the constant step of a batch's mean gradient (the squared loss's is per batch)."""
        c = self.config
        if c.loss == "squared":
            return 1.0 / max(self.mean_sq_norm(), 1e-12)
        rows = c.batch_rows if c.step_rows is None else c.step_rows
        return min(STEP * rows / (CURVATURE[c.loss] * max(self.mean_sq_norm(), 1e-12)), MAX_STEP)

    def _unique(self, idx: np.ndarray) -> np.ndarray:
        if len(idx) * 32 < self.n_columns:  # few columns of many: sort them
            return np.unique(idx)
        self.mark[idx] = True
        u = np.flatnonzero(self.mark)
        self.mark[u] = False
        return u

    def _l1_apply(self, rows: np.ndarray | slice) -> None:
        """Give the weights ``rows`` the L1 penalty they are owed (cumulative penalty, clipped at 0)."""
        assert self.l1_given is not None
        v, q = self.v[rows], self.l1_given[rows]
        before = v.copy()
        owed = self.l1_total
        v = np.where(
            v > 0, np.maximum(0.0, v - (owed + q)), np.where(v < 0, np.minimum(0.0, v + (owed - q)), v)
        )
        self.v[rows] = v
        self.l1_given[rows] = q + (v - before)

    def chunk(self, X: sp.csr_matrix, y: np.ndarray, w: np.ndarray | None, first_pass: bool) -> None:
        """One pass of mini-batch steps over the rows of ``X`` in their order."""
        c = self.config
        m = X.shape[0]
        if m == 0:
            return
        sq = _row_sq_norms(X)
        if first_pass:
            self.sq_sum += float(sq.sum())
            self.sq_rows += m
        eta = self.step_size()
        mean_sq = self.mean_sq_norm()
        indptr, indices, data = X.indptr, X.indices, X.data
        batch = c.batch_rows
        for s in range(0, m, batch):
            e = min(s + batch, m)
            lo, hi = int(indptr[s]), int(indptr[e])
            idx = indices[lo:hi]
            u = self._unique(idx)
            self.pos[u] = np.arange(len(u))
            local = sp.csr_matrix((data[lo:hi], self.pos[idx], indptr[s : e + 1] - lo), shape=(e - s, len(u)))
            vu = np.take(self.v, u, axis=0)
            z = np.asarray(local @ vu)
            if self.scale != 1.0:
                z *= self.scale
            g = self.grad(z, y[s:e])
            if w is not None:
                g *= w[s:e, None]
            grad = np.asarray(local.T @ g)
            step = eta
            if c.loss == "squared":  # stable whatever the batch: the step is ≤ 1 / (its mean squared norm)
                step = 1.0 / max(mean_sq, float(sq[s:e].mean()))
            step /= e - s
            if c.l2 > 0:
                self.scale *= 1.0 - min(step * (e - s) * c.l2, 0.5)
            vu -= (step / self.scale) * grad
            self.v[u] = vu
            if c.l1 > 0:
                self.l1_total += step * (e - s) * c.l1
                self._l1_apply(u)
            self.steps += 1
            self.rows_seen += e - s
            self.touched += len(u)
            if self.scale < MIN_SCALE:
                self.v *= self.scale
                self.scale = 1.0
            if self.avg is not None and self.touched >= SNAPSHOT_TOUCH * self.n_columns:
                self.snapshot()

    def snapshot(self) -> None:
        assert self.avg is not None
        if self.l1_given is not None:
            self._l1_apply(slice(None))
        self.snapshots += 1
        self.avg += (self.scale * self.v - self.avg) / self.snapshots
        self.touched = 0

    def weights(self) -> np.ndarray:
        if self.l1_given is not None:
            self._l1_apply(slice(None))
        if self.avg is not None:
            if self.touched or not self.snapshots:
                self.snapshot()
            return self.avg
        out: np.ndarray = self.scale * self.v
        return out


def run_pass(
    chunks: Chunks,
    state: SGDState,
    config: SGDConfig,
    *,
    rng: np.random.Generator | None = None,
    order: Sequence[int] | None = None,
    first_pass: bool = False,
    mean_sq_norm: float | None = None,
) -> SGDState:
    """One pass of :func:`~amlflow.engine.sgd.fit` from ``state``: the chunks ``order`` (None: every chunk,
    in a new random order from ``rng`` with ``config.shuffle``, else in table order), each chunk's rows in a
    new random order from ``rng`` with ``config.shuffle``. ``first_pass`` adds the rows' squared norms to
    the state's running mean; ``mean_sq_norm`` fixes the step size instead of that running mean. Returns
    the new state (``state`` is not changed).
    """
    if config.shuffle and rng is None:
        raise ValueError("run_pass: a shuffled pass needs an rng")
    learner = _Learner(state, config, mean_sq_norm)
    if order is None:
        n = len(chunks)
        order = rng.permutation(n).tolist() if config.shuffle and rng is not None else list(range(n))
    for i in order:
        ch = chunks.chunk(int(i))
        X, y, w = ch.X, ch.y, ch.w
        if config.shuffle and rng is not None and X.shape[0] > 1:
            perm = rng.permutation(X.shape[0])
            X, y = X[perm], y[perm]
            w = None if w is None else w[perm]
        learner.chunk(X, y, w, first_pass=first_pass)
        del ch, X, y, w
    return learner.state()


def finish(state: SGDState, config: SGDConfig, mean_sq_norm: float | None = None) -> SGDResult:
    """The result of a fit that ended in ``state``: the average of the snapshots (with one of the last
    weights if they moved since) or, without averaging, the last weights, every owed L1 penalty applied."""
    learner = _Learner(state, config, mean_sq_norm)
    weights = learner.weights()
    return SGDResult(
        weights=weights,
        steps=learner.steps,
        rows_seen=learner.rows_seen,
        step_size=learner.step_size(),
        mean_sq_norm=learner.mean_sq_norm(),
        snapshots=learner.snapshots,
    )


def _diverged(where: str) -> TrainingError:
    return TrainingError(f"streaming SGD diverged in {where} (the weights are no longer finite numbers)")
