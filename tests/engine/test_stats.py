"""Data insights (engine.stats) checked against pandas / scipy on real data and tiny frames."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats.contingency import association

from amlflow.engine.dataset import Source, build_dataset
from amlflow.engine.schema import Schema, parse_schema
from amlflow.engine.stats import compute_statistics
from amlflow.engine.table import EncodedTable


def _file_source(path: Path, key: str) -> Source:
    """A Source reading the file at ``path`` (build_dataset opens and closes it)."""
    return Source(key, path.stat().st_size, functools.partial(path.open, "rb"))


def _schema(types: dict[str, str], target: str | None = None, **extra: object) -> Schema:
    return parse_schema(
        json.dumps(
            {
                "targetAttributeName": target,
                "attributes": [{"attributeName": n, "attributeType": t} for n, t in types.items()],
                **extra,
            }
        )
    )


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, EncodedTable, Schema]:
    path = Path(__file__).resolve().parents[2] / "data" / "wine" / "winequality-red-comma.csv"
    df = pd.read_csv(path)
    schema = parse_schema(
        json.dumps(
            {
                "dataFileContainsHeader": True,
                "targetAttributeName": "quality",
                "attributes": [{"attributeName": c, "attributeType": "NUMERIC"} for c in df.columns],
            }
        )
    )
    out = tmp_path_factory.mktemp("wine") / "t"
    build_dataset([_file_source(path, path.name)], schema, None, out)
    return df, EncodedTable.open(out), schema


def test_wine_numeric_summaries_match_pandas(wine: tuple[pd.DataFrame, EncodedTable, Schema]) -> None:
    df, table, schema = wine
    stats = compute_statistics(table, schema)
    json.dumps(stats, allow_nan=False)  # plain JSON, no NaN
    assert set(stats) == {"n_rows", "n_rejected", "target", "attributes"}
    assert stats["n_rows"] == 1599 and stats["n_rejected"] == 0
    assert [a["name"] for a in stats["attributes"]] == [c for c in df.columns if c != "quality"]
    for a in stats["attributes"]:
        col = df[a["name"]]
        assert a["type"] == "NUMERIC" and a["role"] == "input"
        assert (a["missing"], a["invalid"]) == (0, 0)
        assert a["min"] == pytest.approx(col.min())
        assert a["max"] == pytest.approx(col.max())
        assert a["mean"] == pytest.approx(col.mean(), rel=1e-12)
        assert a["median"] == pytest.approx(col.median())
        assert a["std"] == pytest.approx(col.std(ddof=0), rel=1e-9)
        counts, edges = np.histogram(col, bins=10)
        assert a["histogram"]["counts"] == counts.tolist()
        np.testing.assert_allclose(a["histogram"]["edges"], edges)
        assert a["correlation"] == pytest.approx(col.corr(df["quality"]), abs=1e-12)
    target = stats["target"]
    assert target["name"] == "quality" and target["type"] == "NUMERIC"
    assert target["summary"]["median"] == df["quality"].median()
    assert target["summary"]["mean"] == pytest.approx(df["quality"].mean())


def test_wine_categorical_target_uses_cramers_v_and_eta(
    wine: tuple[pd.DataFrame, EncodedTable, Schema],
) -> None:
    df, table, _ = wine
    types = dict.fromkeys(df.columns, "NUMERIC")
    types["quality"] = "CATEGORICAL"
    types["pH"] = "CATEGORICAL"
    stats = compute_statistics(table, _schema(types, "quality"))
    dist = {d["value"]: d["count"] for d in stats["target"]["distribution"]}
    assert dist == {str(k): int(v) for k, v in df["quality"].value_counts().items()}
    assert [d["count"] for d in stats["target"]["distribution"]] == sorted(dist.values(), reverse=True)
    by_name = {a["name"]: a for a in stats["attributes"]}
    ph = by_name["pH"]
    assert ph["distinct"] == df["pH"].nunique()
    top = df["pH"].astype(str).value_counts()
    assert [t["count"] for t in ph["top_categories"]] == top.iloc[:10].tolist()
    table_ct = pd.crosstab(df["pH"], df["quality"]).to_numpy()
    assert ph["correlation"] == pytest.approx(association(table_ct, method="cramer"), rel=1e-9)
    # correlation ratio of alcohol by quality class
    groups = df.groupby("quality")["alcohol"]
    eta2 = (groups.size() * (groups.mean() - df["alcohol"].mean()) ** 2).sum() / (
        (df["alcohol"] - df["alcohol"].mean()) ** 2
    ).sum()
    assert by_name["alcohol"]["correlation"] == pytest.approx(np.sqrt(eta2), rel=1e-9)


def test_banking_binary_target_and_categoricals(tmp_path: Path, data_dir: Path) -> None:
    path = data_dir / "aml-banking" / "banking.csv"
    schema = parse_schema((data_dir / "aml-banking" / "banking.csv.schema").read_text())
    build_dataset([_file_source(path, "banking.csv")], schema, None, tmp_path / "t")
    stats = compute_statistics(EncodedTable.open(tmp_path / "t"), schema)
    df = pd.read_csv(path, dtype=str)
    assert stats["target"]["distribution"] == [
        {"value": "1", "count": int((df["y"] == "1").sum())},
        {"value": "0", "count": int((df["y"] == "0").sum())},
    ]
    by_name = {a["name"]: a for a in stats["attributes"]}
    job = by_name["job"]
    vc = df["job"].value_counts()
    assert job["top_categories"][0] == {"value": vc.index[0], "count": int(vc.iloc[0])}
    assert job["distinct"] == df["job"].nunique()
    prev = by_name["previous"]  # BINARY holding 0..7: 2..7 are invalid values
    assert prev["true"] == int((df["previous"] == "1").sum())
    assert prev["false"] == int((df["previous"] == "0").sum())
    assert prev["invalid"] == int((~df["previous"].isin(["0", "1"])).sum()) > 0
    y = (df["y"] == "1").astype(float)
    dur = df["duration"].astype(float)
    assert by_name["duration"]["correlation"] == pytest.approx(dur.corr(y), abs=1e-12)
    ct = pd.crosstab(df["month"], df["y"]).to_numpy()
    assert by_name["month"]["correlation"] == pytest.approx(association(ct, method="cramer"), rel=1e-9)


def test_disjoint_groups_of_attributes_make_the_whole_document(tmp_path: Path, data_dir: Path) -> None:
    """``only=``: each attribute's entry is its own column's and the target's, so groups computed apart
    (as two reader processes do) and put back in schema order are the document of one call."""
    path = data_dir / "aml-banking" / "banking.csv"
    schema = parse_schema((data_dir / "aml-banking" / "banking.csv.schema").read_text())
    build_dataset([_file_source(path, "banking.csv")], schema, None, tmp_path / "t")
    table = EncodedTable.open(tmp_path / "t")
    whole = compute_statistics(table, schema)
    names = [a.name for a in schema.attributes if a.name != schema.target]
    parts = [compute_statistics(table, schema, only=set(names[i::2])) for i in range(2)]
    assert [len(p["attributes"]) for p in parts] == [len(names[0::2]), len(names[1::2])]
    entries = {e["name"]: e for p in parts for e in p["attributes"]}
    joined = {**parts[0], "attributes": [entries[n] for n in names]}
    assert json.dumps(joined) == json.dumps(whole)  # the same document, key order included


def test_missing_invalid_text_binary_and_roles() -> None:
    df = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e", "f"],
            "num": ["1", "", "x", "4", "5", "6"],
            "flag": ["yes", "No", "", "maybe", "T", "f"],
            "txt": ["Hello world", "hello  there world", "", "world", "x", "y"],
            "w": ["1", "1", "1", "1", "1", "1"],
            "target": ["1.5", "2", "", "4", "abc", "6"],
        }
    )
    schema = _schema(
        {
            "id": "CATEGORICAL",
            "num": "NUMERIC",
            "flag": "BINARY",
            "txt": "TEXT",
            "w": "NUMERIC",
            "target": "NUMERIC",
        },
        "target",
        rowId="id",
        rowWeight="w",
        excludedAttributeNames=["txt"],
    )
    stats = compute_statistics(EncodedTable.from_frame(df), schema)
    assert "n_rejected" not in stats  # unknown for an in-memory table
    assert stats["target"]["missing"] == 1 and stats["target"]["invalid"] == 1
    a = {x["name"]: x for x in stats["attributes"]}
    assert [a[n]["role"] for n in ("id", "num", "flag", "txt", "w")] == [
        "rowId",
        "input",
        "input",
        "excluded",
        "rowWeight",
    ]
    assert (a["num"]["missing"], a["num"]["invalid"]) == (1, 1)
    assert a["num"]["mean"] == pytest.approx(4.0) and a["num"]["median"] == 4.5
    assert (a["flag"]["true"], a["flag"]["false"], a["flag"]["missing"], a["flag"]["invalid"]) == (2, 2, 1, 1)
    assert (a["txt"]["tokens"], a["txt"]["distinct_tokens"]) == (8, 6)  # case kept: Hello != hello
    assert a["txt"]["top_tokens"][0] == {"value": "world", "count": 3}
    assert a["txt"]["correlation"] is None
    assert a["w"]["correlation"] is None  # constant column
    # num vs target over rows where both are valid: (1, 1.5), (4, 4), (6, 6)
    assert a["num"]["correlation"] == pytest.approx(np.corrcoef([1, 4, 6], [1.5, 4, 6])[0, 1])


def test_no_target_and_empty_table() -> None:
    stats = compute_statistics(
        EncodedTable.from_frame(pd.DataFrame({"a": ["1", "2"]})), _schema({"a": "NUMERIC"})
    )
    assert stats["target"] is None and stats["attributes"][0]["correlation"] is None
    empty = EncodedTable.from_frame(
        pd.DataFrame({"a": pd.Series([], dtype=object), "y": pd.Series([], dtype=object)})
    )
    stats = compute_statistics(empty, _schema({"a": "NUMERIC", "y": "BINARY"}, "y"))
    assert stats["n_rows"] == 0
    assert stats["attributes"][0]["mean"] is None
    assert stats["attributes"][0]["histogram"] == {"edges": [], "counts": []}
    json.dumps(stats, allow_nan=False)


def test_mnist_sample_statistics(tmp_path: Path, data_dir: Path) -> None:
    """785 attributes of real MNIST rows (speed is measured by bench/engine_bench.py, not asserted here)."""
    path = data_dir / "mnist-sample" / "train.csv.gz"
    names = pd.read_csv(path, nrows=0).columns.tolist()
    schema = _schema(dict.fromkeys(names, "CATEGORICAL"), "label", dataFileContainsHeader=True)
    build_dataset([_file_source(path, "train.csv.gz")], schema, None, tmp_path / "t")
    table = EncodedTable.open(tmp_path / "t")
    stats = compute_statistics(table, schema)
    assert len(stats["attributes"]) == 784
    assert sum(d["count"] for d in stats["target"]["distribution"]) == 5000
    frame = pd.read_csv(path, dtype=str)
    pixel = next(a for a in stats["attributes"] if a["name"] == "pixel400")
    counts = frame["pixel400"].value_counts()
    assert pixel["top_categories"][0] == {"value": counts.index[0], "count": int(counts.iloc[0])}


def test_compute_statistics_reads_table_in_memory_like_on_disk(tmp_path: Path) -> None:
    df = pd.DataFrame({"x": ["1", "2", "3", "2"], "y": ["a", "b", "a", "b"]})
    schema = _schema({"x": "NUMERIC", "y": "CATEGORICAL"}, "y")
    mem = compute_statistics(EncodedTable.from_frame(df), schema)
    data = b"1,a\n2,b\n3,a\n2,b\n"
    build_dataset([Source("f", len(data), lambda: io.BytesIO(data))], schema, None, tmp_path / "t")
    disk = compute_statistics(EncodedTable.open(tmp_path / "t"), schema)
    disk.pop("n_rejected")
    assert mem == disk


def test_cramers_v_sparse_path_matches_dense() -> None:
    from amlflow.engine.stats import _cramers_v

    rng = np.random.default_rng(0)
    a = rng.integers(0, 3000, 20_000)
    b = (a % 7 + rng.integers(0, 2, 20_000)) % 9
    a[::50] = -1  # left out
    whole = lambda: iter([(a, b)])  # noqa: E731
    chunks = lambda: ((a[i : i + 3000], b[i : i + 3000]) for i in range(0, len(a), 3000))  # noqa: E731
    dense = _cramers_v(whole, 3000, 9)
    sparse = _cramers_v(whole, 3000 * 1000, 9)  # same data, a huge declared cardinality
    ct = pd.crosstab(a[a >= 0], b[a >= 0]).to_numpy()
    assert dense == pytest.approx(association(ct, method="cramer"), rel=1e-9)
    assert sparse == pytest.approx(dense, rel=1e-12)
    # read in chunks of rows, the sparse path merging each chunk's cells: the same
    assert _cramers_v(chunks, 3000, 9) == pytest.approx(dense, rel=1e-12)
    assert _cramers_v(chunks, 3000 * 1000, 9) == pytest.approx(dense, rel=1e-12)
