"""Report tasks: what AML showed in its console, as Prefect artifacts and files.

* data insights of each datasource (markdown);
* the evaluation metric next to its baseline, the confusion matrix (MULTICLASS) or threshold table
  (BINARY), evaluation alerts, and a PNG image (markdown artifact embedding a ``data:`` URI, plus the file);
  BINARY adds the score histogram per actual class with the cut-off, and the ROC curve;
* the batch prediction: result files copied next to the run's other outputs, a link, a table of the first
  rows and a score image;
* the Kaggle submission (``ImageId,Label``) and accuracies read back from batch output.

The metric always comes from ``GetEvaluation``. Baselines, confusion matrices, threshold tables, alerts and
data insights come from the embedded service's report side-channel (:func:`amlflow.client.reports_for`);
against an endpoint or AWS they are absent and the reports say so instead of failing.

This module holds the Prefect tasks; the work behind them lives in :mod:`tasks.report_formats` (reading the
report documents), :mod:`tasks.report_render` (markdown and images) and :mod:`tasks.batch_output` (batch
output files, Kaggle). The names below stay importable from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from amlflow.client import ml_client, reports_for
from amlflow.storage.atomic import write_file_atomic
from tasks._common import RETRY_POLICY
from tasks.batch_output import (
    batch_result_frame,
    copy_results,
    result_uris,
    submission_accuracy,
    submission_frame,
    true_label_accuracy,
)
from tasks.report_formats import METRICS, cut_off, score_histogram
from tasks.report_formats import alerts as _alerts
from tasks.report_formats import attribute_rows as _attribute_rows  # noqa: F401  (re-exported: tests)
from tasks.report_formats import baseline as _baseline
from tasks.report_formats import confusion as _confusion
from tasks.report_formats import threshold_rows as _threshold_rows
from tasks.report_render import (
    artifact_key,
    batch_figure,
    batch_summary_markdown,
    binary_section,
    confusion_figure,
    confusion_section,
    evaluation_header,
    insights_markdown,
    metric_figure,
    threshold_figure,
    threshold_section,
)

__all__ = [
    "METRICS",
    "accuracy_from_batch_output",
    "artifact_key",
    "batch_result_frame",
    "kaggle_submission",
    "report_batch_prediction",
    "report_data_insights",
    "report_evaluation",
]


def _side_channel(method: str, entity: str, endpoint_url: str | None) -> dict[str, Any] | None:
    """Call the embedded service's report method, or None when absent (endpoint/AWS) or failing."""
    source = reports_for(ml_client(endpoint_url=endpoint_url))
    fn = getattr(source, method, None) if source is not None else None
    if fn is None:
        return None
    try:
        result = fn(entity)
    except Exception as exc:
        get_run_logger().warning("%s(%s) unavailable: %s", method, entity, exc)
        return None
    return dict(result) if isinstance(result, Mapping) else None


# --------------------------------------------------------------------------------------------- insights


@task(name="report_data_insights", **RETRY_POLICY)
def report_data_insights(
    data_source_id: str, label: str, *, case: str = "", endpoint_url: str | None = None
) -> dict[str, Any]:
    """Publish a datasource's data insights as a markdown artifact (``insights-<label>``).

    Args:
        data_source_id: the datasource.
        label: short role name (``train``, ``evaluation``, ``batch``).
        endpoint_url: an AML endpoint (default: environment / embedded).

    Returns:
        ``{"data_source_id", "rows", "size_bytes", "insights": bool}``.

    Example:
        >>> report_data_insights("ds-0a1b2c", "train")["insights"]
        True
    """
    ds = ml_client(endpoint_url=endpoint_url).get_data_source(DataSourceId=data_source_id)
    insights = _side_channel("get_data_insights", data_source_id, endpoint_url)
    markdown = insights_markdown(label, data_source_id, ds, insights)
    create_markdown_artifact(
        markdown,
        key=artifact_key(case, "insights", label),
        description=f"Data insights: {label} datasource",
    )
    return {
        "data_source_id": data_source_id,
        "rows": (insights or {}).get("n_rows"),
        "size_bytes": ds.get("DataSizeInBytes"),
        "insights": bool(insights),
    }


# ------------------------------------------------------------------------------------------- evaluation


