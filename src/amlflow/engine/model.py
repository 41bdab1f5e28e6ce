"""Training and scoring (docs/aml-reference.md §6, §9): AML's three linear models on recipe features.

=============  ===========================================================  =============================
MLModelType    learner (scikit-learn)                                       target read as
=============  ===========================================================  =============================
BINARY         logistic regression, ``LogisticRegression(solver="saga")``   BINARY tokens (0/1, yes/no…)
MULTICLASS     multinomial logistic regression (softmax), same solver       the raw string (≤ 100 classes)
REGRESSION     least squares, averaged ``SGDRegressor``                     a number
=============  ===========================================================  =============================

``sgd.maxPasses`` is the number of epochs (``max_iter``; SAGA may stop earlier when converged);
``sgd.l2RegularizationAmount``/``sgd.l1RegularizationAmount`` λ is AML's per-record penalty, i.e.
``C = 1 / (λ · n)`` for the classifiers, ``alpha = λ`` for SGDRegressor; λ = 0 means no penalty.
In memory ``sgd.shuffleType`` has no effect (SAG/SAGA pick records at random, seeded). Rows whose target is
missing or invalid are skipped and counted. ``rowWeight`` becomes ``sample_weight``.

Memory and the two training modes (docs/scale.md): before any feature is built,
:func:`estimate_training_bytes` bounds what the in-memory mode would hold (the training matrix, the
vocabularies, the weights and the solver's per-record state) from :meth:`FeatureBuilder.bound`. Within the
job's memory budget (``memory_budget``, default :func:`amlflow.engine.limits.default_memory_budget`) the
table above is fitted in memory; over it (``mode="auto"``), or when asked (``mode="streaming"``), the table
is streamed in chunks through mini-batch SGD (:mod:`amlflow.engine.sgd`: ``sgd.maxPasses`` passes,
``sgd.shuffleType`` honoured, the same losses and λ), holding the vocabularies, the weights and one chunk
(:func:`plan_streaming`). The job log says which mode and why. When even that is over the budget, training
fails with a :class:`TrainingError` saying so, never a ``MemoryError``. A realtime record is bounded the
same way (at most :data:`~amlflow.engine.limits.MAX_RECORD_FEATURES` features, 100 KB).

Model size is accounted like AML's log (96 bytes per parameter, docs/aml-reference.md §6.4): when
``96 · K · features`` exceeds ``sgd.maxMLModelSizeInBytes`` the features with the smallest largest-|weight|
are pruned.

A trained model is saved as ``model.json`` + ``model.npz`` (arrays only, loaded with
``allow_pickle=False``); scoring rebuilds the predictor from the arrays, never from an sklearn object.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from amlflow.engine.errors import DataError, TrainingError
from amlflow.engine.limits import (
    MAX_RECORD_FEATURES,
    check_memory,
    check_record,
    default_memory_budget,
    format_bytes,
)
from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import FeatureBuilder, Recipe
from amlflow.engine.recipe.features import FeatureBound, TableCache
from amlflow.engine.schema import Schema, binary_view, numeric_view, parse_schema
from amlflow.engine.sgd import Chunk, Loss, SGDConfig
from amlflow.engine.sgd import fit as sgd_fit
from amlflow.engine.table import Table

__all__ = [
    "BYTES_PER_NONZERO",
    "BYTES_PER_PARAMETER",
    "BYTES_PER_RECORD_FEATURE",
    "BYTES_PER_TOKEN_FEATURE",
    "BYTES_PER_WEIGHT",
    "MAX_CLASSES",
    "MIN_CHUNK_ROWS",
    "MODEL_TYPES",
    "STREAM_CHUNK_BYTES",
    "TRAINING_MODES",
    "Predictions",
    "StreamingPlan",
    "TrainedModel",
    "TrainingMode",
    "estimate_training_bytes",
    "load_model",
    "plan_streaming",
    "target_view",
    "train",
]

MODEL_TYPES = ("BINARY", "MULTICLASS", "REGRESSION")
MAX_CLASSES = 100
BYTES_PER_PARAMETER = 96
# the memory estimate (estimate_training_bytes): per non-zero, the matrix's float32 value and int32 column
# (8), a float64 copy a solver may make (12) and the batch being copied in (4); per token feature, its
# string, index entry and place in the sorted vocabulary; per weight (feature × class), float64 coefficients,
# SAGA's gradient sum and two copies; per realtime feature, its token and arrays
BYTES_PER_NONZERO = 24
BYTES_PER_TOKEN_FEATURE = 200
BYTES_PER_WEIGHT = 32
BYTES_PER_RECORD_FEATURE = 200
FORMAT = "amlflow-model"
VERSION = 1


# --------------------------------------------------------------------------------------------- targets


def target_view(model_type: str, dictionary: np.ndarray) -> np.ndarray:
    """The target value of each dictionary entry for ``model_type``: BINARY → 0.0/1.0, REGRESSION → float,
    MULTICLASS → the stripped string; missing/invalid → nan (BINARY, REGRESSION) or None (MULTICLASS)."""
    if model_type == "BINARY":
        return binary_view(dictionary)
    if model_type == "REGRESSION":
        return numeric_view(dictionary)
    out = np.empty(len(dictionary), dtype=object)
    out[:] = [(s if (s := str(v).strip()) else None) for v in dictionary]
    return out


def _codes(table: Table, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    return np.asarray(table.codes(name, start, stop), dtype=np.int64)


# ------------------------------------------------------------------------------------------ prediction


@dataclass
class Predictions:
    """Scores of a range of table rows.

    ``scores``: BINARY → P(target = 1) (n,); MULTICLASS → class probabilities (n, K), columns in
    ``classes`` order, rows summing to 1; REGRESSION → predicted values (n,). ``valid`` is true for every
    row that could be scored (all table rows: missing values are absent features).
    """

    model_type: str
    classes: list[str]
    scores: np.ndarray
    valid: np.ndarray

    def labels(self, threshold: float = 0.5) -> np.ndarray | None:
        """Predicted labels: BINARY ``"1"`` if score ≥ threshold else ``"0"``; MULTICLASS the argmax class;
        REGRESSION None."""
        if self.model_type == "BINARY":
            return np.where(self.scores >= threshold, "1", "0").astype(object)
        if self.model_type == "MULTICLASS":
            labels: np.ndarray = np.asarray(self.classes, dtype=object)[np.argmax(self.scores, axis=1)]
            return labels
        return None


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


@dataclass
class TrainedModel:
    """A fitted model: feature builder + weights (``coef`` features × K, ``intercept`` K)."""

    model_type: str
    schema: Schema
    builder: FeatureBuilder
    coef: np.ndarray
    intercept: np.ndarray
    classes: list[str]
    params: TrainingParameters
    training_info: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------------------------------- size

    @property
    def n_parameters(self) -> int:
        """Parameters counted for the size: K per kept feature plus K intercepts."""
        kept = int(np.count_nonzero(np.any(self.coef != 0, axis=1)))
        return int(self.coef.shape[1]) * (kept + 1)

    @property
    def size_in_bytes(self) -> int:
        """AML-style model size: 96 bytes per parameter (docs/aml-reference.md §6.3)."""
        return BYTES_PER_PARAMETER * self.n_parameters

    # -------------------------------------------------------------------------------------- scoring

    def _scores(self, z: np.ndarray) -> np.ndarray:
        if self.model_type == "BINARY":
            return _sigmoid(z[:, 0])
        if self.model_type == "MULTICLASS":
            return _softmax(z)
        regression: np.ndarray = z[:, 0]
        return regression

    def _decision(self, X: sp.csr_matrix) -> np.ndarray:
        z: np.ndarray = np.asarray(X @ self.coef) + self.intercept
        return z

    def iter_predictions(
        self,
        table: Table,
        schema: Schema | None = None,
        *,
        start: int = 0,
        stop: int | None = None,
        batch_rows: int = 50_000,
    ) -> Iterator[tuple[int, int, Predictions]]:
        """Score rows ``[start, stop)`` of ``table`` in batches: yields ``(start, stop, Predictions)``.
        The table is read with the training schema's types (``schema``, the table's own, is not needed
        for scoring)."""
        stop = table.n_rows if stop is None else stop
        enc = self.builder.encoder(table)
        for a in range(start, stop, batch_rows):
            b = min(a + batch_rows, stop)
            X = self.builder.transform(table, a, b, _dicts=enc)
            yield (
                a,
                b,
                Predictions(
                    self.model_type, self.classes, self._scores(self._decision(X)), np.ones(b - a, dtype=bool)
                ),
            )

    def predict_table(
        self, table: Table, schema: Schema | None = None, *, start: int = 0, stop: int | None = None
    ) -> Predictions:
        """Scores of rows ``[start, stop)`` of ``table`` (see :class:`Predictions`)."""
        parts = [p for _, _, p in self.iter_predictions(table, schema, start=start, stop=stop)]
        if not parts:
            k = len(self.classes) if self.model_type == "MULTICLASS" else 0
            shape: tuple[int, ...] = (0, k) if k else (0,)
            return Predictions(self.model_type, self.classes, np.zeros(shape), np.zeros(0, dtype=bool))
        return Predictions(
            self.model_type,
            self.classes,
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.valid for p in parts]),
        )

    def predict_record(
        self, record: Mapping[str, str], threshold: float = 0.5, *, memory_budget: int | None = None
    ) -> dict[str, Any]:
        """AML's ``Prediction`` for one realtime record (docs/aml-reference.md §9): ``predictedLabel`` +
        ``predictedScores`` (BINARY: one entry, the predicted label → P(1); MULTICLASS: every class),
        ``predictedValue`` (REGRESSION), ``details``.

        Raises:
            DataError: (field ``Record``) the record is over 100 KB, would make more than
                :data:`~amlflow.engine.limits.MAX_RECORD_FEATURES` features, or more than
                ``memory_budget`` bytes (default: the job budget) of them.
        """
        check_record(record)
        n = self.builder.record_bound(record)
        if n > MAX_RECORD_FEATURES:
            raise DataError(
                f"Record: the recipe would make up to {n:,} features of this record, over the limit of "
                f"{MAX_RECORD_FEATURES:,} per record (shorten its text values)",
                field="Record",
            )
        check_memory(
            n * BYTES_PER_RECORD_FEATURE,
            memory_budget,
            "Record: scoring this record",
            f"it makes up to {n:,} features",
            error=DataError,
            field="Record",
        )
        cols, vals = self.builder.encode_record(record)
        z = vals.astype(np.float64) @ self.coef[cols] + self.intercept
        details = {"PredictiveModelType": self.model_type, "Algorithm": "SGD"}
        if self.model_type == "BINARY":
            zz = float(z[0])
            p = 1.0 / (1.0 + math.exp(-zz)) if zz >= 0 else math.exp(zz) / (1.0 + math.exp(zz))
            label = "1" if p >= threshold else "0"
            return {"predictedLabel": label, "predictedScores": {label: p}, "details": details}
        if self.model_type == "MULTICLASS":
            probs = _softmax(z[None, :].copy())[0]
            best = int(np.argmax(probs))
            return {
                "predictedLabel": self.classes[best],
                "predictedScores": {c: float(p) for c, p in zip(self.classes, probs, strict=True)},
                "details": details,
            }
        return {"predictedValue": float(z[0]), "details": details}

    # ------------------------------------------------------------------------------------------ I/O

    def save(self, directory: Path | str) -> None:
        """Write ``model.json`` and ``model.npz`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "model_type": self.model_type,
            "classes": self.classes,
            "schema": self.schema.to_dict(),
            "params": self.params.to_json(),
            "builder": self.builder.to_json(),
            "training_info": self.training_info,
            "size_in_bytes": self.size_in_bytes,
        }
        tmp_npz = directory / "model.npz.tmp"
        with open(tmp_npz, "wb") as fh:
            np.savez(fh, coef=self.coef, intercept=self.intercept)
        tmp_json = directory / "model.json.tmp"
        with open(tmp_json, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, ensure_ascii=False)
        tmp_npz.replace(directory / "model.npz")
        tmp_json.replace(directory / "model.json")


def load_model(directory: Path | str) -> TrainedModel:
    """Load a model written by :meth:`TrainedModel.save` (plain JSON + arrays; never unpickles)."""
    directory = Path(directory)
    with open(directory / "model.json", encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{directory}: not an {FORMAT} v{VERSION}")
    schema = parse_schema(meta["schema"])
    with np.load(directory / "model.npz", allow_pickle=False) as z:
        coef, intercept = np.array(z["coef"]), np.array(z["intercept"])
    return TrainedModel(
        model_type=meta["model_type"],
        schema=schema,
        builder=FeatureBuilder.from_json(meta["builder"], schema),
        coef=coef,
        intercept=intercept,
        classes=[str(c) for c in meta["classes"]],
        params=TrainingParameters.from_json(meta["params"]),
        training_info=meta.get("training_info", {}),
    )


# -------------------------------------------------------------------------------------------- training


def _regularisation(params: TrainingParameters, n: int) -> tuple[float, float]:
    """(C, l1_ratio) for LogisticRegression from AML's per-record λ."""
    if params.l1 > 0:
        return 1.0 / (params.l1 * n), 1.0
    if params.l2 > 0:
        return 1.0 / (params.l2 * n), 0.0
    return math.inf, 0.0


def _fit_classifier(
    X: sp.csr_matrix,
    y: np.ndarray,
    w: np.ndarray | None,
    params: TrainingParameters,
    seed: int,
    intercept_column: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(coef, intercept) of ``LogisticRegression(solver="saga")`` on ``X``, whose last column is the constant
    ``intercept_column`` (its weight times that constant is the intercept)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    C, l1_ratio = _regularisation(params, X.shape[0])
    if w is not None:
        # SAGA's step size ignores sample weights; scale them to ≤ 1 (and C up: the same objective)
        top = float(w.max()) if len(w) else 1.0
        if top > 0:
            w, C = w / top, C * top
    est = LogisticRegression(
        C=C,
        l1_ratio=l1_ratio,
        solver="saga",
        max_iter=params.max_passes,
        tol=1e-4,
        random_state=seed,
        fit_intercept=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y, sample_weight=w)
    coef = np.asarray(est.coef_, dtype=np.float64).T  # (features + bias) × (1 or K)
    return coef[:-1].copy(), coef[-1] * intercept_column


def _fit_regressor(
    X: sp.csr_matrix, y: np.ndarray, w: np.ndarray | None, params: TrainingParameters, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import SGDRegressor

    # averaged SGD for exactly maxPasses epochs, like AML: the passes limit is part of the regularisation
    # (an exact least-squares fit of a suggested recipe's 500-bin one-hots overfits small data badly)
    center = float(np.average(y, weights=w))
    if params.l1 > 0:
        penalty, alpha = "l1", params.l1
    elif params.l2 > 0:
        penalty, alpha = "l2", params.l2
    else:
        penalty, alpha = None, 0.0
    if w is not None:
        top = float(w.max()) if len(w) else 1.0
        if top > 0:  # the same objective with weights ≤ 1 (large weights would blow up the SGD steps)
            w, alpha = w / top, alpha / top
    est = SGDRegressor(
        penalty=penalty,
        alpha=alpha,
        max_iter=params.max_passes,
        tol=None,
        average=True,
        fit_intercept=False,
        random_state=seed,
        shuffle=True,
    )
    est.fit(X, y - center, sample_weight=w)
    coef = np.asarray(est.coef_, dtype=np.float64).reshape(-1, 1)
    return coef[:-1].copy(), coef[-1] + center


def _training_matrix(
    builder: FeatureBuilder, table: Table, valid: np.ndarray, enc: TableCache, batch: int
) -> tuple[sp.csr_matrix, float]:
    """The features of the ``valid`` rows plus a constant-1 column, as one CSR matrix allocated once at its
    exact size (counting pass first), so peak memory is the matrix plus one batch; and the mean number of
    "≠ mode" flags set per row (:func:`_mode_flag_columns`)."""
    flags = _mode_flag_columns(builder)
    n_flags = 0
    n_rows = table.n_rows
    nnz = 0
    for a in range(0, n_rows, batch):
        b = min(a + batch, n_rows)
        nnz += int(builder.row_nnz(table, a, b, _dicts=enc)[valid[a:b]].sum())
    n = int(valid.sum())
    nnz += n
    data = np.empty(nnz, dtype=np.float32)
    indices = np.empty(nnz, dtype=np.int32)
    indptr = np.empty(n + 1, dtype=np.int64 if nnz >= 2**31 else np.int32)
    indptr[0] = 0
    r = z = 0
    for a in range(0, n_rows, batch):
        b = min(a + batch, n_rows)
        sel = valid[a:b]
        X_b = builder.transform(table, a, b, _dicts=enc)
        X_b = _with_bias(X_b if sel.all() else X_b[sel])
        n_flags += int(np.count_nonzero(flags[X_b.indices]))
        k, m = X_b.shape[0], X_b.nnz
        data[z : z + m] = X_b.data
        indices[z : z + m] = X_b.indices
        indptr[r + 1 : r + k + 1] = X_b.indptr[1:] + z
        r, z = r + k, z + m
    assert r == n and z == nnz, (r, n, z, nnz)
    return sp.csr_matrix((data, indices, indptr), shape=(n, builder.n_features + 1)), n_flags / max(1, n)


def _mode_flag_columns(builder: FeatureBuilder) -> np.ndarray:
    """Boolean mask over the feature columns and the intercept column: true at the "≠ mode" flag of every
    one-hot output that leaves its most frequent value implicit (:mod:`amlflow.engine.recipe.features`)."""
    mask = np.zeros(builder.n_features + 1, dtype=bool)
    for lf in builder.leaves:
        if lf.mode == "onehot" and lf.implicit is not None:
            mask[lf.offset] = True
    return mask


def _intercept_column_value(n_mode_outputs: int, flags_per_row: float) -> float:
    """The constant of the in-memory classifiers' intercept column, ``b = sqrt(max(1, (1 + L - 2 m) / 4))``
    for ``L`` one-hot outputs with an implicit mode (``n_mode_outputs``) of which ``m`` (``flags_per_row``)
    are off their mode in the mean training row.

    A one-hot output that leaves its mode implicit spans the same models as a full one-hot (the mode's
    indicator is ``1 - flag``, its weight moves to the intercept and the flag), but not the same SAGA path:
    the full one-hot's mode indicators, ``L - m`` of them set per row, carry the shared baseline that here
    falls to the intercept alone. Matching the constant part of the two encodings' row inner products
    (``x·x'``: ``1 + L - |f| - |f'|`` more for the full one-hot, ``|f|`` the flags set) gives
    ``b² = 1 + L - 2m``; a quarter of it is what is used, as measured (Kaggle MNIST, 10 passes: macro-F1
    0.9144 at ``b = 1``; a plateau of 0.922 for ``b²`` from 50 to 500, seeds 0-4; 0.9217 at the full match,
    485, whose larger row norm shrinks SAGA's step for every weight; 0.9222 at a quarter). When most outputs
    are off their mode (quantile bins of wine, banking's attributes) it is 1, as before: there it measured
    best (wine BINARY AUC 0.8766 at 1, 0.870 at 3)."""
    return math.sqrt(max(1.0, (1.0 + n_mode_outputs - 2.0 * flags_per_row) / 4.0))


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


def _prune(coef: np.ndarray, max_bytes: int) -> int:
    """Zero whole feature rows of ``coef`` (in place), smallest max-|w| first, until the model fits in
    ``max_bytes``; returns the number of features pruned."""
    k = coef.shape[1]
    importance = np.abs(coef).max(axis=1)
    nonzero = np.flatnonzero(importance > 0)
    budget = max_bytes // BYTES_PER_PARAMETER // k - 1  # features we may keep (+1 for the intercepts)
    if len(nonzero) <= budget:
        return 0
    budget = max(budget, 0)
    order = nonzero[np.argsort(importance[nonzero], kind="stable")]
    drop = order[: len(nonzero) - budget]
    coef[drop] = 0.0
    return len(drop)


def estimate_training_bytes(bound: FeatureBound, n_classes: int) -> int:
    """Bytes a training job holds at its peak, at most, for features bounded by ``bound`` and ``n_classes``
    weight columns (1 for BINARY and REGRESSION): the matrix (with its intercept column), the token
    vocabularies, the weights and the solver's per-record state (target, weight, SAGA's gradient memory)."""
    k = max(1, n_classes)
    return (
        (bound.nonzeros + bound.rows) * BYTES_PER_NONZERO
        + bound.token_features * BYTES_PER_TOKEN_FEATURE
        + (bound.features + 1) * k * BYTES_PER_WEIGHT
        + bound.rows * (k + 4) * 8
    )


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


def train(
    table: Table,
    schema: Schema,
    recipe: Recipe,
    params: TrainingParameters,
    model_type: str,
    *,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    memory_budget: int | None = None,
    mode: TrainingMode = "auto",
    scratch_dir: Path | str | None = None,
) -> TrainedModel:
    """Fit an AML model of ``model_type`` on ``table`` (read with ``schema``) and ``recipe`` features.

    ``memory_budget`` is the job's memory budget in bytes (None:
    :func:`amlflow.engine.limits.default_memory_budget`). ``mode``: ``"memory"`` builds the whole training
    matrix and fits it with scikit-learn (the estimate of :func:`estimate_training_bytes` must fit in the
    budget); ``"streaming"`` streams the table in chunks through mini-batch SGD (:mod:`amlflow.engine.sgd`;
    the estimate of :func:`plan_streaming` must fit); ``"auto"`` is ``"memory"`` when its estimate fits the
    budget, ``"streaming"`` otherwise. The choice and the reason are logged (``training mode: ...``). Both
    modes give the same :class:`TrainedModel` (same features, same save format, same scoring). The streaming
    mode keeps the chunks' features on disk between passes, in a temporary directory under ``scratch_dir``
    (None: the system's), when there is room for them there.

    Raises:
        TrainingError: no target in the schema, no usable rows, a single class, more than 100 classes, or
            features that would need more memory than ``memory_budget`` in the chosen mode (``"auto"``: even
            streaming).
    """
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    if mode not in TRAINING_MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(TRAINING_MODES)}")
    if model_type not in MODEL_TYPES:
        raise TrainingError(
            f"MLModelType: {model_type!r} is not one of {', '.join(MODEL_TYPES)}", field="MLModelType"
        )
    target = schema.target
    if target is None:
        raise TrainingError(
            "targetAttributeName: the training datasource's schema has no target attribute",
            field="targetAttributeName",
        )
    if target not in table.names:
        raise TrainingError(
            f"targetAttributeName: the training data has no column {target!r}", field="targetAttributeName"
        )
    say(
        f"initial-training: model-type={model_type} l1={params.l1!r} l2={params.l2!r} "
        f"max-passes={params.max_passes} max-model-size={params.max_model_size} "
        f"({params.max_model_size / 1048576:.2f} MB) rows={table.n_rows}"
    )

    # ---- target: per dictionary entry, read in batches
    tgt = _target(model_type, table, target)
    _check_target(model_type, tgt)
    classes = tgt.classes
    valid = tgt.valid
    n_valid = tgt.n_valid
    n_invalid = table.n_rows - n_valid

    # ---- memory: bounded before anything is built, and the mode chosen from it
    bound = FeatureBuilder.bound(recipe, schema, table, valid)
    n_classes = len(classes) if model_type == "MULTICLASS" else 1
    needed = estimate_training_bytes(bound, n_classes)
    budget = default_memory_budget() if memory_budget is None else memory_budget
    plan = plan_streaming(bound, n_classes, budget)
    say(
        f"memory-estimate: records={bound.rows} nonzeros<={bound.nonzeros} features<={bound.features} "
        f"max-per-record={bound.max_row} bytes<={needed}"
    )
    chosen, why = _choose_mode(mode, needed, budget, plan)
    say(f"training mode: {'in-memory' if chosen == 'memory' else 'streaming'} ({why})")
    shape = (
        f"{bound.rows:,} records with up to {bound.max_row:,} features each ({bound.nonzeros:,} non-zeros, "
        f"up to {bound.features:,} feature columns)"
    )
    if chosen == "memory":
        check_memory(
            needed,
            budget,
            "training",
            f"{shape}. Train on fewer records (DataRearrangement), use a recipe with fewer or smaller token "
            "outputs (ngram, osb, cartesian), or raise the memory budget (AMLFLOW_MEMORY_LIMIT)",
        )
    else:
        check_memory(
            plan.needed,
            budget,
            "training",
            f"{shape}; streaming holds the vocabularies, the weights ({bound.features + 1:,} × {n_classes}) "
            f"and chunks of {plan.chunk_rows:,} records (in memory it would need ~{format_bytes(needed)}). "
            "Use a recipe with fewer or smaller token outputs (ngram, osb, cartesian), or raise the memory "
            "budget (AMLFLOW_MEMORY_LIMIT)",
        )

    if chosen == "streaming":
        builder, coef, intercept, dist, t_features, t_fit = _train_streaming(
            table, recipe, schema, params, model_type, tgt, plan, bound, seed, scratch_dir, say, t0
        )
        say(f"finished-training: valid-records={n_valid} invalid-records={n_invalid} fit-time={t_fit:.2f}s")
    else:
        builder, coef, intercept, dist, t_features, t_fit = _train_memory(
            table, recipe, schema, params, model_type, tgt, seed, say, t0
        )

    pruned = _prune(coef, params.max_model_size)
    if pruned:
        say(
            f"final consolidation: pruned {pruned} of {builder.n_features} features to fit "
            f"sgd.maxMLModelSizeInBytes={params.max_model_size}"
        )
    model = TrainedModel(
        model_type=model_type,
        schema=schema,
        builder=builder,
        coef=coef,
        intercept=intercept,
        classes=classes,
        params=params,
        training_info={
            "n_rows": int(table.n_rows),
            "n_valid": n_valid,
            "n_invalid": n_invalid,
            "target_distribution": dist,
            "n_features": builder.n_features,
            "n_pruned_features": pruned,
            "feature_seconds": round(t_features, 3),
            "fit_seconds": round(t_fit, 3),
            "training_mode": chosen,
        },
    )
    say(
        f"saved final learner: model-size={model.size_in_bytes} parameters={model.n_parameters} "
        f"total-time={time.perf_counter() - t0:.2f}s"
    )
    return model


def _train_memory(
    table: Table,
    recipe: Recipe,
    schema: Schema,
    params: TrainingParameters,
    model_type: str,
    tgt: _Target,
    seed: int,
    say: Callable[[str], None],
    t0: float,
) -> tuple[FeatureBuilder, np.ndarray, np.ndarray, dict[str, Any], float, float]:
    """The in-memory mode: the whole training matrix, fitted by scikit-learn (numerics unchanged since
    before the streaming mode existed)."""
    valid, classes = tgt.valid, tgt.classes
    codes = _codes(table, tgt.name)
    y = tgt.entry[codes][valid]
    if model_type == "BINARY":
        y = y.astype(np.int64)
    n_valid = tgt.n_valid
    n_invalid = table.n_rows - n_valid
    del codes

    # ---- weights
    w: np.ndarray | None = None
    weights = _weight_entries(table, schema)
    if weights is not None:
        w = weights[1][_codes(table, weights[0])][valid]

    # ---- features
    builder = FeatureBuilder.fit(recipe, schema, table, valid)
    enc = builder.encoder(table)
    batch = builder.batch_rows(max(1024, 4_000_000 // max(1, len(builder.leaves))))
    # the last column is a constant: the intercept is learnt as an ordinary weight (scikit-learn's SAG/SAGA
    # slow the intercept down 100× on sparse input, which costs ~0.2 macro-F1 points on MNIST at 10 passes);
    # for the classifiers that constant is _intercept_column_value (MNIST: 11, macro-F1 0.914 -> 0.922)
    X, flags_per_row = _training_matrix(builder, table, valid, enc, batch)
    bias = 1.0
    if model_type != "REGRESSION":
        bias = _intercept_column_value(int(_mode_flag_columns(builder).sum()), flags_per_row)
        if bias != 1.0:
            X.data[X.indptr[1:] - 1] = bias  # the intercept column is the last non-zero of every row
    t_features = time.perf_counter() - t0
    say(
        f"features: outputs={len(builder.leaves)} features={builder.n_features} "
        f"nonzeros-per-record={X.nnz / max(1, X.shape[0]):.1f} mode-flags-per-record={flags_per_row:.1f} "
        f"intercept-column={bias:.4g} built-in={t_features:.2f}s"
    )

    # ---- fit
    t1 = time.perf_counter()
    if model_type == "REGRESSION":
        coef, intercept = _fit_regressor(X, y.astype(np.float64), w, params, seed)
    else:
        coef, intercept = _fit_classifier(X, y, w, params, seed, bias)
        if model_type == "MULTICLASS" and coef.shape[1] == 1:
            # two classes: scikit-learn fits one logit z for the second class; softmax(-z/2, z/2) = sigmoid(z)
            coef = np.hstack([-coef / 2, coef / 2])
            intercept = np.concatenate([-intercept / 2, intercept / 2])
    t_fit = time.perf_counter() - t1
    say(f"finished-training: valid-records={n_valid} invalid-records={n_invalid} fit-time={t_fit:.2f}s")

    # ---- training summary (used by evaluation alerts)
    if model_type == "REGRESSION":
        yf = y.astype(np.float64)
        dist: dict[str, Any] = {
            "mean": float(yf.mean()),
            "std": float(yf.std()),
            "quantiles": [float(q) for q in np.quantile(yf, [0.0, 0.25, 0.5, 0.75, 1.0])],
        }
    else:
        cnt = np.bincount(y, minlength=len(classes))
        dist = {"counts": {c: int(k) for c, k in zip(classes, cnt, strict=True)}}
    return builder, coef, intercept, dist, t_features, t_fit
