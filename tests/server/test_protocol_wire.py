"""The wire protocol through a real server and real boto3, with a fake service behind it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import botocore
import httpx
import pytest
from botocore import xform_name
from botocore.exceptions import ClientError

from amlflow.server.protocol import TARGET_PREFIX, service_model
from tests.server.fakes import SAMPLE_TIME, sample, valid_sample

pytestmark = pytest.mark.server

MODEL = service_model()


def _inputs(operation: str, url: str) -> dict[str, Any]:
    """Minimal valid input: every required member, with sample values."""
    shape = MODEL.operation_model(operation).input_shape
    params = {name: valid_sample(shape.members[name]) for name in shape.required_members}
    if operation == "Predict":
        params["PredictEndpoint"] = url
    return params


def _normalise(value: Any) -> Any:
    """Parsed boto3 output → comparable with the sample (datetimes → epoch seconds)."""
    if isinstance(value, dt.datetime):
        return round(value.timestamp(), 3)
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


@pytest.mark.parametrize("operation", MODEL.operation_names)
def test_every_operation_round_trips_through_boto3(fake_server: Any, fake_ml: Any, operation: str) -> None:
    """Each operation's full output sample comes back from botocore's parser unchanged."""
    params = _inputs(operation, fake_server.url)
    response = getattr(fake_ml, xform_name(operation))(**params)
    expected = sample(MODEL.operation_model(operation).output_shape)
    if operation.startswith("Describe") and operation != "DescribeTags":
        expected.pop("NextToken")
    assert _normalise(response) == expected
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(response["ResponseMetadata"]["RequestId"]) == 36


def test_request_members_reach_the_service_unchanged(fake_server: Any) -> None:
    """What boto3 serialises is what the service gets (types and nesting kept)."""
    from tests.server.fakes import FakeDispatcher

    seen: list[tuple[str, dict[str, Any]]] = []

    class Recorder(FakeDispatcher):
        def dispatch(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
            seen.append((operation, params))
            return super().dispatch(operation, params)

    from amlflow.server.app import create_app
    from amlflow.server.runner import ServerThread
    from tests.server.harness import make_client

    with ServerThread(lambda url: create_app(Recorder(url))) as srv:
        ml = make_client(srv.url)
        ml.create_ml_model(
            MLModelId="ml-1",
            MLModelType="MULTICLASS",
            TrainingDataSourceId="ds-1",
            Parameters={"sgd.maxPasses": "10", "sgd.l2RegularizationAmount": "1e-5"},
        )
        ml.update_ml_model(MLModelId="ml-1", ScoreThreshold=0.77)
        ml.describe_ml_models(FilterVariable="Name", EQ="x", Limit=5, SortOrder="dsc")
    assert seen == [
        (
            "CreateMLModel",
            {
                "MLModelId": "ml-1",
                "MLModelType": "MULTICLASS",
                "TrainingDataSourceId": "ds-1",
                "Parameters": {"sgd.maxPasses": "10", "sgd.l2RegularizationAmount": "1e-5"},
            },
        ),
        ("UpdateMLModel", {"MLModelId": "ml-1", "ScoreThreshold": 0.77}),
        ("DescribeMLModels", {"FilterVariable": "Name", "EQ": "x", "Limit": 5, "SortOrder": "dsc"}),
    ]


def test_timestamps_are_epoch_seconds_and_longs_are_numbers(fake_server: Any) -> None:
    """On the raw wire: epoch seconds with ms, integers as JSON numbers, exact member names."""
    r = httpx.post(
        fake_server.url + "/",
        headers={
            "X-Amz-Target": f"{TARGET_PREFIX}.GetBatchPrediction",
            "Content-Type": "application/x-amz-json-1.1",
        },
        content=b'{"BatchPredictionId": "bp-1"}',
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-amz-json-1.1"
    body = r.json()
    assert body["CreatedAt"] == SAMPLE_TIME
    assert body["TotalRecordCount"] == 2**40 + 3 and isinstance(body["TotalRecordCount"], int)
    assert b'"CreatedAt":1494706299.462' in r.content
    assert set(body) == set(MODEL.operation_model("GetBatchPrediction").output_shape.members)


ERROR_CODES = [
    "InvalidInputException",
    "ResourceNotFoundException",
    "IdempotentParameterMismatchException",
    "LimitExceededException",
    "PredictorNotMountedException",
    "InvalidTagException",
    "TagLimitExceededException",
    "InternalServerException",
]


def test_error_list_matches_the_model() -> None:
    """The error shapes tested here are exactly the model's 8 error shapes."""
    shapes = {
        s for op in MODEL.operation_names for s in (e.name for e in MODEL.operation_model(op).error_shapes)
    }
    assert shapes == set(ERROR_CODES)


