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
``sgd.shuffleType`` has no effect (SAG/SAGA pick records at random, seeded). Rows whose target is
missing or invalid are skipped and counted. ``rowWeight`` becomes ``sample_weight``.

Memory: before any feature is built, :func:`estimate_training_bytes` bounds what the job will hold (the
training matrix, the vocabularies, the weights and the solver's per-record state) from
:meth:`FeatureBuilder.bound`; over the job's memory budget (``memory_budget``, default
:func:`amlflow.engine.limits.default_memory_budget`) training fails with a :class:`TrainingError` saying so,
never a ``MemoryError``. A realtime record is bounded the same way (at most
:data:`~amlflow.engine.limits.MAX_RECORD_FEATURES` features, 100 KB).

Model size is accounted like AML's log (96 bytes per parameter, docs/aml-reference.md §6.4): when
``96 · K · features`` exceeds ``sgd.maxMLModelSizeInBytes`` the features with the smallest largest-|weight|
are pruned.

A trained model is saved as ``model.json`` + ``model.npz`` (arrays only, loaded with
``allow_pickle=False``); scoring rebuilds the predictor from the arrays, never from an sklearn object.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from amlflow.engine.errors import DataError, TrainingError
from amlflow.engine.limits import MAX_RECORD_FEATURES, check_memory, check_record
from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import FeatureBuilder, Recipe
from amlflow.engine.recipe.features import FeatureBound, TableCache
from amlflow.engine.schema import Schema, binary_view, numeric_view, parse_schema
from amlflow.engine.table import Table

