"""Data schema parsing (both spellings), validation messages, and the typed views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amlflow.engine.errors import SchemaError
from amlflow.engine.schema import (
    Attribute,
    binary_view,
    is_invalid,
    is_missing,
    numeric_view,
    parse_schema,
)


def _doc(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "version": "1.0",
        "rowId": "id",
        "rowWeight": None,
        "targetAttributeName": "y",
        "dataFormat": "CSV",
        "dataFileContainsHeader": True,
        "attributes": [
            {"attributeName": "id", "attributeType": "CATEGORICAL"},
            {"attributeName": "x", "attributeType": "NUMERIC"},
            {"attributeName": "t", "attributeType": "TEXT"},
            {"attributeName": "drop", "attributeType": "NUMERIC"},
            {"attributeName": "y", "attributeType": "BINARY"},
        ],
        "excludedAttributeNames": ["drop"],
    }
    doc.update(over)
    return doc


def test_parse_current_spelling() -> None:
    s = parse_schema(json.dumps(_doc()))
    assert s.names == ["id", "x", "t", "drop", "y"]
    assert s.attributes[1] == Attribute("x", "NUMERIC")
    assert (s.target, s.row_id, s.row_weight, s.excluded, s.has_header) == ("y", "id", None, ["drop"], True)
    assert s.input_names() == ["x", "t"]
    assert s.type_of("t") == "TEXT"
    assert "x" in s and "nope" not in s
    with pytest.raises(SchemaError, match="'nope' is not in the schema"):
        s.attribute("nope")


def test_parse_legacy_spelling_round_trips_to_current() -> None:
    legacy = {
        "version": "1.0",
        "recordAnnotationFieldName": "id",
        "recordWeightFieldName": "w",
        "targetFieldName": "y",
        "dataFormat": "CSV",
        "dataFileContainsHeader": "false",
        "variables": [
            {"fieldName": "id", "fieldType": "CATEGORICAL"},
            {"fieldName": "w", "fieldType": "NUMERIC"},
            {"fieldName": "y", "fieldType": "numeric"},
        ],
        "excludedVariableNames": [],
    }
    s = parse_schema(json.dumps(legacy))
    assert (s.target, s.row_id, s.row_weight, s.has_header) == ("y", "id", "w", False)
    assert s.type_of("y") == "NUMERIC"
    assert s.input_names() == []
    out = json.loads(s.to_json())
    assert out["attributes"][0] == {"attributeName": "id", "attributeType": "CATEGORICAL"}
    assert out["rowId"] == "id" and out["rowWeight"] == "w" and out["targetAttributeName"] == "y"
    assert "variables" not in out
    assert parse_schema(s.to_json()) == s


def test_real_banking_schema(data_dir: Path) -> None:
    s = parse_schema((data_dir / "aml-banking" / "banking.csv.schema").read_text())
    assert len(s.attributes) == 21 and s.target == "y" and s.has_header
    assert s.type_of("previous") == "BINARY"
    assert len(s.input_names()) == 20
    b = parse_schema((data_dir / "aml-banking" / "banking-batch.csv.schema").read_text())
    assert b.target is None
    assert "targetAttributeName" not in json.loads(b.to_json())


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"attributes": []}, "attributes", "non-empty list"),
        ({"attributes": None}, "attributes", "required"),
        (
            {"attributes": [{"attributeName": "a", "attributeType": "NUMBER"}]},
            "attributes[0].attributeType",
            "'NUMBER' is not one of NUMERIC, CATEGORICAL, TEXT, BINARY",
        ),
        (
            {"attributes": [{"attributeName": "a", "attributeType": "WEIGHTED_INT_SEQUENCE"}]},
            "attributes[0].attributeType",
            "not supported",
        ),
        (
            {"attributes": [{"attributeName": "", "attributeType": "TEXT"}]},
            "attributes[0].attributeName",
            "non-empty string",
        ),
        (
            {"attributes": [{"attributeName": "a" * 65, "attributeType": "TEXT"}]},
            "attributes[0].attributeName",
            "longer than 64",
        ),
        (
            {"attributes": [{"attributeName": "a", "attributeType": "TEXT"}] * 2},
            "attributes[1].attributeName",
            "duplicate attribute name 'a'",
        ),
        ({"attributes": ["a"]}, "attributes[0]", "expected an object"),
        ({"targetAttributeName": "zz"}, "targetAttributeName", "'zz' is not the name of an attribute"),
        ({"rowId": "zz"}, "rowId", "'zz' is not the name"),
        ({"rowId": 3}, "rowId", "expected an attribute name"),
        ({"rowWeight": "t"}, "rowWeight", "must be NUMERIC"),
        ({"rowId": "y"}, "rowId", "also the target"),
        ({"excludedAttributeNames": ["x", "zz"]}, "excludedAttributeNames[1]", "'zz' is not the name"),
        (
            {"excludedAttributeNames": ["y"]},
            "excludedAttributeNames",
            "target attribute 'y' cannot be excluded",
        ),
        ({"excludedAttributeNames": "x"}, "excludedAttributeNames", "expected a list"),
        ({"dataFormat": "JSON"}, "dataFormat", "only CSV"),
        ({"dataFileContainsHeader": "maybe"}, "dataFileContainsHeader", "expected true or false"),
        ({"targetFieldName": "x"}, "targetAttributeName", "legacy spelling targetFieldName"),
    ],
)
def test_schema_errors_name_the_field(change: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as info:
        parse_schema(json.dumps(_doc(**change)))
    assert info.value.field == field
    assert field.split("[")[0] in str(info.value)


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '"x"'])
def test_schema_not_an_object(text: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema(text)
    assert info.value.field == "DataSchema"


def test_too_many_attributes() -> None:
    attrs = [{"attributeName": f"a{i}", "attributeType": "NUMERIC"} for i in range(1001)]
    with pytest.raises(SchemaError, match="1001 attributes, at most 1000"):
        parse_schema(json.dumps({"attributes": attrs}))


def test_with_types_uses_training_types() -> None:
    batch = parse_schema(json.dumps(_doc(targetAttributeName=None)))
    train = parse_schema(
        json.dumps(
            _doc(
                attributes=[
                    {"attributeName": "id", "attributeType": "CATEGORICAL"},
                    {"attributeName": "x", "attributeType": "CATEGORICAL"},
                    {"attributeName": "t", "attributeType": "TEXT"},
                    {"attributeName": "drop", "attributeType": "NUMERIC"},
                    {"attributeName": "y", "attributeType": "BINARY"},
                ]
            )
        )
    )
    assert batch.with_types(train).type_of("x") == "CATEGORICAL"
    assert batch.type_of("x") == "NUMERIC"


@pytest.mark.parametrize("token", ["1", "y", "yes", "t", "true", "Y", "YES", "True", "TRUE", " tRuE ", "T"])
def test_binary_true_tokens(token: str) -> None:
    assert binary_view(np.array([token], dtype=object)).tolist() == [1.0]
    assert not is_invalid(np.array([token], dtype=object), "BINARY")[0]


@pytest.mark.parametrize("token", ["0", "n", "no", "f", "false", "N", "No", "F", "FALSE", " FaLSe "])
def test_binary_false_tokens(token: str) -> None:
    assert binary_view(np.array([token], dtype=object)).tolist() == [0.0]


@pytest.mark.parametrize("token", ["2", "7", "1.0", "yess", "on", "-1", "nan"])
def test_binary_other_values_are_invalid(token: str) -> None:
    d = np.array([token], dtype=object)
    assert np.isnan(binary_view(d)[0])
    assert is_invalid(d, "BINARY").tolist() == [True]


def test_numeric_view_and_invalid() -> None:
    d = np.array(["1", "", " 2.5 ", "-3e2", "abc", "nan", "inf", "1,5", "0x10", "+4", ".5"], dtype=object)
    v = numeric_view(d)
    assert v.dtype == np.float64
    np.testing.assert_array_equal(
        v, [1.0, np.nan, 2.5, -300.0, np.nan, np.nan, np.nan, np.nan, np.nan, 4.0, 0.5]
    )
    assert is_invalid(d, "NUMERIC").tolist() == [
        False,
        False,
        False,
        False,
        True,
        True,
        True,
        True,
        True,
        False,
        False,
    ]
    assert is_missing(d).tolist() == [False, True] + [False] * 9


def test_text_and_categorical_never_invalid() -> None:
    d = np.array(["", "abc", "1,5", "nan"], dtype=object)
    assert not is_invalid(d, "TEXT").any()
    assert not is_invalid(d, "categorical").any()
    with pytest.raises(SchemaError, match="'DATE' is not one of"):
        is_invalid(d, "DATE")


def test_views_on_empty_dictionary() -> None:
    d = np.array([], dtype=object)
    assert numeric_view(d).shape == (0,)
    assert binary_view(d).shape == (0,)
    assert is_invalid(d, "NUMERIC").shape == (0,)