@pytest.mark.parametrize("code", ERROR_CODES)
def test_every_error_shape_reaches_boto3_as_its_exception(fake_ml: Any, code: str) -> None:
    """``__type`` becomes the modelled exception class; status 400, or 500 for InternalServer."""
    exc_class = getattr(fake_ml.exceptions, code)
    with pytest.raises(exc_class) as info:
        fake_ml.get_ml_model(MLModelId=f"err-{code}")
    err = info.value.response
    assert err["Error"]["Code"] == code
    assert err["Error"]["Message"] == f"fake {code} for GetMLModel"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == (500 if code == "InternalServerException" else 400)
    headers = err["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-errortype"] == code
    assert headers["x-amzn-requestid"] == err["ResponseMetadata"]["RequestId"]


def test_a_bug_is_a_500_without_traceback(fake_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception: 500 InternalServerException, the request id, no internals leaked."""
    r = httpx.post(
        fake_server.url,
        headers={"X-Amz-Target": f"{TARGET_PREFIX}.GetMLModel"},
        content=b'{"MLModelId": "boom"}',
    )
    assert r.status_code == 500
    body = r.json()
    assert body["__type"] == "InternalServerException"
    assert r.headers["x-amzn-RequestId"] in body["message"]
    assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
    logged = [
        rec for rec in caplog.records if getattr(rec, "request_id", None) == r.headers["x-amzn-RequestId"]
    ]
    assert logged and logged[0].exc_info is not None


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        (None, "Missing X-Amz-Target"),
        ("AmazonML_20141212.NoSuchOperation", "Unknown operation 'NoSuchOperation'"),
        ("DynamoDB_20120810.ListTables", "Unknown target"),
        ("AmazonML_20141212", "Unknown target"),
    ],
)
def test_unknown_target(fake_server: Any, target: str | None, fragment: str) -> None:
    headers = {"X-Amz-Target": target} if target else {}
    r = httpx.post(fake_server.url, headers=headers, content=b"{}")
    assert r.status_code == 400
    assert r.json()["__type"] == "UnknownOperationException"
    assert fragment in r.json()["message"]
    assert r.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert r.headers["x-amzn-RequestId"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"MLModelId": NaN}', "not a JSON number"),
        (b"\xff\xfe", "not valid UTF-8"),
    ],
)
def test_bad_json_is_a_serialization_exception(fake_server: Any, body: bytes, fragment: str) -> None:
    r = httpx.post(fake_server.url, headers={"X-Amz-Target": f"{TARGET_PREFIX}.GetMLModel"}, content=body)
    assert r.status_code == 400
    assert r.json()["__type"] == "SerializationException"
    assert fragment in r.json()["message"]


def test_content_type_is_tolerated_and_empty_body_is_empty_object(fake_server: Any) -> None:
    """Like AWS: a plain JSON content type works; an empty body means {}."""
    r = httpx.post(
        fake_server.url,
        headers={"X-Amz-Target": f"{TARGET_PREFIX}.DescribeMLModels", "Content-Type": "application/json"},
        content=b"",
    )
    assert r.status_code == 200
    assert "Results" in r.json()


def test_body_limit(fake_server: Any) -> None:
    """A body over the limit (1 MiB default) is refused before it is parsed."""
    big = json.dumps({"MLModelId": "ml-1", "Record": {"a": "x" * (1024 * 1024)}}).encode()
    r = httpx.post(fake_server.url, headers={"X-Amz-Target": f"{TARGET_PREFIX}.Predict"}, content=big)
    assert r.status_code == 413
    assert r.json()["__type"] == "RequestEntityTooLargeException"
    assert "1048576" in r.json()["message"]


def test_body_limit_without_content_length() -> None:
    """A chunked body is counted as it streams in."""
    from amlflow.server.app import create_app
    from amlflow.server.runner import ServerThread
    from tests.server.fakes import FakeDispatcher

    def chunks() -> Any:
        yield b'{"MLModelId": "'
        for _ in range(10):
            yield b"x" * 100
        yield b'"}'

    with ServerThread(lambda url: create_app(FakeDispatcher(url), max_body_bytes=500)) as srv:
        r = httpx.post(srv.url, headers={"X-Amz-Target": f"{TARGET_PREFIX}.GetMLModel"}, content=chunks())
        assert r.status_code == 413
        ok = httpx.post(
            srv.url, headers={"X-Amz-Target": f"{TARGET_PREFIX}.GetMLModel"}, content=b'{"MLModelId": "ml-1"}'
        )
        assert ok.status_code == 200


def test_health_is_outside_the_aws_surface(fake_server: Any) -> None:
    r = httpx.get(fake_server.url + "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["service"] == "amlflow" and body["auth"] == "none"
    assert r.headers["x-amzn-RequestId"]
    other = httpx.get(fake_server.url + "/")
    assert other.status_code == 405 and other.json()["__type"] == "UnknownOperationException"


def test_predict_goes_to_the_predict_endpoint_host(fake_server: Any, client_factory: Any) -> None:
    """botocore sends Predict to PredictEndpoint's host; the control endpoint may be elsewhere."""
    # the client's endpoint is a port nothing listens on: only Predict may succeed
    ml = client_factory("http://127.0.0.1:9")
    out = ml.predict(MLModelId="ml-1", Record={"a": "1"}, PredictEndpoint=fake_server.url)
    assert out["Prediction"]["predictedLabel"] == "Label-value"
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        ml.get_ml_model(MLModelId="ml-1")


def test_predict_accepted_whatever_the_host_header(fake_server: Any) -> None:
    r = httpx.post(
        fake_server.url,
        headers={"X-Amz-Target": f"{TARGET_PREFIX}.Predict", "Host": "realtime.machinelearning.example"},
        content=json.dumps({"MLModelId": "m", "Record": {}, "PredictEndpoint": fake_server.url}).encode(),
    )
    assert r.status_code == 200, r.text


def test_client_error_is_not_retried_and_carries_message(fake_ml: Any) -> None:
    with pytest.raises(ClientError) as info:
        fake_ml.delete_data_source(DataSourceId="err-ResourceNotFoundException")
    assert "fake ResourceNotFoundException for DeleteDataSource" in str(info.value)
    assert info.value.response["ResponseMetadata"]["RetryAttempts"] == 0


def test_listening_socket_is_tcp_so_responses_are_not_delayed() -> None:
    """asyncio sets TCP_NODELAY on accepted sockets only for proto=IPPROTO_TCP listeners.

    Without it every response (headers and body written separately) waited ~40 ms for a delayed ACK.
    """
    import socket

    from amlflow.server.runner import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_aws_cli_speaks_to_the_server(fake_server: Any) -> None:
    """The AWS CLI (awscli package) against the server: a JSON result and a modelled error."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("aws")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_DEFAULT_REGION="us-east-1")
    base = [str(exe), "machinelearning", "--endpoint-url", fake_server.url, "--output", "json"]
    ok = subprocess.run(
        [*base, "get-ml-model", "--ml-model-id", "ml-cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    body = json.loads(ok.stdout)
    assert body["MLModelId"] == "EntityId-value" and body["EndpointInfo"]["EndpointStatus"] == "NONE"
    bad = subprocess.run(
        [*base, "get-ml-model", "--ml-model-id", "err-ResourceNotFoundException"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0
    assert "ResourceNotFoundException" in bad.stderr and "fake ResourceNotFoundException" in bad.stderr
