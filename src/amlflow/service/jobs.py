"""The job pool: PENDING entities wait for their inputs, then run in a bounded thread pool.

Life of a job (AML's status machine, docs/aml-reference.md §2.2–2.3)::

    create ─> PENDING ─(inputs COMPLETED, a worker free)─> INPROGRESS ─> COMPLETED | FAILED
                 └─(an input FAILED or DELETED)─> FAILED, Message naming the input

* ``schedule(kind, id)`` looks at the inputs: all COMPLETED → submitted to the pool; one FAILED/DELETED/
  missing → FAILED at once; otherwise the entity waits and is looked at again whenever a job ends or
  an entity is deleted (:meth:`JobRunner.kick`).
* Timing: ``StartedAt`` on INPROGRESS, ``FinishedAt`` on COMPLETED/FAILED, ``ComputeTime`` (measured
  wall-clock milliseconds) on COMPLETED, ``LastUpdatedAt`` on every transition.
* A job whose entity was deleted while it ran leaves the entity DELETED.
* :meth:`shutdown` stops taking work: queued jobs stay PENDING (the next service on the same home
  resumes them), running jobs get ``timeout`` seconds to finish.
* Jobs queued when the interpreter exits are not started (they stay PENDING too).
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
from amlflow.service.state import Entity, StateStore

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
    """Schedules and runs entity jobs (see the module docstring)."""

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
    ) -> None:
        self.state = state
        self.redact = redact
        self.jobs = dict(jobs)
        self.deps = deps
        self.log_dir = log_dir
        self.on_finish = on_finish
        self._pool = ThreadPoolExecutor(max_workers=max_jobs, thread_name_prefix="amlflow-job")
        self._lock = threading.RLock()
        self._queued: set[tuple[str, str]] = set()  # submitted, not finished
        self._waiting: set[tuple[str, str]] = set()  # PENDING on inputs
        self._running: set[tuple[str, str]] = set()
        self._futures: set[Future[None]] = set()
        self._stopping = False

    # ------------------------------------------------------------------------------------ schedule

    def log_path(self, kind: str, entity_id: str) -> Path:
        return self.log_dir / kind / f"{entity_dir_name(kind, entity_id)}.log"

    def schedule(self, kind: str, entity_id: str) -> None:
        """Submit the entity's job if its inputs are ready; fail it if an input failed; else let it wait."""
        with self._lock:
            if self._stopping or (kind, entity_id) in self._queued:
                return
            entity = self.state.get(kind, entity_id)
            if entity is None or entity.status != "PENDING":
                self._waiting.discard((kind, entity_id))
                return
            if kind not in self.jobs:
                self._finish_failed(entity, f"No job is defined for {kind} entities.")
                return
            blocker = self._blocked(entity)
            if blocker == "wait":
                self._waiting.add((kind, entity_id))
                return
            self._waiting.discard((kind, entity_id))
            if blocker is not None:
                self._finish_failed(entity, blocker)
                return
            self._queued.add((kind, entity_id))
            future = self._pool.submit(self._run, kind, entity_id)
            self._futures.add(future)
            future.add_done_callback(functools.partial(self._done, key=(kind, entity_id)))

    def _done(self, future: Future[None], key: tuple[str, str]) -> None:
        with self._lock:
            self._futures.discard(future)
            if future.cancelled():  # cancelled by shutdown before it started: still PENDING
                self._queued.discard(key)

    def kick(self) -> None:
        """Look at every waiting entity again (after a job ended or an entity was deleted)."""
        with self._lock:
            waiting = sorted(self._waiting)
        for kind, entity_id in waiting:
            self.schedule(kind, entity_id)

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

    # ----------------------------------------------------------------------------------------- run

    def _run(self, kind: str, entity_id: str) -> None:
        key = (kind, entity_id)
        try:
            if self._stopping or not threading.main_thread().is_alive():
                return  # left PENDING: resumed by the next service on this home
            started = time.perf_counter()
            stamp = now()

            def start(e: Entity) -> bool:
                if e.status != "PENDING":
                    return False
                e.attrs.update(Status="INPROGRESS", StartedAt=stamp, LastUpdatedAt=stamp)
                e.attrs.setdefault("LogUri", self.log_path(kind, entity_id).as_uri())
                return True

            entity = self.state.update(kind, entity_id, start)
            if entity is None or entity.status != "INPROGRESS" or entity.attrs.get("StartedAt") != stamp:
                return
            with self._lock:
                self._running.add(key)
            ctx = JobContext(entity, self.log_path(kind, entity_id))
            ctx.log(f"{kind} {entity_id}: started")
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

                finished = self.state.update(kind, entity_id, complete)
                ctx.log(f"{kind} {entity_id}: COMPLETED in {elapsed_ms} ms")
                if finished is not None and self.on_finish is not None:
                    self.on_finish(finished)
        finally:
            with self._lock:
                self._queued.discard(key)
                self._running.discard(key)
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

        failed = self.state.update(entity.kind, entity.id, fail)
        with self._lock:
            self._waiting.discard((entity.kind, entity.id))
        if failed is not None and failed.status == "FAILED" and self.on_finish is not None:
            self.on_finish(failed)
        # jobs waiting on this one fail too
        if not self._stopping and self._waiting:
            threading.Thread(target=self.kick, name="amlflow-kick", daemon=True).start()

    # ------------------------------------------------------------------------------------ shutdown

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "jobs_running": len(self._running),
                "jobs_queued": len(self._queued) - len(self._running),
                "jobs_waiting": len(self._waiting),
            }

    def shutdown(self, timeout: float | None = 30.0) -> bool:
        """Stop taking work; wait up to ``timeout`` s for running jobs. True if none is still running."""
        with self._lock:
            self._stopping = True
            futures = list(self._futures)
        self._pool.shutdown(wait=False, cancel_futures=True)
        # cancelled futures never reach "done" for concurrent.futures.wait: wait for the others only
        _, not_done = wait_futures([f for f in futures if not f.cancelled()], timeout=timeout)
        return not not_done


def _label(kind: str) -> str:
    return {
        "DataSource": "Datasource",
        "MLModel": "ML model",
        "Evaluation": "Evaluation",
        "BatchPrediction": "Batch prediction",
    }.get(kind, kind)
