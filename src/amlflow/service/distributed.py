"""Job work on an existing Dask cluster (``AMLFLOW_DASK_ADDRESS``, ``amlflow serve --dask-address``).

Without the setting nothing here runs: every job works in-process. With it, the evaluation and batch
prediction jobs send their scoring to the cluster's workers by partition of the datasource's rows, and
keep the rest — entity statuses, the metrics and the report, AML's batch output layout, the gzip and the
upload — in the service:

* **batch prediction**: each input file's span of the output sequence (``table.files``, as the
  in-process job splits it) is cut into partitions of positions; a worker writes AML's CSV for its
  partition with the engine's own :func:`~amlflow.engine.batch.write_batch_output` (``rows=(a, b)``) and
  returns the bytes; the service writes the span's header once, then the partitions in order, into the
  same gzip stream the in-process job writes. The CSV lines of a row do not depend on the partition
  boundaries (every row is scored on its own), so the files are the in-process bytes.
* **evaluation**: the service runs the engine's own ``evaluate`` on a :class:`DaskEvaluationModel`, so
  it makes the in-process choice (docs/scale.md, "Evaluation and batch prediction in bounded memory").
  When the exact scores fit a quarter of the memory budget, workers return the scores of their partition
  (:meth:`~amlflow.engine.model.TrainedModel.predict_table` on ``[start, stop)``) and the service
  concatenates them: the metric and the report are exactly the in-process ones. Otherwise (``bounded``)
  workers return their partition's accumulator (:func:`accumulate_part`: confusion counts, logit bins,
  sums and extremes) and the service merges them and finishes the report, in memory that does not grow
  with the rows (REGRESSION: two rounds of tasks, the second on the first's merged extremes).

Workers share no disk with the service: they read the model and the encoded table from the artifact root
(``AMLFLOW_ARTIFACT_ROOT``). With an ``s3://`` root a worker fetches an entity's directory once into its
own cache (a temporary folder per worker process, :class:`~amlflow.service.artifacts.Artifacts` with that
home; S3 reached with the worker's own AWS environment); with a local folder the workers must see that
folder at the same path (a ``LocalCluster`` on this machine, or a shared mount).

What is shipped to a worker is plain data (the artifact root, entity ids, the schema's JSON text, a
threshold, row ranges, a bounded evaluation's plan as a dict) and the module-level functions
:func:`batch_part`, :func:`score_part` and :func:`accumulate_part`, which use
only the engine and the storage; never a pickle read from storage, never the service.
``distributed`` is imported lazily: without the ``amlflow[dask]`` extra a job FAILS saying
``AMLFLOW_DASK_ADDRESS`` needs it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from amlflow.engine.batch import BatchCounts, write_batch_output
from amlflow.engine.errors import EngineError
from amlflow.engine.evaluation_bounded import (
    Accumulator,
    BoundedPlan,
    accumulate,
    merge,
    new_accumulator,
    pack,
)
from amlflow.engine.model import Predictions, TrainedModel, load_model
from amlflow.engine.schema import Schema, parse_schema
from amlflow.engine.table import EncodedTable, Table
from amlflow.service.artifacts import Artifacts
from amlflow.service.errors import AmlError
from amlflow.service.jobs import JobFailed
from amlflow.storage import S3Storage
from amlflow.storage.gzip_blocks import BlockGzipWriter, DeflatedBlock, RecordBlocks, deflate_block

__all__ = [
    "BatchScorer",
    "DaskEvaluationModel",
    "accumulate_part",
    "batch_part",
    "client_for",
    "close_clients",
    "partitions",
    "score_part",
    "scored_model",
]

#: a partition holds at most this many rows (positions) ...
MAX_PARTITION_ROWS = 50_000
#: ... and at least this many, unless the span is shorter
MIN_PARTITION_ROWS = 1_000
#: partitions per worker thread (about: see partitions()): enough for the service to overlap the workers
#: and for a slow worker's share to be taken by the others
PARTITIONS_PER_THREAD = 4
#: what a partition costs beyond its rows, in rows: a task's own work (scheduling, a feature batch, a
#: deflate stream) measured at ~17 ms a partition on MNIST's batch, about 500 rows' work
PARTITION_COST_ROWS = 500
#: seconds to wait for the scheduler when connecting
CONNECT_TIMEOUT = 30.0

_Log = Callable[[str], None]


# -------------------------------------------------------------------------------------- on the workers

_worker_lock = threading.Lock()
_worker_home: Path | None = None
_worker_artifacts: dict[str, Artifacts] = {}
_worker_models: OrderedDict[tuple[str, str], TrainedModel] = OrderedDict()
_worker_tables: OrderedDict[tuple[str, str], EncodedTable] = OrderedDict()
_KEEP_MODELS = 4
_KEEP_TABLES = 8
_worker_schemas: OrderedDict[tuple[str, str], Schema] = OrderedDict()
#: this worker process's time per phase of its tasks: name -> [thread CPU seconds, wall seconds, calls]
_worker_phases: dict[str, list[float]] = {}


@contextlib.contextmanager
def _phase(name: str) -> Iterator[None]:
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        yield
    finally:
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        with _worker_lock:
            got = _worker_phases.setdefault(name, [0.0, 0.0, 0])
            got[0] += cpu
            got[1] += wall
            got[2] += 1


def worker_phases(reset: bool = False) -> dict[str, tuple[float, float, int]]:
    """On a worker (``client.run``): the CPU and wall seconds and the calls of each phase of the tasks
    this process ran since the last reset (bench/dask_bench.py prints them); ``reset`` starts again."""
    with _worker_lock:
        out = {k: (v[0], v[1], int(v[2])) for k, v in _worker_phases.items()}
        if reset:
            _worker_phases.clear()
    return out


def _cache_home() -> Path:
    """This worker process's own cache folder (removed when the process exits)."""
    global _worker_home
    if _worker_home is None:
        _worker_home = Path(tempfile.mkdtemp(prefix=f"amlflow-dask-{os.getpid()}-"))
        atexit.register(shutil.rmtree, _worker_home, True)
    return _worker_home


