"""Data preparation tasks (pandas): derive a new target column before the data goes to AML.

AML itself cannot derive columns, so its users prepared CSVs beforehand; the wine cases need a BINARY
target (``quality >= 7``) and a MULTICLASS one (``bad / average / good``) from the numeric ``quality``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task

from amlflow.storage.atomic import write_file_atomic

__all__ = ["bin_target"]


@task(name="bin_target")
def bin_target(
    source: str,
    output_dir: str,
    column: str,
    new_column: str,
    edges: Sequence[float],
    labels: Sequence[str],
) -> str:
    """Replace a numeric column by a binned label column, writing a new CSV (atomically).

    Bins are left-closed: ``[edges[i], edges[i+1])``. The output name holds a hash of the arguments, so an
    unchanged request writes the same file (and downstream AML IDs stay the same).

    Args:
        source: a local CSV with a header (comma-separated).
        output_dir: where to write the derived CSV.
        column: the numeric column to bin (dropped from the output).
        new_column: the name of the label column (appended last).
        edges: bin edges, increasing; use ``float("-inf")`` / ``float("inf")`` for open ends.
        labels: one label per bin (``len(edges) - 1``).

    Returns:
        The derived CSV's path.

    Raises:
        ValueError: ``column`` is missing, or ``labels`` does not match ``edges`` (named in the message).

    Example:
        >>> bin_target("data/wine/winequality-red-comma.csv", "out", "quality", "good",
        ...            [float("-inf"), 7, float("inf")], ["0", "1"])
        'out/winequality-red-comma-good-1a2b3c4d.csv'
    """
    if len(labels) != len(edges) - 1:
        raise ValueError(
            f"labels: expected {len(edges) - 1} labels for {len(edges)} edges, got {len(labels)}"
        )
    frame = pd.read_csv(source, dtype=str)
    if column not in frame.columns:
        raise ValueError(f"column: {column!r} is not in {source!r} (columns: {', '.join(frame.columns)})")
    values = pd.to_numeric(frame[column], errors="coerce")
    binned = pd.cut(values, bins=list(edges), labels=list(labels), right=False)
    out = frame.drop(columns=[column])
    out[new_column] = binned.astype(str).where(binned.notna(), "")
    tag = hashlib.sha256(
        repr((Path(source).read_bytes(), column, new_column, list(edges), list(labels))).encode()
    ).hexdigest()[:8]
    dest = Path(output_dir).expanduser() / f"{Path(source).stem}-{new_column}-{tag}.csv"
    write_file_atomic(dest, out.to_csv(index=False, lineterminator="\n"))
    counts = out[new_column].value_counts().to_dict()
    get_run_logger().info("derived %s from %s: %s → %s", dest, source, column, counts)
    return str(dest)
