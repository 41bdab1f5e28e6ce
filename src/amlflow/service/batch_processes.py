"""A batch prediction scored on every core of this machine (``AMLFLOW_BATCH_PROCESSES``; docs/scale.md,
"Batch predictions on this machine's cores").

The in-process batch job scores its rows in the job's thread (features, scores and AML's CSV hold the GIL;
only the deflate runs beside it). With ``AMLFLOW_BATCH_PROCESSES`` of 2 or more (the default: one per core
on a machine with several) a batch datasource of at least :data:`MIN_ROWS` output positions is scored as a
Dask cluster scores it, on worker processes of the service: the same partitions of whole blocks
(:func:`amlflow.service.distributed.partitions`), each one ``write_batch_output`` over its positions on a
worker (``python -m amlflow.reader_worker``, ``batch_part``: the model and the table read from the job's own
folders, kept for the next partition), cut into the span's blocks and deflated there, written to a file in
the job's work folder; the job's thread appends the blocks in order. The same blocks, so the same bytes, as
the in-thread job's (tests/service/test_batch_processes.py).

An evaluation of :data:`MIN_ROWS` rows or more whose scores fit the budget (the engine's exact path) gets
its scores the same way (:class:`ProcessEvaluationModel`: ``predict_table`` of the whole table from the
workers' partitions, each saved as an ``.npy`` file), so the metric and the report are the in-thread job's;
the bounded path stays in the job's thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from amlflow.engine.batch import BatchCounts
from amlflow.engine.model import Predictions
from amlflow.service import reader_processes
from amlflow.service.distributed import partitions
from amlflow.service.jobs import JobFailed
from amlflow.storage.gzip_blocks import BlockGzipWriter, DeflatedBlock

__all__ = ["MIN_ROWS", "ROLE", "ProcessEvaluationModel", "ProcessScorer"]

#: how the workers are named in failures (and the pool's key)
ROLE = "batch worker"
#: a batch of fewer output positions is scored in the job's thread (a partition's round trip and a
#: worker's first read of the model cost more than scoring it)
MIN_ROWS = 20_000


def _call(pool: reader_processes.ReaderPool, request: dict[str, Any]) -> dict[str, Any]:
    """One request on a batch worker: its answer; an engine error is raised as the in-thread job's, a
    dead or failing worker as a JobFailed naming it."""
    try:
        return reader_processes.checked(pool.call(request), ROLE)
    except reader_processes.WorkerDied as exc:
        raise JobFailed(f"scoring: {exc}") from None
    except RuntimeError as exc:
        raise JobFailed(str(exc)) from None


class ProcessScorer:
    """A batch prediction's spans scored on ``processes`` workers; :meth:`write` adds span ``i``'s blocks
    to a :class:`~amlflow.storage.gzip_blocks.BlockGzipWriter` in order, as
    :class:`~amlflow.service.distributed.BatchScorer` does for a cluster."""

    def __init__(
        self,
        processes: int,
        *,
        model_dir: Path,
        table_dir: Path,
        schema_json: str,
        threshold: float,
        spans: Sequence[tuple[int, int]],
        block_rows: int,
        work: Path,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._pool = reader_processes.pool(processes, ROLE)
        self._work = work
        plan = partitions(spans, processes, block_rows)
        self._executor = ThreadPoolExecutor(processes, thread_name_prefix="amlflow-batch-part")
        self._futures: list[list[Future[tuple[Path, dict[str, Any]]]]] = []
        k = 0
        for (span_first, _), parts in zip(spans, plan, strict=True):
            futures = []
            for a, b in parts:
                request = {
                    "op": "batch_part",
                    "model": str(model_dir),
                    "table": str(table_dir),
                    "schema": schema_json,
                    "threshold": float(threshold),
                    "first": a,
                    "stop": b,
                    "span_first": span_first,
                    "block_rows": block_rows,
                    "out": str(work / f"blocks-{k:06d}"),
                }
                futures.append(self._executor.submit(self._score, request))
                k += 1
            self._futures.append(futures)
        if log is not None:
            log(
                f"scoring in {processes} batch worker processes: {k} partition(s) of up to "
                f"{max((b - a for p in plan for a, b in p), default=0)} rows, compressed there in blocks of "
                f"{block_rows} rows"
            )

    def _score(self, request: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        return Path(request["out"]), _call(self._pool, request)

    def write(self, index: int, out: BlockGzipWriter) -> BatchCounts:
        """Add span ``index``'s blocks (its partitions' in order) to ``out``."""
        total = invalid = 0
        for future in self._futures[index]:
            path, answer = future.result()
            with path.open("rb") as fh:
                for length, crc, size in answer["blocks"]:
                    out.add(DeflatedBlock(fh.read(int(length)), int(crc), int(size)))
            path.unlink()
            total += int(answer["total"])
            invalid += int(answer["invalid"])
        self._futures[index] = []
        return BatchCounts(total=total, invalid=invalid)

    def close(self) -> None:
        """Cancel what has not started and wait for what has (no worker still writes in the work
        folder)."""
        with contextlib.suppress(Exception):
            self._executor.shutdown(wait=True, cancel_futures=True)


class ProcessEvaluationModel:
    """``model`` whose scores of a whole table come from ``processes`` workers, by partition; every other
    attribute (and a partial ``predict_table``: the engine's bounded path) is the model's own, so the
    engine's ``evaluate`` runs unchanged on it."""

    def __init__(
        self,
        processes: int,
        model: Any,
        *,
        model_dir: Path,
        table_dir: Path,
        work: Path,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._model = model
        self._processes = processes
        self._dirs = (str(model_dir), str(table_dir))
        self._work = work
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict_table(
        self, table: Any, schema: Any = None, *, start: int = 0, stop: int | None = None
    ) -> Predictions:
        if start != 0 or (stop is not None and stop != table.n_rows) or table.n_rows == 0:
            return self._model.predict_table(table, schema, start=start, stop=stop)  # type: ignore[no-any-return]
        pool = reader_processes.pool(self._processes, ROLE)
        (plan,) = partitions([(0, int(table.n_rows))], self._processes)
        self._work.mkdir(parents=True, exist_ok=True)

        def one(k: int) -> np.ndarray:
            a, b = plan[k]
            out = self._work / f"scores-{k:06d}.npy"
            request = {"op": "score_part", "model": self._dirs[0], "table": self._dirs[1], "start": a,
                       "stop": b, "out": str(out)}  # fmt: skip
            _call(pool, request)
            scores: np.ndarray = np.load(out, allow_pickle=False)
            out.unlink()
            return scores

        if self._log is not None:
            self._log(f"scoring in {self._processes} batch worker processes: {len(plan)} partition(s)")
        with ThreadPoolExecutor(self._processes, thread_name_prefix="amlflow-score-part") as executor:
            parts = list(executor.map(one, range(len(plan))))
        scores = np.concatenate(parts)
        return Predictions(self._model.model_type, self._model.classes, scores, np.ones(len(scores), bool))