def _artifacts(root: str) -> Artifacts:
    with _worker_lock:
        arts = _worker_artifacts.get(root)
        if arts is None:
            if root.startswith("s3://"):
                arts = Artifacts(_cache_home(), root, S3Storage())
            else:
                arts = Artifacts(Path(root), root, None)
            _worker_artifacts[root] = arts
        return arts


def _remember(cache: OrderedDict[tuple[str, str], Any], key: tuple[str, str], value: Any, keep: int) -> None:
    with _worker_lock:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > keep:
            cache.popitem(last=False)


def _cached(cache: OrderedDict[tuple[str, str], Any], key: tuple[str, str]) -> Any:
    with _worker_lock:
        value = cache.get(key)
        if value is not None:
            cache.move_to_end(key)
        return value


def _unreadable(kind: str, entity_id: str, root: str, exc: BaseException) -> RuntimeError:
    where = f"{socket.gethostname()} (pid {os.getpid()})"
    hint = (
        ""
        if root.startswith("s3://")
        else "; a local artifact root must be mounted at the same path on every Dask worker "
        "(or use AMLFLOW_ARTIFACT_ROOT=s3://bucket/prefix/)"
    )
    return RuntimeError(
        f"the Dask worker on {where} cannot read the {kind} {entity_id} from the artifact root "
        f"{root}: {type(exc).__name__}: {exc}{hint}"
    )


