"""Report tasks: what AML showed in its console, as Prefect artifacts and files.

* data insights of each datasource (markdown);
* the evaluation metric next to its baseline, the confusion matrix (MULTICLASS) or threshold table
  (BINARY), evaluation alerts, and a PNG image (markdown artifact embedding a ``data:`` URI, plus the file);
* the batch prediction: result files copied next to the run's other outputs, a link, a table of the first
  rows and a score image;
* the Kaggle submission (``ImageId,Label``) and accuracies read back from batch output.

The metric always comes from ``GetEvaluation``. Baselines, confusion matrices, threshold tables, alerts and
data insights come from the embedded service's report side-channel (:func:`amlflow.client.reports_for`);
against an endpoint or AWS they are absent and the reports say so instead of failing.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from amlflow.client import ml_client, reports_for, storage
from amlflow.storage.atomic import write_file_atomic
from tasks._common import RETRY_POLICY

__all__ = [
    "accuracy_from_batch_output",
    "artifact_key",
    "batch_result_frame",
    "kaggle_submission",
    "report_batch_prediction",
    "report_data_insights",
    "report_evaluation",
]


#: Metric key → (label, higher is better).
METRICS: dict[str, tuple[str, bool]] = {
    "BinaryAUC": ("AUC", True),
    "MulticlassAvgFScore": ("macro-average F1", True),
    "RegressionRMSE": ("RMSE", False),
}


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) built from ``parts``."""
    key = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return re.sub(r"-{2,}", "-", key)[:100] or "amlflow"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in list(value.items())[:6])
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value[:6]) + (" …" if len(value) > 6 else "")
    return "–" if value is None else str(value)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _png_markdown(fig: Any, path: Path, title: str) -> str:
    """Save a matplotlib figure to ``path`` (atomically) and return markdown embedding it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    write_file_atomic(path, data)
    encoded = base64.b64encode(data).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})\n\nImage file: `{path}`"


def _figure(width: float = 6.0, height: float = 4.5) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


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


def _attribute_summary(attr: Mapping[str, Any]) -> dict[str, Any]:
    """The type-specific part of one attribute's insights (docs/formats.md, "Data insights")."""
    kind = attr.get("type")
    if kind == "NUMERIC":
        keys: tuple[str, ...] = ("min", "max", "mean", "median")
    elif kind == "CATEGORICAL":
        keys = ("distinct", "top_categories")
    elif kind == "BINARY":
        keys = ("true", "false")
    elif kind == "TEXT":
        keys = ("tokens", "distinct_tokens", "top_tokens")
    else:
        keys = ()
    summary = {k: attr[k] for k in keys if attr.get(k) is not None}
    for key in ("top_categories", "top_tokens"):
        if key in summary:  # the first three, as value (count)
            summary[key] = ", ".join(f"{c['value']} ({c['count']})" for c in summary[key][:3])
    return summary


def _attribute_rows(insights: Mapping[str, Any]) -> list[list[Any]]:
    """One table row per attribute: name, type, missing, invalid, summary, correlation with the target."""
    return [
        [
            a["name"],
            a.get("type", ""),
            a.get("missing"),
            a.get("invalid"),
            _attribute_summary(a) or "",
            a.get("correlation"),
        ]
        for a in insights.get("attributes") or []
    ]


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
    lines = [
        f"# Data insights: {label} datasource `{data_source_id}`",
        "",
        f"* location: `{ds.get('DataLocationS3', '')}`",
        f"* rearrangement: `{ds.get('DataRearrangement', '') or 'all rows'}`",
        f"* size: {ds.get('DataSizeInBytes', '–')} bytes in {ds.get('NumberOfFiles', '–')} file(s)",
        f"* statistics computed: {ds.get('ComputeStatistics', False)}",
    ]
    rows = None
    if insights:
        rows = insights.get("n_rows")
        if rows is not None:
            lines.append(f"* rows: {rows}")
        if "n_rejected" in insights:
            lines.append(f"* rejected rows: {insights['n_rejected']}")
        target = insights.get("target")
        if target:
            lines.append(f"* target: {_fmt(target)}")
        table = _attribute_rows(insights)
        if table:
            lines += [
                "",
                _md_table(
                    ["attribute", "type", "missing", "invalid", "summary", "correlation with target"], table
                ),
            ]
    else:
        lines += ["", "_Data insights are not available from this AML back end (endpoint or AWS)._"]
    create_markdown_artifact(
        "\n".join(lines),
        key=artifact_key(case, "insights", label),
        description=f"Data insights: {label} datasource",
    )
    return {
        "data_source_id": data_source_id,
        "rows": rows,
        "size_bytes": ds.get("DataSizeInBytes"),
        "insights": bool(insights),
    }


# ------------------------------------------------------------------------------------------- evaluation


