"""``Predict`` runs off the event loop with a time budget: a real server, a prediction held in its worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from amlflow.server.app import create_app
from amlflow.server.runner import ServerThread
from tests.server.fakes import FakeDispatcher
from tests.server.harness import make_client

pytestmark = pytest.mark.server

WAIT = 60.0


class _HeldPredict(FakeDispatcher):
    """Predict on ``ml-held`` blocks its worker until the test releases it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.entered = threading.Event()
        self.release = threading.Event()

    def dispatch(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        if operation == "Predict" and params.get("MLModelId") == "ml-held":
            self.entered.set()
            self.release.wait(WAIT)
        return super().dispatch(operation, params)


@pytest.fixture
def held() -> Iterator[tuple[ServerThread, _HeldPredict]]:
    made: list[_HeldPredict] = []

    def factory(url: str) -> Any:
        made.append(_HeldPredict(url))
        return create_app(made[0], predict_workers=2, predict_timeout=WAIT)

    with ServerThread(factory) as srv:
        yield srv, made[0]
        made[0].release.set()


def test_cheap_requests_are_answered_while_predictions_run(held: tuple[ServerThread, _HeldPredict]) -> None:
    srv, dispatcher = held
    ml = make_client(srv.url)
    with ThreadPoolExecutor(2) as callers:
        running = [
            callers.submit(ml.predict, MLModelId="ml-held", Record={"a": "1"}, PredictEndpoint=srv.url)
            for _ in range(2)
        ]
        assert dispatcher.entered.wait(WAIT)
        # both predict workers are busy: the loop still answers (it would hang if Predict ran on it)
        assert httpx.get(srv.url + "/health", timeout=WAIT).json()["status"] == "ok"
        assert "Results" in ml.describe_ml_models()
        assert not any(f.done() for f in running)
        dispatcher.release.set()
        assert all(f.result(WAIT)["Prediction"] for f in running)


def test_prediction_over_budget_is_limit_exceeded() -> None:
    made: list[_HeldPredict] = []

    def factory(url: str) -> Any:
        made.append(_HeldPredict(url))
        return create_app(made[0], predict_workers=1, predict_timeout=0.2)

    with ServerThread(factory) as srv:
        ml = make_client(srv.url)
        try:
            with pytest.raises(ml.exceptions.LimitExceededException) as info:
                ml.predict(MLModelId="ml-held", Record={"a": "1"}, PredictEndpoint=srv.url)
            assert "real-time budget of 0.2 seconds" in info.value.response["Error"]["Message"]
            assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        finally:
            made[0].release.set()
        # the worker is free again: an ordinary prediction answers
        assert ml.predict(MLModelId="ml-1", Record={"a": "1"}, PredictEndpoint=srv.url)["Prediction"]


def test_predict_flags() -> None:
    from amlflow.cli import build_parser

    args = build_parser().parse_args(["serve", "--predict-workers", "3", "--predict-timeout", "0.5"])
    assert (args.predict_workers, args.predict_timeout) == (3, 0.5)
