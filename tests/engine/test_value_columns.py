"""Columns without a dictionary (engine.table value columns): a NUMERIC input with more distinct values
than the threshold is stored as float64 rows, and every reader of the table gives what it gives for the
same data stored as a dictionary (docs/scale.md, "Columns without a dictionary")."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from amlflow.engine import table as table_mod
from amlflow.engine.dataset import Source, build_dataset
from amlflow.engine.dataset_parts import merge_parts, read_part
from amlflow.engine.errors import DataError
from amlflow.engine.schema import Schema, parse_schema
from amlflow.engine.table import EncodedTable, TableWriter, is_value_column

THRESHOLD = 40  # distinct values past which x becomes a value column in these tests


def _csv(n: int = 600, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    lines = ["id,x,k,y"]
    for i in range(n):
        x = rng.normal(3.0, 2.0)
        r = rng.random()
        text = "" if r < 0.05 else ("abc" if r < 0.08 else (f" {x:.6f} " if r < 0.5 else repr(float(x))))
        k = int(rng.integers(0, 5))
        y = int(x + 0.5 * k + rng.normal(0, 1) > 4.0)
        lines.append(f"{i},{text},{k},{y}")
    return ("\n".join(lines) + "\n").encode()


def _schema(target_type: str = "BINARY") -> Schema:
    return parse_schema(
        json.dumps(
            {
                "dataFileContainsHeader": True,
                "targetAttributeName": "y",
                "rowId": "id",
                "attributes": [
                    {"attributeName": "id", "attributeType": "CATEGORICAL"},
                    {"attributeName": "x", "attributeType": "NUMERIC"},
                    {"attributeName": "k", "attributeType": "NUMERIC"},
                    {"attributeName": "y", "attributeType": target_type},
                ],
            }
        )
    )


def _src(data: bytes, key: str = "in.csv") -> Source:
    def open_at(offset: int) -> io.BytesIO:
        f = io.BytesIO(data)
        f.seek(offset)
        return f

    return Source(key, len(data), lambda: io.BytesIO(data), open_at)


@pytest.fixture
def low_threshold(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(table_mod, "VALUE_COLUMN_MIN_VALUES", THRESHOLD)
    return THRESHOLD


def build(tmp_path: Path, name: str, data: bytes | None = None, schema: Schema | None = None) -> EncodedTable:
    out = tmp_path / name
    build_dataset([_src(data or _csv())], schema or _schema(), None, out)
    return EncodedTable.open(out)


@pytest.fixture
def tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[EncodedTable, EncodedTable]:
    """The same data as dictionaries everywhere, and with x as a value column."""
    plain = build(tmp_path, "plain")
    monkeypatch.setattr(table_mod, "VALUE_COLUMN_MIN_VALUES", THRESHOLD)
    return plain, build(tmp_path, "values")


def test_a_wide_numeric_input_is_stored_as_values(tables: tuple[EncodedTable, EncodedTable]) -> None:
    plain, values = tables
    assert not is_value_column(plain, "x")
    assert is_value_column(values, "x") and values.kind("x") == "values"
    # the rowId, the target and the narrow NUMERIC column stay dictionaries
    assert [values.kind(n) for n in ("id", "k", "y")] == ["dictionary"] * 3
    d = plain.dictionary("x")
    stripped = d[plain.codes("x")]
    expected = np.array([float(s) if s not in ("", "abc") else np.nan for s in stripped.tolist()])
    got = values.values("x")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)  # nan where missing or invalid, in the same rows
    assert values.value_counts("x") == {
        "missing": int((stripped == "").sum()),
        "invalid": int((stripped == "abc").sum()),
    }
    for n in ("id", "k", "y"):
        np.testing.assert_array_equal(values.codes(n), plain.codes(n))
        assert values.dictionary(n).tolist() == plain.dictionary(n).tolist()
    meta = json.loads((values.directory / "meta.json").read_text())  # type: ignore[operator]
    assert meta["version"] == 3
    assert json.loads((plain.directory / "meta.json").read_text())["version"] == 2  # type: ignore[operator]
    assert [c.get("kind", "dictionary") for c in meta["columns"]] == [
        "dictionary",
        "values",
        "dictionary",
        "dictionary",
    ]


def test_a_value_column_refuses_dictionary_reads(tables: tuple[EncodedTable, EncodedTable]) -> None:
    _, values = tables
    with pytest.raises(DataError, match="x: stored without a dictionary") as e:
        values.dictionary("x")
    assert e.value.field == "x"
    with pytest.raises(DataError, match="x: stored without a dictionary"):
        values.codes("x", 0, 10)
    with pytest.raises(DataError, match="k: not a column without a dictionary"):
        values.values("k")
    assert values.strings("x", 0, 5).tolist() == [
        "" if v != v else repr(v) for v in values.values("x", 0, 5).tolist()
    ]


def test_parts_merged_make_the_same_table(tmp_path: Path, low_threshold: int) -> None:
    """Parts of a few rows each (most under the threshold, so the merge switches the column) and
    whole-file reading give the same bytes."""
    data = _csv(900, seed=3)
    whole = tmp_path / "whole"
    build_dataset([_src(data)], _schema(), None, whole)
    parts = []
    cuts = [0, 700, 1500, 9000, len(data)]
    for i, (lo, hi) in enumerate(zip(cuts, cuts[1:], strict=False)):
        out = tmp_path / f"part{i}"
        read_part(_src(data), _schema(), None, out, lo=lo, hi=hi, total_bytes=len(data), file_start=0)
        parts.append(out)
    kinds = [EncodedTable.open(p).kind("x") for p in parts]
    assert "dictionary" in kinds and "values" in kinds  # both kinds meet in the merge
    merged = tmp_path / "merged"
    merge_parts(parts, _schema(), None, [("in.csv", len(data))], merged)
    for f in ("codes.bin", "dictionaries.json", "meta.json"):
        assert (merged / f).read_bytes() == (whole / f).read_bytes(), f


def test_the_budget_switches_the_widest_numeric_input(tmp_path: Path) -> None:
    """Over the dictionary budget, the widest NUMERIC input becomes a value column before any column
    fails; a wide column that may not (here the rowId) still fails, naming it."""
    n = 3000
    with TableWriter(tmp_path / "t", ["a", "b"], dictionary_budget=2000 * 340, value_columns=[1]) as w:
        w.append_strings(0, [str(i % 10) for i in range(n)])
        w.append_strings(1, [str(i * 0.5) for i in range(n)])
        t = w.finish()
    assert t.kind("b") == "values" and t.kind("a") == "dictionary"
    np.testing.assert_array_equal(t.values("b"), np.arange(n) * 0.5)
    with TableWriter(tmp_path / "u", ["a", "b"], dictionary_budget=2000 * 340, value_columns=[1]) as w:
        w.append_strings(1, [str(i * 0.5) for i in range(n)])
        with pytest.raises(DataError, match="a: the columns' distinct values") as e:
            w.append_strings(0, [f"id{i}" for i in range(n)])
    assert e.value.field == "a"
    assert not (tmp_path / "u").exists()


def test_spilled_codes_switch_to_values(tmp_path: Path) -> None:
    """Codes already spilled to disk come back as values when the column switches mid-table."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=5000)
    with TableWriter(tmp_path / "t", ["x"], spill_bytes=1000, value_columns=[0], value_threshold=3000) as w:
        for a in range(0, 5000, 500):
            w.append_strings(0, [repr(v) for v in x[a : a + 500].tolist()])
            assert w.kind(0) == ("values" if a + 500 > 3000 else "dictionary")
        t = w.finish()
    np.testing.assert_array_equal(t.values("x"), x)
    assert t.value_counts("x") == {"missing": 0, "invalid": 0}


