"""Datasource tasks: ``CreateDataSourceFromS3`` with a deterministic ID, and waiting for it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from prefect import get_run_logger, task

from amlflow.client import ml_client
from tasks._common import (
    DEFAULT_WAIT_TIMEOUT,
    RETRY_POLICY,
    entity_id,
    resolve_text_or_uri,
    summarize,
    wait_for_entity,
)

__all__ = ["create_data_source_from_s3", "split", "wait_for_data_source"]


def split(begin: int, end: int, *, strategy: str = "sequential", seed: str | None = None) -> dict[str, Any]:
    """An AML ``DataRearrangement`` selecting ``begin``–``end`` percent of the data.

    Example:
        >>> split(0, 70)
        {'splitting': {'percentBegin': 0, 'percentEnd': 70}}
    """
    splitting: dict[str, Any] = {"percentBegin": begin, "percentEnd": end}
    if strategy != "sequential":
        splitting["strategy"] = strategy
        splitting["strategyParams"] = {"randomSeed": seed or "amlflow"}
    return {"splitting": splitting}


@task(
    name="create_data_source_from_s3",
    **RETRY_POLICY,
)
def create_data_source_from_s3(
    data_location_s3: str,
    schema: str,
    *,
    fingerprint: str = "",
    rearrangement: Mapping[str, Any] | None = None,
    compute_statistics: bool = True,
    name: str | None = None,
    salt: str = "",
    endpoint_url: str | None = None,
) -> str:
    """Create an S3 datasource whose ID is derived from its data and parameters.

    Re-running with the same inputs re-attaches to the same datasource (AML's create is idempotent on the
    ID), so a retried task never duplicates it.

    Args:
        data_location_s3: ``s3://bucket/key`` of the CSV (or a prefix ending in ``/``).
        schema: the AML data schema: a local ``.schema`` file, its JSON text, or an ``s3://`` URI.
        fingerprint: content hash of the data (from ``upload_inputs``), part of the ID.
        rearrangement: AML ``DataRearrangement`` (e.g. ``split(0, 70)``), or None for all rows.
        compute_statistics: compute data insights (required for a training datasource).
        name: the datasource's display name.
        salt: any string; change it to force new entities for unchanged inputs.
        endpoint_url: an AML endpoint (default: environment / embedded).

    Returns:
        The ``DataSourceId``.

    Example:
        >>> create_data_source_from_s3("s3://amlflow/wine/in/wine.csv", "schemas/wine.csv.schema",
        ...                            rearrangement=split(0, 70), name="wine train 0-70%")
        'ds-...'
    """
    schema_text, schema_uri = resolve_text_or_uri(schema, "schema")
    spec: dict[str, Any] = {"DataLocationS3": data_location_s3}
    if schema_text is not None:
        spec["DataSchema"] = schema_text
    else:
        spec["DataSchemaLocationS3"] = schema_uri
    if rearrangement:
        spec["DataRearrangement"] = json.dumps(rearrangement, separators=(",", ":"))
    ds_id = entity_id(
        "ds",
        data_location_s3,
        fingerprint,
        schema_text or schema_uri,
        spec.get("DataRearrangement"),
        compute_statistics,
        name,  # two flows asking for the same data under different names get their own datasources
        salt,
    )
    kwargs: dict[str, Any] = {
        "DataSourceId": ds_id,
        "DataSpec": spec,
        "ComputeStatistics": compute_statistics,
    }
    if name:
        kwargs["DataSourceName"] = name
    ml_client(endpoint_url=endpoint_url).create_data_source_from_s3(**kwargs)
    get_run_logger().info("datasource %s (%s) requested from %s", ds_id, name or "-", data_location_s3)
    return ds_id


@task(
    name="wait_for_data_source",
    **RETRY_POLICY,
)
def wait_for_data_source(
    data_source_id: str,
    *,
    timeout_seconds: float = DEFAULT_WAIT_TIMEOUT,
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Wait (polling ``GetDataSource`` with backoff 0.2 s → 5 s) until the datasource is COMPLETED.

    Args:
        data_source_id: the datasource.
        timeout_seconds: give up after this long.
        endpoint_url: an AML endpoint (default: environment / embedded).

    Returns:
        The JSON-safe ``GetDataSource`` response.

    Raises:
        EntityFailedError: the datasource ended FAILED, with AML's message.

    Example:
        >>> wait_for_data_source("ds-0a1b2c")["Status"]
        'COMPLETED'
    """
    ml = ml_client(endpoint_url=endpoint_url)
    done = wait_for_entity(
        ml.get_data_source, "DataSourceId", data_source_id, "datasource", timeout_seconds=timeout_seconds
    )
    return summarize(done)