@task(name="report_evaluation", **RETRY_POLICY)
def report_evaluation(
    evaluation_id: str,
    output_dir: str,
    *,
    label: str = "evaluation",
    case: str = "",
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Publish the evaluation: metric vs baseline, confusion matrix or threshold table, alerts, images.

    Args:
        evaluation_id: a COMPLETED evaluation.
        output_dir: local folder for the report files (``<label>-report.json``, ``<label>-*.png``).
        label: names the artifacts and files.
        endpoint_url: an AML endpoint (default: environment / embedded).

    Returns:
        ``{"evaluation_id", "metric_name", "metric", "higher_is_better", "baseline", "alerts", "image"}``;
        ``baseline`` is None and ``alerts`` empty when the back end has no report side-channel.

    Example:
        >>> report_evaluation("ev-0a1b2c", "out/wine")["metric_name"]
        'RegressionRMSE'
    """
    logger = get_run_logger()
    ml = ml_client(endpoint_url=endpoint_url)
    ev = ml.get_evaluation(EvaluationId=evaluation_id)
    properties = ev.get("PerformanceMetrics", {}).get("Properties", {})
    if not properties:
        raise ValueError(
            f"evaluation {evaluation_id} has no PerformanceMetrics.Properties (status {ev.get('Status')})"
        )
    metric_name, raw = next(iter(properties.items()))
    metric = float(raw)
    pretty, higher = METRICS.get(metric_name, (metric_name, True))
    report = _side_channel("get_evaluation_report", evaluation_id, endpoint_url) or {}
    baseline = _baseline(report)
    alerts = _alerts(report)
    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    lines = evaluation_header(evaluation_id, pretty, metric, baseline, higher, alerts, bool(report))

    image_md: str | None = None
    confusion = _confusion(report)
    thresholds = _threshold_rows(report)
    if confusion is not None:
        labels, matrix = confusion
        lines += confusion_section(labels, matrix)
        image_md = confusion_figure(labels, matrix, out / f"{label}-confusion-matrix.png")
    if thresholds:
        lines += threshold_section(thresholds)
        create_table_artifact(
            [dict(r) for r in thresholds],
            key=artifact_key(case, label, "threshold-table"),
            description=f"Threshold table of {evaluation_id}",
        )
        image_md = image_md or threshold_figure(thresholds, out / f"{label}-thresholds.png")
    if image_md is None:
        image_md = metric_figure(pretty, metric, baseline, out / f"{label}-metric.png")
    lines += ["", "## Image", "", image_md]
    if score_histogram(report) is not None:  # BINARY, with the embedded service's report
        model = ml.get_ml_model(MLModelId=ev["MLModelId"]) if ev.get("MLModelId") else None
        lines += binary_section(report, cut_off(report, model), metric, out / f"{label}-score-roc.png")
    create_markdown_artifact(
        "\n".join(lines), key=artifact_key(case, label, "report"), description=f"Evaluation {evaluation_id}"
    )

    summary = {
        "evaluation_id": evaluation_id,
        "ml_model_id": ev.get("MLModelId"),
        "metric_name": metric_name,
        "metric": metric,
        "higher_is_better": higher,
        "baseline": baseline,
        "alerts": alerts,
        "report_available": bool(report),
    }
    write_file_atomic(
        out / f"{label}-report.json",
        json.dumps({**summary, "report": report}, indent=2, default=str).encode(),
    )
    logger.info(
        "%s %s = %.6g (baseline %s), alerts: %s",
        evaluation_id,
        metric_name,
        metric,
        baseline,
        alerts or "none",
    )
    return summary


# -------------------------------------------------------------------------------------- batch prediction


@task(name="report_batch_prediction", **RETRY_POLICY)
def report_batch_prediction(
    batch_prediction_id: str,
    output_dir: str,
    *,
    label: str = "batch",
    preview_rows: int = 20,
    case: str = "",
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Copy the batch prediction's result file(s) to ``output_dir`` and publish link, table and image.

    Args:
        batch_prediction_id: a COMPLETED batch prediction.
        output_dir: local folder receiving ``<result file name>`` (gzip CSV, AML's layout).
        label: names the artifacts.
        preview_rows: rows shown in the table artifact.
        endpoint_url: an AML endpoint (default: environment / embedded).

    Returns:
        ``{"batch_prediction_id", "result_uris", "local_files", "rows", "invalid"}``.

    Example:
        >>> report_batch_prediction("bp-0a1b2c", "out/mnist")["local_files"]
        ['out/mnist/bp-0a1b2c-test.csv.gz']
    """
    logger = get_run_logger()
    bp = ml_client(endpoint_url=endpoint_url).get_batch_prediction(BatchPredictionId=batch_prediction_id)
    results = result_uris(bp, endpoint_url)
    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    local_files = copy_results(results, out, endpoint_url)
    frame = (
        pd.concat([batch_result_frame(f) for f in local_files], ignore_index=True)
        if local_files
        else pd.DataFrame()
    )
    for result_uri, local in zip(results.values(), local_files, strict=True):
        create_link_artifact(
            Path(local).resolve().as_uri(),
            link_text=f"{result_uri} (local copy)",
            key=artifact_key(case, label, "result"),
            description=f"Batch prediction {batch_prediction_id}",
        )
    preview = frame.head(preview_rows).fillna("").to_dict(orient="records")
    if preview:
        create_table_artifact(
            preview,
            key=artifact_key(case, label, "preview"),
            description=f"First {len(preview)} rows of {batch_prediction_id}",
        )

    image_md = "" if frame.empty else batch_figure(frame, out / f"{label}-histogram.png")
    markdown = batch_summary_markdown(batch_prediction_id, bp, results, local_files, image_md)
    create_markdown_artifact(
        markdown,
        key=artifact_key(case, label, "summary"),
        description=f"Batch prediction {batch_prediction_id}",
    )
    logger.info("batch prediction %s: %d rows → %s", batch_prediction_id, len(frame), ", ".join(local_files))
    return {
        "batch_prediction_id": batch_prediction_id,
        "result_uris": list(results.values()),
        "local_files": local_files,
        "rows": len(frame),
        "invalid": bp.get("InvalidRecordCount"),
    }


# ---------------------------------------------------------------------------------------------- MNIST


@task(name="kaggle_submission")
def kaggle_submission(
    batch_files: Sequence[str],
    output_path: str,
    *,
    test_labels: str | None = None,
    case: str = "",
) -> dict[str, Any]:
    """Write a Kaggle "Digit Recognizer" submission (``ImageId,Label``) from MULTICLASS batch output.

    ``ImageId`` is the 1-based row number of the test file (batch output keeps input order); ``Label`` is the
    class column with the highest probability (AML's class columns come in any order: read by header).

    Args:
        batch_files: the batch prediction result file(s), in input order.
        output_path: where to write the submission CSV (atomically).
        test_labels: optional ``ImageId,Label`` file with the true labels, to report the accuracy.

    Returns:
        ``{"path", "rows", "accuracy"}`` (accuracy None without ``test_labels``).

    Example:
        >>> kaggle_submission(["out/bp-1-test.csv.gz"], "out/submission.csv",
        ...                   test_labels="data/mnist-sample/test_labels.csv")["accuracy"]
        0.93...
    """
    frame = pd.concat([batch_result_frame(f) for f in batch_files], ignore_index=True)
    submission = submission_frame(frame)
    path = Path(output_path).expanduser()
    write_file_atomic(path, submission.to_csv(index=False).encode("utf-8"))
    accuracy = submission_accuracy(submission, test_labels) if test_labels else None
    create_markdown_artifact(
        f"# Kaggle submission\n\n* file: `{path}`\n* rows: {len(submission)}\n"
        + (f"* accuracy against `{test_labels}`: **{accuracy:.4f}**\n" if accuracy is not None else ""),
        key=artifact_key(case, "kaggle-submission"),
        description="Kaggle Digit Recognizer submission",
    )
    get_run_logger().info("Kaggle submission %s: %d rows, accuracy %s", path, len(submission), accuracy)
    return {"path": str(path), "rows": len(submission), "accuracy": accuracy}


@task(name="accuracy_from_batch_output")
def accuracy_from_batch_output(batch_files: Sequence[str], *, case: str = "") -> dict[str, Any]:
    """Accuracy of a classification batch output against its own ``trueLabel`` column.

    Example:
        >>> accuracy_from_batch_output(["out/bp-1-test_data.csv.gz"])["accuracy"]
        0.9...
    """
    frame = pd.concat([batch_result_frame(f) for f in batch_files], ignore_index=True)
    rows, accuracy = true_label_accuracy(frame)
    create_markdown_artifact(
        f"# Accuracy from batch output\n\n* rows scored: {rows} of {len(frame)}\n"
        f"* accuracy (bestAnswer or top class vs trueLabel): **{accuracy:.4f}**\n",
        key=artifact_key(case, "batch-accuracy"),
        description="Accuracy read back from the batch output's trueLabel column",
    )
    return {"rows": rows, "accuracy": accuracy}
