"""Streaming training on every core of this machine (``AMLFLOW_TRAINING_PROCESSES``; docs/scale.md,
"Training on this machine's cores").

A model whose in-memory matrix does not fit the job's memory budget trains with the streaming learner, one
mini-batch after another on one core. With ``AMLFLOW_TRAINING_PROCESSES`` of 2 or more (the default: one per
core on a machine with several) the service runs that fit data-parallel instead, over worker processes of
its own — the algorithm of the Dask training (:mod:`amlflow.service.dask_training`), on this machine:

1. the service prepares the fit exactly as the streaming mode does
   (:func:`amlflow.engine.model.prepare_parallel`) and deals the table's rows to one shard per worker
   (:func:`amlflow.engine.streaming.shard_ranges`);
2. each worker — ``python -m amlflow.reader_worker``, held by this job for its whole fit — opens its
   shard of the training table (memory-mapped from the job's own folder), builds its chunk features once
   (kept on disk, in the job's work folder, between passes) and returns their squared row norms, so every
   shard steps with the whole table's mean squared norm;
3. every pass, the service writes the current learner state (:func:`amlflow.engine.sgd.save_state`: an
   ``.npz`` of plain arrays, never a pickle) and each worker goes on from it over its shard
   (:func:`amlflow.engine.sgd.run_shard`) and writes its own; the service averages them
   (:func:`amlflow.engine.sgd.combine`);
4. the result is finished into the same ``TrainedModel`` as every mode
   (:func:`amlflow.engine.model.finish_parallel`), ``training_info["training_mode"] = "processes"``.

The model is :func:`amlflow.engine.model.train_sharded`'s with as many shards (that function runs the
same shards one after the other in one process), whatever runs where. Each worker holds one streaming
working set, planned for its share of the job's budget (``AMLFLOW_MEMORY_LIMIT`` / workers); when those do
not fit, the model streams in the job's thread as before.
"""

from __future__ import annotations

import shutil
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from amlflow.engine.model import TrainedModel, finish_parallel, prepare_parallel
from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import Recipe
from amlflow.engine.schema import Schema
from amlflow.engine.sgd import SGDState, fit_parallel, load_state, save_state, shard_config
from amlflow.engine.streaming import shard_ranges
from amlflow.engine.table import Table
from amlflow.service import reader_processes
from amlflow.service.jobs import JobFailed

__all__ = ["ROLE", "SYNCS_PER_PASS", "train_in_processes"]

#: how the workers are named in failures (and the pool's key)
ROLE = "training worker"
#: averagings of the shards per pass (as on Dask: 1, 2 and 4 gave the same quality; docs/scale.md)
SYNCS_PER_PASS = 1

_Log = Callable[[str], None]


def _answer(answer: dict[str, Any]) -> dict[str, Any]:
    """The worker's answer, or the engine error (a TrainingError, ...) it reported, raised here; any
    other failure as a JobFailed naming the worker."""
    try:
        return reader_processes.checked(answer, ROLE)
    except RuntimeError as exc:
        raise JobFailed(str(exc)) from None


