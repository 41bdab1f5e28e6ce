"""engine.recipe: parsing/validation, suggested recipes and the feature builder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from amlflow.engine.errors import RecipeError
from amlflow.engine.recipe import FeatureBuilder, parse_recipe, suggest_recipe
from amlflow.engine.schema import parse_schema
from amlflow.engine.table import EncodedTable

SCHEMA = parse_schema(
    json.dumps(
        {
            "targetAttributeName": "y",
            "rowId": "id",
            "excludedAttributeNames": ["secret"],
            "attributes": [
                {"attributeName": "id", "attributeType": "CATEGORICAL"},
                {"attributeName": "age", "attributeType": "NUMERIC"},
                {"attributeName": "hours-per-week", "attributeType": "NUMERIC"},
                {"attributeName": "job", "attributeType": "CATEGORICAL"},
                {"attributeName": "country", "attributeType": "CATEGORICAL"},
                {"attributeName": "married", "attributeType": "BINARY"},
                {"attributeName": "title", "attributeType": "TEXT"},
                {"attributeName": "subject", "attributeType": "TEXT"},
                {"attributeName": "secret", "attributeType": "NUMERIC"},
                {"attributeName": "y", "attributeType": "BINARY"},
            ],
        }
    )
)


def names(text: str) -> list[str]:
    return [o.name for o in parse_recipe(text, SCHEMA).outputs]


def test_parse_recipe_predefined_groups_exclude_target_rowid_and_excluded() -> None:
    assert names('{"outputs": ["ALL_INPUTS"]}') == [
        "age",
        "hours-per-week",
        "job",
        "country",
        "married",
        "title",
        "subject",
    ]
    assert names('{"outputs": ["ALL_NUMERIC", "ALL_BINARY", "ALL_TEXT", "ALL_CATEGORICAL"]}') == [
        "age",
        "hours-per-week",
        "married",
        "title",
        "subject",
        "job",
        "country",
    ]


def test_parse_recipe_aws_example() -> None:
    recipe = {
        "groups": {
            "LONGTEXT": "group_remove(ALL_TEXT, title)",
            "SPECIALTEXT": "group(title, subject)",
            "BINCAT": "group(ALL_CATEGORICAL, ALL_BINARY)",
        },
        "assignments": {
            "binned_age": "quantile_bin(age,30)",
            "country_job": "cartesian(country, job)",
        },
        "outputs": [
            "lowercase(no_punct(LONGTEXT))",
            "ngram(lowercase(no_punct(SPECIALTEXT)),3)",
            "quantile_bin(hours-per-week, 10)",
            "hours-per-week",
            "cartesian(binned_age, quantile_bin(hours-per-week,10))",
            "country_job // a comment",
            "BINCAT",
            "osb('title', 4)",
            "normalize(age)",
        ],
    }
    assert names(json.dumps(recipe)) == [
        "lowercase(no_punct(subject))",
        "ngram(lowercase(no_punct(title)),3)",
        "ngram(lowercase(no_punct(subject)),3)",
        "quantile_bin(hours-per-week,10)",
        "hours-per-week",
        "cartesian(quantile_bin(age,30),quantile_bin(hours-per-week,10))",
        "cartesian(country,job)",
        "job",
        "country",
        "married",
        "osb(title,4)",
        "normalize(age)",
    ]


def test_parse_recipe_quoted_names_and_dependencies() -> None:
    text = (
        '{"groups": {"NUMERIC_VARS_QB_50": "group(\'age\',\'hours-per-week\')"}, "assignments": {},'
        ' "dependencies": {}, "outputs": ["quantile_bin(NUMERIC_VARS_QB_50,50)"]}'
    )
    assert names(text) == ["quantile_bin(age,50)", "quantile_bin(hours-per-week,50)"]


def test_parse_recipe_empty_group_gives_no_outputs() -> None:
    schema = parse_schema('{"attributes": [{"attributeName": "a", "attributeType": "NUMERIC"}]}')
    r = parse_recipe('{"outputs": ["ALL_NUMERIC", "lowercase(ALL_TEXT)"]}', schema)
    assert [o.name for o in r.outputs] == ["a"]


@pytest.mark.parametrize(
    ("recipe", "needle"),
    [
        ("not json", "Recipe: not valid JSON"),
        ("[]", "Recipe: expected a JSON object"),
        ('{"outputs": []}', "outputs: required"),
        ("{}", "outputs: required"),
        (
            '{"outputs": ["age"], "groups": {}}',
            "sections must come in the order groups, assignments, outputs",
        ),
        ('{"output": ["age"]}', "unknown section 'output'"),
        (
            '{"outputs": ["age", "job", "ALL_TEXT", "quantile_bin(age, 5000)"]}',
            "outputs[3]: quantile_bin(age, 5000): bins must be 2..1000",
        ),
        ('{"outputs": ["quantile_bin(age, 1)"]}', "bins must be 2..1000"),
        ('{"outputs": ["ngram(title, 11)"]}', "outputs[0]: ngram(title, 11): size must be 2..10"),
        ('{"outputs": ["osb(title, 1)"]}', "window must be 2..10"),
        ('{"outputs": ["ngram(title, x)"]}', "ngram's size must be an integer 2..10"),
        ('{"outputs": ["quantile_bin(job, 10)"]}', "quantile_bin needs NUMERIC input; 'job' is CATEGORICAL"),
        ('{"outputs": ["quantile_bin(ALL_INPUTS, 10)"]}', "'job' is CATEGORICAL (in ALL_INPUTS)"),
        ('{"outputs": ["ngram(age, 2)"]}', "ngram needs TEXT input; 'age' is NUMERIC"),
        ('{"outputs": ["cartesian(age, job)"]}', "cartesian needs CATEGORICAL or TEXT or BINARY input"),
        ('{"outputs": ["normalize(job)"]}', "normalize needs NUMERIC input"),
        ('{"outputs": ["y"]}', "'y' is the target attribute"),
        ('{"outputs": ["id"]}', "'id' is the rowId attribute"),
        ('{"outputs": ["secret"]}', "'secret' is excluded by the schema"),
        ('{"outputs": ["nope"]}', "outputs[0]: nope: unknown variable, group or assignment 'nope'"),
        ('{"outputs": ["frobnicate(age)"]}', "unknown function 'frobnicate'"),
        ('{"outputs": ["quantile_bin(age)"]}', "quantile_bin takes 2 arguments, got 1"),
        ('{"outputs": ["lowercase(title"]}', "missing ')'"),
        ('{"outputs": ["lowercase(title))"]}', "unexpected ')'"),
        ('{"outputs": ["\'title"]}', "unterminated quote"),
        ('{"outputs": [5]}', "outputs[0]: expected an expression string"),
        (
            '{"groups": {"ALL_INPUTS": "group(age)"}, "outputs": ["age"]}',
            "groups.ALL_INPUTS: 'ALL_INPUTS' is a predefined group",
        ),
        (
            '{"groups": {"G": "quantile_bin(age,10)"}, "outputs": ["G"]}',
            "groups.G: quantile_bin(age,10): a group must be group",
        ),
        ('{"groups": {"G": "group(nope)"}, "outputs": ["G"]}', "groups.G: group(nope): unknown variable"),
        ('{"groups": {"age": "group(job)"}, "outputs": ["age"]}', "groups.age: 'age' is already the name"),
        (
            '{"assignments": {"b": "quantile_bin(job,10)"}, "outputs": ["b"]}',
            "assignments.b: quantile_bin(job,10)",
        ),
        (
            '{"groups": {"G": "group_remove(job, age)"}, "outputs": ["G"]}',
            "group_remove's first argument must be a group",
        ),
    ],
)
def test_parse_recipe_rejects(recipe: str, needle: str) -> None:
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe, SCHEMA)
    assert needle in err.value.message


def test_parse_recipe_too_many_outputs() -> None:
    attrs = [{"attributeName": f"c{i}", "attributeType": "CATEGORICAL"} for i in range(150)]
    schema = parse_schema(json.dumps({"attributes": attrs}))
    with pytest.raises(RecipeError, match="more than 10,000 output variables"):
        parse_recipe('{"outputs": ["cartesian(ALL_CATEGORICAL, ALL_CATEGORICAL)"]}', schema)


# ------------------------------------------------------------------------------------------- features

FRAME = pd.DataFrame(
    {
        "id": [f"r{i}" for i in range(8)],
        "age": ["20", "30", "40", "50", "60", "", "abc", "30"],
        "hours-per-week": ["40"] * 8,
        "job": ["a", "b", "a", "a", "c", "", "a", "b"],
        "country": ["x", "y", "x", "y", "x", "y", "x", "y"],
        "married": ["yes", "no", "t", "0", "1", "", "maybe", "n"],
        "title": ["Hello, World!", "hello there", "", "world", "a b c", "x", "y", "z"],
        "subject": ["s"] * 8,
        "secret": ["1"] * 8,
        "y": ["1", "0", "1", "0", "1", "0", "1", "0"],
    }
)


def build(recipe: str) -> tuple[FeatureBuilder, np.ndarray]:
    table = EncodedTable.from_frame(FRAME)
    fb = FeatureBuilder.fit(parse_recipe(recipe, SCHEMA), SCHEMA, table)
    X = fb.transform(table)
    assert X.dtype == np.float32 and X.shape == (8, fb.n_features) and X.has_sorted_indices
    return fb, X.toarray()


def test_feature_builder_onehot_mode_is_implicit_with_a_not_mode_flag() -> None:
    fb, X = build('{"outputs": ["job"]}')
    # mode "a" (4×) has no column; "≠ a" flag for everything else (missing included)
    assert fb.feature_names() == ["job!=a", "job=b", "job=c"]
    assert X.tolist() == [
        [0, 0, 0],
        [1, 1, 0],
        [0, 0, 0],
        [0, 0, 0],
        [1, 0, 1],
        [1, 0, 0],
        [0, 0, 0],
        [1, 1, 0],
    ]


def test_feature_builder_binary_and_numeric() -> None:
    fb, X = build('{"outputs": ["married", "age"]}')
    assert fb.feature_names() == ["married!=0", "married=1", "age"]
    ages = np.array([20, 30, 40, 50, 60, 30], dtype=float)
    mean, std = ages.mean(), ages.std()
    expected_age = [(a - mean) / std for a in [20, 30, 40, 50, 60]] + [0, 0, (30 - mean) / std]
    np.testing.assert_allclose(X[:, 2], expected_age, rtol=1e-6)
    # married: yes,no,t,0,1,"",maybe,n → 1,0,1,0,1,missing,invalid,0 ; mode "0"
    assert X[:, 0].tolist() == [1, 0, 1, 0, 1, 1, 1, 0]
    assert X[:, 1].tolist() == [1, 0, 1, 0, 1, 0, 0, 0]


def test_feature_builder_quantile_bin_and_normalize_state() -> None:
    fb, X = build('{"outputs": ["quantile_bin(age, 2)", "normalize(age)"]}')
    edges = fb.state["quantile_bin(age,2)"]["edges"]
    assert edges == [40.0]
    assert set(fb.state["normalize(age)"]) == {"mean", "std"}
    # bins: <40 → bin_0, ≥40 → bin_1
    names = fb.feature_names()
    assert names[0].startswith("quantile_bin(age,2)!=")


def test_feature_builder_text_ngram_osb_cartesian() -> None:
    fb, X = build(
        '{"outputs": ["ngram(lowercase(no_punct(title)), 2)", "osb(title, 3)", "cartesian(job, country)"]}'
    )
    names = fb.feature_names()
    assert "ngram(lowercase(no_punct(title)),2)=hello world" in names
    assert "ngram(lowercase(no_punct(title)),2)=hello" in names
    assert "osb(title,3)=a_b" in names and "osb(title,3)=a__c" in names and "osb(title,3)=b_c" in names
    assert "cartesian(job,country)=a_x" in names and "cartesian(job,country)=b_y" in names
    row0 = {names[j] for j in np.flatnonzero(X[0])}
    assert row0 == {
        "ngram(lowercase(no_punct(title)),2)=hello",
        "ngram(lowercase(no_punct(title)),2)=world",
        "ngram(lowercase(no_punct(title)),2)=hello world",
        "osb(title,3)=Hello,_World!",
        "cartesian(job,country)=a_x",
    }


def test_feature_builder_reads_other_tables_with_training_types_and_unseen_values() -> None:
    fb, _ = build('{"outputs": ["job", "age", "title"]}')
    other = EncodedTable.from_frame(
        pd.DataFrame({"job": ["b", "zzz"], "age": ["30", "x"]})
    )  # no title column
    X = fb.transform(other).toarray()
    names = fb.feature_names()
    assert {names[j] for j in np.flatnonzero(X[0])} == {"job!=a", "job=b", "age"}
    assert {names[j] for j in np.flatnonzero(X[1])} == {"job!=a"}


def test_feature_builder_round_trips_through_json_and_encodes_records() -> None:
    outputs = ["ALL_CATEGORICAL", "quantile_bin(age,3)", "ngram(title,2)", "cartesian(job, country)", "age"]
    recipe = json.dumps({"outputs": outputs})
    fb, X = build(recipe)
    again = FeatureBuilder.from_json(json.loads(json.dumps(fb.to_json())), SCHEMA)
    table = EncodedTable.from_frame(FRAME)
    np.testing.assert_array_equal(again.transform(table).toarray(), X)
    for i, row in FRAME.iterrows():
        cols, vals = again.encode_record(dict(row.items()))
        dense = np.zeros(fb.n_features, dtype=np.float32)
        dense[cols] = vals
        np.testing.assert_allclose(dense, X[i], rtol=1e-6)


def test_feature_builder_fit_uses_only_selected_rows() -> None:
    table = EncodedTable.from_frame(FRAME)
    rows = np.array([True, True, False, False, False, False, False, False])
    fb = FeatureBuilder.fit(parse_recipe('{"outputs": ["job"]}', SCHEMA), SCHEMA, table, rows)
    assert fb.feature_names() == ["job!=a", "job=b"]


def test_suggest_recipe_shape_and_it_parses(data_dir) -> None:
    schema = parse_schema((data_dir / "aml-banking" / "banking.csv.schema").read_text())
    df = pd.read_csv(data_dir / "aml-banking" / "banking.csv", dtype=str, keep_default_na=False, nrows=3000)
    text = suggest_recipe(EncodedTable.from_frame(df), schema)
    doc = json.loads(text)
    assert list(doc) == ["groups", "assignments", "outputs"]
    assert doc["outputs"][:2] == ["ALL_BINARY", "ALL_CATEGORICAL"]
    assert all(k.startswith("NUMERIC_VARS_QB_") for k in doc["groups"])
    binned = [a for g in doc["groups"].values() for a in g[len("group(") : -1].replace("'", "").split(",")]
    assert sorted(binned) == sorted(a for a in schema.input_names() if schema.type_of(a) == "NUMERIC")
    parse_recipe(text, schema)


def test_suggest_recipe_without_target_uses_10_bins() -> None:
    schema = parse_schema(
        '{"attributes": [{"attributeName": "a", "attributeType": "NUMERIC"},'
        '{"attributeName": "t", "attributeType": "TEXT"}]}'
    )
    table = EncodedTable.from_frame(pd.DataFrame({"a": ["1", "2"], "t": ["x", "y"]}))
    doc = json.loads(suggest_recipe(table, schema))
    assert doc == {
        "groups": {"NUMERIC_VARS_QB_10": "group('a')"},
        "assignments": {},
        "outputs": ["ALL_CATEGORICAL", "quantile_bin(NUMERIC_VARS_QB_10,10)", "ALL_TEXT"],
    }
