"""Data-parallel training on an existing Dask cluster (``AMLFLOW_DASK_ADDRESS``, ``AMLFLOW_DASK_TRAINING``).

The service prepares the fit exactly as the streaming mode does — the target, the memory estimates, the
vocabularies and quantile edges (from the table's dictionaries), the SGD configuration —
(:func:`amlflow.engine.model.prepare_parallel`) and deals the table's rows to one shard per worker thread
(:func:`amlflow.engine.streaming.shard_ranges`: pieces of at most a streaming chunk, dealt round-robin so
every shard has rows from all over the table). Then:

1. **a pre-pass**: each worker builds its shard's chunk features (kept on its own disk between passes when
   it has room) and returns the sum of their squared row norms; the service adds them up, so every shard
   steps with the step size of the whole table's mean squared norm;
2. **``sgd.maxPasses`` passes**: the service sends the current learner state to every worker (one
   ``scatter``), each worker runs one pass of the streaming learner over its shard from that state
   (:func:`amlflow.engine.sgd.run_shard`: its chunks and rows in an order seeded by pass and shard, batches
   of ``64 / shards`` rows with the 64-row step, :func:`~amlflow.engine.sgd.shard_config`), and returns its
   state; the service averages them (:func:`~amlflow.engine.sgd.combine`: weights by rows, the Polyak
   averages over every snapshot) into the state of the next pass;
3. the result is finished into the same ``TrainedModel`` (``model.json`` + ``model.npz``) as the other
   modes (:func:`~amlflow.engine.model.finish_parallel`), ``training_info["training_mode"] = "dask"``.

Every step is the engine's: the same fit with its shards run one after the other in one process is
:func:`amlflow.engine.model.train_sharded`, and a Dask run gives its weights. Workers share no disk with
the service: they read the training datasource's encoded table from the artifact root (an ``s3://`` root
is downloaded once into a per-process cache, with the worker's own AWS environment), and receive plain
data — the artifact root, the datasource id, the shard's row ranges, :class:`~amlflow.engine.streaming.
ShardSpec`'s JSON (the fitted feature builder as ``model.json`` stores it) and the learner's arrays —
and the module-level functions :func:`measure_part` and :func:`train_part`, which call only the engine
and the storage; never a pickle read from storage.

Policy (``AMLFLOW_DASK_TRAINING``): ``auto`` (the default) trains on the cluster when the in-memory
estimate is over the memory budget — where the service would stream — and in-process (scikit-learn SAGA,
the most accurate mode) when it fits; ``always`` trains every model on the cluster; ``never`` keeps
training in-process. Without ``AMLFLOW_DASK_ADDRESS`` nothing here runs.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amlflow.engine.errors import EngineError
from amlflow.engine.model import TrainedModel, finish_parallel, prepare_parallel
from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import Recipe
from amlflow.engine.schema import Schema
from amlflow.engine.sgd import SGDState, fit_parallel, run_shard, shard_config
from amlflow.engine.streaming import ShardSpec, measure_shard, open_shard, shard_ranges, shard_spill_bytes
from amlflow.engine.table import EncodedTable, Table
from amlflow.service.artifacts import Artifacts
from amlflow.service.distributed import client_for
from amlflow.service.errors import AmlError
from amlflow.service.jobs import JobFailed
from amlflow.storage import S3Storage

__all__ = ["SYNCS_PER_PASS", "WHEN", "drop_job", "measure_part", "train_on_dask", "train_part"]

#: the values of ``AMLFLOW_DASK_TRAINING``
WHEN = ("auto", "always", "never")
#: averagings of the shards per pass (measured: 1, 2 and 4 give the same quality; docs/scale.md)
SYNCS_PER_PASS = 1

_Log = Callable[[str], None]

# -------------------------------------------------------------------------------------- on the workers

_lock = threading.Lock()
_home: Path | None = None
_artifacts: dict[str, Artifacts] = {}
_tables: OrderedDict[tuple[str, str], EncodedTable] = OrderedDict()
_KEEP_TABLES = 4
#: a worker keeps the chunks of this many shards (a shard's tasks come back to the worker that built it)
_KEEP_SHARDS = 8


@dataclass
class _Shard:
    """A shard's chunks on this worker, and the folder its chunk features are kept in between passes."""

    chunks: Any
    spill: tempfile.TemporaryDirectory[str] | None

    def close(self) -> None:
        if self.spill is not None:
            self.spill.cleanup()


_shards: OrderedDict[tuple[str, int], _Shard] = OrderedDict()