def _close(a: object, b: object, path: str = "") -> None:
    """Insights equal, floats to 1e-9 relative (a value column sums per chunk, a dictionary per value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


@pytest.mark.parametrize("target_type", ["BINARY", "NUMERIC", "CATEGORICAL"])
def test_statistics_of_a_value_column_are_the_dictionarys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target_type: str
) -> None:
    from amlflow.engine.stats import compute_statistics

    schema = _schema(target_type)
    plain = build(tmp_path, "plain", schema=schema)
    monkeypatch.setattr(table_mod, "VALUE_COLUMN_MIN_VALUES", THRESHOLD)
    values = build(tmp_path, "values", schema=schema)
    assert values.kind("x") == "values"
    want, got = compute_statistics(plain, schema), compute_statistics(values, schema)
    _close(got, want)
    x = next(a for a in got["attributes"] if a["name"] == "x")
    assert x["missing"] > 0 and x["invalid"] > 0 and x["correlation"] is not None
    assert x["median"] == next(a for a in want["attributes"] if a["name"] == "x")["median"]  # exact


def test_statistics_in_passes_hold_few_rows(
    tables: tuple[EncodedTable, EncodedTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 7 rows and a selection holding 5 at once give the same insights."""
    from amlflow.engine import order_stats, stats

    plain, values = tables
    want = stats.compute_statistics(values, _schema())
    monkeypatch.setattr(stats, "CHUNK_ROWS", 7)
    monkeypatch.setattr(order_stats, "COLLECT_VALUES", 5)
    _close(stats.compute_statistics(values, _schema()), want)
    _close(want, stats.compute_statistics(plain, _schema()))


