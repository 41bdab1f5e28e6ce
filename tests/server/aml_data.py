"""Small real inputs for the wire tests: subsets of the repo's data, schemas written the AML way."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"

WINE_COLUMNS = [
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
    "quality",
]


def schema(
    attributes: list[tuple[str, str]], *, target: str | None, header: bool, row_id: str | None = None
) -> str:
    """An AML data schema (current spelling) as JSON text."""
    doc: dict[str, object] = {
        "version": "1.0",
        "rowId": row_id,
        "rowWeight": None,
        "targetAttributeName": target,
        "dataFormat": "CSV",
        "dataFileContainsHeader": header,
        "attributes": [{"attributeName": n, "attributeType": t} for n, t in attributes],
        "excludedAttributeNames": [],
    }
    if target is None:
        del doc["targetAttributeName"]
    return json.dumps(doc, indent=2)


def wine_csv(rows: int | None = None) -> bytes:
    """The red-wine CSV (comma-separated, header), optionally its first ``rows`` rows."""
    lines = (DATA / "wine" / "winequality-red-comma.csv").read_bytes().splitlines(keepends=True)
    return b"".join(lines[: (rows + 1) if rows else None])


def wine_binary_schema() -> str:
    """BINARY on quality>=7 needs a derived column; here: REGRESSION-free BINARY via 'good' column."""
    attrs = [(c, "NUMERIC") for c in WINE_COLUMNS[:-1]] + [("good", "BINARY")]
    return schema(attrs, target="good", header=True)


def wine_binary_csv(rows: int | None = None) -> bytes:
    """The wine data with quality replaced by good = quality >= 7 (AML's BINARY wine case)."""
    reader = csv.reader(io.StringIO(wine_csv(rows).decode()))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = next(reader)
    writer.writerow(header[:-1] + ["good"])
    for row in reader:
        writer.writerow(row[:-1] + ["1" if int(row[-1]) >= 7 else "0"])
    return out.getvalue().encode()


def wine_regression_schema() -> str:
    """REGRESSION on quality."""
    return schema([(c, "NUMERIC") for c in WINE_COLUMNS], target="quality", header=True)


def gz_head(path: Path, rows: int, *, header: bool) -> bytes:
    """The first ``rows`` data rows of a gzipped CSV (plus its header line), gzipped again."""
    with gzip.open(path, "rt", newline="") as f:
        lines = []
        if header:
            lines.append(f.readline())
        for _ in range(rows):
            line = f.readline()
            if not line:
                break
            lines.append(line)
    return gzip.compress("".join(lines).encode(), mtime=0)


def mnist_kaggle_schema(*, train: bool, pixel_type: str) -> str:
    """Kaggle MNIST: ``label`` (training only) then pixel0..pixel783."""
    attrs = ([("label", "CATEGORICAL")] if train else []) + [(f"pixel{i}", pixel_type) for i in range(784)]
    return schema(attrs, target="label" if train else None, header=True)


def mnist_headerless_schema() -> str:
    """Headerless MNIST: 784 numeric pixels, then the label."""
    attrs = [(f"pixel{i}", "NUMERIC") for i in range(784)] + [("label", "CATEGORICAL")]
    return schema(attrs, target="label", header=False)


def banking_rows(name: str, rows: int) -> bytes:
    """First ``rows`` rows of a banking CSV (header kept, CRLF kept as in AML's file)."""
    lines = (DATA / "aml-banking" / name).read_bytes().splitlines(keepends=True)
    return b"".join(lines[: rows + 1])
