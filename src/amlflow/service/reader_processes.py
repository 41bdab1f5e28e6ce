"""Datasource jobs' CSV reading in worker processes (``AMLFLOW_DATASOURCE_PROCESSES``).

A datasource job spends its time in the engine's reader and statistics (:func:`~amlflow.engine.dataset.
build_dataset`, :func:`~amlflow.engine.stats.compute_statistics`), which hold Python's GIL for much of it:
three datasource jobs on threads of one process (a 70/30 split and a batch set) then share one core's worth
of interpreter between them, and the training job that follows the first one waits on the others'
interpreter time too. So the service hands that work to a small pool of worker processes — one per job
slot, up to the machine's cores — and the jobs' threads only wait for them.

The worker is ``python -m amlflow.reader_worker`` (:mod:`amlflow.reader_worker`): it reads one JSON
request per line on its stdin (the storage — ``"s3"`` with the service's ``AWS_*`` environment of the
moment, or a local storage root — the objects, the schema's and the rearrangement's JSON, the table
directory, whether to compute statistics), runs the same engine functions the in-thread job runs, writes
the table at the given directory (atomically, as always) and answers one JSON line on its stdout: the
:class:`~amlflow.engine.dataset.DatasetInfo` and the insights, or the error the in-thread job would have
raised (an engine ``DataError`` with its field, a missing object, a refused location), which the service
raises again. Plain JSON both ways: nothing is unpickled. A worker whose parent is gone (its stdin
closes) exits at once, even in the middle of a request, so a killed service leaves no writer behind; what
it had half-written is a temporary directory that start-up's crash clean-up removes.

The pool is one per process (any number of services share it), started when a service starts taking
jobs (:func:`warm`), its workers ready before the first job: a worker's imports (~0.5 s) are not a job's.
A worker that dies (killed, out of memory) fails only the job it ran, naming its exit status; the next
job starts a new one.

A large input (:data:`PARTS_MIN_BYTES` and more than one part) is read by byte range on every reader at once
(:func:`read_in_parts`: the Dask datasource's plan and the engine's ``read_part``, merged in the job's thread
into the table one reader would write, byte for byte; the statistics then on a reader). The same program
also trains the shards of a data-parallel fit (:mod:`amlflow.service.training_processes`), in a pool of its
own (:func:`pool` with another ``role``) that lends a job several workers at once (:meth:`ReaderPool.hold`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from amlflow.reader_worker import READY as _READY  # the worker's first line: imports done

__all__ = [
    "ReaderPool",
    "WorkerDied",
    "checked",
    "cores",
    "default_processes",
    "pool",
    "pools",
    "read_in_parts",
    "read_in_process",
    "warm",
]

log = logging.getLogger("amlflow.service")


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_processes(max_jobs: int) -> int:
    """``AMLFLOW_DATASOURCE_PROCESSES`` unset: one worker per job slot, at most the machine's cores;
    none (read in the job's thread) on one core, where a worker process gains nothing."""
    n = cores()
    return 0 if n < 2 else min(max_jobs, n)


# -------------------------------------------------------------------------------------- in the service


class WorkerDied(RuntimeError):
    """A worker process exited while it ran a request."""


class _Worker:
    def __init__(self, role: str = "datasource reader") -> None:
        self.role = role
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])  # a source checkout without an install works too
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "amlflow.reader_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
        )
        self.ready = False

    def _stdin(self) -> IO[str]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def _stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def wait_ready(self) -> None:
        if not self.ready:
            line = self._stdout().readline()
            if line.strip() != _READY:
                raise WorkerDied(self._died())
            self.ready = True

    def _died(self) -> str:
        code = self.proc.wait()
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return f"the {self.role} process {how} (out of memory?)"

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send(request)
        return self.receive()

    def send(self, request: dict[str, Any]) -> None:
        """Write one request (its answer is :meth:`receive`'s)."""
        self.wait_ready()
        try:
            self._stdin().write(json.dumps(request) + "\n")
            self._stdin().flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(self._died()) from None

    def receive(self) -> dict[str, Any]:
        """The answer to the request :meth:`send` wrote."""
        line = self._stdout().readline()
        if not line:
            raise WorkerDied(self._died())
        return dict(json.loads(line))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def discard(self) -> None:
        """Kill the worker (it died, or its answer cannot be trusted) and close its pipes."""
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin().close()  # the worker's loop ends; it exits
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self._stdout().close()