def _confusion(report: Mapping[str, Any]) -> tuple[list[str], list[list[float]]] | None:
    """``confusion_matrix`` of an evaluation report (docs/formats.md): labels, rows (actual × predicted)."""
    cm = report.get("confusion_matrix")
    if not cm:
        return None
    return [str(label) for label in cm["labels"]], [[float(x) for x in row] for row in cm["matrix"]]


def _threshold_rows(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``threshold_table`` of a BINARY evaluation report: one mapping per cut-off (empty otherwise)."""
    return list(report.get("threshold_table") or [])


def _baseline(report: Mapping[str, Any]) -> float | None:
    """The baseline's value (``baseline.value``), None without a report or when undefined."""
    value = (report.get("baseline") or {}).get("value")
    return None if value is None else float(value)


def _alerts(report: Mapping[str, Any]) -> list[str]:
    """The messages of the triggered evaluation alerts."""
    return [str(a.get("message") or a["name"]) for a in report.get("alerts") or [] if a.get("triggered")]


def _confusion_figure(labels: list[str], matrix: list[list[float]], path: Path) -> str:
    fig, ax = _figure(6.5, 5.5)
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            text = f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > top / 2 else "black",
            )
    fig.colorbar(image, ax=ax)
    ax.set_title("Confusion matrix (evaluation datasource)")
    return _png_markdown(fig, path, "confusion matrix")


def _threshold_figure(rows: list[Mapping[str, Any]], path: Path) -> str | None:
    key_t = next((k for k in ("threshold", "cutoff", "cut_off") if rows and k in rows[0]), None)
    if key_t is None:
        return None
    fig, ax = _figure()
    xs = [float(r[key_t]) for r in rows]
    for name in ("accuracy", "precision", "recall", "false_positive_rate", "fpr"):
        if name in rows[0]:
            ax.plot(xs, [float(r[name]) if r[name] is not None else math.nan for r in rows], label=name)
    ax.set_xlabel("score threshold")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title("Threshold table (evaluation datasource)")
    return _png_markdown(fig, path, "threshold table")


def _metric_figure(name: str, metric: float, baseline: float | None, path: Path) -> str:
    fig, ax = _figure(4.5, 3.5)
    labels, values = ["model"], [metric]
    if baseline is not None:
        labels.append("baseline")
        values.append(baseline)
    ax.bar(labels, values, color=["#2b6cb0", "#a0aec0"][: len(values)])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.4g}", ha="center", va="bottom")
    ax.set_ylabel(name)
    ax.set_title(f"{name}: model vs baseline")
    return _png_markdown(fig, path, f"{name} vs baseline")


