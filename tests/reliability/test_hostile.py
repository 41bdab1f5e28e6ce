"""≥ 150 hostile requests generated from botocore's model for every operation, against a real server.

Each case must get a 2xx or a 4xx with AWS's error shape (``__type`` + ``message``), never a 5xx, never a
hang; afterwards the server is healthy and every entity it stored can be read back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.reliability.conftest import HostileClient
from tests.reliability.strategies import OPERATIONS, RAW_BODIES, encode, input_strategy

pytestmark = [pytest.mark.reliability, pytest.mark.server]

#: Generated cases per operation (28 operations).
EXAMPLES = 10

_HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def _check(response: Any, what: str) -> None:
    assert response is not None, f"{what}: the server did not answer within the hang limit"
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        payload = response.json()
        assert isinstance(payload.get("__type"), str) and payload["__type"], f"{what}: no __type: {payload}"
        assert isinstance(payload.get("message"), str), f"{what}: no message: {payload}"
        assert response.headers.get("x-amzn-ErrorType") == payload["__type"]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_generated_requests_never_get_a_5xx(operation: str, hostile: HostileClient) -> None:
    @_HYPOTHESIS
    @given(params=input_strategy(operation))
    def run(params: dict[str, Any]) -> None:
        _check(hostile.send(operation, encode(params)), f"{operation} {json.dumps(params)[:300]}")

    run()


@pytest.mark.parametrize(("label", "operation", "body"), RAW_BODIES, ids=[r[0] for r in RAW_BODIES])
def test_malformed_bodies_get_a_4xx(label: str, operation: str, body: bytes, hostile: HostileClient) -> None:
    response = hostile.send(operation, body)
    _check(response, label)
    assert response is not None and 400 <= response.status_code < 500, f"{label}: {response.status_code}"


def test_server_stays_healthy_and_everything_stored_reads_back(
    hostile: HostileClient, hostile_server: tuple[Any, Any, Path]
) -> None:
    """Runs last in this module: whatever the cases above stored must still describe and get."""
    assert hostile.http.get("/health").status_code == 200
    for op, key in [
        ("DescribeDataSources", "DataSourceId"),
        ("DescribeMLModels", "MLModelId"),
        ("DescribeEvaluations", "EvaluationId"),
        ("DescribeBatchPredictions", "BatchPredictionId"),
    ]:
        token: str | None = None
        while True:
            body: dict[str, Any] = {"Limit": 100}
            if token:
                body["NextToken"] = token
            response = hostile.send(op, encode(body))
            _check(response, op)
            assert response is not None and response.status_code == 200
            page = response.json()
            for entity in page.get("Results", []):
                getter = op.replace("Describe", "Get")[:-1]
                got = hostile.send(getter, encode({key: entity[key]}))
                _check(got, f"{getter} {entity[key]!r}")
                assert got is not None and got.status_code == 200
            token = page.get("NextToken")
            if not token:
                break
    home = hostile_server[2]
    outside = [p for p in home.parent.iterdir() if p != home and p.name.startswith(home.name)]
    assert not outside, f"files written beside the home: {outside}"