def _cache_home() -> Path:
    """This worker process's own folder (tables fetched from S3, chunk features), removed at exit."""
    global _home
    with _lock:
        if _home is None:
            _home = Path(tempfile.mkdtemp(prefix=f"amlflow-dask-train-{os.getpid()}-"))
            atexit.register(shutil.rmtree, _home, True)
        return _home


def _table(root: str, datasource_id: str) -> EncodedTable:
    """The training datasource's encoded table, from this worker's cache or the artifact root."""
    with _lock:
        table = _tables.get((root, datasource_id))
        if table is not None:
            _tables.move_to_end((root, datasource_id))
            return table
        arts = _artifacts.get(root)
    if arts is None:
        remote = root.startswith("s3://")
        arts = Artifacts(_cache_home(), root, S3Storage()) if remote else Artifacts(Path(root), root, None)
        with _lock:
            arts = _artifacts.setdefault(root, arts)
    try:
        table = EncodedTable.open(arts.fetch("DataSource", datasource_id) / "table")
    except (OSError, ValueError, EngineError) as exc:
        where = f"{socket.gethostname()} (pid {os.getpid()})"
        hint = (
            ""
            if root.startswith("s3://")
            else "; a local artifact root must be mounted at the same path on every Dask worker "
            "(or use AMLFLOW_ARTIFACT_ROOT=s3://bucket/prefix/)"
        )
        raise RuntimeError(
            f"the Dask worker on {where} cannot read the DataSource {datasource_id} from the artifact root "
            f"{root}: {type(exc).__name__}: {exc}{hint}"
        ) from None
    with _lock:
        _tables[(root, datasource_id)] = table
        while len(_tables) > _KEEP_TABLES:
            _tables.popitem(last=False)
    return table


def _shard(
    root: str, datasource_id: str, token: str, spec_json: str, shard: int, ranges: Sequence[Sequence[int]]
) -> Any:
    """Shard ``shard`` of job ``token`` as chunks, built on first use and kept (its features on this
    worker's disk when there are several chunks, several passes and twice the room)."""
    key = (token, shard)
    with _lock:
        got = _shards.get(key)
        if got is not None:
            _shards.move_to_end(key)
            return got.chunks
    table = _table(root, datasource_id)
    spec = ShardSpec.from_json(spec_json)
    pieces = [(int(a), int(b)) for a, b in ranges]
    spill: tempfile.TemporaryDirectory[str] | None = None
    if len(pieces) > 1 and spec.sgd_config().passes > 1:
        home = _cache_home()
        if shutil.disk_usage(home).free >= 2 * shard_spill_bytes(spec, pieces):
            spill = tempfile.TemporaryDirectory(prefix=f"shard-{shard}-", dir=home)
    chunks = open_shard(table, spec, pieces, spill=Path(spill.name) if spill is not None else None)
    dropped = []
    with _lock:
        _shards[key] = _Shard(chunks, spill)
        while len(_shards) > _KEEP_SHARDS:
            dropped.append(_shards.popitem(last=False)[1])
    for old in dropped:
        old.close()
    return chunks


#: glibc's mallopt parameters, and the thresholds a training task runs with (see _malloc_for_training)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
TRAINING_MALLOC_THRESHOLD = 32 << 20
_GLIBC_MMAP_THRESHOLD = 128 << 10
_malloc_users = 0
_libc: Any = None