class _EncoderCache:
    """A model's feature builder that keeps one ``TableCache`` per table (``FeatureBuilder.encoder``: "a
    per-table cache ... when reading one table in many batches"): ``iter_predictions`` makes a new one
    per call, and rebuilding the per-dictionary-entry feature maps costs about 0.1 s per partition on
    MNIST's 784 one-hot pixels. The cache holds nothing of a row range, so the scores are the same."""

    def __init__(self, builder: Any) -> None:
        self._builder = builder
        self._lock = threading.Lock()
        self._caches: OrderedDict[int, tuple[Any, Any]] = OrderedDict()  # id(table) -> (table, cache)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._builder, name)

    def encoder(self, table: Any) -> Any:
        with self._lock:
            got = self._caches.get(id(table))
            if got is not None and got[0] is table:
                return got[1]
        cache = self._builder.encoder(table)
        with self._lock:
            self._caches[id(table)] = (table, cache)  # the table is held, so its id is not reused
            while len(self._caches) > _KEEP_TABLES:
                self._caches.popitem(last=False)
        return cache


def _inputs(root: str, model_id: str, datasource_id: str) -> tuple[TrainedModel, EncodedTable]:
    """The model and the encoded table, from this worker's cache or fetched from the artifact root."""
    arts = _artifacts(root)
    model: TrainedModel | None = _cached(_worker_models, (root, model_id))
    if model is None:
        try:
            with _phase("model fetch + load (once per worker)"):
                loaded = load_model(arts.fetch("MLModel", model_id) / "model")
        except (OSError, ValueError, KeyError) as exc:
            raise _unreadable("MLModel", model_id, root, exc) from None
        model = dataclasses.replace(loaded, builder=cast(Any, _EncoderCache(loaded.builder)))
        _remember(_worker_models, (root, model_id), model, _KEEP_MODELS)
    table: EncodedTable | None = _cached(_worker_tables, (root, datasource_id))
    if table is None:
        try:
            with _phase("table fetch + open (once per worker)"):
                table = EncodedTable.open(arts.fetch("DataSource", datasource_id) / "table")
        except (OSError, ValueError, EngineError) as exc:
            raise _unreadable("DataSource", datasource_id, root, exc) from None
        _remember(_worker_tables, (root, datasource_id), table, _KEEP_TABLES)
    return model, table


def batch_part(
    root: str,
    model_id: str,
    datasource_id: str,
    schema_json: str,
    threshold: float,
    first: int,
    stop: int,
    span_first: int,
    block_rows: int,
) -> tuple[list[tuple[bytes, int, int]], int, int]:
    """On a worker: the compressed blocks of AML's batch CSV for positions ``[first, stop)`` of the
    datasource's output sequence, in the span that starts at ``span_first``.

    ``first - span_first`` is a multiple of ``block_rows``, so the partition's blocks are the span's own
    (:class:`~amlflow.storage.gzip_blocks.RecordBlocks`; the span's header opens its first block, a later
    partition drops it). Returns ``(blocks, total, invalid)``: each block as ``(deflate bytes, CRC-32,
    uncompressed length)`` (:func:`~amlflow.storage.gzip_blocks.deflate_block`), and the partition's
    :class:`~amlflow.engine.batch.BatchCounts`.
    """
    if (first - span_first) % block_rows:
        raise ValueError(f"batch partition {first}:{stop} does not start a block of {block_rows} rows")
    model, table = _inputs(root, model_id, datasource_id)
    schema = _schema(schema_json)
    blocks: list[tuple[bytes, int, int]] = []

    def deflate(raw: bytes) -> None:
        with _phase("batch: deflate"):
            block = deflate_block(raw)
        blocks.append((block.data, block.crc, block.size))

    with _task_malloc(), _phase("batch: task (features, scores, CSV, deflate)"):
        sink = RecordBlocks(block_rows, header=first == span_first, emit=deflate)
        counts = write_batch_output(
            model, table, schema, cast(BinaryIO, sink), threshold=threshold, rows=(first, stop)
        )
        sink.close()
    return blocks, int(counts.total), int(counts.invalid)


@contextlib.contextmanager
def _task_malloc() -> Iterator[None]:
    """While a scoring task runs: glibc's trim and mmap thresholds raised as for training
    (:func:`amlflow.service.dask_training._malloc_for_training`). Dask's nanny starts workers with
    ``MALLOC_TRIM_THRESHOLD_=65536``, so every feature batch (MNIST: 784 int32 columns a row, 6-19 MB a
    partition) is a fresh mmap page-faulted in: measured on MNIST's batch in 2,048-row partitions,
    111,700 page faults and 1.34-1.61 CPU-s against 16,800 and 1.00-1.06 CPU-s with them raised."""
    from amlflow.service.dask_training import _malloc_for_training  # that module imports this one

    with _malloc_for_training():
        yield