def _all(workers: Sequence[Any], requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One request to each worker at once; their answers in order."""
    for w, r in zip(workers, requests, strict=True):
        w.send(r)
    return [_answer(w.receive()) for w in workers]


def train_in_processes(
    processes: int,
    *,
    work_dir: Path,
    table: Table,
    schema: Schema,
    recipe: Recipe,
    params: TrainingParameters,
    model_type: str,
    seed: int,
    memory_budget: int | None,
    when: Literal["auto", "always"] = "auto",
    log: _Log | None = None,
) -> TrainedModel | None:
    """Train data-parallel over ``processes`` worker processes (see the module docstring), or return None
    — the caller trains in its own thread — when the in-memory fit is within ``memory_budget`` (``when``
    ``"auto"``; ``"always"``: whatever the estimate) or ``processes`` streaming working sets do not fit it
    at once (each planned for its share of the budget). ``work_dir`` (created, and removed at the end)
    holds the learner states and the shards' chunk features.

    Raises:
        TrainingError: as ``engine.train`` (a bad target, over the budget, divergence).
        JobFailed: a worker died or failed (the message says which and how).
    """
    say = log or (lambda _msg: None)
    directory = getattr(table, "directory", None)  # the workers map the same files
    if processes < 2 or directory is None:
        return None
    fit = prepare_parallel(
        table,
        schema,
        recipe,
        params,
        model_type,
        seed=seed,
        log=say,
        memory_budget=memory_budget,
        when=when,
        label=f"data-parallel in {processes} worker processes of this machine",
        shards=processes,
    )
    if fit is None:
        return None
    plan = [r for r in shard_ranges(fit.n_rows, fit.spec.chunk_rows, processes) if r]
    shards = len(plan)
    config = shard_config(fit.config, shards)
    rows = [sum(b - a for a, b in r) for r in plan]
    token = uuid.uuid4().hex[:12]
    pool = reader_processes.pool(processes, ROLE)
    work_dir.mkdir(parents=True, exist_ok=False)
    try:
        pool.start(processes)  # the workers' start (their imports, ~0.5 s the first time) is not a wait
        t_wait = time.perf_counter()
        with pool.hold(shards) as workers:
            waited = time.perf_counter() - t_wait
            say(
                f"training in {shards} worker processes"
                + (f" (waited {waited:.1f} s for them)" if waited >= 0.5 else "")
                + f": {shards} shard(s) of {min(rows):,}-{max(rows):,} rows in "
                f"{min(map(len, plan))}-{max(map(len, plan))} chunk(s) each, batches of {config.batch_rows} "
                f"rows with the step of {config.step_rows or config.batch_rows}, {SYNCS_PER_PASS} "
                "averaging(s) per pass"
            )
            # a failure kills the held workers (hold), and their shards with them
            result, t_fit, passes = _fit(workers, fit, config, plan, token, work_dir, directory, say)
            _all(workers, [{"op": "shard_drop", "token": token}] * shards)
    except reader_processes.WorkerDied as exc:
        raise JobFailed(f"training: {exc}") from None
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    say(
        f"processes: passes={fit.config.passes} shards={shards} steps={result.steps} "
        f"step={result.step_size:.4g} averaged-snapshots={result.snapshots} "
        f"median-pass={statistics.median(passes) if passes else 0.0:.2f}s"
    )
    info = {"fit_seconds": round(t_fit, 3), "training_mode": "processes", "shards": shards}
    return finish_parallel(fit, result, {**info, "syncs": SYNCS_PER_PASS})


def _fit(
    workers: Sequence[Any],
    fit: Any,
    config: Any,
    plan: Sequence[Sequence[tuple[int, int]]],
    token: str,
    work_dir: Path,
    directory: Path,
    say: _Log,
) -> tuple[Any, float, list[float]]:
    shards = len(plan)
    t1 = time.perf_counter()
    spill = [
        work_dir / f"shard-{i}" if len(plan[i]) > 1 and fit.config.passes > 1 else None for i in range(shards)
    ]
    for folder in spill:
        if folder is not None:
            folder.mkdir()
    opened = _all(
        workers,
        [
            {
                "op": "shard_open",
                "token": token,
                "shard": i,
                "table": str(directory),
                "spec": fit.spec.to_json(),
                "ranges": [list(r) for r in plan[i]],
                "spill": None if spill[i] is None else str(spill[i]),
            }
            for i in range(shards)
        ],
    )
    total = sum(float(a["sq"]) for a in opened)
    n = sum(int(a["rows"]) for a in opened)
    mean_sq = total / n if n else 1.0
    say(
        "processes: pre-pass (every shard's features, kept in the workers): "
        f"{time.perf_counter() - t1:.2f} s "
        f"(workers {min(a['seconds'] for a in opened):.2f}-{max(a['seconds'] for a in opened):.2f} s); "
        f"mean-squared-norm={mean_sq:.4g} over {n:,} rows"
    )
    raised = sum(1 for a in opened if a.get("malloc_raised"))
    if raised:
        say(
            f"processes: {raised} of {shards} worker(s) with MALLOC_TRIM_THRESHOLD_ set: glibc's trim and "
            "mmap thresholds at 32 MiB for their training"
        )
    pass_seconds: list[float] = []

    def step(p: int, s: int, state: SGDState) -> Sequence[SGDState]:
        t = time.perf_counter()
        start = work_dir / "state.npz"
        save_state(state, start)
        outs = [work_dir / f"state-{i}.npz" for i in range(shards)]
        took = _all(
            workers,
            [
                {
                    "op": "shard_pass",
                    "token": token,
                    "shard": i,
                    "shards": shards,
                    "state_in": str(start),
                    "state_out": str(outs[i]),
                    "pass_index": p,
                    "sync": s,
                    "syncs": SYNCS_PER_PASS,
                    "mean_sq": mean_sq,
                }
                for i in range(shards)
            ],
        )
        parts = [load_state(o) for o in outs]
        if s == SYNCS_PER_PASS - 1:
            pass_seconds.append(time.perf_counter() - t)
            say(
                f"processes: pass {p + 1} of {fit.config.passes}: {pass_seconds[-1]:.2f} s "
                f"(shards {min(a['seconds'] for a in took):.2f}-{max(a['seconds'] for a in took):.2f} s)"
            )
        return parts

    result = fit_parallel(step, fit.n_columns, config, syncs=SYNCS_PER_PASS, mean_sq_norm=mean_sq, log=say)
    return result, time.perf_counter() - t1, pass_seconds