class ReaderPool:
    """Up to ``size`` worker processes; :meth:`call` runs one request on an idle one (starting one if
    none is idle and fewer than ``size`` run), waiting while all are busy; :meth:`hold` lends several to
    one caller for a series of requests. ``role`` names them in failures."""

    def __init__(self, size: int, role: str = "datasource reader") -> None:
        self.size = max(1, size)
        self.role = role
        self._idle: list[_Worker] = []
        self._live: list[_Worker] = []  # every worker started and not yet discarded (for usage())
        self._n = 0
        self._cond = threading.Condition()
        self._closed = False

    def grow(self, size: int) -> None:
        """At least ``size`` workers allowed (services with more job slots share the pool)."""
        with self._cond:
            self.size = max(self.size, size)

    def start(self, n: int | None = None) -> None:
        """Start workers until ``n`` (default: ``size``) exist, and wait until they are ready."""
        fresh: list[_Worker] = []
        with self._cond:
            while self._n < min(self.size, n or self.size):
                fresh.append(_Worker(self.role))
                self._live.append(fresh[-1])
                self._n += 1
        try:
            for w in fresh:
                w.wait_ready()
        finally:
            self._give_back(fresh)

    def _take(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the datasource reader pool is closed")
                while self._idle:
                    w = self._idle.pop()
                    if w.alive():
                        return w
                    w.discard()
                    self._live.remove(w)
                    self._n -= 1
                if self._n < self.size:
                    self._n += 1
                    break
                self._cond.wait()
        try:
            worker = _Worker(self.role)
        except BaseException:
            with self._cond:
                self._n -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._live.append(worker)
        return worker

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        worker = self._take()
        try:
            answer = worker.call(request)
        except BaseException:
            worker.discard()
            with self._cond:
                self._live.remove(worker)
                self._n -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._idle.append(worker)
            self._cond.notify()
        return answer

    @contextlib.contextmanager
    def hold(self, n: int) -> Iterator[list[_Worker]]:
        """``n`` workers for the caller alone while the block runs (taken together: it waits until ``n``
        are idle or may be started), so a series of requests reaches the same processes and what one
        request leaves in a worker the next one finds. Given back afterwards; when the block raises,
        they are killed instead (an answer may still be on its way)."""
        if n > self.size:
            raise ValueError(f"hold({n}): the pool has room for {self.size} worker(s)")
        held: list[_Worker] = []
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError(f"the {self.role} pool is closed")
                for w in [w for w in self._idle if not w.alive()]:
                    self._idle.remove(w)
                    w.discard()
                    self._live.remove(w)
                    self._n -= 1
                if len(self._idle) + self.size - self._n >= n:
                    break
                self._cond.wait()
            while self._idle and len(held) < n:
                held.append(self._idle.pop())
            start = n - len(held)
            self._n += start
        try:
            for _ in range(start):
                w = _Worker(self.role)
                held.append(w)
                with self._cond:
                    self._live.append(w)
                start -= 1
            for w in held:
                w.wait_ready()
        except BaseException:
            self._drop(held, unstarted=start)
            raise
        try:
            yield held
        except BaseException:
            self._drop(held)
            raise
        self._give_back(held)

    def _give_back(self, workers: list[_Worker]) -> None:
        """Ready, live workers back to the idle list; the others discarded."""
        with self._cond:
            for w in workers:
                if w.alive() and w.ready:
                    self._idle.append(w)
                else:
                    w.discard()
                    self._live.remove(w)
                    self._n -= 1
            self._cond.notify_all()

    def _drop(self, workers: list[_Worker], unstarted: int = 0) -> None:
        for w in workers:
            w.discard()
        with self._cond:
            for w in workers:
                if w in self._live:
                    self._live.remove(w)
            self._n -= len(workers) + unstarted
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for w in idle:
            w.close()

    def pids(self) -> list[int]:
        """The process ids of the live workers."""
        with self._cond:
            return [w.proc.pid for w in self._live if w.alive()]

    def usage(self) -> list[tuple[float, int]]:
        """``(CPU seconds, peak resident bytes)`` of each live worker (``/proc``; Linux, else empty):
        benchmarks add them to the service's own."""
        pids = self.pids()
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        out = []
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            hwm = [int(x.split()[1]) * 1024 for x in status.splitlines() if x.startswith("VmHWM:")]
            out.append(((int(stat[11]) + int(stat[12])) / tick, hwm[0] if hwm else 0))
        return out


_pools: dict[str, ReaderPool] = {}
_pool_lock = threading.Lock()


def pool(size: int, role: str = "datasource reader") -> ReaderPool:
    """This process's pool of ``role`` workers (the datasource readers, or the training workers of
    :mod:`amlflow.service.training_processes`), allowed at least ``size`` workers."""
    with _pool_lock:
        got = _pools.get(role)
        if got is None:
            got = _pools[role] = ReaderPool(size, role)
            atexit.register(got.close)
        else:
            got.grow(size)
        return got


def pools() -> list[ReaderPool]:
    """Every pool of this process (benchmarks add their workers' usage to the service's own)."""
    with _pool_lock:
        return list(_pools.values())


def warm(size: int) -> None:
    """Start this process's workers (``size`` of them) and wait until they are ready. A worker that
    cannot start is logged, not raised: the service starts, and a datasource job says why it failed."""
    if size > 0:
        try:
            pool(size).start(size)
        except WorkerDied as exc:
            log.warning("could not start the datasource readers: %s", exc)


def _with_env(request: dict[str, Any], storage: str) -> dict[str, Any]:
    if storage == "s3":  # the worker may be older than the configuration: it gets today's
        request["env"] = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    return request


def checked(answer: dict[str, Any], role: str = "datasource reader") -> dict[str, Any]:
    """A worker's answer, or the error the in-thread job would have raised, raised here: the engine error
    it reported (its class and field), a missing object, a refused value; any other failure of the
    ``role`` process as a RuntimeError with its traceback."""
    from amlflow.engine import errors

    kind = answer.get("error")
    if kind == "engine":
        cls = getattr(errors, str(answer.get("type")), errors.EngineError)
        if not (isinstance(cls, type) and issubclass(cls, errors.EngineError)):
            cls = errors.EngineError
        raise cls(str(answer["message"]), field=answer.get("field"))
    if kind == "missing":
        raise FileNotFoundError(str(answer["message"]))
    if kind == "value":
        raise ValueError(str(answer["message"]))
    if kind is not None:
        raise RuntimeError(f"the {role} process failed:\n{answer.get('message')}")
    return answer


def read_in_process(
    size: int,
    *,
    storage: str,
    objects: Sequence[tuple[str, str, int]],
    schema_json: str,
    rearrangement_json: str | None,
    out_dir: Path,
    statistics: bool,
    memory_budget: int | None = None,
) -> tuple[Any, dict[str, Any] | None]:
    """The datasource job's reading (and statistics) on a worker: ``(DatasetInfo, insights or None)``.

    Raises:
        DataError (an EngineError), FileNotFoundError, ValueError: as the in-thread job meets them.
        WorkerDied: the worker exited while it read.
    """
    from amlflow.engine.dataset import DatasetInfo

    request: dict[str, Any] = {
        "storage": storage,
        "objects": [list(o) for o in objects],
        "schema": schema_json,
        "rearrangement": rearrangement_json,
        "out_dir": str(out_dir),
        "statistics": statistics,
        "memory_budget": memory_budget,
    }
    answer = checked(pool(size).call(_with_env(request, storage)))
    d = answer["info"]
    info = DatasetInfo(
        n_rows=int(d["n_rows"]),
        n_rejected=int(d["n_rejected"]),
        data_size_bytes=int(d["data_size_bytes"]),
        n_files=int(d["n_files"]),
        rejected_samples=list(d["rejected_samples"]),
        n_rows_total=int(d["n_rows_total"]),
        n_rejected_total=int(d["n_rejected_total"]),
        files=[(str(k), int(a), int(b)) for k, a, b in d["files"]],
    )
    return info, answer.get("insights")


#: a datasource of at least this many bytes, in more than one part, is read in parts on every reader
#: (:func:`read_in_parts`): below it, one reader parses it about as fast as parts and their merge
PARTS_MIN_BYTES = 128 << 20
#: the parts' size, as on Dask (``dask_datasource.RANGE_BYTES``)
PART_BYTES = 64 << 20


def read_in_parts(
    size: int,
    *,
    storage: Any,
    objects: Sequence[Any],
    schema: Any,
    schema_json: str,
    rearrangement: Any,
    rearrangement_json: str | None,
    out_dir: Path,
    statistics: bool,
    memory_budget: int | None = None,
    log: Any = None,
) -> tuple[Any, dict[str, Any] | None] | None:
    """A large datasource read by byte range on ``size`` readers at once: ``(DatasetInfo, insights or
    None)``, the table at ``out_dir`` byte for byte the one one reader writes; or None (read it whole)
    when the input is under :data:`PARTS_MIN_BYTES`, makes one part or there are fewer than 2 readers.

    The plan is the Dask datasource's (``dask_datasource.plan_parts``: ranges of :data:`PART_BYTES`, a gzip
    file whole); each part is ``engine.dataset_parts.read_part`` on a reader, written under the job's own
    folder (``.parts-<token>`` beside the table); the job's thread merges them in input order as they come
    (``PartMerger``) and a reader computes the statistics of the merged table.

    Raises:
        DataError (an EngineError), FileNotFoundError, ValueError: as the in-thread job meets them, in
            input order.
        WorkerDied: a reader exited while it read.
    """
    import functools
    import shutil
    import time
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from amlflow.engine.dataset import Source, input_sizes, is_gzip
    from amlflow.engine.dataset_parts import PartMerger
    from amlflow.service.dask_datasource import plan_parts
    from amlflow.storage import storage_spec

    spec = storage_spec(storage)
    total_size = sum(o.size for o in objects)
    if size < 2 or spec is None or total_size < PARTS_MIN_BYTES:
        return None
    sources = [Source(o.key, o.size, functools.partial(storage.open_read, o.uri)) for o in objects]
    gz = [o.size > PART_BYTES and is_gzip(src) for o, src in zip(objects, sources, strict=True)]
    plan = plan_parts(objects, gz, PART_BYTES)
    if len(plan) < 2:
        return None
    sizes = input_sizes(sources, rearrangement)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    work = out_dir.parent / f".parts-{uuid.uuid4().hex[:12]}"
    work.mkdir(parents=True)
    say = log or (lambda _msg: None)
    say(
        f"reading in {len(plan)} part(s) of up to {PART_BYTES:,} bytes on the datasource reader processes "
        f"(up to {size} at once; {sum(gz)} gzip file(s) read whole)"
    )

    def part(k: int) -> dict[str, Any]:
        i, lo, hi = plan[k]
        o = objects[i]
        request = {
            "op": "read_part",
            "storage": str(spec),
            "object": [o.uri, o.key, o.size],
            "schema": schema_json,
            "rearrangement": rearrangement_json,
            "out_dir": str(work / f"{k:06d}"),
            "total_bytes": sum(sizes),
            "file_start": starts[i],
            "lo": lo,
            "hi": hi,
            "memory_budget": memory_budget,
        }
        return checked(pool(size).call(_with_env(request, str(spec))))

    t0 = time.perf_counter()
    merged = 0.0
    executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="amlflow-part")
    try:
        futures = [executor.submit(part, k) for k in range(len(plan))]
        with PartMerger(
            schema, rearrangement, [(o.key, o.size) for o in objects], out_dir, memory_budget=memory_budget
        ) as merger:
            for k, future in enumerate(futures):
                future.result()  # a part's failure is raised in input order, as the whole read meets it
                t1 = time.perf_counter()
                merger.add(work / f"{k:06d}")
                shutil.rmtree(work / f"{k:06d}", ignore_errors=True)
                merged += time.perf_counter() - t1
            t1 = time.perf_counter()
            info = merger.finish()
            merged += time.perf_counter() - t1
    finally:
        executor.shutdown(wait=True, cancel_futures=True)  # no reader still writes into work
        shutil.rmtree(work, ignore_errors=True)
    t1 = time.perf_counter()
    insights = None
    if statistics and info.n_rows:
        insights = _statistics(size, out_dir, schema, schema_json)
    say(
        f"read in parts: {time.perf_counter() - t0:.2f} s, of which merging {merged:.2f} s in the job's "
        f"thread; statistics on {size} readers {time.perf_counter() - t1:.2f} s"
    )
    return info, insights


def _statistics(size: int, table_dir: Path, schema: Any, schema_json: str) -> dict[str, Any]:
    """The insights of the table at ``table_dir``, its attributes dealt to ``size`` readers
    (``compute_statistics(only=...)``: each entry is its own column's and the target's), put back in
    schema order: the document one reader computes."""
    from concurrent.futures import ThreadPoolExecutor

    names = [a.name for a in schema.attributes if a.name != schema.target]
    groups = [names[i::size] for i in range(size) if names[i::size]] or [[]]

    def one(group: list[str]) -> dict[str, Any]:
        request = {"op": "statistics", "table": str(table_dir), "schema": schema_json, "attributes": group}
        return dict(checked(pool(size).call(request))["insights"])

    with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="amlflow-stats") as executor:
        parts = list(executor.map(one, groups))
    entries = {e["name"]: e for part in parts for e in part["attributes"]}
    out = parts[0]
    out["attributes"] = [entries[n] for n in names if n in entries]
    return out
