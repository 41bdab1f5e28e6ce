"""ML model tasks: ``CreateMLModel`` with a deterministic ID, waiting, ``UpdateMLModel``, champion tags."""

from __future__ import annotations

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

__all__ = [
    "ROLE_TAG",
    "create_ml_model",
    "find_champion",
    "set_model_role",
    "update_ml_model",
    "wait_for_ml_model",
]

#: Tag recording a model's role in re-training (AML rejects only ``aws:`` keys).
ROLE_TAG = "amlflow:role"
#: Tag naming the pipeline a model belongs to.
PIPELINE_TAG = "amlflow:pipeline"


@task(name="create_ml_model", **RETRY_POLICY)
def create_ml_model(
    training_data_source_id: str,
    model_type: str,
    *,
    recipe: str | None = None,
    parameters: Mapping[str, str] | None = None,
    name: str | None = None,
    salt: str = "",
    endpoint_url: str | None = None,
) -> str:
    """Create an ML model whose ID is derived from its training datasource, type, recipe and parameters.

    Args:
        training_data_source_id: a datasource created with ``ComputeStatistics=True``.
        model_type: ``BINARY``, ``MULTICLASS`` or ``REGRESSION``.
        recipe: a local recipe file, its JSON text, or an ``s3://`` URI; None = AML's suggested recipe.
        parameters: AML training parameters (``sgd.maxPasses`` ...), values as strings.
        name: the model's display name.
        salt: any string; change it to force a new model for unchanged inputs.
        endpoint_url: an AML endpoint (default: environment / embedded).

    Returns:
        The ``MLModelId``.

    Example:
        >>> create_ml_model("ds-0a1b2c", "REGRESSION", recipe="recipes/wine.recipe.json",
        ...                 parameters={"sgd.maxPasses": "10"})
        'ml-...'
    """
    params = {str(k): str(v) for k, v in (parameters or {}).items()}
    kwargs: dict[str, Any] = {
        "TrainingDataSourceId": training_data_source_id,
        "MLModelType": model_type,
    }
    recipe_key: str | None = None
    if recipe:
        text, uri = resolve_text_or_uri(recipe, "recipe")
        if text is not None:
            kwargs["Recipe"] = text
        else:
            kwargs["RecipeUri"] = uri
        recipe_key = text or uri
    if params:
        kwargs["Parameters"] = params
    # the name is part of the id: the pipeline's model and the re-training's challenger on the same data
    # are two models (one id with two names would be AML's IdempotentParameterMismatchException)
    ml_id = entity_id("ml", training_data_source_id, model_type, recipe_key, params, name, salt)
    kwargs["MLModelId"] = ml_id
    if name:
        kwargs["MLModelName"] = name
    ml_client(endpoint_url=endpoint_url).create_ml_model(**kwargs)
    get_run_logger().info("%s model %s requested on %s", model_type, ml_id, training_data_source_id)
    return ml_id


@task(name="wait_for_ml_model", **RETRY_POLICY)
def wait_for_ml_model(
    ml_model_id: str,
    *,
    timeout_seconds: float = DEFAULT_WAIT_TIMEOUT,
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Wait (polling ``GetMLModel`` with backoff 0.2 s → 5 s) until the model is COMPLETED.

    Raises:
        EntityFailedError: the model ended FAILED, with AML's message.

    Example:
        >>> wait_for_ml_model("ml-0a1b2c")["Status"]
        'COMPLETED'
    """
    ml = ml_client(endpoint_url=endpoint_url)
    return summarize(
        wait_for_entity(
            ml.get_ml_model, "MLModelId", ml_model_id, "ML model", timeout_seconds=timeout_seconds
        )
    )


@task(name="update_ml_model", **RETRY_POLICY)
def update_ml_model(
    ml_model_id: str,
    *,
    score_threshold: float | None = None,
    name: str | None = None,
    endpoint_url: str | None = None,
) -> str:
    """``UpdateMLModel``: set a BINARY model's ``ScoreThreshold`` and/or its name.

    Example:
        >>> update_ml_model("ml-0a1b2c", score_threshold=0.77)
        'ml-0a1b2c'
    """
    kwargs: dict[str, Any] = {"MLModelId": ml_model_id}
    if score_threshold is not None:
        kwargs["ScoreThreshold"] = float(score_threshold)
    if name:
        kwargs["MLModelName"] = name
    ml_client(endpoint_url=endpoint_url).update_ml_model(**kwargs)
    get_run_logger().info(
        "model %s updated: %s", ml_model_id, {k: v for k, v in kwargs.items() if k != "MLModelId"}
    )
    return ml_model_id


def _tags(ml: Any, ml_model_id: str) -> dict[str, str]:
    response = ml.describe_tags(ResourceId=ml_model_id, ResourceType="MLModel")
    return {t["Key"]: t.get("Value", "") for t in response.get("Tags", [])}


@task(name="find_champion", **RETRY_POLICY)
def find_champion(pipeline: str, *, endpoint_url: str | None = None) -> str | None:
    """The COMPLETED model tagged ``amlflow:role=champion`` for ``pipeline`` (the newest), or None.

    AML cannot filter Describe* by tag, so this pages through ``DescribeMLModels`` (Status COMPLETED)
    and reads each model's tags.

    Example:
        >>> find_champion("wine-regression")
        'ml-...'
    """
    ml = ml_client(endpoint_url=endpoint_url)
    paginator = ml.get_paginator("describe_ml_models")
    best: tuple[Any, str] | None = None
    for page in paginator.paginate(FilterVariable="Status", EQ="COMPLETED"):
        for model in page.get("Results", []):
            tags = _tags(ml, model["MLModelId"])
            if tags.get(PIPELINE_TAG) == pipeline and tags.get(ROLE_TAG) == "champion":
                stamp = tags.get("amlflow:promoted-at", "")
                if best is None or stamp > best[0]:
                    best = (stamp, model["MLModelId"])
    return best[1] if best else None


@task(name="set_model_role", **RETRY_POLICY)
def set_model_role(
    ml_model_id: str,
    pipeline: str,
    role: str,
    *,
    extra_tags: Mapping[str, str] | None = None,
    endpoint_url: str | None = None,
) -> dict[str, str]:
    """Record a model's role (``champion``, ``challenger``, ``retired``) with ``AddTags``.

    Returns:
        The model's tags after the change.

    Example:
        >>> set_model_role("ml-0a1b2c", "wine-regression", "champion")["amlflow:role"]
        'champion'
    """
    ml = ml_client(endpoint_url=endpoint_url)
    tags = {PIPELINE_TAG: pipeline, ROLE_TAG: role, **{str(k): str(v) for k, v in (extra_tags or {}).items()}}
    ml.add_tags(
        ResourceId=ml_model_id,
        ResourceType="MLModel",
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )
    get_run_logger().info("model %s tagged %s", ml_model_id, tags)
    return _tags(ml, ml_model_id)
