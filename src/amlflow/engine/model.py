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

A data-parallel fit (docs/scale.md, "Training on Dask") is the streaming mode with its passes run over
shards of the table elsewhere: :func:`prepare_parallel` does what ``train`` does before the passes (and
says when the in-memory mode should be used instead), :func:`finish_parallel` turns the
:class:`~amlflow.engine.sgd.SGDResult` into the same :class:`TrainedModel`; :func:`train_sharded` runs the
shards one after the other in this process (the reference the distributed runs are checked against).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from amlflow.engine.errors import TrainingError
from amlflow.engine.limits import (
    check_memory,
    default_memory_budget,
    format_bytes,
)
from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import FeatureBuilder, Recipe
from amlflow.engine.recipe.features import FeatureBound, TableCache
from amlflow.engine.schema import Schema
from amlflow.engine.sgd import SGDConfig, SGDResult, SGDState, fit_parallel, run_shard, shard_config
from amlflow.engine.streaming import (
    MIN_CHUNK_ROWS,
    STREAM_CHUNK_BYTES,
    TRAINING_MODES,
    ShardSpec,
    StreamingPlan,
    TrainingMode,
    _check_target,
    _choose_mode,
    _shard_spec,
    _streaming_result,
    _streaming_setup,
    _StreamSetup,
    _Target,
    _target,
    _train_streaming,
    _weight_entries,
    _with_bias,
    measure_shard,
    open_shard,
    plan_streaming,
    shard_ranges,
)
from amlflow.engine.table import Table
from amlflow.engine.trained import (
    BYTES_PER_NONZERO,
    BYTES_PER_PARAMETER,
    BYTES_PER_RECORD_FEATURE,
    BYTES_PER_TOKEN_FEATURE,
    BYTES_PER_WEIGHT,
    MAX_CLASSES,
    MODEL_TYPES,
    Predictions,
    TrainedModel,
    _codes,
    load_model,
    target_view,
)

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
    "ParallelFit",
    "Predictions",
    "StreamingPlan",
    "TrainedModel",
    "TrainingMode",
    "estimate_training_bytes",
    "finish_parallel",
    "load_model",
    "plan_streaming",
    "prepare_parallel",
    "target_view",
    "train",
    "train_sharded",
]

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
    tgt = _start(table, schema, params, model_type, say)
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
    if chosen == "memory":
        _check_memory_mode(bound, needed, budget)
    else:
        _check_streaming(bound, n_classes, needed, budget, plan)

    if chosen == "streaming":
        builder, coef, intercept, dist, t_features, t_fit = _train_streaming(
            table, recipe, schema, params, model_type, tgt, plan, bound, seed, scratch_dir, say, t0
        )
        say(f"finished-training: valid-records={n_valid} invalid-records={n_invalid} fit-time={t_fit:.2f}s")
    else:
        builder, coef, intercept, dist, t_features, t_fit = _train_memory(
            table, recipe, schema, params, model_type, tgt, seed, say, t0
        )
    return _finish_model(
        table,
        schema,
        params,
        model_type,
        tgt,
        builder,
        coef,
        intercept,
        dist,
        say,
        t0,
        {"feature_seconds": round(t_features, 3), "fit_seconds": round(t_fit, 3), "training_mode": chosen},
    )


def _start(
    table: Table, schema: Schema, params: TrainingParameters, model_type: str, say: Callable[[str], None]
) -> _Target:
    """The checks every training starts with, its first log line, and the target (read in batches)."""
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
    tgt = _target(model_type, table, target)
    _check_target(model_type, tgt)
    return tgt


def _shape(bound: FeatureBound) -> str:
    return (
        f"{bound.rows:,} records with up to {bound.max_row:,} features each ({bound.nonzeros:,} non-zeros, "
        f"up to {bound.features:,} feature columns)"
    )


def _check_memory_mode(bound: FeatureBound, needed: int, budget: int) -> None:
    check_memory(
        needed,
        budget,
        "training",
        f"{_shape(bound)}. Train on fewer records (DataRearrangement), use a recipe with fewer or smaller "
        "token outputs (ngram, osb, cartesian), or raise the memory budget (AMLFLOW_MEMORY_LIMIT)",
    )


