"""Batch predictions: the job writes one gzipped result per input file and a manifest under
``<OutputUri>/batch-prediction/`` (``engine.write_batch_output`` per file; docs/aml-reference.md §8).

A result file is one gzip member made of independently compressed blocks
(:mod:`amlflow.storage.gzip_blocks`): block ``j`` of an input file's span holds the CSV of its output
positions ``[first + j * R, first + (j + 1) * R)`` (block 0 also the header), with ``R`` =
:func:`block_rows` of the output's layout — a function of the data, never of where or by how many
workers the rows are scored. The in-process job cuts the engine's CSV into these blocks as it is written
and deflates them on a second thread; on a Dask cluster (``service/distributed.py``) and on this machine's
batch worker processes (``service/batch_processes.py``, a batch of ``MIN_ROWS`` or more) every worker cuts
and deflates the blocks of its own partitions and the service only appends them. Same blocks, same bytes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from amlflow.engine.schema import Schema
from amlflow.engine.table import Table
from amlflow.service import batch_processes
from amlflow.service.entities import DESCRIBE_FIELDS, EntityOps
from amlflow.service.errors import (
    InvalidInputException,
)
from amlflow.service.jobs import JobContext, JobResult
from amlflow.service.layout import BATCH_WORK_PREFIX, entity_dir_name
from amlflow.storage import parse_s3_uri
from amlflow.storage.gzip_blocks import BlockGzipWriter, DeflatedBlock, RecordBlocks, deflate_block

__all__ = ["BatchPredictions", "RecordBlocks", "block_rows"]

#: the uncompressed size a block of the output aims at (~256 KiB of CSV: 0.7 % larger at level 6 than
#: one stream; smaller blocks lose more, larger ones are coarser units of work on a cluster)
BLOCK_BYTES = 256 * 1024
#: rows per block are a power of two in MIN_BLOCK_ROWS..MAX_BLOCK_ROWS
MIN_BLOCK_ROWS = 1024
MAX_BLOCK_ROWS = 16384
#: bytes per output field the block size assumes (AML numbers such as ``1.237027E-1`` and the comma)
FIELD_BYTES = 12
#: blocks deflated ahead by the in-process job's compression thread before the writer waits for it
_AHEAD = 4


def block_rows(model: Any, table: Table, schema: Schema) -> int:
    """Output rows (positions) per compressed block of a batch output: the power of two nearest below
    ``BLOCK_BYTES / (FIELD_BYTES * fields)`` within ``MIN_BLOCK_ROWS..MAX_BLOCK_ROWS``, where ``fields``
    are the output's columns (``tag``, ``trueLabel``, then 2 for BINARY, one per class for MULTICLASS,
    1 for REGRESSION: docs/formats.md "Batch output"). MNIST's 10 classes: 2,048 rows (~240 KiB)."""
    names = set(table.names)
    fields = int(schema.row_id is not None and schema.row_id in names)
    fields += int(schema.target is not None and schema.target in names)
    model_type = getattr(model, "model_type", "")
    if model_type == "BINARY":
        fields += 2
    elif model_type == "MULTICLASS":
        fields += max(1, len(getattr(model, "classes", ()) or ()))
    else:
        fields += 1
    rows = MIN_BLOCK_ROWS
    while rows * 2 <= min(MAX_BLOCK_ROWS, BLOCK_BYTES // (FIELD_BYTES * fields)):
        rows *= 2
    return min(rows, MAX_BLOCK_ROWS)


class _DeflateAhead:
    """Deflates blocks on one other thread (zlib releases the GIL) while the caller writes the next,
    and adds them to ``writer`` in order; at most :data:`_AHEAD` blocks wait."""

    def __init__(self, pool: ThreadPoolExecutor, writer: BlockGzipWriter) -> None:
        self._pool = pool
        self._writer = writer
        self._pending: deque[Future[DeflatedBlock]] = deque()

    def __call__(self, raw: bytes) -> None:
        self._pending.append(self._pool.submit(deflate_block, raw))
        while self._pending and (len(self._pending) > _AHEAD or self._pending[0].done()):
            self._writer.add(self._pending.popleft().result())

    def finish(self) -> None:
        while self._pending:
            self._writer.add(self._pending.popleft().result())

    def cancel(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()


class BatchPredictions(EntityOps):
    """CreateBatchPrediction, GetBatchPrediction and the batch job."""

    def create_batch_prediction(
        self,
        *,
        BatchPredictionId: str,
        MLModelId: str,
        BatchPredictionDataSourceId: str,
        OutputUri: str,
        BatchPredictionName: str | None = None,
    ) -> dict[str, Any]:
        request = {
            "BatchPredictionId": BatchPredictionId,
            "BatchPredictionName": BatchPredictionName,
            "MLModelId": MLModelId,
            "BatchPredictionDataSourceId": BatchPredictionDataSourceId,
            "OutputUri": OutputUri,
        }
        if self.state.get("BatchPrediction", BatchPredictionId) is not None:
            return self._create("BatchPrediction", BatchPredictionId, request, {})
        self._check_uri(OutputUri, "OutputUri")
        _, key = parse_s3_uri(OutputUri)
        if "//" in key or "/./" in f"/{key}" or "/../" in f"/{key}/" or ":" in key:
            raise InvalidInputException(
                f"OutputUri: {OutputUri!r} must not contain ':', '//', '/./' or '/../' in its key."
            )
        self._input("MLModel", MLModelId, "MLModelId")
        ds = self._input("DataSource", BatchPredictionDataSourceId, "BatchPredictionDataSourceId")
        attrs = {
            "Name": BatchPredictionName,
            "MLModelId": MLModelId,
            "BatchPredictionDataSourceId": BatchPredictionDataSourceId,
            "InputDataLocationS3": ds.attrs.get("DataLocationS3"),
            "OutputUri": OutputUri,
        }
        return self._create("BatchPrediction", BatchPredictionId, request, attrs)

    def _batch_processes(self) -> int:
        """How many worker processes a large batch of this service is scored on: none when its engine is
        not the real one (a test's stand-in scores in the job's thread)."""
        from amlflow.engine.batch import write_batch_output

        if self.engine.write_batch_output is not write_batch_output:
            return 0
        return self.settings.resolved_batch_processes()

    def _batch_job(self, ctx: JobContext) -> JobResult:
        entity = ctx.entity
        model, table, schema, ds = self._scoring_inputs(entity, "BatchPredictionDataSourceId")
        model_entity = self._get("MLModel", entity.attrs["MLModelId"])
        threshold = float(model_entity.attrs.get("ScoreThreshold", 0.5))
        base = entity.attrs["OutputUri"].rstrip("/") + "/batch-prediction/"
        objects = ds.internal.get("objects") or [[ds.attrs["DataLocationS3"], ds.attrs["DataLocationS3"], 0]]
        manifest: dict[str, str] = {}
        by_key = {str(o[1]): str(o[0]) for o in objects}
        files = [(str(k), int(a), int(b)) for k, a, b in table.files]
        if len(objects) == 1 or len(files) <= 1:
            spans: list[tuple[str, str, tuple[int, int] | None]] = [
                (str(objects[0][0]), str(objects[0][1]), None)
            ]
        else:
            spans = [(by_key.get(key, key), key, (start, stop)) for key, start, stop in files]
        total = invalid = 0
        staged: list[tuple[Path, str, str]] = []  # (local part, result URI, input URI)
        published: list[str] = []
        rows_per_block = block_rows(model, table, schema)
        scorer: Any = None  # the partitions scored elsewhere: a Dask cluster or this machine's workers
        if self.settings.dask_address:  # scored on a Dask cluster, same bytes (service/distributed.py)
            from amlflow.service.distributed import BatchScorer

            scorer = BatchScorer(
                self.settings.dask_address,
                self.artifacts,
                model_id=entity.attrs["MLModelId"],
                datasource_id=ds.id,
                schema_json=ds.internal["schema"],
                threshold=threshold,
                spans=[rows or (0, table.n_positions) for _, _, rows in spans],
                block_rows=rows_per_block,
                log=ctx.log,
            )
        work = Path(
            tempfile.mkdtemp(
                prefix=f"{BATCH_WORK_PREFIX}{entity_dir_name('BatchPrediction', entity.id)}-", dir=self.home
            )
        )
        processes = self._batch_processes()
        directory = getattr(table, "directory", None)
        if (
            scorer is None
            and processes > 1
            and directory is not None
            and table.n_positions >= batch_processes.MIN_ROWS
        ):
            scorer = batch_processes.ProcessScorer(  # same bytes (docs/scale.md)
                processes,
                model_dir=self._fetched("MLModel", entity.attrs["MLModelId"]) / "model",
                table_dir=Path(directory),
                schema_json=ds.internal["schema"],
                threshold=threshold,
                spans=[rows or (0, table.n_positions) for _, _, rows in spans],
                block_rows=rows_per_block,
                work=work,
                log=ctx.log,
            )
        deflater = None if scorer is not None else ThreadPoolExecutor(1, thread_name_prefix="amlflow-deflate")
        try:
            # 1. score every input file into local parts: the long part, nothing visible yet
            for i, (input_uri, key, rows) in enumerate(spans):
                name = PurePosixPath(key).name or "data"
                # AML: <id>-<input file name>.gz. AML read only plain CSV; for a gzipped input (an amlflow
                # extension) the output is named after the CSV inside it, not "<name>.gz.gz".
                name = name.removesuffix(".gz") or name
                gz = work / f"part-{i}.gz"
                with gz.open("wb") as fh:
                    writer = BlockGzipWriter(cast(BinaryIO, fh))
                    if scorer is not None:
                        counts = scorer.write(i, writer)
                    else:
                        assert deflater is not None
                        ahead = _DeflateAhead(deflater, writer)
                        sink = RecordBlocks(rows_per_block, header=True, emit=ahead)
                        try:
                            counts = self.engine.write_batch_output(
                                model, table, schema, cast(BinaryIO, sink), threshold=threshold, rows=rows
                            )
                            sink.close()
                            ahead.finish()
                        except BaseException:
                            ahead.cancel()
                            raise
                    writer.close()
                total += int(counts.total)
                invalid += int(counts.invalid)
                staged.append((gz, f"{base}result/{entity.id}-{name}.gz", input_uri))
                ctx.log(f"scored {input_uri}: {counts.total} records ({counts.invalid} invalid)")
            # 2. publish the parts, then the manifest last: a reader that sees the manifest sees every part
            for gz, result_uri, input_uri in staged:
                self.storage.write_atomic(result_uri, gz)
                published.append(result_uri)
                manifest[input_uri] = result_uri
                ctx.log(f"wrote {result_uri}")
            self.storage.write_atomic(f"{base}{entity.id}.manifest", json.dumps(manifest).encode("utf-8"))
        except BaseException:
            for uri in published:  # all or nothing: a failed batch leaves no parts behind
                try:
                    self.storage.delete(uri)
                except Exception as exc:  # the failure itself is what the entity reports
                    ctx.log(f"could not remove {uri}: {exc}")
            raise
        finally:
            if scorer is not None:
                scorer.close()
            if deflater is not None:
                deflater.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(work, ignore_errors=True)
        ctx.log(f"scored {total} records ({invalid} invalid), threshold {threshold}")
        return JobResult({"TotalRecordCount": total, "InvalidRecordCount": invalid})

    def get_batch_prediction(self, *, BatchPredictionId: str) -> dict[str, Any]:
        return self._out(
            self._get("BatchPrediction", BatchPredictionId), (*DESCRIBE_FIELDS["BatchPrediction"], "LogUri")
        )
