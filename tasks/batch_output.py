"""AML batch output: finding, copying and reading the result files, and what the reports compute from them.

The layout is AML's (docs/formats.md, "Batch output"): ``<OutputUri>/batch-prediction/<id>.manifest`` maps
each input to its result, a gzip CSV with ``tag``, ``trueLabel``, then ``bestAnswer,score`` (BINARY), one
probability column per class (MULTICLASS) or ``score`` (REGRESSION). Values are read as strings.

Example:
    >>> predicted_labels(batch_result_frame("out/mnist/bp-0a1b2c-test.csv.gz")).head(1).tolist()
    ['2']
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from amlflow.client import storage
from amlflow.storage.atomic import write_file_atomic

__all__ = [
    "batch_result_frame",
    "class_columns",
    "copy_results",
    "predicted_labels",
    "result_uris",
    "submission_accuracy",
    "submission_frame",
    "true_label_accuracy",
]


def result_uris(bp: Mapping[str, Any], endpoint_url: str | None = None) -> dict[str, str]:
    """input URI → result URI, from the batch prediction's manifest."""
    output = str(bp["OutputUri"])
    manifest_uri = f"{output.rstrip('/')}/batch-prediction/{bp['BatchPredictionId']}.manifest"
    return dict(json.loads(storage(endpoint_url=endpoint_url).read_bytes(manifest_uri).decode("utf-8")))


def copy_results(results: Mapping[str, str], out: Path, endpoint_url: str | None = None) -> list[str]:
    """Copy every result file into ``out`` (atomically, under its own name); the local paths, in order."""
    store = storage(endpoint_url=endpoint_url)
    local_files: list[str] = []
    for result_uri in results.values():
        dest = out / result_uri.rsplit("/", 1)[-1]
        write_file_atomic(dest, store.read_bytes(result_uri))
        local_files.append(str(dest))
    return local_files


def batch_result_frame(path_or_uri: str) -> pd.DataFrame:
    """Read an AML batch prediction result (gzip CSV) with pandas; values kept as strings."""
    if path_or_uri.startswith("s3://"):
        with storage().open_read(path_or_uri) as fh:
            return pd.read_csv(io.BytesIO(fh.read()), compression="gzip", dtype=str, skip_blank_lines=False)
    return pd.read_csv(path_or_uri, compression="infer", dtype=str, skip_blank_lines=False)


def class_columns(frame: pd.DataFrame) -> list[str]:
    """The MULTICLASS probability columns: all but ``tag``, ``trueLabel``, ``bestAnswer`` and ``score``."""
    return [c for c in frame.columns if c not in ("tag", "trueLabel", "bestAnswer", "score")]


def predicted_labels(frame: pd.DataFrame) -> pd.Series:
    """Predicted label per row: ``bestAnswer`` (BINARY) or the class column with the highest probability."""
    if "bestAnswer" in frame.columns:
        return frame["bestAnswer"]
    classes = class_columns(frame)
    if not classes:
        raise ValueError("batch output has neither bestAnswer nor class columns (a REGRESSION model?)")
    probs = frame[classes].astype(float)
    out = probs.idxmax(axis=1)
    return out.where(probs.notna().any(axis=1))


# ---------------------------------------------------------------------------------------------- MNIST


def submission_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Kaggle "Digit Recognizer" rows: ``ImageId`` (1-based, input order), ``Label`` (predicted class)."""
    labels = predicted_labels(frame)
    return pd.DataFrame({"ImageId": range(1, len(frame) + 1), "Label": labels.fillna("")})


def submission_accuracy(submission: pd.DataFrame, test_labels: str) -> float:
    """Accuracy of a submission against an ``ImageId,Label`` file that covers every test row.

    Raises:
        ValueError: ``test_labels`` does not cover every ``ImageId`` of the submission.
    """
    truth = pd.read_csv(test_labels, dtype=str)
    merged = submission.astype({"ImageId": str}).merge(
        truth.astype(str), on="ImageId", suffixes=("", "_true")
    )
    if len(merged) != len(submission):
        raise ValueError(
            f"test_labels {test_labels!r}: {len(merged)} of {len(submission)} ImageIds matched "
            "(expected a file with columns ImageId,Label covering every test row)"
        )
    return float((merged["Label"] == merged["Label_true"]).mean())


def true_label_accuracy(frame: pd.DataFrame) -> tuple[int, float]:
    """(rows scored, accuracy) of a classification batch output against its own ``trueLabel`` column.

    A row counts when it has both a ``trueLabel`` and a prediction; labels compare as text, ``7.0`` as
    ``7``. The accuracy is NaN when no row counts.

    Raises:
        ValueError: the output has no ``trueLabel`` column.
    """
    if "trueLabel" not in frame.columns:
        raise ValueError(
            "batch output has no trueLabel column: its datasource schema has no targetAttributeName"
        )
    predicted = predicted_labels(frame)
    valid = frame["trueLabel"].notna() & predicted.notna()

    def norm(s: pd.Series) -> pd.Series:
        return s.astype(str).str.strip().str.replace(r"\.0+$", "", regex=True)

    accuracy = (
        float((norm(predicted[valid]) == norm(frame.loc[valid, "trueLabel"])).mean())
        if valid.any()
        else math.nan
    )
    return int(valid.sum()), accuracy