@task(name="report_evaluation", **RETRY_POLICY)
def report_evaluation(
    evaluation_id: str,
    output_dir: str,
    *,
    label: str = "evaluation",
    case: str = "",
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Publish the evaluation: metric vs baseline, confusion matrix or threshold table, alerts, an image.

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
    ev = ml_client(endpoint_url=endpoint_url).get_evaluation(EvaluationId=evaluation_id)
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

    lines = [
        f"# Evaluation `{evaluation_id}`",
        "",
        _md_table(["", pretty], [["model", metric], ["baseline", baseline]]),
    ]
    if baseline is not None:
        better = metric > baseline if higher else metric < baseline
        lines.append(
            f"\nThe model is **{'better' if better else 'not better'}** than the baseline "
            f"({'higher' if higher else 'lower'} is better)."
        )
    else:
        lines.append("\n_No baseline: this AML back end does not expose evaluation reports._")
    lines += ["", "## Evaluation alerts", ""]
    lines += [f"* ⚠ {a}" for a in alerts] if alerts else (["* none"] if report else ["* not available"])

    image_md: str | None = None
    confusion = _confusion(report)
    thresholds = _threshold_rows(report)
    if confusion is not None:
        labels, matrix = confusion
        lines += ["", "## Confusion matrix (rows: actual, columns: predicted)", ""]
        lines.append(
            _md_table(
                ["actual \\ predicted", *labels],
                [[lab, *row] for lab, row in zip(labels, matrix, strict=True)],
            )
        )
        image_md = _confusion_figure(labels, matrix, out / f"{label}-confusion-matrix.png")
    if thresholds:
        step = max(1, len(thresholds) // 20)
        shown = thresholds[::step]
        cols = list(shown[0].keys())
        lines += ["", "## Threshold table", "", _md_table(cols, [[r.get(c) for c in cols] for r in shown])]
        create_table_artifact(
            [dict(r) for r in thresholds],
            key=artifact_key(case, label, "threshold-table"),
            description=f"Threshold table of {evaluation_id}",
        )
        image_md = image_md or _threshold_figure(thresholds, out / f"{label}-thresholds.png")
    if image_md is None:
        image_md = _metric_figure(pretty, metric, baseline, out / f"{label}-metric.png")
    lines += ["", "## Image", "", image_md]
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


def _result_uris(bp: Mapping[str, Any], endpoint_url: str | None = None) -> dict[str, str]:
    """input URI → result URI, from the batch prediction's manifest."""
    output = str(bp["OutputUri"])
    manifest_uri = f"{output.rstrip('/')}/batch-prediction/{bp['BatchPredictionId']}.manifest"
    return dict(json.loads(storage(endpoint_url=endpoint_url).read_bytes(manifest_uri).decode("utf-8")))


def batch_result_frame(path_or_uri: str) -> pd.DataFrame:
    """Read an AML batch prediction result (gzip CSV) with pandas; values kept as strings."""
    if path_or_uri.startswith("s3://"):
        with storage().open_read(path_or_uri) as fh:
            return pd.read_csv(io.BytesIO(fh.read()), compression="gzip", dtype=str, skip_blank_lines=False)
    return pd.read_csv(path_or_uri, compression="infer", dtype=str, skip_blank_lines=False)


def _class_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("tag", "trueLabel", "bestAnswer", "score")]


def _predicted_labels(frame: pd.DataFrame) -> pd.Series:
    """Predicted label per row: ``bestAnswer`` (BINARY) or the class column with the highest probability."""
    if "bestAnswer" in frame.columns:
        return frame["bestAnswer"]
    classes = _class_columns(frame)
    if not classes:
        raise ValueError("batch output has neither bestAnswer nor class columns (a REGRESSION model?)")
    probs = frame[classes].astype(float)
    out = probs.idxmax(axis=1)
    return out.where(probs.notna().any(axis=1))


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
    results = _result_uris(bp, endpoint_url)
    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    store = storage(endpoint_url=endpoint_url)
    local_files: list[str] = []
    for result_uri in results.values():
        dest = out / result_uri.rsplit("/", 1)[-1]
        write_file_atomic(dest, store.read_bytes(result_uri))
        local_files.append(str(dest))
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

    image_md = ""
    if not frame.empty:
        fig, ax = _figure()
        if "score" in frame.columns:
            ax.hist(frame["score"].dropna().astype(float), bins=40, color="#2b6cb0")
            ax.set_xlabel("score")
            ax.set_title("Batch prediction: score histogram")
        else:
            counts = _predicted_labels(frame).value_counts().sort_index()
            ax.bar([str(i) for i in counts.index], counts.values, color="#2b6cb0")
            ax.set_xlabel("predicted class")
            ax.set_title("Batch prediction: predicted classes")
        ax.set_ylabel("rows")
        image_md = _png_markdown(fig, out / f"{label}-histogram.png", "batch prediction histogram")
    lines = [
        f"# Batch prediction `{batch_prediction_id}`",
        "",
        f"* model: `{bp.get('MLModelId')}`; datasource: `{bp.get('BatchPredictionDataSourceId')}`",
        f"* records: {bp.get('TotalRecordCount', '–')}, invalid: {bp.get('InvalidRecordCount', '–')}",
        *[f"* result: `{uri}` → `{local}`" for uri, local in zip(results.values(), local_files, strict=True)],
        "",
        image_md,
    ]
    create_markdown_artifact(
        "\n".join(lines),
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
    labels = _predicted_labels(frame)
    submission = pd.DataFrame({"ImageId": range(1, len(frame) + 1), "Label": labels.fillna("")})
    path = Path(output_path).expanduser()
    write_file_atomic(path, submission.to_csv(index=False).encode("utf-8"))
    accuracy = None
    if test_labels:
        truth = pd.read_csv(test_labels, dtype=str)
        merged = submission.astype({"ImageId": str}).merge(
            truth.astype(str), on="ImageId", suffixes=("", "_true")
        )
        if len(merged) != len(submission):
            raise ValueError(
                f"test_labels {test_labels!r}: {len(merged)} of {len(submission)} ImageIds matched "
                "(expected a file with columns ImageId,Label covering every test row)"
            )
        accuracy = float((merged["Label"] == merged["Label_true"]).mean())
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
    if "trueLabel" not in frame.columns:
        raise ValueError(
            "batch output has no trueLabel column: its datasource schema has no targetAttributeName"
        )
    predicted = _predicted_labels(frame)
    valid = frame["trueLabel"].notna() & predicted.notna()

    def norm(s: pd.Series) -> pd.Series:
        return s.astype(str).str.strip().str.replace(r"\.0+$", "", regex=True)

    accuracy = (
        float((norm(predicted[valid]) == norm(frame.loc[valid, "trueLabel"])).mean())
        if valid.any()
        else math.nan
    )
    create_markdown_artifact(
        f"# Accuracy from batch output\n\n* rows scored: {int(valid.sum())} of {len(frame)}\n"
        f"* accuracy (bestAnswer or top class vs trueLabel): **{accuracy:.4f}**\n",
        key=artifact_key(case, "batch-accuracy"),
        description="Accuracy read back from the batch output's trueLabel column",
    )
    return {"rows": int(valid.sum()), "accuracy": accuracy}