def _check_streaming(
    bound: FeatureBound, n_classes: int, needed: int, budget: int, plan: StreamingPlan
) -> None:
    check_memory(
        plan.needed,
        budget,
        "training",
        f"{_shape(bound)}; streaming holds the vocabularies, the weights "
        f"({bound.features + 1:,} × {n_classes}) and chunks of {plan.chunk_rows:,} records "
        f"(in memory it would need ~{format_bytes(needed)}). "
        "Use a recipe with fewer or smaller token outputs (ngram, osb, cartesian), or raise the memory "
        "budget (AMLFLOW_MEMORY_LIMIT)",
    )


def _finish_model(
    table: Table,
    schema: Schema,
    params: TrainingParameters,
    model_type: str,
    tgt: _Target,
    builder: FeatureBuilder,
    coef: np.ndarray,
    intercept: np.ndarray,
    dist: dict[str, Any],
    say: Callable[[str], None],
    t0: float,
    info: Mapping[str, Any],
) -> TrainedModel:
    """The model of a fit: ``sgd.maxMLModelSizeInBytes`` pruning, the training summary, the last log line."""
    n_valid = tgt.n_valid
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
        classes=tgt.classes,
        params=params,
        training_info={
            "n_rows": int(table.n_rows),
            "n_valid": n_valid,
            "n_invalid": int(table.n_rows) - n_valid,
            "target_distribution": dist,
            "n_features": builder.n_features,
            "n_pruned_features": pruned,
            **info,
        },
    )
    say(
        f"saved final learner: model-size={model.size_in_bytes} parameters={model.n_parameters} "
        f"total-time={time.perf_counter() - t0:.2f}s"
    )
    return model


# ------------------------------------------------------------------------------------ data-parallel


@dataclass
class ParallelFit:
    """A streaming fit prepared for shards that run elsewhere (:func:`prepare_parallel`).

    Attributes:
        spec: what every shard needs besides the table (plain JSON: :meth:`ShardSpec.to_json`).
        config: the SGD configuration (the shards' is ``spec.sgd_config()``, the same).
        n_columns: weight rows (the features and the intercept column).
        n_rows: the training table's rows (to deal to the shards: :func:`shard_ranges`).
        reason: why it is not trained in memory, for the log.
    """

    spec: ShardSpec
    config: SGDConfig
    n_columns: int
    n_rows: int
    reason: str
    _table: Table
    _schema: Schema
    _params: TrainingParameters
    _model_type: str
    _tgt: _Target
    _setup: _StreamSetup
    _t0: float
    _say: Callable[[str], None]

    def finish(self, result: SGDResult, info: Mapping[str, Any]) -> TrainedModel:
        """See :func:`finish_parallel`."""
        coef, intercept, dist = _streaming_result(
            self._model_type, self._tgt, self._setup.center, result.weights
        )
        say = self._say
        say(
            f"finished-training: valid-records={self._tgt.n_valid} "
            f"invalid-records={self.n_rows - self._tgt.n_valid} fit-time={info.get('fit_seconds', 0.0):.2f}s"
        )
        return _finish_model(
            self._table,
            self._schema,
            self._params,
            self._model_type,
            self._tgt,
            self._setup.builder,
            coef,
            intercept,
            dist,
            say,
            self._t0,
            {"feature_seconds": round(self._setup.t_features, 3), **info},
        )


