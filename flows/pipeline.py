"""The generic AML pipeline: upload → 3 datasources → model → evaluation ∥ batch prediction → reports.

Wiring only: every AML call, file and ML detail lives in ``tasks/``. The same flow runs on the embedded
in-process service (default), an ``amlflow serve`` endpoint (``endpoint_url`` or
``AWS_ENDPOINT_URL_MACHINE_LEARNING``) or AWS (``AMLFLOW_TARGET=aws``); S3 follows ``AWS_ENDPOINT_URL_S3``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from flows.task_runners import task_runner_from_env
from tasks.batch_predictions import create_batch_prediction, wait_for_batch_prediction
from tasks.data_sources import create_data_source_from_s3, split, wait_for_data_source
from tasks.evaluations import create_evaluation, wait_for_evaluation
from tasks.ml_models import create_ml_model, update_ml_model, wait_for_ml_model
from tasks.reports import report_batch_prediction, report_data_insights, report_evaluation
from tasks.storage import upload_inputs

__all__ = ["REPO", "aml_pipeline", "repo_path"]

#: The repository root (reference-case schemas, recipes and sample data are found relative to it).
REPO = Path(__file__).resolve().parent.parent


def repo_path(value: str | None, default: str | None = None) -> str | None:
    """Resolve a file argument: ``s3://`` URIs and existing paths as given, else relative to the repo.

    ``""`` means "none" (None); ``None`` means "use ``default``".
    """
    chosen = value if value is not None else default
    if chosen == "":
        return None
    if chosen is None or chosen.startswith("s3://") or chosen.lstrip().startswith("{"):
        return chosen
    path = Path(chosen).expanduser()
    if path.exists() or path.is_absolute():
        return str(path.resolve())
    return str(REPO / chosen)


@flow(name="aml-pipeline", log_prints=True)
def aml_pipeline(
    name: str,
    train_data: str,
    data_schema: str,
    model_type: str,
    *,
    batch_data: str | None = None,
    batch_schema: str | None = None,
    eval_data: str | None = None,
    recipe: str | None = None,
    parameters: dict[str, str] | None = None,
    train_percent: int = 70,
    score_threshold: float | None = None,
    batch_statistics: bool = False,
    bucket: str = "amlflow",
    output_dir: str = "amlflow-output",
    salt: str = "",
    endpoint_url: str | None = None,
    wait_timeout_seconds: float = 7 * 24 * 3600.0,
) -> dict[str, Any]:
    """Run one AML workflow end to end and publish its reports as Prefect artifacts.

    Args:
        name: the case name: S3 prefix, entity names and artifact labels (e.g. ``wine-regression``).
        train_data: local CSV (``.gz`` allowed) or ``s3://`` URI with the training data.
        data_schema: AML data schema of ``train_data`` (file, JSON text or ``s3://`` URI).
        model_type: ``BINARY``, ``MULTICLASS`` or ``REGRESSION``.
        batch_data: data to score (optional); its schema is ``batch_schema`` or ``data_schema``.
        batch_schema: schema of ``batch_data`` when it differs (e.g. no target column).
        eval_data: separate evaluation data (same schema); without it the training data is split
            sequentially: 0–``train_percent`` % trains, the rest evaluates.
        recipe: AML recipe (file, JSON text or ``s3://`` URI); None = AML's suggested recipe.
        parameters: AML training parameters (``{"sgd.maxPasses": "10"}``).
        train_percent: the training share of a split, 1–99.
        score_threshold: BINARY only: set with ``UpdateMLModel`` before the batch prediction.
        batch_statistics: compute data insights for the batch datasource too.
        bucket: the S3 bucket for inputs and outputs.
        output_dir: local folder for reports and copies of the batch output (``<output_dir>/<name>``).
        salt: change to force new AML entities for unchanged inputs.
        endpoint_url: an AML endpoint (default: environment, else the embedded service).
        wait_timeout_seconds: the longest wait for any one entity.

    Returns:
        IDs, the evaluation summary (metric, baseline, alerts) and the batch output files.
    """
    if not 0 < train_percent < 100:
        raise ValueError(f"train_percent: expected 1..99, got {train_percent}")
    out_dir = str(Path(output_dir).expanduser() / name)
    common: dict[str, Any] = {"endpoint_url": endpoint_url}
    waiting: dict[str, Any] = {"endpoint_url": endpoint_url, "timeout_seconds": wait_timeout_seconds}

    inputs = upload_inputs(
        {"train": train_data, "eval": eval_data, "batch": batch_data}, bucket, name, endpoint_url=endpoint_url
    )
    train_in = inputs["train"]
    eval_in = inputs.get("eval", train_in)

    # Three datasources, created concurrently.
    train_ds = create_data_source_from_s3.submit(
        train_in["uri"],
        data_schema,
        fingerprint=train_in["fingerprint"],
        rearrangement=None if eval_data else split(0, train_percent),
        compute_statistics=True,
        name=f"{name} training",
        salt=salt,
        **common,
    )
    eval_ds = create_data_source_from_s3.submit(
        eval_in["uri"],
        data_schema,
        fingerprint=eval_in["fingerprint"],
        rearrangement=None if eval_data else split(train_percent, 100),
        compute_statistics=True,
        name=f"{name} evaluation",
        salt=salt,
        **common,
    )
    batch_ds: PrefectFuture[str] | None = None
    if batch_data is not None:
        batch_in = inputs["batch"]
        batch_ds = create_data_source_from_s3.submit(
            batch_in["uri"],
            batch_schema or data_schema,
            fingerprint=batch_in["fingerprint"],
            compute_statistics=batch_statistics,
            name=f"{name} batch",
            salt=salt,
            **common,
        )
    train_ready = wait_for_data_source.submit(train_ds, **waiting)
    eval_ready = wait_for_data_source.submit(eval_ds, **waiting)
    batch_ready = wait_for_data_source.submit(batch_ds, **waiting) if batch_ds is not None else None

    # The model, once the training datasource is ready.
    model = create_ml_model.submit(
        train_ds,
        model_type,
        recipe=recipe,
        parameters=parameters,
        name=f"{name} model",
        salt=salt,
        wait_for=[train_ready],
        **common,
    )
    model_ready = wait_for_ml_model.submit(model, **waiting)
    threshold_set = (
        update_ml_model.submit(model, score_threshold=score_threshold, wait_for=[model_ready], **common)
        if score_threshold is not None
        else None
    )

    # Evaluation ∥ batch prediction.
    evaluation = create_evaluation.submit(
        model, eval_ds, name=f"{name} evaluation", salt=salt, wait_for=[model_ready, eval_ready], **common
    )
    evaluation_done = wait_for_evaluation.submit(evaluation, **waiting)
    batch_done = None
    batch_prediction = None
    if batch_ds is not None and batch_ready is not None:
        batch_prediction = create_batch_prediction.submit(
            model,
            batch_ds,
            f"s3://{bucket}/{name}/output/",
            name=f"{name} batch prediction",
            score_threshold=score_threshold,
            salt=salt,
            wait_for=[model_ready, batch_ready, *([threshold_set] if threshold_set is not None else [])],
            **common,
        )
        batch_done = wait_for_batch_prediction.submit(batch_prediction, **waiting)

    # Reports.
    insight_futures = [
        report_data_insights.submit(train_ds, "train", case=name, wait_for=[train_ready], **common),
        report_data_insights.submit(eval_ds, "evaluation", case=name, wait_for=[eval_ready], **common),
    ]
    if batch_ds is not None:
        insight_futures.append(
            report_data_insights.submit(batch_ds, "batch", case=name, wait_for=[batch_ready], **common)
        )
    # the report reads the model's ScoreThreshold (its cut-off line): after update_ml_model set it
    evaluation_report = report_evaluation.submit(
        evaluation,
        out_dir,
        case=name,
        wait_for=[evaluation_done, *([threshold_set] if threshold_set is not None else [])],
        **common,
    )
    batch_report = (
        report_batch_prediction.submit(batch_prediction, out_dir, case=name, wait_for=[batch_done], **common)
        if batch_prediction is not None
        else None
    )

    # Resolve every future that matters: any failure fails the flow with its message.
    result: dict[str, Any] = {
        "name": name,
        "output_dir": out_dir,
        "inputs": inputs,
        "data_sources": {"train": train_ds.result(), "evaluation": eval_ds.result()},
        "ml_model_id": model.result(),
        "model": model_ready.result(),
        "evaluation_id": evaluation.result(),
        "evaluation": evaluation_report.result(),
        "insights": [f.result() for f in insight_futures],
    }
    for future in (train_ready, eval_ready, evaluation_done):
        future.result()
    if threshold_set is not None:
        threshold_set.result()
    if (
        batch_ds is not None
        and batch_ready is not None
        and batch_done is not None
        and batch_report is not None
    ):
        result["data_sources"]["batch"] = batch_ds.result()
        batch_ready.result()
        result["batch_prediction"] = batch_done.result()
        result["batch"] = batch_report.result()
    ev = result["evaluation"]
    print(
        f"{name}: {ev['metric_name']} = {ev['metric']:.6g} (baseline {_num(ev['baseline'])}); "
        f"alerts: {', '.join(ev['alerts']) or 'none'}; outputs in {out_dir}"
    )
    return result


def _num(value: object) -> str:
    """A number for a log line (6 significant digits), anything else as is."""
    return f"{value:.6g}" if isinstance(value, int | float) else str(value)


if (_runner := task_runner_from_env()) is not None:  # AMLFLOW_PREFECT_TASK_RUNNER (flows/task_runners.py)
    aml_pipeline = aml_pipeline.with_options(task_runner=_runner)
