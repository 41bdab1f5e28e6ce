"""Every input is valid or a 4xx, and the error path cannot fail: against the real service over HTTP.

Bodies are written by hand (botocore would refuse to send most of them): a lone surrogate is the JSON
escape ``\\ud800``, which Python's parser turns into an unencodable ``str``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from amlflow.server.app import create_app
from amlflow.server.protocol import TARGET_PREFIX
from amlflow.server.runner import ServerThread
from tests.server import aml_data

pytestmark = pytest.mark.server

SURROGATE = "\\ud800"  # as written in the JSON text


def _call(url: str, operation: str, body: str | bytes) -> httpx.Response:
    return httpx.post(
        url,
        headers={
            "X-Amz-Target": f"{TARGET_PREFIX}.{operation}",
            "Content-Type": "application/x-amz-json-1.1",
        },
        content=body.encode() if isinstance(body, str) else body,
        timeout=30,
    )


def _error(r: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/x-amz-json-1.1")
    payload = r.json()
    assert set(payload) == {"__type", "message"}
    assert r.headers["x-amzn-ErrorType"] == payload["__type"]
    return dict(payload)


def _create_ds_body(ds_id: str, **members: str) -> str:
    spec = {"DataLocationS3": "s3://bucket/data.csv", "DataSchemaLocationS3": "s3://bucket/data.csv.schema"}
    extra = ", ".join(f'"{k}": {v}' for k, v in members.items() if k != "DataSpec")
    data_spec = members.get("DataSpec", json.dumps(spec))
    return f'{{"DataSourceId": "{ds_id}", "DataSpec": {data_spec}{", " + extra if extra else ""}}}'


# ------------------------------------------------------------------------------------ invalid Unicode


def test_surrogate_in_data_source_name_is_refused_and_not_stored(aml_server: Any) -> None:
    r = _call(
        aml_server.url, "CreateDataSourceFromS3", _create_ds_body("ds-sur", DataSourceName=f'"a{SURROGATE}"')
    )
    err = _error(r)
    assert err["__type"] == "InvalidInputException"
    assert "at 'DataSourceName'" in err["message"] and "surrogate" in err["message"]
    assert "\\ud800" in err["message"]  # echoed as an escape, never as the raw code point
    missing = _error(_call(aml_server.url, "GetDataSource", '{"DataSourceId": "ds-sur"}'))
    assert missing["__type"] == "ResourceNotFoundException"
    listing = _call(aml_server.url, "DescribeDataSources", "{}")
    assert listing.status_code == 200 and all(
        d["DataSourceId"] != "ds-sur" for d in listing.json()["Results"]
    )


def test_surrogate_in_an_id_is_a_json_error(aml_server: Any) -> None:
    err = _error(_call(aml_server.url, "GetDataSource", f'{{"DataSourceId": "ds-{SURROGATE}"}}'))
    assert err["__type"] == "InvalidInputException" and "at 'DataSourceId'" in err["message"]


@pytest.mark.parametrize(
    ("operation", "body", "where"),
    [
        ("DescribeMLModels", f'{{"NotAMember": {{"deep": ["{SURROGATE}"]}}}}', "NotAMember.deep.1"),
        (
            "Predict",
            f'{{"MLModelId": "ml-x", "PredictEndpoint": "http://h", "Record": {{"k{SURROGATE}": "v"}}}}',
            "Record.key",
        ),
        (
            "Predict",
            f'{{"MLModelId": "ml-x", "PredictEndpoint": "http://h", "Record": {{"k": "v{SURROGATE}"}}}}',
            "Record.k",
        ),
        (
            "AddTags",
            f'{{"ResourceId": "ml-x", "ResourceType": "MLModel", "Tags": [{{"Key": "{SURROGATE}"}}]}}',
            "Tags.1.member.Key",
        ),
    ],
)
def test_surrogate_anywhere_is_refused(aml_server: Any, operation: str, body: str, where: str) -> None:
    err = _error(_call(aml_server.url, operation, body))
    assert err["__type"] == "InvalidInputException"
    assert f"at '{where}'" in err["message"], err["message"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (_create_ds_body("ds-nul", DataSourceName='"name\\u0000"'), "DataSourceName"),
        (
            _create_ds_body(
                "ds-nul", DataSpec='{"DataLocationS3": "s3://bucket/a\\u0000.csv", "DataSchema": "{}"}'
            ),
            "DataSpec.DataLocationS3",
        ),
        ('{"DataSourceId": "ds\\u0000"}', "DataSourceId"),
    ],
)
def test_nul_in_patterned_member_is_refused(aml_server: Any, body: str, where: str) -> None:
    operation = "CreateDataSourceFromS3" if "DataSpec" in body else "GetDataSource"
    err = _error(_call(aml_server.url, operation, body))
    assert err["__type"] == "InvalidInputException"
    assert f"at '{where}'" in err["message"], err["message"]
    assert "\x00" not in err["message"]


# -------------------------------------------------------------------------------- JSON depth and numbers


def test_deeply_nested_body_is_a_serialization_error(aml_server: Any) -> None:
    body = '{"NotAMember": ' + "[" * 1000 + "]" * 1000 + "}"
    err = _error(_call(aml_server.url, "DescribeMLModels", body))
    assert err["__type"] == "SerializationException" and "nest deeper than" in err["message"]


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" * 400])
def test_out_of_range_number_in_body_is_refused(aml_server: Any, number: str) -> None:
    err = _error(_call(aml_server.url, "DescribeMLModels", f'{{"Limit": {number}}}'))
    assert err["__type"] == "SerializationException" and "out of range" in err["message"]


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (json.dumps({"groups": {}, "assignments": {}, "outputs": [_deep(1000)]}), None),
        ('{"outputs": ' + _deep(1000) + "}", "nest deeper than"),
        ('{"outputs": ["ALL_INPUTS"], "x": 1e400}', "out of range"),
        ('{"outputs": ["ALL_INPUTS"], "x": Infinity}', "not a JSON number"),
    ],
)
def test_recipe_is_bounded_before_the_engine_parses_it(
    aml_server: Any, document: str, fragment: str | None
) -> None:
    body = json.dumps(
        {
            "MLModelId": "ml-deep",
            "MLModelType": "BINARY",
            "TrainingDataSourceId": "ds-none",
            "Recipe": document,
        }
    )
    r = _call(aml_server.url, "CreateMLModel", body)
    err = _error(r)
    assert err["__type"] == "InvalidInputException"
    if fragment is None:  # brackets inside a JSON string do not nest: the engine judges that recipe
        assert "at 'Recipe'" not in err["message"]
    else:
        assert "at 'Recipe'" in err["message"] and fragment in err["message"], err["message"]
    assert _error(_call(aml_server.url, "GetMLModel", '{"MLModelId": "ml-deep"}'))["__type"] == (
        "ResourceNotFoundException"
    )


@pytest.mark.parametrize("member", ["DataRearrangement", "DataSchema"])
@pytest.mark.parametrize(
    ("document", "fragment"), [(_deep(1000), "nest deeper than"), ('{"a": 1e400}', "out of range")]
)
def test_data_spec_documents_are_bounded(aml_server: Any, member: str, document: str, fragment: str) -> None:
    spec: dict[str, str] = {"DataLocationS3": "s3://bucket/data.csv", member: document}
    if member == "DataRearrangement":
        spec["DataSchemaLocationS3"] = "s3://bucket/data.csv.schema"
    body = json.dumps({"DataSourceId": "ds-doc", "DataSpec": spec})
    err = _error(_call(aml_server.url, "CreateDataSourceFromS3", body))
    assert err["__type"] == "InvalidInputException"
    assert f"at 'DataSpec.{member}'" in err["message"] and fragment in err["message"], err["message"]


def _token(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        _token('{"offset": 1e400}'),
        _token('{"offset": Infinity}'),
        _token('{"offset": -1}'),
        _token('{"offset": 2.5}'),
        _token('{"offset": true}'),
        _token('{"offset": ' + "9" * 5000 + "}"),
        _token("[" * 1000),
        "not-base64!",
        "\\ud800",
    ],
)
def test_bad_next_token_is_invalid_input(aml_server: Any, token: str) -> None:
    err = _error(_call(aml_server.url, "DescribeMLModels", f'{{"NextToken": "{token}"}}'))
    assert err["__type"] == "InvalidInputException", err


def test_issued_next_token_still_pages(aml_server: Any) -> None:
    ml = aml_server.client()
    data = aml_server.put("s3://pages/wine.csv", aml_data.wine_binary_csv(20))
    schema = aml_data.wine_binary_schema()
    for i in range(2):
        ml.create_data_source_from_s3(
            DataSourceId=f"ds-page-{i}", DataSpec={"DataLocationS3": data, "DataSchema": schema}
        )
    first = ml.describe_data_sources(Limit=1)
    assert "NextToken" in first
    second = ml.describe_data_sources(Limit=1, NextToken=first["NextToken"])
    assert second["Results"] and second["Results"][0]["DataSourceId"] != first["Results"][0]["DataSourceId"]


# ------------------------------------------------------------------------------ the error path itself


class _Hostile:
    """A dispatcher whose errors and results hold what UTF-8 cannot encode."""

    def dispatch(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        ident = params.get("MLModelId", "")
        if ident == "bug":
            raise RuntimeError("a bug with a lone surrogate \ud800 in its message")
        if ident == "coded":

            class Coded(Exception):
                code = "InvalidInputException\ud800"
                http_status = 400
                message = "coded \ud800 message"

            raise Coded()
        if ident == "unprintable":

            class Unprintable(Exception):
                def __str__(self) -> str:
                    raise ValueError("no text")

            raise Unprintable()
        if ident == "bad-status":

            class BadStatus(Exception):
                code = "Weird"
                http_status = 99
                message = "not an HTTP status"

            raise BadStatus()
        return {"MLModelId": ident, "Name": "stored before validation \ud800"}


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[ServerThread]:
    with ServerThread(lambda url: create_app(_Hostile(), validate=False)) as srv:
        yield srv


@pytest.mark.parametrize(
    ("ident", "status", "code"),
    [
        ("bug", 500, "InternalServerException"),
        ("unprintable", 500, "InternalServerException"),
        ("bad-status", 500, "InternalServerException"),
        ("coded", 400, "InvalidInputException\\ud800"),
    ],
)
def test_error_reply_is_always_json(hostile_server: ServerThread, ident: str, status: int, code: str) -> None:
    err = _error(_call(hostile_server.url, "GetMLModel", json.dumps({"MLModelId": ident})), status)
    assert err["__type"] == code
    assert "\ud800" not in err["message"]


def test_unencodable_stored_text_is_sent_escaped(hostile_server: ServerThread, client_factory: Any) -> None:
    r = _call(hostile_server.url, "GetMLModel", '{"MLModelId": "ml-legacy"}')
    assert r.status_code == 200 and b"\\ud800" in r.content
    out = client_factory(hostile_server.url).get_ml_model(MLModelId="ml-legacy")
    assert out["Name"] == "stored before validation \ud800"  # botocore reads the escape back
