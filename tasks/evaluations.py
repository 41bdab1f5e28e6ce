"""Evaluation tasks: ``CreateEvaluation`` with a deterministic ID, and waiting for its metric."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from amlflow.client import ml_client
from tasks._common import DEFAULT_WAIT_TIMEOUT, RETRY_POLICY, entity_id, summarize, wait_for_entity

__all__ = ["create_evaluation", "wait_for_evaluation"]


@task(name="create_evaluation", **RETRY_POLICY)
def create_evaluation(
    ml_model_id: str,
    evaluation_data_source_id: str,
    *,
    name: str | None = None,
    salt: str = "",
    endpoint_url: str | None = None,
) -> str:
    """Create an evaluation of a model on a datasource; the ID is derived from both.

    Example:
        >>> create_evaluation("ml-0a1b2c", "ds-3d4e5f", name="wine evaluation")
        'ev-...'
    """
    ev_id = entity_id("ev", ml_model_id, evaluation_data_source_id, name, salt)
    kwargs: dict[str, Any] = {
        "EvaluationId": ev_id,
        "MLModelId": ml_model_id,
        "EvaluationDataSourceId": evaluation_data_source_id,
    }
    if name:
        kwargs["EvaluationName"] = name
    ml_client(endpoint_url=endpoint_url).create_evaluation(**kwargs)
    get_run_logger().info("evaluation %s requested: %s on %s", ev_id, ml_model_id, evaluation_data_source_id)
    return ev_id


@task(name="wait_for_evaluation", **RETRY_POLICY)
def wait_for_evaluation(
    evaluation_id: str,
    *,
    timeout_seconds: float = DEFAULT_WAIT_TIMEOUT,
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Wait (polling ``GetEvaluation`` with backoff 0.2 s → 5 s) until the evaluation is COMPLETED.

    Returns:
        The JSON-safe ``GetEvaluation`` response (``PerformanceMetrics.Properties`` holds the metric).

    Raises:
        EntityFailedError: the evaluation ended FAILED, with AML's message.

    Example:
        >>> wait_for_evaluation("ev-0a1b2c")["PerformanceMetrics"]["Properties"]
        {'RegressionRMSE': '0.70...'}
    """
    ml = ml_client(endpoint_url=endpoint_url)
    done = wait_for_entity(
        ml.get_evaluation, "EvaluationId", evaluation_id, "evaluation", timeout_seconds=timeout_seconds
    )
    metrics = done.get("PerformanceMetrics", {}).get("Properties", {})
    get_run_logger().info("evaluation %s: %s", evaluation_id, metrics)
    return summarize(done)
