"""Batch prediction output: AML's CSV layout and number format (docs/aml-reference.md §8.3, §8.4).

The number format is the one real AML output files use (Java ``DecimalFormat("0.######E0")``, half-even
rounding of the shortest decimal representation): a one-digit mantissa, at most six fraction digits with
trailing zeros removed, ``E`` and a signed exponent without ``+`` or padding — ``1.237027E-1``, ``1E0``,
``-1.526385E1``, ``0E0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from amlflow.engine.model import TrainedModel
from amlflow.engine.numfmt import WIDTH, aml_number, format_numbers, format_rows
from amlflow.engine.schema import Schema, binary_view
from amlflow.engine.table import Table

__all__ = ["BatchCounts", "aml_number", "write_batch_output"]

# ------------------------------------------------------------------------------------------- the writer


@dataclass(frozen=True)
class BatchCounts:
    """``total`` observations written (rows + rejected rows) and ``invalid`` ones (empty lines)."""

    total: int
    invalid: int


def _csv_field(value: str) -> str:
    if any(c in value for c in ',"\n\r') or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


def _row_positions(rejected: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Output-sequence position of each table row (rows are the non-rejected positions, in order)."""
    if len(rejected) == 0:
        return rows
    shifted = rejected - np.arange(len(rejected))
    return rows + np.searchsorted(shifted, rows, side="right")


def _score_lines(model_type: str, scores: np.ndarray, threshold: float) -> bytes:
    """The score columns of AML's batch output for a batch of rows: one ``\\n``-ended line per row (BINARY
    ``bestAnswer,score``, MULTICLASS one number per class, REGRESSION ``score``), each number as
    :func:`aml_number` writes it (:mod:`amlflow.engine.numfmt`)."""
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0]
    if model_type == "MULTICLASS":
        k = s.shape[1]
        chars, keep = format_numbers(s.reshape(-1))
        chars, keep = chars.reshape(n, k, WIDTH), keep.reshape(n, k, WIDTH)
        return format_rows([(chars[:, j], keep[:, j]) for j in range(k)])
    chars, keep = format_numbers(s.reshape(-1))
    if model_type == "BINARY":
        best = np.where(s.reshape(-1) >= threshold, ord("1"), ord("0")).astype(np.uint8).reshape(n, 1)
        return format_rows([(best, np.ones((n, 1), dtype=bool)), (chars, keep)])
    return format_rows([(chars, keep)])


def write_batch_output(
    model: TrainedModel,
    table: Table,
    schema: Schema,
    out: BinaryIO,
    *,
    threshold: float = 0.5,
    rows: tuple[int, int] | None = None,
    batch_rows: int = 20_000,
) -> BatchCounts:
    """Write AML's batch prediction CSV (uncompressed) for ``table`` to ``out``.

    Columns: ``tag`` (when ``schema`` has a rowId), ``trueLabel`` (when ``schema`` has a target present in
    the table; BINARY targets normalised to ``0``/``1``, empty when missing/invalid), then BINARY
    ``bestAnswer,score`` (``bestAnswer`` = 1 when score ≥ ``threshold``), MULTICLASS one column per class
    (the model's classes, sorted), REGRESSION ``score``. One line per observation in input order, an empty
    line where the CSV reader rejected a row. ``rows=(first_position, stop_position)`` limits the output to
    one input file's span of the output sequence (``table.files``).
    """
    rejected = np.asarray(table.rejected_positions, dtype=np.int64)
    n_positions = table.n_rows + len(rejected)
    p0, p1 = rows if rows is not None else (0, n_positions)
    if not 0 <= p0 <= p1 <= n_positions:
        raise ValueError(f"rows: ({p0}, {p1}) is outside 0..{n_positions}")

    def rej_before(p: int) -> int:
        return int(np.searchsorted(rejected, p, side="left"))

    row_start, row_stop = p0 - rej_before(p0), p1 - rej_before(p1)
    span_rejected = rej_before(p1) - rej_before(p0)

    mt = model.model_type
    header: list[str] = []
    tag = schema.row_id if schema.row_id is not None and schema.row_id in table.names else None
    if tag is not None:
        header.append("tag")
    target = schema.target if schema.target is not None and schema.target in table.names else None
    if target is not None:
        header.append("trueLabel")
    if mt == "BINARY":
        header += ["bestAnswer", "score"]
    elif mt == "MULTICLASS":
        header += [_csv_field(c) for c in model.classes]
    else:
        header.append("score")
    out.write((",".join(header) + "\n").encode("utf-8"))

    # the leading columns: (attribute, its CSV text per dictionary entry)
    leading: list[tuple[str, np.ndarray]] = []
    if tag is not None:
        leading.append((tag, np.array([_csv_field(str(v)) for v in table.dictionary(tag)], dtype=object)))
    if target is not None:
        d = table.dictionary(target)
        if mt == "BINARY":
            bv = binary_view(d)
            true_text = np.where(np.isnan(bv), "", np.where(bv == 1.0, "1", "0")).astype(object)
        else:
            true_text = np.array([_csv_field(str(v).strip()) for v in d], dtype=object)
        leading.append((target, true_text))

    written_empty = 0
    last_pos = p0  # next position to write
    batches = model.iter_predictions(table, schema, start=row_start, stop=row_stop, batch_rows=batch_rows)
    for a, b, pred in batches:
        positions = _row_positions(rejected, np.arange(a, b, dtype=np.int64))
        prefix = [list(text[np.asarray(table.codes(name, a, b), dtype=np.int64)]) for name, text in leading]
        blob = _score_lines(mt, pred.scores, threshold)
        # empty lines before each row: the gap to the previous written position
        gaps = np.diff(np.concatenate([[last_pos], positions]))
        gaps[1:] -= 1
        if not prefix and not gaps.any():  # the common case: the score lines as they are
            out.write(blob)
            last_pos = int(positions[-1]) + 1 if len(positions) else last_pos
            continue
        body = blob.decode("ascii").split("\n")[:-1]
        if prefix:
            body = [",".join(parts) for parts in zip(*prefix, body, strict=True)]
        chunks = []
        for gap, line in zip(gaps.tolist(), body, strict=True):
            if gap:
                chunks.append("\n" * gap)
                written_empty += gap
            chunks.append(line)
            chunks.append("\n")
        out.write("".join(chunks).encode("utf-8"))
        last_pos = int(positions[-1]) + 1 if len(positions) else last_pos
    trailing = p1 - last_pos
    if trailing > 0:
        out.write(b"\n" * trailing)
        written_empty += trailing
    assert written_empty == span_rejected, (written_empty, span_rejected)
    return BatchCounts(total=p1 - p0, invalid=span_rejected)