@pytest.mark.parametrize("seed", range(40))
def test_order_statistics_are_exact(seed: int) -> None:
    """Against a sort, whatever the data (normal, few repeated values, ±0, extremes, one constant) and
    however little may be held at once."""
    from amlflow.engine.order_stats import order_statistics

    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 3000))
    x = [
        rng.normal(size=m) * 10.0 ** int(rng.integers(-5, 5)),
        rng.integers(-3, 3, size=m).astype(float),
        np.concatenate([rng.normal(size=m), [0.0, -0.0, 1e308, -1e308, 5e-324]]),
        np.full(m, 2.5),
    ][seed % 4].copy()
    x[rng.random(len(x)) < 0.1] = np.nan
    v = np.sort(x[~np.isnan(x)])
    if not len(v):
        return
    ranks = rng.integers(0, len(v), size=7)
    parts = int(rng.integers(1, 9))
    for collect in (1, 5, 100, 10**6):
        got = order_statistics(lambda: np.array_split(x, parts), ranks, collect=collect)
        np.testing.assert_array_equal(got, v[ranks])
    with pytest.raises(ValueError, match="rank"):
        order_statistics(lambda: [x], [len(v)], collect=1)


RECIPE = json.dumps(
    {
        "groups": {},
        "assignments": {},
        "outputs": [
            "x",
            "normalize(x)",
            "quantile_bin(x,10)",
            "quantile_bin(x,7)",
            "cartesian(quantile_bin(x,7),quantile_bin(k,3))",
            "k",
        ],
    }
)


def test_features_of_a_value_column_are_the_dictionarys(tables: tuple[EncodedTable, EncodedTable]) -> None:
    """The same bins, vocabularies and bounds, and the same feature matrix (its NUMERIC values to
    rounding), fitted on a selection of rows, read in small batches."""
    from amlflow.engine.recipe.features import FeatureBuilder
    from amlflow.engine.recipe.parser import parse_recipe

    plain, values = tables
    schema = _schema()
    recipe = parse_recipe(RECIPE, schema)
    rows = np.random.default_rng(5).random(plain.n_rows) < 0.7
    a = FeatureBuilder.fit(recipe, schema, plain, rows, batch_rows=97)
    b = FeatureBuilder.fit(recipe, schema, values, rows, batch_rows=97)
    assert a.n_features == b.n_features
    assert {k: v for k, v in a.state.items() if "edges" in v} == {
        k: v for k, v in b.state.items() if "edges" in v
    }
    for k, v in a.state.items():
        if "mean" in v:
            assert b.state[k] == pytest.approx(v, rel=1e-12)
    for la, lb in zip(a.leaves, b.leaves, strict=True):
        assert (la.vocab, la.implicit, la.offset) == (lb.vocab, lb.implicit, lb.offset)
        assert (lb.mean, lb.std) == pytest.approx((la.mean, la.std), rel=1e-12)
    assert FeatureBuilder.bound(recipe, schema, plain, rows) == FeatureBuilder.bound(
        recipe, schema, values, rows
    )
    # the model fitted on either table, applied to either table: the same matrix
    for table in (plain, values):
        ma, mb = a.transform(table, batch_rows=50), b.transform(table, batch_rows=50)
        assert (ma != 0).toarray().tolist() == (mb != 0).toarray().tolist()
        np.testing.assert_allclose(mb.toarray(), ma.toarray(), rtol=1e-6)
        np.testing.assert_array_equal(b.row_nnz(table, 0, table.n_rows), np.diff(ma.indptr))
    np.testing.assert_array_equal(b.transform(values).toarray(), b.transform(plain).toarray())
    # a realtime record is encoded from its text, whatever the table was
    rec = {"x": plain.strings("x", 3, 4)[0], "k": "2"}
    np.testing.assert_allclose(b.encode_record(rec)[1], a.encode_record(rec)[1], rtol=1e-6)


def test_binning_a_normalized_value_column_is_refused(tables: tuple[EncodedTable, EncodedTable]) -> None:
    from amlflow.engine.recipe.features import FeatureBuilder
    from amlflow.engine.recipe.parser import parse_recipe

    _, values = tables
    recipe = parse_recipe(json.dumps({"outputs": ["quantile_bin(normalize(x),5)"]}), _schema())
    with pytest.raises(DataError, match=r"x: .*only its own values can be binned") as e:
        FeatureBuilder.fit(recipe, _schema(), values)
    assert e.value.field == "x"


