"""amlflow.client (the one client factory) and the tasks' helpers: targets, endpoint, retry classification."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from amlflow.client import client_options, ml_client, reports_for, s3_client
from tasks._common import EntityFailedError, EntityWaitTimeoutError, entity_id, is_transient, wait_for_entity


def test_ml_client_uses_the_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_MACHINE_LEARNING", "http://127.0.0.1:8999")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    ml = ml_client()
    assert ml.meta.endpoint_url == "http://127.0.0.1:8999"
    assert ml.meta.region_name == "eu-west-1"
    assert ml.meta.config.retries["mode"] == "standard"
    # a waiter built from the client keeps the endpoint (prefect-aws's client_waiter dropped it)
    waiter = ml.get_waiter("ml_model_available")
    assert waiter._operation_method._client_method.__self__.meta.endpoint_url == "http://127.0.0.1:8999"


def test_explicit_endpoint_wins_and_aws_target_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_MACHINE_LEARNING", raising=False)
    assert ml_client(endpoint_url="http://127.0.0.1:8998").meta.endpoint_url == "http://127.0.0.1:8998"
    assert client_options().target == "embedded"
    assert client_options(target="aws").target == "aws"
    assert "amazonaws.com" in ml_client(target="aws", region="us-east-1").meta.endpoint_url


def test_bad_target_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMLFLOW_TARGET", "cloud")
    with pytest.raises(
        ValueError, match="AMLFLOW_TARGET must be one of embedded, endpoint, aws; got 'cloud'"
    ):
        ml_client()
    monkeypatch.setenv("AMLFLOW_TARGET", "endpoint")
    monkeypatch.delenv("AWS_ENDPOINT_URL_MACHINE_LEARNING", raising=False)
    with pytest.raises(ValueError, match="AWS_ENDPOINT_URL_MACHINE_LEARNING"):
        ml_client()


def test_s3_client_honours_the_s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    assert s3_client().meta.endpoint_url == "http://127.0.0.1:9000"


def test_reports_for_a_boto3_client_is_none() -> None:
    assert reports_for(ml_client(endpoint_url="http://127.0.0.1:8997")) is None


def _err(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_err("InternalServerException", 500), True),
        (_err("ThrottlingException"), True),
        (_err("SomethingElse", 503), True),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (_err("InvalidInputException"), False),
        (_err("ResourceNotFoundException"), False),
        (_err("IdempotentParameterMismatchException"), False),
        (EntityFailedError("ML model", "ml-1", "FAILED", "bad recipe"), False),
        (EntityWaitTimeoutError("slow"), False),
        (ValueError("schema: not a file"), False),
    ],
)
def test_is_transient_retries_only_throttling_5xx_and_connection_errors(
    exc: BaseException, transient: bool
) -> None:
    assert is_transient(exc) is transient


def test_entity_id_is_deterministic_and_valid() -> None:
    a = entity_id("ds", "s3://b/k", {"splitting": {"percentEnd": 70}}, True)
    assert a == entity_id("ds", "s3://b/k", {"splitting": {"percentEnd": 70}}, True)
    assert a != entity_id("ds", "s3://b/k", {"splitting": {"percentEnd": 71}}, True)
    assert a.startswith("ds-") and len(a) <= 64 and a.replace("-", "").isalnum()


class Sequence:
    def __init__(self, statuses: list[str], message: str = "") -> None:
        self.statuses = statuses
        self.message = message
        self.calls = 0

    def get(self, **kwargs: Any) -> dict[str, Any]:
        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        return {"Status": status, "Message": self.message, **kwargs}


def test_wait_for_entity_backs_off_exponentially_to_a_cap() -> None:
    seq = Sequence(["PENDING"] * 12 + ["COMPLETED"])
    sleeps: list[float] = []
    done = wait_for_entity(seq.get, "MLModelId", "ml-1", "ML model", sleep=sleeps.append)
    assert done["Status"] == "COMPLETED" and done["MLModelId"] == "ml-1"
    assert sleeps[0] == pytest.approx(0.2)
    assert all(b >= a for a, b in itertools.pairwise(sleeps))
    assert max(sleeps) == pytest.approx(5.0)


def test_wait_for_entity_raises_with_the_entity_message() -> None:
    seq = Sequence(["PENDING", "INPROGRESS", "FAILED"], message="Column 'quality' is not BINARY")
    with pytest.raises(EntityFailedError, match="ML model ml-1 ended FAILED: Column 'quality' is not BINARY"):
        wait_for_entity(seq.get, "MLModelId", "ml-1", "ML model", sleep=lambda _: None)


def test_wait_for_entity_times_out() -> None:
    seq = Sequence(["PENDING"])
    with pytest.raises(EntityWaitTimeoutError, match="still PENDING"):
        wait_for_entity(seq.get, "MLModelId", "ml-1", "ML model", timeout_seconds=0.0, sleep=lambda _: None)
