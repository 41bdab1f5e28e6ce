"""Real-time ``Predict`` off the event loop: its own worker threads and a per-prediction time budget.

A prediction is CPU work whose cost depends on the model's recipe and the record (n-grams over a 100 KB
text field cost far more than a few numbers). Run on the event loop, one costly prediction would stall
every other request, ``/health`` included; run in the thread pool the other operations share, a burst
of them would take every worker. So ``Predict`` gets a small pool of its own (``predict_workers``
threads), and each prediction a budget (``predict_timeout`` seconds, counted from submission, queueing
included): past it the caller gets ``LimitExceededException`` (one of ``Predict``'s modelled errors)
and a prediction still queued is dropped. One already running cannot be interrupted (Python threads
cannot be); it finishes in its worker and its result is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from amlflow.server.protocol import ProtocolError

__all__ = ["DEFAULT_PREDICT_TIMEOUT", "DEFAULT_PREDICT_WORKERS", "PredictPool"]

T = TypeVar("T")

#: Seconds a prediction may take, queueing included (AML answered "most requests within 100 ms").
DEFAULT_PREDICT_TIMEOUT = 5.0
#: Worker threads for predictions. Two, whatever the cores: they share the GIL with the event loop, so
#: more threads add contention, not throughput; a second one keeps a cheap model's predictions from
#: queueing behind one costly prediction. ``1`` gives the most cheap predictions per second.
DEFAULT_PREDICT_WORKERS = 2


class _Job:
    """One submitted call: run by a worker unless abandoned first, its outcome handed to the loop."""

    __slots__ = ("abandoned", "args", "fn", "future", "loop")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.fn = fn
        self.args = args
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.abandoned = False


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up (budget) meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class PredictPool:
    """Worker threads for predictions, each call bounded by ``timeout`` seconds.

    Leaner than ``loop.run_in_executor``: a C ``SimpleQueue`` feeds the workers and each outcome goes
    back with one ``call_soon_threadsafe``, which matters when a prediction itself takes ~0.1 ms.

    Args:
        workers: threads (started lazily, daemon: a prediction still running cannot hold up exit).
        timeout: the per-prediction budget in seconds.
    """

    def __init__(
        self, workers: int = DEFAULT_PREDICT_WORKERS, timeout: float = DEFAULT_PREDICT_TIMEOUT
    ) -> None:
        if workers < 1:
            raise ValueError(f"predict_workers: expected at least 1 thread, got {workers}")
        if not timeout > 0:
            raise ValueError(f"predict_timeout: expected a positive number of seconds, got {timeout}")
        self.workers = workers
        self.timeout = timeout
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, awaited at most ``timeout`` seconds.

        Raises:
            ProtocolError: ``LimitExceededException`` when the budget runs out.
        """
        if len(self._threads) < self.workers:
            self._start_worker()
        job = _Job(fn, args, asyncio.get_running_loop())
        self._queue.put(job)
        try:
            async with asyncio.timeout(self.timeout):
                return await job.future  # type: ignore[no-any-return]
        except TimeoutError:
            job.abandoned = True  # skipped if still queued; a running prediction finishes unobserved
            raise ProtocolError(
                "LimitExceededException",
                f"The prediction did not complete within the real-time budget of {self.timeout:g} seconds "
                f"(queueing included); simplify the recipe or the record, or use CreateBatchPrediction.",
            ) from None

    def _start_worker(self) -> None:
        with self._lock:
            if self._closed or len(self._threads) >= self.workers:
                return
            thread = threading.Thread(
                target=self._work, name=f"amlflow-predict-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.abandoned:
                continue
            result: Any = None
            error: BaseException | None = None
            try:
                result = job.fn(*job.args)
            except BaseException as exc:  # handed to the awaiting request, which reports it
                error = exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                job.loop.call_soon_threadsafe(_deliver, job.future, result, error)
            del job, result, error

    def shutdown(self) -> None:
        """Stop the workers once the queue is drained of predictions already submitted."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
