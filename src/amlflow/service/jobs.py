"""The job pool: PENDING entities wait for their inputs, then run in a bounded thread pool — in exactly
one of the processes sharing the state, the one holding the job's lease.

Life of a job (AML's status machine, docs/aml-reference.md §2.2–2.3)::

    create ─> PENDING ─(inputs COMPLETED, a worker free, lease claimed)─> INPROGRESS ─> COMPLETED | FAILED
                 └─(an input FAILED or DELETED)─> FAILED, Message naming the input

* Leases (docs/shared-state.md): a process claims a job in the state store (owner id, expiry) only when
  one of its workers is free, and its heartbeat renews the leases it holds every ``lease_seconds / 4``.
  Every write of a job (start, COMPLETED, FAILED) is guarded by the lease: a process whose lease was
  taken over cannot overwrite the new owner's work. A process that starts touches no job with a live
  lease; a job whose owner died (its lease expired, or its owner is a dead process of this host) is
  claimed by any live process and run again from the start.
* ``schedule(kind, id)`` looks at one entity now (after a create); a scanner thread looks at every
  unleased PENDING or INPROGRESS entity every ``poll_interval`` seconds, so a job whose inputs
  complete in another process starts within about that long.
* Inputs: all COMPLETED → claimed and submitted; one FAILED/DELETED/missing → FAILED at once; otherwise
  the entity waits.
* Timing: ``StartedAt`` on INPROGRESS, ``FinishedAt`` on COMPLETED/FAILED, ``ComputeTime`` (measured
  wall-clock milliseconds) on COMPLETED, ``LastUpdatedAt`` on every transition.
* A job whose entity was deleted while it ran leaves the entity DELETED.
* :meth:`shutdown` stops taking work and gives back the leases of jobs not started (any process takes
  them at once); running jobs get ``timeout`` seconds to finish, or their leases expire.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amlflow.engine.errors import EngineError
from amlflow.service.errors import AmlError
from amlflow.service.layout import entity_dir_name
from amlflow.service.state import Entity, LeaseLost, StateStore, new_owner_id, owner_is_dead

__all__ = ["JobContext", "JobFailed", "JobResult", "JobRunner", "now"]

log = logging.getLogger("amlflow.service")

DONE = ("COMPLETED", "FAILED", "DELETED")


def now() -> float:
    """Epoch seconds with millisecond precision (what the wire carries)."""
    return round(time.time(), 3)


class JobFailed(Exception):
    """Raise from a job to end it FAILED with this message (no traceback in the log)."""


@dataclass
class JobResult:
    """What a finished job adds: wire attributes and internal data (merged into the entity)."""

    attrs: Mapping[str, Any] | None = None
    internal: Mapping[str, Any] | None = None
    compute_time: bool = True
    #: attributes set only when the entity has none yet (e.g. a ScoreThreshold updated while training)
    defaults: Mapping[str, Any] | None = None


class JobContext:
    """Handed to a job function: the entity, a log function writing to the entity's log file."""

    def __init__(self, entity: Entity, log_path: Path) -> None:
        self.entity = entity
        self.log_path = log_path

    def log(self, line: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {line}\n")


JobFunction = Callable[[JobContext], JobResult]
DepsFunction = Callable[[Entity], list[tuple[str, str]]]


class JobRunner:
    """Claims, schedules and runs entity jobs (see the module docstring).

    Args:
        state: the shared state store.
        max_jobs: worker threads of this process (jobs it runs at once).
        jobs: the job function per entity kind.
        deps: the inputs (kind, id) of an entity.
        log_dir: where job logs go (``<log_dir>/<kind>/<dir>.log``).
        on_finish: called with the entity after COMPLETED or FAILED.
        redact: applied to FAILED messages (no server paths).
        owner: this process's lease owner id (default :func:`~amlflow.service.state.new_owner_id`).
        lease_seconds: how long a lease lives without a heartbeat.
        poll_interval: seconds between scans of the shared state.
        log_uri: the ``LogUri`` of an entity's job log (default: the local log file's URI).
    """

    def __init__(
        self,
        state: StateStore,
        *,
        max_jobs: int,
        jobs: Mapping[str, JobFunction],
        deps: DepsFunction,
        log_dir: Path,
        on_finish: Callable[[Entity], None] | None = None,
        redact: Callable[[str], str] | None = None,
        owner: str | None = None,
        lease_seconds: float = 20.0,
        poll_interval: float = 0.5,
        log_uri: Callable[[str, str], str] | None = None,
    ) -> None:
        self.state = state
        self.redact = redact
        self.jobs = dict(jobs)
        self.deps = deps
        self.log_dir = log_dir
        self.on_finish = on_finish
        self.owner = owner or new_owner_id()
        self._log_uri = log_uri
        self.lease_seconds = float(lease_seconds)
        self.poll_interval = float(poll_interval)
        self.max_jobs = max_jobs
        self._pool = ThreadPoolExecutor(max_workers=max_jobs, thread_name_prefix="amlflow-job")
        self._lock = threading.RLock()
        self._queued: set[tuple[str, str]] = set()  # claimed and submitted, not finished
        self._waiting: set[tuple[str, str]] = set()  # PENDING on inputs
        self._running: set[tuple[str, str]] = set()
        self._futures: set[Future[None]] = set()
        self._stopping = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------ schedule

    def log_path(self, kind: str, entity_id: str) -> Path:
        return self.log_dir / kind / f"{entity_dir_name(kind, entity_id)}.log"

    def start(self) -> None:
        """Start the scanner and the heartbeat (idempotent)."""
        with self._lock:
            if self._threads or self._stopping:
                return
            for target, name in ((self._scan_loop, "amlflow-scan"), (self._heartbeat_loop, "amlflow-lease")):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    def schedule(self, kind: str, entity_id: str) -> None:
        """Look at one entity now: claim and submit its job if its inputs are ready and a worker is free;
        fail it if an input failed; else let it wait (the scanner looks again)."""
        entity = self.state.get(kind, entity_id)
        if entity is not None:
            self._consider(entity)

    def kick(self) -> None:
        """Scan the shared state soon (after a job ended or an entity was deleted)."""
        self._wake.set()

    def scan(self) -> None:
        """Look at every PENDING or INPROGRESS entity no live process holds."""
        entities = self.state.claimable()
        with self._lock:
            self._waiting &= {(e.kind, e.id) for e in entities}
        for entity in entities:
            if self._stopping:
                return
            self._consider(entity)
        self._take_over_dead()

    def _take_over_dead(self) -> None:
        """Jobs leased by a dead process of this host are claimable at once (no wait for the expiry)."""
        if not self._free():
            return
        for lease in self.state.leases():
            if lease.owner != self.owner and lease.expires >= time.time() and owner_is_dead(lease.owner):
                entity = self.state.get(lease.kind, lease.id)
                if entity is not None and entity.status in ("PENDING", "INPROGRESS"):
                    self._consider(entity, dead=frozenset({lease.owner}))

    def _free(self) -> bool:
        with self._lock:
            return len(self._queued) < self.max_jobs

    def _consider(self, entity: Entity, dead: frozenset[str] = frozenset()) -> None:
        key = (entity.kind, entity.id)
        with self._lock:
            if self._stopping or key in self._queued or entity.status not in ("PENDING", "INPROGRESS"):
                return
        if entity.kind not in self.jobs:
            self._claim_and_fail(entity, f"No job is defined for {entity.kind} entities.")
            return
        blocker = self._blocked(entity)
        if blocker == "wait":
            with self._lock:
                self._waiting.add(key)
            return
        with self._lock:
            self._waiting.discard(key)
        if blocker is not None:
            self._claim_and_fail(entity, blocker)
            return
        with self._lock:
            if len(self._queued) >= self.max_jobs or key in self._queued:
                return  # every worker busy: another process (or a later scan) takes it
            claimed = self.state.claim(entity.kind, entity.id, self.owner, self.lease_seconds, dead=dead)
            if claimed is None:
                return
            current, previous = claimed
            if previous is not None or current.status == "INPROGRESS":
                log.info("taking over %s %s (%s, lease of %s)", *key, current.status, previous or "nobody")
            self._queued.add(key)
            future = self._pool.submit(self._run, entity.kind, entity.id, previous)
            self._futures.add(future)
        future.add_done_callback(functools.partial(self._done, key=key))

    def _claim_and_fail(self, entity: Entity, message: str) -> None:
        claimed = self.state.claim(entity.kind, entity.id, self.owner, self.lease_seconds)
        if claimed is not None:
            self._finish_failed(claimed[0], message)

    def _done(self, future: Future[None], key: tuple[str, str]) -> None:
        with self._lock:
            self._futures.discard(future)
            cancelled = future.cancelled()
            if cancelled:  # cancelled by shutdown before it started: still PENDING, lease given back
                self._queued.discard(key)
        if cancelled:
            self.state.release(key[0], key[1], self.owner)

    def _blocked(self, entity: Entity) -> str | None:
        """None when every input is COMPLETED, "wait" while one is not done, else the failure message."""
        waiting = False
        for dep_kind, dep_id in self.deps(entity):
            dep = self.state.get(dep_kind, dep_id)
            if dep is None:
                return f"{_label(dep_kind)} {dep_id} does not exist."
            if dep.status == "FAILED":
                return f"{_label(dep_kind)} {dep_id} is FAILED: {dep.attrs.get('Message', 'no message')}"
            if dep.status == "DELETED":
                return f"{_label(dep_kind)} {dep_id} was DELETED."
            if dep.status != "COMPLETED":
                waiting = True
        return "wait" if waiting else None

    # ------------------------------------------------------------------------------ background

    def _scan_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception:  # the database away for a moment: the next scan tries again
                log.warning("job scan failed; retrying in %.1f s", self.poll_interval, exc_info=True)
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _heartbeat_loop(self) -> None:
        interval = max(self.lease_seconds / 4, 0.05)
        while not self._stop.wait(interval):
            try:
                held = self.state.renew(self.owner, self.lease_seconds)
            except Exception:
                log.warning("lease heartbeat failed; retrying in %.1f s", interval, exc_info=True)
                continue
            with self._lock:
                lost = self._running - held
            for kind, entity_id in sorted(lost):
                log.warning("lost the lease of %s %s: its result will be discarded", kind, entity_id)

    # ----------------------------------------------------------------------------------------- run

    def _run(self, kind: str, entity_id: str, previous: str | None = None) -> None:
        key = (kind, entity_id)
        try:
            if self._stopping or not threading.main_thread().is_alive():
                return  # left PENDING, lease given back below: another process or the next start runs it
            started = time.perf_counter()
            stamp = now()

            def start(e: Entity) -> bool:
                if e.status not in ("PENDING", "INPROGRESS"):
                    return False
                e.attrs.update(Status="INPROGRESS", StartedAt=stamp, LastUpdatedAt=stamp)
                uri = (
                    self._log_uri(kind, entity_id)
                    if self._log_uri
                    else self.log_path(kind, entity_id).as_uri()
                )
                e.attrs.setdefault("LogUri", uri)
                return True

            try:
                entity = self.state.update(kind, entity_id, start, owner=self.owner)
            except LeaseLost:
                return
            if entity is None or entity.status != "INPROGRESS" or entity.attrs.get("StartedAt") != stamp:
                return
            with self._lock:
                self._running.add(key)
            ctx = JobContext(entity, self.log_path(kind, entity_id))
            if previous is not None:
                ctx.log(f"{kind} {entity_id}: taken over from {previous}, whose lease expired")
            ctx.log(f"{kind} {entity_id}: started by {self.owner}")
            try:
                result = self.jobs[kind](ctx)
            except JobFailed as exc:
                ctx.log(f"FAILED: {exc}")
                self._finish_failed(entity, str(exc))
            except EngineError as exc:
                ctx.log(f"FAILED: {exc.message}")
                self._finish_failed(entity, exc.message)
            except AmlError as exc:
                ctx.log(f"FAILED: {exc.message}")
                self._finish_failed(entity, exc.message)
            except FileNotFoundError as exc:
                ctx.log(f"FAILED: {exc}")
                self._finish_failed(entity, f"Input not found: {exc}")
            except Exception as exc:
                log.exception("job %s %s failed", kind, entity_id)
                ctx.log("FAILED with an internal error:\n" + traceback.format_exc())
                self._finish_failed(entity, f"Internal error: {type(exc).__name__}: {exc}")
            else:
                elapsed_ms = int(round((time.perf_counter() - started) * 1000))
                done = now()

                def complete(e: Entity) -> bool:
                    for k, v in (result.internal or {}).items():
                        e.internal[k] = v
                    for k, v in (result.attrs or {}).items():
                        if v is None:
                            e.attrs.pop(k, None)
                        else:
                            e.attrs[k] = v
                    for k, v in (result.defaults or {}).items():
                        e.attrs.setdefault(k, v)
                    if e.status == "DELETED":
                        return True
                    e.attrs.update(Status="COMPLETED", FinishedAt=done, LastUpdatedAt=done)
                    if result.compute_time:
                        e.attrs["ComputeTime"] = max(elapsed_ms, 1)
                    return True

                try:
                    finished = self.state.update(kind, entity_id, complete, owner=self.owner, release=True)
                except LeaseLost as exc:
                    ctx.log(f"{kind} {entity_id}: result discarded: {exc}")
                    return
                ctx.log(f"{kind} {entity_id}: COMPLETED in {elapsed_ms} ms")
                if finished is not None and self.on_finish is not None:
                    self.on_finish(finished)
        finally:
            with self._lock:
                self._queued.discard(key)
                self._running.discard(key)
            try:
                self.state.release(kind, entity_id, self.owner)  # no-op when released with the result
            except Exception:
                log.warning("could not give back the lease of %s %s", kind, entity_id, exc_info=True)
            if not self._stopping:
                self.kick()

    def _finish_failed(self, entity: Entity, message: str) -> None:
        if self.redact is not None:  # users see s3:// locations and fields, never server paths
            message = self.redact(message)
        stamp = now()

        def fail(e: Entity) -> bool:
            if e.status in ("COMPLETED", "FAILED", "DELETED"):
                return False
            e.attrs.update(Status="FAILED", FinishedAt=stamp, LastUpdatedAt=stamp, Message=message[:10240])
            return True

        try:
            failed = self.state.update(entity.kind, entity.id, fail, owner=self.owner, release=True)
        except LeaseLost:
            return
        with self._lock:
            self._waiting.discard((entity.kind, entity.id))
        if failed is not None and failed.status == "FAILED" and self.on_finish is not None:
            self.on_finish(failed)
        if not self._stopping:  # jobs waiting on this one fail too
            self.kick()

    # ------------------------------------------------------------------------------------ shutdown

    def counts(self) -> dict[str, Any]:
        with self._lock:
            running = sorted(self._running)
            return {
                "owner": self.owner,
                "jobs_running": len(self._running),
                "jobs_queued": len(self._queued) - len(self._running),
                "jobs_waiting": len(self._waiting),
                "jobs_owned": [{"kind": k, "id": i} for k, i in running],
            }

    def shutdown(self, timeout: float | None = 30.0) -> bool:
        """Stop taking work; wait up to ``timeout`` s for running jobs. True if none is still running."""
        with self._lock:
            self._stopping = True
            futures = list(self._futures)
        self._stop.set()
        self._wake.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        # cancelled futures never reach "done" for concurrent.futures.wait: wait for the others only
        _, not_done = wait_futures([f for f in futures if not f.cancelled()], timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        return not not_done


def _label(kind: str) -> str:
    return {
        "DataSource": "Datasource",
        "MLModel": "ML model",
        "Evaluation": "Evaluation",
        "BatchPrediction": "Batch prediction",
    }.get(kind, kind)