def test_the_suggested_recipe_is_the_dictionarys(tables: tuple[EncodedTable, EncodedTable]) -> None:
    from amlflow.engine.recipe.suggest import suggest_recipe

    plain, values = tables
    for schema in (_schema(), _schema("NUMERIC"), _schema("CATEGORICAL")):
        assert suggest_recipe(values, schema) == suggest_recipe(plain, schema)


REPO = Path(__file__).resolve().parents[2]
REAL = {
    # name: (csv, schema, recipe, model type)
    "wine": (
        "data/wine/winequality-red-comma.csv",
        "schemas/wine-regression.csv.schema",
        "recipes/wine.recipe.json",
        "REGRESSION",
    ),
    "banking": (
        "data/aml-banking/banking.csv",
        "data/aml-banking/banking.csv.schema",
        "data/aml-banking/recipe.json",
        "BINARY",
    ),
}


@pytest.mark.parametrize("case", sorted(REAL))
@pytest.mark.parametrize("mode", ["memory", "streaming", "sharded"])
def test_models_trained_on_value_columns_are_the_dictionarys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, mode: str
) -> None:
    """The reference cases with every NUMERIC input of more than 40 distinct values stored as values:
    the same model (its scores on the held-out rows to float32 rounding), in memory, streaming and
    data-parallel (2 shards: the algorithm of the training processes and of Dask)."""
    from amlflow.engine.model import train, train_sharded
    from amlflow.engine.params import parse_parameters
    from amlflow.engine.rearrange import parse_rearrangement
    from amlflow.engine.recipe.parser import parse_recipe

    csv_path, schema_path, recipe_path, model_type = REAL[case]
    data = (REPO / csv_path).read_bytes()
    schema = parse_schema((REPO / schema_path).read_text())
    recipe = parse_recipe((REPO / recipe_path).read_text(), schema)
    params = parse_parameters({"sgd.maxPasses": "5"})
    tables = {}
    for kind, threshold in (("plain", 10**9), ("values", THRESHOLD)):
        monkeypatch.setattr(table_mod, "VALUE_COLUMN_MIN_VALUES", threshold)
        for part, percent in (("train", (0, 70)), ("test", (70, 100))):
            rearr = parse_rearrangement(
                json.dumps({"splitting": {"percentBegin": percent[0], "percentEnd": percent[1]}})
            )
            build_dataset([_src(data)], schema, rearr, tmp_path / f"{kind}-{part}")
            tables[kind, part] = EncodedTable.open(tmp_path / f"{kind}-{part}")
    wide = [n for n in tables["values", "train"].names if tables["values", "train"].kind(n) == "values"]
    assert len(wide) >= 2, wide  # several inputs are value columns
    models = {
        kind: (
            train_sharded(tables[kind, "train"], schema, recipe, params, model_type, shards=2)
            if mode == "sharded"
            else train(tables[kind, "train"], schema, recipe, params, model_type, mode=mode)  # type: ignore[arg-type]
        )
        for kind in ("plain", "values")
    }
    for part in ("test",):
        want = models["plain"].predict_table(tables["plain", part], schema).scores
        for kind in ("plain", "values"):  # the value-column model on either kind of table
            got = models["values"].predict_table(tables[kind, part], schema).scores
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_value_column_read_as_categorical_is_refused(tables: tuple[EncodedTable, EncodedTable]) -> None:
    """A model that reads x as CATEGORICAL (AML types a batch datasource like the training one) cannot
    score a datasource that stored x as values: its text is gone; the error names x and the fix."""
    from amlflow.engine.recipe.features import FeatureBuilder
    from amlflow.engine.recipe.parser import parse_recipe

    plain, values = tables
    doc = json.loads(_schema().to_json())
    for a in doc["attributes"]:
        if a["attributeName"] == "x":
            a["attributeType"] = "CATEGORICAL"
    categorical = parse_schema(json.dumps(doc))
    recipe = parse_recipe(json.dumps({"outputs": ["x", "k"]}), categorical)
    fb = FeatureBuilder.fit(recipe, categorical, plain)
    with pytest.raises(DataError, match="x: the model reads it as CATEGORICAL") as e:
        fb.transform(values)
    assert e.value.field == "x"


def test_reading_values_first_still_refuses_codes(tables: tuple[EncodedTable, EncodedTable]) -> None:
    _, values = tables
    values.values("x", 0, 3)
    with pytest.raises(DataError, match="x: stored without a dictionary"):
        values.codes("x", 0, 3)