def _schema(schema_json: str) -> Schema:
    """The parsed schema, cached per worker (parsing MNIST's 785 attributes takes ~10 ms a partition)."""
    key = ("", schema_json)
    schema: Schema | None = _cached(_worker_schemas, key)
    if schema is None:
        schema = parse_schema(schema_json)
        _remember(_worker_schemas, key, schema, _KEEP_MODELS)
    return schema


def accumulate_part(
    root: str, model_id: str, datasource_id: str, plan: dict[str, Any], start: int, stop: int
) -> Accumulator:
    """On a worker: the bounded evaluation's accumulator of table rows ``[start, stop)`` for ``plan``
    (:meth:`~amlflow.engine.evaluation_bounded.BoundedPlan.to_plain`), packed to travel (BINARY's logit
    bins as their nonzero entries: at most one per row of the partition, not 2 × 2^20)."""
    model, table = _inputs(root, model_id, datasource_id)
    with _task_malloc(), _phase("evaluation: accumulators"):
        return pack(accumulate(model, table, BoundedPlan.from_plain(plan), start, stop))


def score_part(root: str, model_id: str, datasource_id: str, start: int, stop: int) -> np.ndarray:
    """On a worker: the model's scores of table rows ``[start, stop)`` (``Predictions.scores``)."""
    model, table = _inputs(root, model_id, datasource_id)
    with _task_malloc(), _phase("evaluation: scores (features, scoring)"):
        scores: np.ndarray = model.predict_table(table, start=start, stop=stop).scores
    return scores


# -------------------------------------------------------------------------------------- in the service

_clients_lock = threading.Lock()
_clients: dict[str, Any] = {}


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise JobFailed(
            "AMLFLOW_DASK_ADDRESS is set but the Dask extra is not installed (no module "
            f"{exc.name or 'distributed'!r}): pip install 'amlflow[dask]', or unset AMLFLOW_DASK_ADDRESS "
            "to run jobs in-process."
        ) from None
    return distributed


