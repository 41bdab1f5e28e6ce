"""The pipeline rides out outages (issue 8, row 10): waits poll through transient errors to their deadline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from tasks._common import (
    RETRY_POLICY,
    EntityFailedError,
    EntityWaitTimeoutError,
    is_transient,
    wait_for_entity,
)


class Clock:
    """A fake clock: ``sleep`` advances it, so the waits run instantly and deterministically."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("tasks._common.time.monotonic", lambda: c.now)
    return c


def _server_down() -> EndpointConnectionError:
    return EndpointConnectionError(endpoint_url="http://127.0.0.1:8080/")


def _error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetMLModel"
    )


def _script(answers: list[Callable[[], Any]]) -> Callable[..., Any]:
    def get(**kwargs: Any) -> Any:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer()

    return get


def _raise(exc: BaseException) -> Callable[[], Any]:
    def f() -> Any:
        raise exc

    return f


def test_a_server_restart_during_a_wait_is_ridden_out(clock: Clock) -> None:
    """90 s of refused connections and 503s (a restart, a rolling upgrade), then the model is COMPLETED."""
    down = [_raise(_server_down())] * 20 + [_raise(_error("ServiceUnavailable", 503))] * 5
    answers = [lambda: {"Status": "INPROGRESS"}, *down, lambda: {"Status": "COMPLETED", "MLModelId": "ml-1"}]
    out = wait_for_entity(_script(answers), "MLModelId", "ml-1", "ML model", sleep=clock.sleep)
    assert out["Status"] == "COMPLETED"
    assert clock.now > 60, "the outage lasted over a minute of (fake) time"
    assert max(clock.sleeps) <= 5.0, "polls stay at most 5 s apart during the outage"


def test_an_outage_past_the_deadline_names_the_endpoint_and_the_last_error(clock: Clock) -> None:
    get = _script([_raise(_server_down())])
    with pytest.raises(EntityWaitTimeoutError) as info:
        wait_for_entity(get, "MLModelId", "ml-1", "ML model", timeout_seconds=30, sleep=clock.sleep)
    message = str(info.value)
    assert "ML model ml-1" in message and "EndpointConnectionError" in message and "127.0.0.1:8080" in message
    assert not is_transient(info.value), "the wait's own deadline is final"


def test_a_permanent_error_fails_the_wait_at_once(clock: Clock) -> None:
    get = _script([_raise(_error("ResourceNotFoundException", 400))])
    with pytest.raises(ClientError):
        wait_for_entity(get, "MLModelId", "ml-1", "ML model", sleep=clock.sleep)
    assert clock.sleeps == []


def test_a_failed_entity_fails_the_wait_with_its_message(clock: Clock) -> None:
    get = _script([lambda: {"Status": "FAILED", "Message": "recipe: no such group"}])
    with pytest.raises(EntityFailedError, match="recipe: no such group"):
        wait_for_entity(get, "MLModelId", "ml-1", "ML model", sleep=clock.sleep)


def test_the_one_retry_policy_covers_a_minute_of_outage() -> None:
    delays = RETRY_POLICY["retry_delay_seconds"](RETRY_POLICY["retries"])
    assert RETRY_POLICY["retries"] == 6 and sum(delays) >= 60
    assert RETRY_POLICY["retry_condition_fn"].__name__ == "retry_on_transient"
