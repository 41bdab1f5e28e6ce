"""Datasources: CreateDataSourceFromS3 validates the schema and rearrangement at once; the job reads the
files (``engine.build_dataset``; with ``AMLFLOW_DASK_ADDRESS``, by file and byte range on the cluster:
:mod:`amlflow.service.dask_datasource`, the same table), writes the encoded table and the data insights
(docs/aml-reference.md §3–4).
"""

from __future__ import annotations

import functools
import json
import shutil
from typing import Any

from amlflow.engine.dataset import EncodedTable, Source, build_dataset
from amlflow.engine.errors import EngineError
from amlflow.engine.rearrange import parse_rearrangement
from amlflow.engine.schema import parse_schema
from amlflow.engine.stats import compute_statistics
from amlflow.service import reader_processes
from amlflow.service.entities import DESCRIBE_FIELDS, EntityOps, write_json
from amlflow.service.errors import (
    InvalidInputException,
    ResourceNotFoundException,
    from_engine,
)
from amlflow.service.jobs import JobContext, JobFailed, JobResult
from amlflow.service.validate import check_json_document
from amlflow.storage import storage_spec

__all__ = ["DataSources"]


class DataSources(EntityOps):
    """CreateDataSourceFromS3 (RDS and Redshift are refused), GetDataSource, the datasource job, insights."""

    def create_data_source_from_s3(
        self,
        *,
        DataSourceId: str,
        DataSpec: dict[str, Any],
        DataSourceName: str | None = None,
        ComputeStatistics: bool | None = None,
    ) -> dict[str, Any]:
        location = DataSpec.get("DataLocationS3")
        if not location:
            raise InvalidInputException("DataSpec.DataLocationS3: required")
        self._check_uri(location, "DataSpec.DataLocationS3")
        inline, schema_uri = DataSpec.get("DataSchema"), DataSpec.get("DataSchemaLocationS3")
        if inline and schema_uri:
            raise InvalidInputException("DataSpec: give either DataSchema or DataSchemaLocationS3, not both.")
        request = {
            "DataSourceId": DataSourceId,
            "DataSourceName": DataSourceName,
            "DataSpec": DataSpec,
            "ComputeStatistics": bool(ComputeStatistics),
        }
        existing = self.state.get("DataSource", DataSourceId)
        if existing is not None:  # idempotent retry: compare before re-reading anything
            return self._create("DataSource", DataSourceId, request, {})
        if inline:
            schema_text, member = inline, "DataSpec.DataSchema"
        elif schema_uri:
            self._check_uri(schema_uri, "DataSpec.DataSchemaLocationS3")
            schema_text, member = (
                self._read_text(schema_uri, "DataSpec.DataSchemaLocationS3"),
                "DataSpec.DataSchemaLocationS3",
            )
            check_json_document(schema_text, member)
        else:
            raise InvalidInputException("DataSpec: one of DataSchema or DataSchemaLocationS3 is required.")
        try:
            schema = parse_schema(schema_text)
        except EngineError as exc:
            raise from_engine(exc, member) from None
        rearrangement_text = DataSpec.get("DataRearrangement")
        try:
            parse_rearrangement(rearrangement_text or None)
        except EngineError as exc:
            raise from_engine(exc, "DataSpec.DataRearrangement") from None
        attrs = {
            "DataLocationS3": location,
            "DataRearrangement": rearrangement_text,
            "Name": DataSourceName,
            "ComputeStatistics": bool(ComputeStatistics),
        }
        return self._create("DataSource", DataSourceId, request, attrs, {"schema": schema.to_json()})

    def _unsupported(self, op: str) -> dict[str, Any]:
        raise InvalidInputException(
            f"{op} is not supported by amlflow (no database access): export the query result to CSV in S3 "
            f"(or the local storage) and use CreateDataSourceFromS3."
        )

    def create_data_source_from_rds(self, **kwargs: Any) -> dict[str, Any]:
        return self._unsupported("CreateDataSourceFromRDS")

    def create_data_source_from_redshift(self, **kwargs: Any) -> dict[str, Any]:
        return self._unsupported("CreateDataSourceFromRedshift")

    def _reader_processes(self) -> int:
        """How many datasource reader processes this service uses: none when its engine is not the real
        one (a test's stand-in runs in the job's thread) or its storage cannot be reached from another
        process."""
        engine = self.engine
        real = engine.build_dataset is build_dataset and engine.compute_statistics is compute_statistics
        if not real or storage_spec(self.storage) is None:
            return 0
        return self.settings.resolved_datasource_processes()

    def _datasource_job(self, ctx: JobContext) -> JobResult:
        entity = ctx.entity
        location = entity.attrs["DataLocationS3"]
        try:
            objects = [o for o in self.storage.list(location) if not o.key.endswith("/")]
        except ValueError as exc:  # the storage refuses the location (a link out of the root, say)
            raise JobFailed(f"DataLocationS3: {exc}") from None
        if not objects:
            raise JobFailed(
                f"DataLocationS3: no data found at {location} (no object or prefix of that name)."
            )
        ctx.log(f"reading {len(objects)} file(s) from {location}: {sum(o.size for o in objects)} bytes")
        schema = parse_schema(entity.internal["schema"])
        rearrangement = parse_rearrangement(entity.attrs.get("DataRearrangement") or None)
        sources = [Source(o.key, o.size, functools.partial(self.storage.open_read, o.uri)) for o in objects]
        folder = self._paths("DataSource", entity.id)
        table_dir = folder / "table"
        if table_dir.exists():
            shutil.rmtree(table_dir)
        folder.mkdir(parents=True, exist_ok=True)
        insights: dict[str, Any] | None = None
        budget = int(self.settings.memory_limit) if self.settings.memory_limit is not None else None
        try:
            info = None
            if self.settings.dask_address and self.settings.dask_datasource != "never":
                from amlflow.service import dask_datasource  # by file and byte range (docs/scale.md)

                info = dask_datasource.build_on_dask(
                    self.settings.dask_address,
                    self.artifacts,
                    self.storage,
                    datasource_id=entity.id,
                    objects=objects,
                    schema=schema,
                    rearrangement=rearrangement,
                    out_dir=table_dir,
                    when=self.settings.dask_datasource,
                    log=ctx.log,
                    memory_budget=budget,
                )
            processes = self._reader_processes()  # 0 unless the storage has a spec
            if info is None and processes > 1:  # a large input by byte range on every reader
                got = reader_processes.read_in_parts(
                    processes,
                    storage=self.storage,
                    objects=objects,
                    schema=schema,
                    schema_json=entity.internal["schema"],
                    rearrangement=rearrangement,
                    rearrangement_json=entity.attrs.get("DataRearrangement") or None,
                    out_dir=table_dir,
                    statistics=bool(entity.attrs.get("ComputeStatistics")),
                    memory_budget=budget,
                    log=ctx.log,
                )
                if got is not None:
                    info, insights = got
            if info is None and processes:  # docs/scale.md, "Datasource readers"
                ctx.log(f"reading in a datasource reader process (up to {processes} in this service)")
                info, insights = reader_processes.read_in_process(
                    processes,
                    storage=str(storage_spec(self.storage)),
                    objects=[(o.uri, o.key, o.size) for o in objects],
                    schema_json=entity.internal["schema"],
                    rearrangement_json=entity.attrs.get("DataRearrangement") or None,
                    out_dir=table_dir,
                    statistics=bool(entity.attrs.get("ComputeStatistics")),
                    memory_budget=budget,
                )
            if info is None:
                info = self.engine.build_dataset(
                    sources, schema, rearrangement, table_dir, memory_budget=budget
                )
        except reader_processes.WorkerDied as exc:
            raise JobFailed(f"DataLocationS3: {exc}") from None
        except ValueError as exc:
            if isinstance(exc, EngineError):
                raise
            raise JobFailed(f"DataLocationS3: {exc}") from None
        ctx.log(f"encoded {info.n_rows} rows ({info.n_rejected} rejected)")
        if info.n_rows == 0:
            shutil.rmtree(table_dir, ignore_errors=True)
            detail = (
                f"all {info.n_rejected} record(s) were rejected" if info.n_rejected else "it has no records"
            )
            raise JobFailed(
                f"DataLocationS3: no valid record in {location} for this datasource ({detail}; "
                "an empty file, a header only, or a DataRearrangement that selects nothing)."
            )
        attrs: dict[str, Any] = {
            "DataSizeInBytes": int(info.data_size_bytes),
            "NumberOfFiles": int(info.n_files),
        }
        internal: dict[str, Any] = {
            "objects": [[o.uri, o.key, o.size] for o in objects],
            "n_rows": int(info.n_rows),
            "n_rejected": int(info.n_rejected),
        }
        if info.n_rejected:
            attrs["Message"] = f"{info.n_rejected} record(s) were rejected (see the insights for samples)."
        if entity.attrs.get("ComputeStatistics"):
            if insights is None:
                insights = self.engine.compute_statistics(EncodedTable.open(table_dir), schema)
            if isinstance(insights, dict):
                insights.setdefault("rejected_samples", info.rejected_samples)
                insights.setdefault("statistics_computed", True)
            ctx.log("statistics computed")
        else:  # what the job knows anyway: record counts and rejected samples, no attribute statistics
            insights = {
                "n_rows": int(info.n_rows),
                "n_rejected": int(info.n_rejected),
                "target": schema.target,
                "attributes": [],
                "rejected_samples": list(info.rejected_samples),
                "statistics_computed": False,
            }
        write_json(folder / "insights.json", insights)
        return JobResult(attrs, internal, compute_time=bool(entity.attrs.get("ComputeStatistics")))

    def get_data_source(self, *, DataSourceId: str, Verbose: bool = False) -> dict[str, Any]:
        entity = self._get("DataSource", DataSourceId)
        out = self._out(entity, (*DESCRIBE_FIELDS["DataSource"], "LogUri"))
        if Verbose and "schema" in entity.internal:
            out["DataSourceSchema"] = entity.internal["schema"]
        return out

    def get_data_insights(self, data_source_id: str) -> dict[str, Any]:
        """The datasource's data insights, or ResourceNotFound before its job completed.

        With ``ComputeStatistics`` true: ``engine.stats.compute_statistics``' document; otherwise only
        the record counts and rejected samples (``"statistics_computed": false``, no attribute statistics).
        """
        entity = self._get("DataSource", data_source_id)
        try:
            path = self._fetched("DataSource", entity.id) / "insights.json"
        except FileNotFoundError:
            path = self._paths("DataSource", entity.id) / "insights.json"
        if not path.is_file():
            raise ResourceNotFoundException(
                f"DataSource {data_source_id} has no data insights (status {entity.status}, "
                f"ComputeStatistics={bool(entity.attrs.get('ComputeStatistics'))})."
            )
        return dict(json.loads(path.read_text("utf-8")))