def client_for(address: str) -> Any:
    """The process's ``distributed.Client`` connected to ``address`` (one per address, reused).

    Raises:
        JobFailed: the Dask extra is missing, or the scheduler cannot be reached (the message names
            ``AMLFLOW_DASK_ADDRESS``).
    """
    distributed = _import_distributed()
    with _clients_lock:
        client = _clients.get(address)
        if client is not None and client.status == "running":
            return client
        try:
            client = distributed.Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise JobFailed(
                f"AMLFLOW_DASK_ADDRESS: cannot reach the Dask scheduler at {address}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        _clients[address] = client
        return client


def close_clients() -> None:
    """Close every client :func:`client_for` opened (tests; also at exit)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        with contextlib.suppress(Exception):  # closing at exit: the scheduler may be gone already
            client.close(timeout=10)


atexit.register(close_clients)


def _threads(client: Any) -> int:
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def partitions(spans: Sequence[tuple[int, int]], threads: int, block: int = 1) -> list[list[tuple[int, int]]]:
    """Each span ``(first, stop)`` cut into partitions ``(a, b)`` of one size, a multiple of ``block``
    rows (at least one block), so that every partition starts ``first + k * block``. An empty span is one
    empty partition (its output is the header alone).

    The size: about :data:`PARTITIONS_PER_THREAD` per worker thread over all spans, within
    :data:`MIN_PARTITION_ROWS`..:data:`MAX_PARTITION_ROWS` — and among the block multiples from half to
    twice that (within those bounds), the one whose partitions finish soonest when dealt to ``threads``
    threads (longest first to the least loaded), each partition costing its rows plus
    :data:`PARTITION_COST_ROWS`: the threads end together (MNIST's batch on 2 threads: 5 partitions of 3
    blocks rather than 14 of one, which cost 9 more tasks, or 7 of two, which leave one thread a whole
    partition behind)."""
    total = sum(b - a for a, b in spans)
    size = math.ceil(total / max(1, PARTITIONS_PER_THREAD * threads)) if total else 1
    size = max(1, min(MAX_PARTITION_ROWS, max(MIN_PARTITION_ROWS, size)))
    target = max(1, round(size / block))
    top = max(1, MAX_PARTITION_ROWS // block)
    best: tuple[float, int] | None = None
    low = max(1, target // 2, MIN_PARTITION_ROWS // block)
    for blocks in range(min(low, top), max(1, min(top, 2 * target)) + 1):
        rows = blocks * block
        loads = [0] * max(1, threads)
        sizes = sorted((min(p + rows, b) - p for a, b in spans for p in range(a, b, rows)), reverse=True)
        for n in sizes:
            loads[loads.index(min(loads))] += n + PARTITION_COST_ROWS
        key = (max(loads), -rows)
        if best is None or key < (best[0], -best[1]):
            best = (max(loads), rows)
    assert best is not None
    size = best[1]
    out = []
    for a, b in spans:
        out.append([(p, min(p + size, b)) for p in range(a, b, size)] or [(a, a)])
    return out


def _root(artifacts: Artifacts) -> str:
    """What a worker needs to reach the artifact root: its s3:// URI, or the local folder's path."""
    return artifacts.uri if artifacts.remote else str(artifacts.base.resolve())


def _result(future: Any, address: str) -> Any:
    """``future.result()``; a failure on the cluster becomes a JobFailed naming it (engine and AML
    errors keep their own message)."""
    try:
        return future.result()
    except (EngineError, AmlError, JobFailed):
        raise
    except Exception as exc:
        raise JobFailed(f"on the Dask cluster at {address} (AMLFLOW_DASK_ADDRESS): {exc}") from None


class BatchScorer:
    """A batch prediction's spans scored and compressed on the cluster (:func:`batch_part` per
    partition, partitions of whole blocks of ``block_rows`` positions).

    Every partition of every span is submitted at once; :meth:`write` then adds span ``i``'s blocks to a
    :class:`~amlflow.storage.gzip_blocks.BlockGzipWriter`, partition after partition as they arrive:
    the same blocks, so the same bytes, as the in-process job's.
    """

    def __init__(
        self,
        address: str,
        artifacts: Artifacts,
        *,
        model_id: str,
        datasource_id: str,
        schema_json: str,
        threshold: float,
        spans: Sequence[tuple[int, int]],
        block_rows: int,
        log: _Log | None = None,
    ) -> None:
        self.address = address
        client = client_for(address)
        threads = _threads(client)
        root = _root(artifacts)
        plan = partitions(spans, threads, block_rows)
        n = sum(len(p) for p in plan)
        self._futures: list[list[Any]] = []
        order = 0
        for (span_first, _), parts in zip(spans, plan, strict=True):
            futures = []
            for a, b in parts:
                futures.append(
                    client.submit(
                        batch_part,
                        root,
                        model_id,
                        datasource_id,
                        schema_json,
                        float(threshold),
                        a,
                        b,
                        span_first,
                        block_rows,
                        pure=False,
                        priority=n - order,  # in output order: the service writes them in that order
                    )
                )
                order += 1
            self._futures.append(futures)
        if log is not None:
            log(
                f"scoring on the Dask cluster at {address}: {n} partition(s) of up to "
                f"{max((b - a for p in plan for a, b in p), default=0)} rows over {threads} worker "
                f"thread(s), compressed there in blocks of {block_rows} rows"
            )

    def write(self, index: int, out: BlockGzipWriter) -> BatchCounts:
        """Add span ``index``'s blocks (its partitions' in order) to ``out``."""
        total = invalid = 0
        for future in self._futures[index]:
            blocks, t, i = _result(future, self.address)
            future.release()
            for data, crc, size in blocks:
                out.add(DeflatedBlock(data, crc, size))
            total += t
            invalid += i
        self._futures[index] = []
        return BatchCounts(total=total, invalid=invalid)

    def close(self) -> None:
        """Cancel what has not been written (a failed job leaves no work on the cluster)."""
        left = [f for futures in self._futures for f in futures]
        self._futures = []
        if left:
            with contextlib.suppress(Exception):  # the job's own failure is what matters
                left[0].client.cancel(left)


class DaskEvaluationModel:
    """A model whose evaluation work runs on the cluster; every other attribute is the model's own, so
    the engine's ``evaluate`` runs unchanged on it and makes the exact/bounded choice itself:

    * exact path — the first ``predict_table`` gathers the scores of every row (:func:`score_part` per
      partition) and answers from them: the in-process metric and report, digit for digit;
    * bounded path — ``bounded_partials(plan)`` (the engine's
      :data:`~amlflow.engine.evaluation_bounded.Partials`) has every worker compute its partition's
      accumulator (:func:`accumulate_part`) and merges them here as they arrive, in partition order: the
      service holds one accumulator and one partition's partial, never the scores.
    """

    def __init__(
        self,
        address: str,
        artifacts: Artifacts,
        model: Any,
        *,
        model_id: str,
        datasource_id: str,
        n_rows: int,
        log: _Log | None = None,
    ) -> None:
        self._model = model
        self._address = address
        self._root = _root(artifacts)
        self._ids = (model_id, datasource_id)
        self._n_rows = n_rows
        self._log = log
        self._scores: np.ndarray | None = None
        self.rounds = 0  # bounded passes run on the cluster (REGRESSION: two)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], what: str) -> Iterator[Any]:
        """``fn(root, model_id, datasource_id, *args, a, b)`` per partition; results in partition order."""
        client = client_for(self._address)
        threads = _threads(client)
        (plan,) = partitions([(0, self._n_rows)], threads)
        futures = [
            client.submit(fn, self._root, *self._ids, *args, a, b, pure=False, priority=len(plan) - k)
            for k, (a, b) in enumerate(plan)
        ]
        if self._log is not None:
            self._log(
                f"{what} on the Dask cluster at {self._address}: {len(plan)} partition(s) over "
                f"{threads} thread(s)"
            )
        try:
            for future in futures:
                result = _result(future, self._address)
                future.release()
                yield result
        except BaseException:
            client.cancel(futures)
            raise

    def predict_table(
        self, table: Table, schema: Schema | None = None, *, start: int = 0, stop: int | None = None
    ) -> Predictions:
        if table.n_rows != self._n_rows:
            raise ValueError(f"scores of {self._n_rows} rows for a table of {table.n_rows}")
        if self._scores is None:
            if self._n_rows == 0:
                return cast(Predictions, self._model.predict_table(table, schema, start=start, stop=stop))
            self._scores = np.concatenate(list(self._run(score_part, (), "scoring")))
        scores = self._scores[start:stop]
        return Predictions(self._model.model_type, self._model.classes, scores, np.ones(len(scores), bool))

    def bounded_partials(self, plan: BoundedPlan) -> Accumulator:
        """The merged accumulator of every row for ``plan``, from the workers' partials."""
        self.rounds += 1
        what = (
            f"evaluation accumulators (pass {self.rounds})"
            if plan.model_type == "REGRESSION"
            else ("evaluation accumulators")
        )
        parts = self._run(accumulate_part, (plan.to_plain(),), what)
        return merge(new_accumulator(plan), parts)


def scored_model(
    address: str,
    artifacts: Artifacts,
    model: Any,
    *,
    model_id: str,
    datasource_id: str,
    n_rows: int,
    log: _Log | None = None,
) -> Any:
    """``model`` with its evaluation work on the cluster (:class:`DaskEvaluationModel`)."""
    return DaskEvaluationModel(
        address, artifacts, model, model_id=model_id, datasource_id=datasource_id, n_rows=n_rows, log=log
    )
