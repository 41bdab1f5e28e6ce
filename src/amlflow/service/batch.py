"""Batch predictions: the job writes one gzipped result per input file and a manifest under
``<OutputUri>/batch-prediction/`` (``engine.write_batch_output`` per file; docs/aml-reference.md §8).
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from amlflow.service.entities import DESCRIBE_FIELDS, EntityOps
from amlflow.service.errors import (
    InvalidInputException,
)
from amlflow.service.jobs import JobContext, JobResult
from amlflow.service.layout import BATCH_WORK_PREFIX, entity_dir_name
from amlflow.storage import parse_s3_uri

__all__ = ["BatchPredictions"]


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
        dask = None
        if self.settings.dask_address:  # scored on a Dask cluster, same bytes (service/distributed.py)
            from amlflow.service.distributed import BatchScorer

            dask = BatchScorer(
                self.settings.dask_address,
                self.artifacts,
                model_id=entity.attrs["MLModelId"],
                datasource_id=ds.id,
                schema_json=ds.internal["schema"],
                threshold=threshold,
                spans=[rows or (0, table.n_positions) for _, _, rows in spans],
                log=ctx.log,
            )
        work = Path(
            tempfile.mkdtemp(
                prefix=f"{BATCH_WORK_PREFIX}{entity_dir_name('BatchPrediction', entity.id)}-", dir=self.home
            )
        )
        try:
            # 1. score every input file into local parts: the long part, nothing visible yet
            for i, (input_uri, key, rows) in enumerate(spans):
                name = PurePosixPath(key).name or "data"
                # AML: <id>-<input file name>.gz. AML read only plain CSV; for a gzipped input (an amlflow
                # extension) the output is named after the CSV inside it, not "<name>.gz.gz".
                name = name.removesuffix(".gz") or name
                gz = work / f"part-{i}.gz"
                with gzip.open(gz, "wb", compresslevel=6) as out:
                    if dask is not None:
                        counts = dask.write(i, cast(BinaryIO, out))
                    else:
                        counts = self.engine.write_batch_output(
                            model, table, schema, cast(BinaryIO, out), threshold=threshold, rows=rows
                        )
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
            if dask is not None:
                dask.close()
            shutil.rmtree(work, ignore_errors=True)
        ctx.log(f"scored {total} records ({invalid} invalid), threshold {threshold}")
        return JobResult({"TotalRecordCount": total, "InvalidRecordCount": invalid})

    def get_batch_prediction(self, *, BatchPredictionId: str) -> dict[str, Any]:
        return self._out(
            self._get("BatchPrediction", BatchPredictionId), (*DESCRIBE_FIELDS["BatchPrediction"], "LogUri")
        )