__all__ = [
    "BYTES_PER_NONZERO",
    "BYTES_PER_PARAMETER",
    "BYTES_PER_RECORD_FEATURE",
    "BYTES_PER_TOKEN_FEATURE",
    "BYTES_PER_WEIGHT",
    "MAX_CLASSES",
    "MODEL_TYPES",
    "Predictions",
    "TrainedModel",
    "estimate_training_bytes",
    "load_model",
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
    X: sp.csr_matrix, y: np.ndarray, w: np.ndarray | None, params: TrainingParameters, seed: int
) -> tuple[np.ndarray, np.ndarray]:
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
    return coef[:-1].copy(), coef[-1].copy()


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
) -> sp.csr_matrix:
    """The features of the ``valid`` rows plus a constant-1 column, as one CSR matrix allocated once at its
    exact size (counting pass first), so peak memory is the matrix plus one batch."""
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
        k, m = X_b.shape[0], X_b.nnz
        data[z : z + m] = X_b.data
        indices[z : z + m] = X_b.indices
        indptr[r + 1 : r + k + 1] = X_b.indptr[1:] + z
        r, z = r + k, z + m
    assert r == n and z == nnz, (r, n, z, nnz)
    return sp.csr_matrix((data, indices, indptr), shape=(n, builder.n_features + 1))


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
) -> TrainedModel:
    """Fit an AML model of ``model_type`` on ``table`` (read with ``schema``) and ``recipe`` features.

    ``memory_budget`` is the job's memory budget in bytes (None:
    :func:`amlflow.engine.limits.default_memory_budget`); the estimate of :func:`estimate_training_bytes`
    must fit in it.

    Raises:
        TrainingError: no target in the schema, no usable rows, a single class, more than 100 classes, or
            features that would need more memory than ``memory_budget``.
    """
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
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

    # ---- target
    tview = target_view(model_type, table.dictionary(target))
    codes = _codes(table, target)
    classes: list[str]
    if model_type == "MULTICLASS":
        present = np.array([v is not None for v in tview], dtype=bool)
        counts = np.bincount(codes, minlength=len(tview))
        names = sorted({tview[i] for i in np.flatnonzero(present & (counts > 0))})
        if len(names) > MAX_CLASSES:
            raise TrainingError(
                f"{target}: {len(names)} distinct target values; "
                f"a MULTICLASS model allows at most {MAX_CLASSES}",
                field=target,
            )
        index = {c: i for i, c in enumerate(names)}
        entry_class = np.array([index.get(v, -1) if v is not None else -1 for v in tview], dtype=np.int64)
        y_all = entry_class[codes]
        valid = y_all >= 0
        classes = names
    else:
        y_all = tview[codes]
        valid = ~np.isnan(y_all)
        classes = ["0", "1"] if model_type == "BINARY" else []
    n_valid = int(valid.sum())
    n_invalid = table.n_rows - n_valid
    if n_valid == 0:
        raise TrainingError(f"{target}: no training record has a valid target value", field=target)
    y = y_all[valid]
    if model_type == "BINARY":
        y = y.astype(np.int64)
        if len(np.unique(y)) < 2:
            raise TrainingError(
                f"{target}: every valid training record has target {int(y[0])}; "
                "a BINARY model needs both 0 and 1",
                field=target,
            )
    elif model_type == "MULTICLASS" and len(classes) < 2:
        raise TrainingError(
            f"{target}: only one target class ({classes[0]!r}); a MULTICLASS model needs at least 2",
            field=target,
        )

    # ---- weights
    w: np.ndarray | None = None
    if schema.row_weight is not None and schema.row_weight in table.names:
        wv = numeric_view(table.dictionary(schema.row_weight))
        wv = np.where(np.isnan(wv) | (wv < 0), 1.0, wv)
        w = wv[_codes(table, schema.row_weight)][valid]

    # ---- memory: bounded before anything is built
    bound = FeatureBuilder.bound(recipe, schema, table, valid)
    needed = estimate_training_bytes(bound, len(classes) if model_type == "MULTICLASS" else 1)
    say(
        f"memory-estimate: records={bound.rows} nonzeros<={bound.nonzeros} features<={bound.features} "
        f"max-per-record={bound.max_row} bytes<={needed}"
    )
    check_memory(
        needed,
        memory_budget,
        "training",
        f"{bound.rows:,} records with up to {bound.max_row:,} features each ({bound.nonzeros:,} non-zeros, "
        f"up to {bound.features:,} feature columns). Train on fewer records (DataRearrangement), use a "
        "recipe with fewer or smaller token outputs (ngram, osb, cartesian), or raise the memory budget "
        "(AMLFLOW_MEMORY_LIMIT)",
    )

    # ---- features
    builder = FeatureBuilder.fit(recipe, schema, table, valid)
    enc = builder.encoder(table)
    batch = builder.batch_rows(max(1024, 4_000_000 // max(1, len(builder.leaves))))
    # the last column is a constant 1: the intercept is learnt as an ordinary weight (scikit-learn's SAG/SAGA
    # slow the intercept down 100× on sparse input, which costs ~0.3 macro-F1 points on MNIST at 10 passes)
    X = _training_matrix(builder, table, valid, enc, batch)
    t_features = time.perf_counter() - t0
    say(
        f"features: outputs={len(builder.leaves)} features={builder.n_features} "
        f"nonzeros-per-record={X.nnz / max(1, X.shape[0]):.1f} built-in={t_features:.2f}s"
    )

    # ---- fit
    t1 = time.perf_counter()
    if model_type == "REGRESSION":
        coef, intercept = _fit_regressor(X, y.astype(np.float64), w, params, seed)
    else:
        coef, intercept = _fit_classifier(X, y, w, params, seed)
        if model_type == "MULTICLASS" and coef.shape[1] == 1:
            # two classes: scikit-learn fits one logit z for the second class; softmax(-z/2, z/2) = sigmoid(z)
            coef = np.hstack([-coef / 2, coef / 2])
            intercept = np.concatenate([-intercept / 2, intercept / 2])
    t_fit = time.perf_counter() - t1
    say(f"finished-training: valid-records={n_valid} invalid-records={n_invalid} fit-time={t_fit:.2f}s")

    pruned = _prune(coef, params.max_model_size)
    if pruned:
        say(
            f"final consolidation: pruned {pruned} of {builder.n_features} features to fit "
            f"sgd.maxMLModelSizeInBytes={params.max_model_size}"
        )

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
        },
    )
    say(
        f"saved final learner: model-size={model.size_in_bytes} parameters={model.n_parameters} "
        f"total-time={time.perf_counter() - t0:.2f}s"
    )
    return model