def _glibc() -> Any:
    """glibc through ctypes (None elsewhere)."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    return _libc or None


@contextlib.contextmanager
def _malloc_for_training() -> Iterator[bool]:
    """While a training task runs: glibc's trim and mmap thresholds at 32 MiB, when the worker runs with
    ``MALLOC_TRIM_THRESHOLD_`` set (Dask's nanny sets 65536 by default); after it, the worker's own
    thresholds and a ``malloc_trim(0)``, so memory goes back to the system as Dask intends.

    Why: with the variable set glibc no longer adapts its mmap threshold, so every array of 128 KiB or more
    the learner makes per mini-batch (MNIST: the batch's weight rows, their gradient) is a fresh ``mmap``,
    page-faulted in and unmapped again, and at a 64 KiB trim threshold the heap is given back and regrown
    at every batch: measured, the streaming fit of Kaggle MNIST took 16.1-17.4 s with the variable against
    6.5-7.0 s without, 9.5 s with only the mmap threshold raised and 7.0-7.3 s with both. Yields whether it
    changed anything."""
    global _malloc_users
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    libc = _glibc() if trim is not None else None
    if libc is None or trim is None:
        yield False
        return
    with _lock:
        _malloc_users += 1
        if _malloc_users == 1:
            libc.mallopt(_M_TRIM_THRESHOLD, TRAINING_MALLOC_THRESHOLD)
            libc.mallopt(_M_MMAP_THRESHOLD, TRAINING_MALLOC_THRESHOLD)
    try:
        yield True
    finally:
        with _lock:
            _malloc_users -= 1
            if _malloc_users == 0:
                mmap = os.environ.get("MALLOC_MMAP_THRESHOLD_", str(_GLIBC_MMAP_THRESHOLD))
                with contextlib.suppress(ValueError):
                    libc.mallopt(_M_MMAP_THRESHOLD, int(mmap))
                    libc.mallopt(_M_TRIM_THRESHOLD, int(trim))
                libc.malloc_trim(0)


def measure_part(
    root: str, datasource_id: str, token: str, spec_json: str, shard: int, ranges: Sequence[Sequence[int]]
) -> tuple[float, int, float, bool]:
    """On a worker: build shard ``shard``'s chunks (kept for the passes) and return the sum of their
    squared row norms, their rows, the seconds it took and whether the malloc thresholds were raised
    (:func:`_malloc_for_training`)."""
    t0 = time.perf_counter()
    with _malloc_for_training() as raised:
        total, rows = measure_shard(_shard(root, datasource_id, token, spec_json, shard, ranges))
    return total, rows, time.perf_counter() - t0, raised


def train_part(
    root: str,
    datasource_id: str,
    token: str,
    spec_json: str,
    shard: int,
    ranges: Sequence[Sequence[int]],
    shards: int,
    state: SGDState,
    pass_index: int,
    sync: int,
    syncs: int,
    mean_sq_norm: float,
) -> tuple[SGDState, float]:
    """On a worker: shard ``shard``'s part of pass ``pass_index`` from ``state``
    (:func:`amlflow.engine.sgd.run_shard`); its state after it and the seconds it took."""
    t0 = time.perf_counter()
    with _malloc_for_training():
        chunks = _shard(root, datasource_id, token, spec_json, shard, ranges)
        config = shard_config(ShardSpec.from_json(spec_json).sgd_config(), shards)
        out = run_shard(
            chunks,
            state,
            config,
            pass_index=pass_index,
            shard=shard,
            sync=sync,
            syncs=syncs,
            mean_sq_norm=mean_sq_norm,
        )
    return out, time.perf_counter() - t0


def drop_job(token: str) -> int:
    """On a worker: forget the shards of job ``token`` (their chunk features too); how many there were."""
    with _lock:
        keys = [k for k in _shards if k[0] == token]
        gone = [_shards.pop(k) for k in keys]
    for shard in gone:
        shard.close()
    return len(gone)


# -------------------------------------------------------------------------------------- in the service


def _root(artifacts: Artifacts) -> str:
    """What a worker needs to reach the artifact root: its s3:// URI, or the local folder's path."""
    return artifacts.uri if artifacts.remote else str(artifacts.base.resolve())


def _gather(client: Any, futures: list[Any], address: str) -> list[Any]:
    """The futures' results in order; a failure on the cluster becomes a JobFailed naming it (engine
    and AML errors keep their own message), and what is left is cancelled."""
    try:
        return list(client.gather(futures))
    except (EngineError, AmlError, JobFailed):
        raise
    except Exception as exc:
        raise JobFailed(f"on the Dask cluster at {address} (AMLFLOW_DASK_ADDRESS): {exc}") from None
    finally:
        with contextlib.suppress(Exception):  # the job's own failure is what matters
            client.cancel(futures)


def _threads(client: Any) -> list[str]:
    """One entry per worker thread: the worker's address (a shard per thread, pinned to its worker)."""
    workers = client.scheduler_info().get("workers", {})
    out = []
    for address, info in sorted(workers.items()):
        out.extend([address] * max(1, int(info.get("nthreads", 1))))
    return out


def train_on_dask(
    address: str,
    artifacts: Artifacts,
    *,
    model_id: str,
    datasource_id: str,
    table: Table,
    schema: Schema,
    recipe: Recipe,
    params: TrainingParameters,
    model_type: str,
    seed: int,
    memory_budget: int | None,
    when: str = "auto",
    log: _Log | None = None,
) -> TrainedModel | None:
    """Train ``model_id`` data-parallel on the cluster at ``address`` (see the module docstring), or
    return None when ``when`` is ``auto`` and the in-memory fit is within ``memory_budget`` (the caller
    then trains in-process) or ``never``.

    Raises:
        TrainingError: as ``engine.train`` (a bad target, over the budget even per shard, divergence).
        JobFailed: the cluster cannot be reached, or a worker failed (the message names the cluster).
    """
    say = log or (lambda _msg: None)
    if when not in WHEN:
        raise JobFailed(f"AMLFLOW_DASK_TRAINING: {when!r} is not one of {', '.join(WHEN)}")
    if when == "never":
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
        when="always" if when == "always" else "auto",
        label="dask",
    )
    if fit is None:
        say("training on Dask: no (AMLFLOW_DASK_TRAINING=auto and the in-memory fit is within the budget)")
        return None
    client = client_for(address)
    slots = _threads(client)
    spec_json = fit.spec.to_json()
    plan = [r for r in shard_ranges(fit.n_rows, fit.spec.chunk_rows, len(slots)) if r]
    shards = len(plan)
    pinned = [slots[i % len(slots)] for i in range(shards)]
    root = _root(artifacts)
    token = f"{model_id}-{uuid.uuid4().hex[:12]}"
    config = shard_config(fit.config, shards)
    syncs = SYNCS_PER_PASS
    rows = [sum(b - a for a, b in r) for r in plan]
    say(
        f"training on the Dask cluster at {address} ({when}): {len(set(slots))} worker(s), "
        f"{len(slots)} thread(s), {shards} shard(s) of {min(rows):,}-{max(rows):,} rows in "
        f"{min(map(len, plan))}-{max(map(len, plan))} chunk(s) each, batches of {config.batch_rows} rows "
        f"with the step of {config.step_rows or config.batch_rows}, {syncs} averaging(s) per pass"
    )

    def submit(fn: Callable[..., Any], i: int, *args: Any) -> Any:
        return client.submit(
            fn,
            root,
            datasource_id,
            token,
            spec_json,
            i,
            plan[i],
            *args,
            workers=[pinned[i]],
            allow_other_workers=True,  # another worker rebuilds the shard from the table: same result
            pure=False,
        )

    try:
        t1 = time.perf_counter()
        measured = _gather(client, [submit(measure_part, i) for i in range(shards)], address)
        sq = sum(m[0] for m in measured)
        n = sum(m[1] for m in measured)
        mean_sq = sq / n if n else 1.0
        say(
            f"dask: pre-pass (every shard's features, kept on the workers): {time.perf_counter() - t1:.2f} s "
            f"(workers {min(m[2] for m in measured):.2f}-{max(m[2] for m in measured):.2f} s); "
            f"mean-squared-norm={mean_sq:.4g} over {n:,} rows"
        )
        raised = sum(1 for m in measured if m[3])
        if raised:
            say(
                f"dask: {raised} of {shards} shard(s) on workers with MALLOC_TRIM_THRESHOLD_ set: "
                "glibc's trim "
                f"and mmap thresholds at {TRAINING_MALLOC_THRESHOLD >> 20} MiB while a training task runs"
            )
        pass_seconds: list[float] = []
        started = [0.0]

        def step(p: int, s: int, state: SGDState) -> Sequence[SGDState]:
            if s == 0:
                started[0] = time.perf_counter()
            shipped = client.scatter(state, broadcast=True, hash=False)
            try:
                futures = [
                    submit(train_part, i, shards, shipped, p, s, syncs, mean_sq) for i in range(shards)
                ]
                parts = _gather(client, futures, address)
            finally:
                with contextlib.suppress(Exception):
                    shipped.release()
            if s == syncs - 1:
                took = time.perf_counter() - started[0]
                pass_seconds.append(took)
                say(
                    f"dask: pass {p + 1} of {fit.config.passes}: {took:.2f} s "
                    f"(shards {min(t for _, t in parts):.2f}-{max(t for _, t in parts):.2f} s)"
                )
            return [state for state, _ in parts]

        result = fit_parallel(step, fit.n_columns, config, syncs=syncs, mean_sq_norm=mean_sq, log=say)
        t_fit = time.perf_counter() - t1
    finally:
        with contextlib.suppress(Exception):  # the workers' caches; a worker that is gone has none
            client.run(drop_job, token)
    say(
        f"dask: passes={fit.config.passes} shards={shards} steps={result.steps} step={result.step_size:.4g} "
        f"averaged-snapshots={result.snapshots} "
        f"median-pass={statistics.median(pass_seconds) if pass_seconds else 0.0:.2f}s"
    )
    return finish_parallel(
        fit,
        result,
        {
            "fit_seconds": round(t_fit, 3),
            "training_mode": "dask",
            "dask_workers": len(set(slots)),
            "shards": shards,
            "syncs": syncs,
        },
    )