def prepare_parallel(
    table: Table,
    schema: Schema,
    recipe: Recipe,
    params: TrainingParameters,
    model_type: str,
    *,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    memory_budget: int | None = None,
    when: Literal["auto", "always"] = "auto",
    label: str = "data-parallel",
) -> ParallelFit | None:
    """What :func:`train` does before a streaming fit's passes (the checks, the target, the memory
    estimates, the vocabularies, the SGD configuration), for a fit whose passes run over shards.

    ``when="auto"``: None when the in-memory estimate fits ``memory_budget`` (train in memory with
    :func:`train` instead; nothing is logged), else the fit. ``"always"``: the fit. Either way its working
    set per shard is the streaming mode's, which must fit the budget. The log gets ``train``'s lines, with
    ``training mode: <label> (...)``.

    Raises:
        TrainingError: as :func:`train`.
    """
    say = log or (lambda _msg: None)
    lines: list[str] = []
    t0 = time.perf_counter()
    tgt = _start(table, schema, params, model_type, lines.append)
    bound = FeatureBuilder.bound(recipe, schema, table, tgt.valid)
    n_classes = len(tgt.classes) if model_type == "MULTICLASS" else 1
    needed = estimate_training_bytes(bound, n_classes)
    budget = default_memory_budget() if memory_budget is None else memory_budget
    plan = plan_streaming(bound, n_classes, budget)
    if when == "auto" and needed <= budget:
        return None
    for line in lines:
        say(line)
    say(
        f"memory-estimate: records={bound.rows} nonzeros<={bound.nonzeros} features<={bound.features} "
        f"max-per-record={bound.max_row} bytes<={needed}"
    )
    _, why = _choose_mode("streaming" if when == "always" else "auto", needed, budget, plan)
    say(f"training mode: {label} ({why})")
    _check_streaming(bound, n_classes, needed, budget, plan)
    setup = _streaming_setup(table, recipe, schema, params, model_type, tgt, plan, seed, say, t0)
    spec = _shard_spec(setup, schema, model_type, tgt, plan, bound)
    return ParallelFit(
        spec=spec,
        config=setup.config,
        n_columns=spec.n_columns,
        n_rows=int(table.n_rows),
        reason=why,
        _table=table,
        _schema=schema,
        _params=params,
        _model_type=model_type,
        _tgt=tgt,
        _setup=setup,
        _t0=t0,
        _say=say,
    )


def finish_parallel(fit: ParallelFit, result: SGDResult, info: Mapping[str, Any]) -> TrainedModel:
    """The :class:`TrainedModel` of a data-parallel fit whose passes ended in ``result``: the same model a
    streaming fit makes (coef, intercept, pruning, training summary); ``info`` goes into
    ``training_info`` (``training_mode``, ``fit_seconds``, ...)."""
    return fit.finish(result, info)


def train_sharded(
    table: Table,
    schema: Schema,
    recipe: Recipe,
    params: TrainingParameters,
    model_type: str,
    *,
    shards: int,
    syncs: int = 1,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    memory_budget: int | None = None,
) -> TrainedModel:
    """A data-parallel fit with its ``shards`` run one after the other in this process: the algorithm the
    distributed runs use, step for step (shards of :func:`shard_ranges`, a measured mean squared norm,
    :func:`~amlflow.engine.sgd.fit_parallel` with ``syncs`` averagings per pass), so their models are this
    one's. ``training_info["training_mode"]`` is ``"sharded"``."""
    fit = prepare_parallel(
        table,
        schema,
        recipe,
        params,
        model_type,
        seed=seed,
        log=log,
        memory_budget=memory_budget,
        when="always",
        label="sharded",
    )
    assert fit is not None
    spec = ShardSpec.from_json(fit.spec.to_json())  # what a shard elsewhere gets
    config = shard_config(spec.sgd_config(), shards)
    chunks = [open_shard(table, spec, ranges) for ranges in shard_ranges(fit.n_rows, spec.chunk_rows, shards)]
    t1 = time.perf_counter()
    sums = [measure_shard(c) for c in chunks]
    mean_sq = sum(t for t, _ in sums) / max(1, sum(r for _, r in sums))

    def step(p: int, s: int, state: SGDState) -> Sequence[SGDState]:
        return [
            run_shard(c, state, config, pass_index=p, shard=i, sync=s, syncs=syncs, mean_sq_norm=mean_sq)
            for i, c in enumerate(chunks)
        ]

    result = fit_parallel(step, fit.n_columns, config, syncs=syncs, mean_sq_norm=mean_sq, log=log)
    info = {
        "fit_seconds": round(time.perf_counter() - t1, 3),
        "training_mode": "sharded",
        "shards": shards,
        "syncs": syncs,
    }
    return finish_parallel(fit, result, info)


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
