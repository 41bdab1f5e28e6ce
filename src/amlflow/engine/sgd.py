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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import scipy.sparse as sp

from amlflow.engine.errors import TrainingError

__all__ = [
    "BATCH_ROWS",
    "MAX_STEP",
    "STEP",
    "Chunk",
    "Chunks",
    "Loss",
    "SGDConfig",
    "SGDResult",
    "fit",
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
    """What :func:`fit` learns and how.

    Attributes:
        loss: ``squared``, ``logistic`` or ``softmax``.
        n_outputs: weight columns (1, or the number of classes for ``softmax``).
        passes: epochs over the data (``sgd.maxPasses``).
        shuffle: ``sgd.shuffleType=auto`` (True) or ``none`` (False).
        l1: λ₁ of ``λ₁ · ‖w‖₁`` (per record), 0 for none.
        l2: λ₂ of ``λ₂/2 · ‖w‖²`` (per record), 0 for none.
        seed: the shuffling seed.
        batch_rows: rows per mini-batch.
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
    """The weights, their L2 scale, L1 penalty bookkeeping and running average."""

    def __init__(self, n_columns: int, config: SGDConfig) -> None:
        k = config.n_outputs
        self.config = config
        self.n_columns = n_columns
        self.grad = _GRADIENTS[config.loss]
        self.v = np.zeros((n_columns, k))
        self.scale = 1.0  # the weights are scale · v (L2 decay without touching every weight)
        self.l1_total = 0.0  # L1: the penalty every weight should have received so far ...
        self.l1_given = np.zeros((n_columns, k)) if config.l1 > 0 else None  # ... and what each has
        self.avg = np.zeros((n_columns, k)) if config.average else None
        self.snapshots = 0
        self.touched = 0  # weight rows touched since the last snapshot
        self.steps = 0
        self.rows_seen = 0
        self.sq_sum = 0.0  # first pass: the running mean squared row norm
        self.sq_rows = 0
        self.mark = np.zeros(n_columns, dtype=bool)
        self.pos = np.zeros(n_columns, dtype=np.int64)

    # ------------------------------------------------------------------------------------- steps

    def mean_sq_norm(self) -> float:
        return self.sq_sum / self.sq_rows if self.sq_rows else 1.0

    def step_size(self) -> float:
        """Classification: the constant step of a batch's mean gradient (the squared loss's is per batch)."""
        c = self.config
        if c.loss == "squared":
            return 1.0 / max(self.mean_sq_norm(), 1e-12)
        return min(STEP * c.batch_rows / (CURVATURE[c.loss] * max(self.mean_sq_norm(), 1e-12)), MAX_STEP)

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
    learner = _Learner(n_columns, config)
    rng = np.random.default_rng(config.seed)
    n = len(chunks)
    for p in range(config.passes):
        order = rng.permutation(n) if config.shuffle else np.arange(n)
        for i in order.tolist():
            ch = chunks.chunk(i)
            X, y, w = ch.X, ch.y, ch.w
            if config.shuffle and X.shape[0] > 1:
                perm = rng.permutation(X.shape[0])
                X, y = X[perm], y[perm]
                w = None if w is None else w[perm]
            learner.chunk(X, y, w, first_pass=p == 0)
            del ch, X, y, w
        if not np.isfinite(learner.v).all() or not math.isfinite(learner.scale):
            raise TrainingError(
                f"streaming SGD diverged in pass {p + 1} (the weights are no longer finite numbers)"
            )
        if p == 0:
            say(
                f"streaming: pass 1 of {config.passes}: rows={learner.rows_seen} "
                f"mean-squared-norm={learner.mean_sq_norm():.4g} step={learner.step_size():.4g}"
            )
    weights = learner.weights()
    return SGDResult(
        weights=weights,
        steps=learner.steps,
        rows_seen=learner.rows_seen,
        step_size=learner.step_size(),
        mean_sq_norm=learner.mean_sq_norm(),
        snapshots=learner.snapshots,
    )
