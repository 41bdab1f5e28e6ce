"""engine.limits and the limits it documents (issue 8, "Hardening"): AML's limits enforced at parse time, the
token caps that keep feature building linear, the memory budget of a job, empty data.

Every hostile input of the issue is here; the assertions are on feature counts and errors, never on time.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amlflow.engine.dataset import Source, build_dataset
from amlflow.engine.errors import DataError, RecipeError, SchemaError, TrainingError
from amlflow.engine.evaluation import evaluate
from amlflow.engine.limits import (
    MAX_EXPRESSION_DEPTH,
    MAX_RECORD_BYTES,
    MAX_RECORD_FEATURES,
    MAX_TOKENS_PER_VALUE,
    check_memory,
    check_record,
    default_memory_budget,
    format_bytes,
    require_records,
)
from amlflow.engine.model import MAX_CLASSES, TrainedModel, estimate_training_bytes, train
from amlflow.engine.params import parse_parameters
from amlflow.engine.recipe import MAX_OUTPUTS, FeatureBuilder, parse_recipe
from amlflow.engine.recipe.transforms import cartesian_pairs, ngram_count, ngrams, osb, osb_count
from amlflow.engine.schema import MAX_ATTRIBUTES, Schema, parse_schema
from amlflow.engine.table import EncodedTable


def _schema(attrs: list[tuple[str, str]], target: str | None = "y", header: bool = True) -> Schema:
    doc: dict[str, object] = {
        "dataFileContainsHeader": header,
        "attributes": [{"attributeName": n, "attributeType": t} for n, t in attrs],
    }
    if target:
        doc["targetAttributeName"] = target
    return parse_schema(json.dumps(doc))


def _text(rng: random.Random, n_bytes: int) -> str:
    words: list[str] = []
    size = -1
    while size < n_bytes:
        w = f"word{rng.randrange(2000)}"
        words.append(w)
        size += len(w) + 1
    return " ".join(words)


TEXT_SCHEMA = _schema([("text", "TEXT"), ("text2", "TEXT"), ("y", "BINARY")])
HOSTILE = '{"outputs": ["cartesian(ngram(text,10),ngram(text2,10))"]}'


# ----------------------------------------------------------------------- cartesian of n-grams, long text


def _hostile_frame() -> pd.DataFrame:
    rng = random.Random(0)
    return pd.DataFrame(
        {
            "text": [_text(rng, 600) for _ in range(30)],
            "text2": [_text(rng, 600) for _ in range(30)],
            "y": ["0", "1"] * 15,
        }
    )


def test_cartesian_of_ngrams_on_long_text_has_bounded_features() -> None:
    df = _hostile_frame()
    assert len(df.to_csv(index=False)) > 36_000  # the 36 KB of CSV
    # uncapped, every row would make ~(10 · 70 words)² ≈ 440,000 pairs
    words = len(df["text"][0].split())
    assert int(ngram_count(np.array([words]), 10)[0]) ** 2 > 40 * MAX_TOKENS_PER_VALUE
    table = EncodedTable.from_frame(df)
    recipe = parse_recipe(HOSTILE, TEXT_SCHEMA)
    bound = FeatureBuilder.bound(recipe, TEXT_SCHEMA, table)
    assert bound.max_row == MAX_TOKENS_PER_VALUE
    assert bound.nonzeros == 30 * MAX_TOKENS_PER_VALUE
    model = train(table, TEXT_SCHEMA, recipe, parse_parameters({"sgd.maxPasses": "2"}), "BINARY")
    assert 0 < model.builder.n_features <= 30 * MAX_TOKENS_PER_VALUE
    X = model.builder.transform(table)
    assert int(np.diff(X.indptr).max()) <= MAX_TOKENS_PER_VALUE
    # the 3.8 KB Predict record
    rng = random.Random(1)
    record = {"text": _text(rng, 1900), "text2": _text(rng, 1900)}
    assert sum(len(v) for v in record.values()) > 3_800
    assert model.builder.record_bound(record) == MAX_TOKENS_PER_VALUE
    cols, _ = model.builder.encode_record(record)
    assert len(cols) <= MAX_TOKENS_PER_VALUE
    assert model.predict_record(record)["predictedLabel"] in ("0", "1")


def test_transform_batches_of_a_cartesian_recipe_are_small_and_give_the_same_matrix() -> None:
    table = EncodedTable.from_frame(_hostile_frame())
    builder = FeatureBuilder.fit(parse_recipe(HOSTILE, TEXT_SCHEMA), TEXT_SCHEMA, table)
    assert builder.batch_rows(1 << 16) < 1 << 16
    whole = builder.transform(table, batch_rows=1000)
    batched = builder.transform(table)  # the default: cartesian-sized batches
    assert (whole != batched).nnz == 0


# ------------------------------------------------------------------------------------------ token caps


@given(st.integers(0, 40), st.integers(2, 10))
def test_token_counts_match_the_tokens(n_words: int, n: int) -> None:
    text = " ".join(f"w{i}" for i in range(n_words))
    assert len(ngrams(text, n)) == int(ngram_count(np.array([n_words]), n)[0])
    assert len(osb(text, n)) == int(osb_count(np.array([n_words]), n)[0])


def test_every_token_list_is_capped_keeping_the_first_tokens() -> None:
    text = " ".join(f"w{i}" for i in range(3 * MAX_TOKENS_PER_VALUE))
    grams = ngrams(text, 10)
    assert len(grams) == MAX_TOKENS_PER_VALUE
    assert grams[:2] == ["w0", "w1"] and " " not in grams[-1]  # unigrams come first
    assert len(osb(text, 10)) == MAX_TOKENS_PER_VALUE
    assert int(ngram_count(np.array([3 * MAX_TOKENS_PER_VALUE]), 10)[0]) == MAX_TOKENS_PER_VALUE
    pairs = cartesian_pairs(grams, grams)
    assert len(pairs) == MAX_TOKENS_PER_VALUE and pairs[0] == "w0_w0" and pairs[1] == "w0_w1"
    assert cartesian_pairs(["a", "b"], ["x", "y"]) == ["a_x", "a_y", "b_x", "b_y"]


def test_a_text_value_keeps_its_first_words() -> None:
    schema = _schema([("t", "TEXT"), ("y", "BINARY")])
    long = " ".join(f"w{i}" for i in range(MAX_TOKENS_PER_VALUE + 500))
    table = EncodedTable.from_frame(pd.DataFrame({"t": [long, "a b"], "y": ["0", "1"]}))
    builder = FeatureBuilder.fit(parse_recipe('{"outputs": ["t"]}', schema), schema, table)
    assert builder.n_features == MAX_TOKENS_PER_VALUE + 2
    assert f"t=w{MAX_TOKENS_PER_VALUE}" not in builder.feature_names()


def test_the_bound_is_exact_for_categorical_and_numeric_and_above_for_text() -> None:
    schema = _schema([("c", "CATEGORICAL"), ("n", "NUMERIC"), ("t", "TEXT"), ("y", "BINARY")])
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "c": rng.choice(["a", "b", "c", ""], 500),
            "n": [str(x) if x > -1 else "" for x in rng.normal(size=500)],
            "t": [" ".join(rng.choice(["x", "y", "z", "x"], rng.integers(0, 6))) for _ in range(500)],
            "y": rng.choice(["0", "1"], 500),
        }
    )
    table = EncodedTable.from_frame(df)
    rows = rng.random(500) < 0.7
    exact = parse_recipe('{"outputs": ["c", "n", "quantile_bin(n,5)", "normalize(n)"]}', schema)
    bound = FeatureBuilder.bound(exact, schema, table, rows)
    fitted = FeatureBuilder.fit(exact, schema, table, rows)
    X = fitted.transform(table)[np.flatnonzero(rows)]
    assert (bound.rows, bound.nonzeros, bound.features) == (int(rows.sum()), X.nnz, fitted.n_features)
    assert bound.max_row == int(np.diff(X.indptr).max())
    texts = parse_recipe('{"outputs": ["t", "ngram(t,3)", "osb(t,3)", "cartesian(c,t)"]}', schema)
    bound = FeatureBuilder.bound(texts, schema, table, rows)
    fitted = FeatureBuilder.fit(texts, schema, table, rows)
    X = fitted.transform(table)[np.flatnonzero(rows)]
    assert bound.nonzeros >= X.nnz and bound.features >= fitted.n_features
    assert bound.max_row >= int(np.diff(X.indptr).max())


# ---------------------------------------------------------------------------------- recipe validation


def test_a_500_deep_recipe_is_an_input_error() -> None:
    expr = "t"
    for _ in range(500):
        expr = f"lowercase({expr})"
    schema = _schema([("t", "TEXT"), ("y", "BINARY")])
    with pytest.raises(RecipeError, match=f"nested more than {MAX_EXPRESSION_DEPTH} levels deep") as err:
        parse_recipe(json.dumps({"outputs": [expr]}), schema)
    assert err.value.field == "outputs[0]"
    assert len(err.value.message) < 600  # the expression is shortened in the message


def test_nesting_through_assignments_is_bounded_too() -> None:
    schema = _schema([("t", "TEXT"), ("y", "BINARY")])
    assignments = {"a0": "lowercase(t)"}
    for i in range(1, 40):
        assignments[f"a{i}"] = f"no_punct(a{i - 1})"
    with pytest.raises(RecipeError, match="levels deep") as err:
        parse_recipe(json.dumps({"assignments": assignments, "outputs": ["a39"]}), schema)
    assert err.value.field == f"assignments.a{MAX_EXPRESSION_DEPTH - 1}"


def test_recipe_at_the_depth_limit_is_accepted() -> None:
    schema = _schema([("t", "TEXT"), ("y", "BINARY")])
    expr = "t"
    for _ in range(MAX_EXPRESSION_DEPTH - 1):
        expr = f"lowercase({expr})"
    assert parse_recipe(json.dumps({"outputs": [expr]}), schema).outputs[0].depth == MAX_EXPRESSION_DEPTH


def test_assignments_that_double_an_expression_are_refused() -> None:
    schema = _schema([("c", "CATEGORICAL"), ("d", "CATEGORICAL"), ("y", "BINARY")])
    assignments = {"a0": "cartesian(c, d)", "b0": "cartesian(d, c)"}
    for i in range(1, 20):
        assignments[f"a{i}"] = f"cartesian(a{i - 1}, b{i - 1})"
        assignments[f"b{i}"] = f"cartesian(b{i - 1}, a{i - 1})"
    with pytest.raises(RecipeError, match="nodes") as err:
        parse_recipe(json.dumps({"assignments": assignments, "outputs": ["a19"]}), schema)
    assert err.value.field is not None and err.value.field.startswith("assignments.")


def _wide_schema(n: int, kind: str = "CATEGORICAL") -> Schema:
    return _schema([(f"v{i}", kind) for i in range(n)] + [("y", "BINARY")])


def test_10001_output_variables_are_an_input_error_10000_are_not() -> None:
    schema = _wide_schema(999, "TEXT")  # + the target: 1,000 attributes
    variants = [
        "ALL_TEXT",
        "lowercase(ALL_TEXT)",
        "no_punct(ALL_TEXT)",
        "lowercase(no_punct(ALL_TEXT))",
        "no_punct(lowercase(ALL_TEXT))",
        "ngram(ALL_TEXT, 2)",
        "ngram(ALL_TEXT, 3)",
        "osb(ALL_TEXT, 2)",
        "osb(ALL_TEXT, 3)",
        "lowercase(lowercase(ALL_TEXT))",
    ]
    singles = [f"ngram(v{i}, 4)" for i in range(10)]  # 10 × 999 + 10 = 10,000
    assert len(parse_recipe(json.dumps({"outputs": variants + singles}), schema).outputs) == MAX_OUTPUTS
    with pytest.raises(RecipeError, match="more than 10,000 output variables") as err:
        parse_recipe(json.dumps({"outputs": [*variants, *singles, "ngram(v10, 4)"]}), schema)
    assert err.value.field == "outputs[20]"


def test_a_cartesian_of_groups_is_counted_before_it_is_expanded() -> None:
    schema = _wide_schema(999)
    with pytest.raises(RecipeError, match="cartesian of 999 by 999 variables") as err:
        parse_recipe('{"outputs": ["cartesian(ALL_CATEGORICAL, ALL_CATEGORICAL)"]}', schema)
    assert err.value.field == "outputs[0]"
    with pytest.raises(RecipeError, match="more than 10,000 output variables"):
        parse_recipe(
            '{"assignments": {"x": "cartesian(ALL_CATEGORICAL, ALL_INPUTS)"}, "outputs": ["x"]}', schema
        )


def test_1001_attributes_are_an_input_error() -> None:
    assert len(_wide_schema(MAX_ATTRIBUTES - 1).attributes) == MAX_ATTRIBUTES
    with pytest.raises(SchemaError, match="1001 attributes, at most 1000 allowed") as err:
        _wide_schema(MAX_ATTRIBUTES)
    assert err.value.field == "attributes"


# ----------------------------------------------------------------------------------------------- train


def test_101_classes_fail_the_training_job() -> None:
    schema = _schema([("x", "NUMERIC"), ("label", "CATEGORICAL")], target="label")
    df = pd.DataFrame({"x": [str(i) for i in range(202)], "label": [f"c{i % 101}" for i in range(202)]})
    recipe = parse_recipe('{"outputs": ["x"]}', schema)
    with pytest.raises(TrainingError, match=f"101 distinct target values; .* at most {MAX_CLASSES}") as err:
        train(EncodedTable.from_frame(df), schema, recipe, parse_parameters(None), "MULTICLASS")
    assert err.value.field == "label"
    df100 = df[df["label"] != "c100"]
    model = train(
        EncodedTable.from_frame(df100), schema, recipe, parse_parameters({"sgd.maxPasses": "1"}), "MULTICLASS"
    )
    assert len(model.classes) == MAX_CLASSES


def test_a_small_memory_budget_fails_training_with_the_estimate() -> None:
    schema = _schema([("c", "CATEGORICAL"), ("t", "TEXT"), ("y", "BINARY")])
    df = pd.DataFrame({"c": ["a", "b"] * 50, "t": ["x y z"] * 100, "y": ["0", "1"] * 50})
    table = EncodedTable.from_frame(df)
    recipe = parse_recipe('{"outputs": ["c", "ngram(t,3)"]}', schema)
    bound = FeatureBuilder.bound(recipe, schema, table)
    needed = estimate_training_bytes(bound, 1)
    lines: list[str] = []
    with pytest.raises(TrainingError) as err:
        train(
            table,
            schema,
            recipe,
            parse_parameters(None),
            "BINARY",
            memory_budget=needed - 1,
            log=lines.append,
            mode="memory",  # "auto" would stream instead (tests/engine/test_streaming.py)
        )
    message = err.value.message
    assert message.startswith(f"training would need ~{format_bytes(needed)}, over the job memory budget of ")
    assert "100 records" in message and "AMLFLOW_MEMORY_LIMIT" in message
    assert any(line.startswith("memory-estimate:") for line in lines)
    model = train(
        table, schema, recipe, parse_parameters({"sgd.maxPasses": "1"}), "BINARY", memory_budget=needed
    )
    assert model.training_info["n_features"] <= bound.features


def test_the_hostile_recipe_over_the_budget_fails_before_building_anything() -> None:
    table = EncodedTable.from_frame(_hostile_frame())
    with pytest.raises(
        TrainingError, match=r"training would need ~\d+\.\d MB, over the job memory budget of 1.0 MB"
    ):
        train(
            table,
            TEXT_SCHEMA,
            parse_recipe(HOSTILE, TEXT_SCHEMA),
            parse_parameters(None),
            "BINARY",
            memory_budget=1 << 20,
        )


def test_check_memory_and_the_default_budget() -> None:
    assert default_memory_budget() > 0
    check_memory(10, 10, "training", "never")
    with pytest.raises(
        DataError, match="^x would need ~2.0 KB, over the job memory budget of 1.0 KB; y$"
    ) as err:
        check_memory(2048, 1024, "x", "y", error=DataError, field="Record")
    assert err.value.field == "Record"


# --------------------------------------------------------------------------------------------- records


def _binary_model() -> TrainedModel:
    schema = _schema([("c", "CATEGORICAL"), ("t", "TEXT"), ("y", "BINARY")])
    df = pd.DataFrame({"c": ["a", "b"] * 10, "t": ["x y", "z"] * 10, "y": ["1", "0"] * 10})
    recipe = parse_recipe('{"outputs": ["c", "cartesian(ngram(t, 2), c)", "ngram(t, 10)"]}', schema)
    return train(EncodedTable.from_frame(df), schema, recipe, parse_parameters(None), "BINARY")


def test_a_record_over_100_kb_is_an_input_error() -> None:
    check_record({"t": "x" * (MAX_RECORD_BYTES - 2), "c": ""})  # names count too
    with pytest.raises(DataError, match="Record: 102,401 bytes, over the limit of 102,400 bytes") as err:
        check_record({"t": "x" * MAX_RECORD_BYTES})
    assert err.value.field == "Record"
    model = _binary_model()
    with pytest.raises(DataError, match="^Record: "):
        model.predict_record({"t": "é" * (MAX_RECORD_BYTES // 2)})


def test_a_record_is_bounded_by_features_and_budget() -> None:
    model = _binary_model()
    record = {"c": "a", "t": " ".join(f"w{i}" for i in range(5000))}
    n = model.builder.record_bound(record)
    assert n == 2 + (5000 + 4999) + MAX_TOKENS_PER_VALUE  # c's flag + value, cartesian, ngram (capped)
    assert n < MAX_RECORD_FEATURES
    assert "predictedLabel" in model.predict_record(record)
    with pytest.raises(DataError, match="^Record: scoring this record would need ~") as err:
        model.predict_record(record, memory_budget=1024)
    assert err.value.field == "Record"


def test_a_csv_row_over_100_kb_is_a_rejected_row(tmp_path: Path) -> None:
    schema = _schema([("a", "CATEGORICAL"), ("y", "BINARY")])
    data = b"a,y\nx,1\n" + b"z" * MAX_RECORD_BYTES + b",0\ny,0\n"
    info = build_dataset([Source("k.csv", len(data), lambda: io.BytesIO(data))], schema, None, tmp_path / "t")
    assert (info.n_rows, info.n_rejected) == (2, 1)
    assert info.rejected_samples[0]["reason"] == "row longer than 100 KB"


# ------------------------------------------------------------------------------------------ empty data


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "it has no records"),
        (b"a,y\n", "it has no records"),
        (b"a,y\n" + b"not,a,row\n" * 20, "all 20 record(s) were rejected"),
    ],
    ids=["empty", "header-only", "all-rejected"],
)
def test_a_datasource_without_valid_records_is_an_error(tmp_path: Path, data: bytes, detail: str) -> None:
    schema = _schema([("a", "CATEGORICAL"), ("y", "BINARY")])
    info = build_dataset([Source("k.csv", len(data), lambda: io.BytesIO(data))], schema, None, tmp_path / "t")
    assert info.n_rows == 0
    with pytest.raises(DataError, match="no valid record in s3://b/k.csv") as err:
        require_records(info, "s3://b/k.csv")
    assert detail in err.value.message and err.value.field == "DataLocationS3"


def test_a_datasource_with_records_passes(tmp_path: Path) -> None:
    schema = _schema([("a", "CATEGORICAL"), ("y", "BINARY")])
    data = b"a,y\nx,1\n"
    info = build_dataset([Source("k.csv", len(data), lambda: io.BytesIO(data))], schema, None, tmp_path / "t")
    require_records(info, "s3://b/k.csv")
    assert info.n_rows == 1


@pytest.mark.parametrize("model_type", ["BINARY", "MULTICLASS", "REGRESSION"])
def test_an_evaluation_on_no_usable_record_is_an_error_never_nan(model_type: str) -> None:
    schema = _schema(
        [("x", "CATEGORICAL"), ("y", "NUMERIC" if model_type == "REGRESSION" else "CATEGORICAL")]
    )
    df = pd.DataFrame({"x": ["a", "b"] * 10, "y": ["1", "0"] * 10})
    recipe = parse_recipe('{"outputs": ["x"]}', schema)
    model = train(EncodedTable.from_frame(df), schema, recipe, parse_parameters(None), model_type)
    blank = EncodedTable.from_frame(pd.DataFrame({"x": ["a", "b"], "y": ["", ""]}))
    with pytest.raises(
        DataError, match="is undefined on datasource ds-e: it has no record with a usable target"
    ):
        evaluate(model, blank, schema, training_info={"evaluation_datasource_id": "ds-e"})
    empty = EncodedTable.from_frame(
        pd.DataFrame({"x": pd.Series([], dtype=str), "y": pd.Series([], dtype=str)})
    )
    with pytest.raises(DataError, match="is undefined on the evaluation data"):
        evaluate(model, empty, schema, training_info={})


def test_a_record_that_would_make_over_a_million_features_is_an_input_error() -> None:
    schema = _schema([("t", "TEXT"), ("y", "BINARY")])
    chains = [
        "t",
        "lowercase(t)",
        "no_punct(t)",
        "lowercase(no_punct(t))",
        "no_punct(lowercase(t))",
        "lowercase(lowercase(t))",
    ]
    outputs = [f"{fn}({c}, {k})" for c in chains for fn in ("ngram", "osb") for k in range(2, 11)]
    assert len(outputs) * MAX_TOKENS_PER_VALUE > MAX_RECORD_FEATURES
    df = pd.DataFrame({"t": ["a b c", "d e"] * 5, "y": ["0", "1"] * 5})
    recipe = parse_recipe(json.dumps({"outputs": outputs}), schema)
    model = train(
        EncodedTable.from_frame(df), schema, recipe, parse_parameters({"sgd.maxPasses": "1"}), "BINARY"
    )
    record = {"t": " ".join(f"w{i % 100}" for i in range(MAX_TOKENS_PER_VALUE + 10))}
    assert len(record["t"]) < MAX_RECORD_BYTES
    with pytest.raises(
        DataError,
        match=r"^Record: the recipe would make up to 1,079,994 features .* over the limit of 1,000,000",
    ) as err:
        model.predict_record(record)
    assert err.value.field == "Record"
