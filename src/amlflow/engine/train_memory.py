"""The in-memory training mode (docs/scale.md): the whole training matrix built once and fitted by
scikit-learn — ``LogisticRegression(solver="saga")`` for BINARY and MULTICLASS, averaged ``SGDRegressor``
for REGRESSION, AML's λ mapped as :mod:`amlflow.engine.model`'s docstring says —, with the intercept learnt
as the weight of a constant last column (``_intercept_column_value`` for the classifiers), and
:func:`estimate_training_bytes`, the bound of what this mode holds at its peak, from which
:func:`amlflow.engine.model.train` chooses it or the streaming mode. Its numerics are unchanged since before
the streaming mode existed. :mod:`amlflow.engine.model` re-exports every name here.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import FeatureBuilder, Recipe
from amlflow.engine.recipe.features import FeatureBound, TableCache
from amlflow.engine.schema import Schema
from amlflow.engine.table import Table
from amlflow.engine.trained import BYTES_PER_NONZERO, BYTES_PER_TOKEN_FEATURE, BYTES_PER_WEIGHT, _codes
from amlflow.engine.training_data import _Target, _weight_entries, _with_bias

__all__ = ["estimate_training_bytes"]


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
