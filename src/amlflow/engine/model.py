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

This module holds the entry points (:func:`train`, the data-parallel ones), the mode choice and memory
checks, and what every fit ends with (pruning, the training summary). The in-memory mode — the
scikit-learn fits, the training matrix, :func:`estimate_training_bytes` — is
:mod:`amlflow.engine.train_memory`; the streaming mode :mod:`amlflow.engine.streaming` (its chunks:
:mod:`amlflow.engine.training_data`); the trained model, its files and scoring :mod:`amlflow.engine.trained`.
Every name defined or exported here before these splits still is importable from here (re-exported).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from amlflow.engine.errors import TrainingError
from amlflow.engine.limits import check_memory, default_memory_budget, format_bytes
from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import FeatureBuilder, Recipe
from amlflow.engine.recipe.features import FeatureBound
from amlflow.engine.schema import Schema
from amlflow.engine.sgd import SGDConfig, SGDResult, SGDState, fit_parallel, run_shard, shard_config
from amlflow.engine.streaming import (
    MIN_CHUNK_ROWS,
    STREAM_CHUNK_BYTES,
    TRAINING_MODES,
    ShardSpec,
    StreamingPlan,
    TrainingMode,
    _choose_mode,
    _shard_spec,
    _streaming_result,
    _streaming_setup,
    _StreamSetup,
    _train_streaming,
    measure_shard,
    open_shard,
    plan_streaming,
    shard_ranges,
)
from amlflow.engine.table import Table
from amlflow.engine.train_memory import _fit_classifier as _fit_classifier
from amlflow.engine.train_memory import _fit_regressor as _fit_regressor
from amlflow.engine.train_memory import _intercept_column_value as _intercept_column_value
from amlflow.engine.train_memory import _mode_flag_columns as _mode_flag_columns
from amlflow.engine.train_memory import _regularisation as _regularisation
from amlflow.engine.train_memory import _train_memory, estimate_training_bytes
from amlflow.engine.train_memory import _training_matrix as _training_matrix
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
    load_model,
    target_view,
)
from amlflow.engine.training_data import _check_target, _Target, _target

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
    "import_learners",
    "load_model",
    "plan_streaming",
    "prepare_parallel",
    "target_view",
    "train",
    "train_sharded",
]

# -------------------------------------------------------------------------------------------- training


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


def import_learners() -> None:
    """Import the scikit-learn estimators and metrics the jobs use (~0.5-0.8 s, scipy.stats mostly).

    They are imported where they are used, so a client that only parses a schema or a recipe never pays
    for them; a service calls this once when it starts taking jobs, so its first training does not.
    """
    import sklearn.linear_model
    import sklearn.metrics  # noqa: F401


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
    streaming: Callable[[], TrainedModel | None] | None = None,
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
    (None: the system's), when there is room for them there. ``streaming``, when given, is called instead
    when ``"auto"`` chooses streaming (the service's data-parallel fit on its worker processes, which
    logs its own lines): its model is returned, or the streaming mode runs when it returns None.

    Raises:
        TrainingError: no target in the schema, no usable rows, a single class, more than 100 classes, or
            features that would need more memory than ``memory_budget`` in the chosen mode (``"auto"``: even
            streaming).
    """
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    if mode not in TRAINING_MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(TRAINING_MODES)}")
    early: list[str] = []  # the lines before the mode is chosen (the streaming callback logs its own)
    tgt = _start(table, schema, params, model_type, early.append)
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
    chosen, why = _choose_mode(mode, needed, budget, plan)
    if streaming is not None and mode == "auto" and chosen == "streaming":
        elsewhere = streaming()
        if elsewhere is not None:
            return elsewhere
    for line in early:
        say(line)
    say(
        f"memory-estimate: records={bound.rows} nonzeros<={bound.nonzeros} features<={bound.features} "
        f"max-per-record={bound.max_row} bytes<={needed}"
    )
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
    shards: int = 1,
) -> ParallelFit | None:
    """What :func:`train` does before a streaming fit's passes (the checks, the target, the memory
    estimates, the vocabularies, the SGD configuration), for a fit whose passes run over shards.

    ``when="auto"``: None when the in-memory estimate fits ``memory_budget`` (train in memory with
    :func:`train` instead; nothing is logged), else the fit. ``"always"``: the fit. Either way its working
    set per shard is the streaming mode's, which must fit the budget — with ``shards`` above 1, ``shards``
    of them must fit it at once (each planned for its share), else None too (nothing logged). The log gets
    ``train``'s lines, with ``training mode: <label> (...)``.

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
    share = budget // max(1, shards)
    plan = plan_streaming(bound, n_classes, share)
    if (when == "auto" and needed <= budget) or (shards > 1 and plan.needed > share):
        return None
    for line in lines:
        say(line)
    say(
        f"memory-estimate: records={bound.rows} nonzeros<={bound.nonzeros} features<={bound.features} "
        f"max-per-record={bound.max_row} bytes<={needed}"
    )
    _, why = _choose_mode("streaming" if when == "always" else "auto", needed, budget, plan)
    say(f"training mode: {label} ({why})")
    _check_streaming(bound, n_classes, needed, share, plan)
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
