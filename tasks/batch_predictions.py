"""Batch prediction tasks: ``CreateBatchPrediction`` with a deterministic ID, and waiting for it."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from amlflow.client import ml_client
from tasks._common import DEFAULT_WAIT_TIMEOUT, RETRY_POLICY, entity_id, summarize, wait_for_entity

__all__ = ["create_batch_prediction", "wait_for_batch_prediction"]


@task(name="create_batch_prediction", **RETRY_POLICY)
def create_batch_prediction(
    ml_model_id: str,
    batch_data_source_id: str,
    output_uri: str,
    *,
    name: str | None = None,
    score_threshold: float | None = None,
    salt: str = "",
    endpoint_url: str | None = None,
) -> str:
    """Create a batch prediction; its ID is derived from the model, datasource, output and threshold.

    Args:
        ml_model_id: the model.
        batch_data_source_id: the datasource to score.
        output_uri: ``s3://`` folder; AML writes ``<output_uri>/batch-prediction/result/<id>-<file>.gz``.
        name: display name.
        score_threshold: the BINARY threshold in force (only part of the ID: a new threshold is a new
            batch prediction).
        salt: any string; change it to force a new batch prediction.
        endpoint_url: an AML endpoint (default: environment / embedded).

    Example:
        >>> create_batch_prediction("ml-0a1b2c", "ds-9f8e7d", "s3://amlflow/banking/output/")
        'bp-...'
    """
    bp_id = entity_id("bp", ml_model_id, batch_data_source_id, output_uri, score_threshold, name, salt)
    kwargs: dict[str, Any] = {
        "BatchPredictionId": bp_id,
        "MLModelId": ml_model_id,
        "BatchPredictionDataSourceId": batch_data_source_id,
        "OutputUri": output_uri,
    }
    if name:
        kwargs["BatchPredictionName"] = name
    ml_client(endpoint_url=endpoint_url).create_batch_prediction(**kwargs)
    get_run_logger().info("batch prediction %s requested: %s on %s", bp_id, ml_model_id, batch_data_source_id)
    return bp_id


@task(name="wait_for_batch_prediction", **RETRY_POLICY)
def wait_for_batch_prediction(
    batch_prediction_id: str,
    *,
    timeout_seconds: float = DEFAULT_WAIT_TIMEOUT,
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Wait (polling ``GetBatchPrediction`` with backoff 0.2 s → 5 s) until it is COMPLETED.

    Raises:
        EntityFailedError: the batch prediction ended FAILED, with AML's message.

    Example:
        >>> wait_for_batch_prediction("bp-0a1b2c")["TotalRecordCount"]
        28000
    """
    ml = ml_client(endpoint_url=endpoint_url)
    done = wait_for_entity(
        ml.get_batch_prediction,
        "BatchPredictionId",
        batch_prediction_id,
        "batch prediction",
        timeout_seconds=timeout_seconds,
    )
    return summarize(done)
