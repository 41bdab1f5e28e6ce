"""Realtime endpoints and Predict (docs/aml-reference.md §2.9, §9): an endpoint is READY at once (the model
is loaded and kept in memory), Predict answers inline, at most ``predict_rate_limit`` calls per second
per model.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from amlflow.engine.errors import EngineError
from amlflow.engine.limits import MAX_RECORD_BYTES, check_record
from amlflow.service.entities import NO_ENDPOINT, EntityOps, strip_none
from amlflow.service.errors import (
    InvalidInputException,
    LimitExceededException,
    PredictorNotMountedException,
    ResourceNotFoundException,
    from_engine,
)
from amlflow.service.jobs import now
from amlflow.service.state import Entity

__all__ = ["MAX_RECORD_BYTES", "PEAK_RPS", "RateLimiter", "Realtime"]

PEAK_RPS = 200


class RateLimiter:
    """At most ``rate`` calls per sliding second per key (0 = unlimited)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._calls: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        t = time.monotonic()
        with self._lock:
            calls = self._calls.setdefault(key, collections.deque())
            while calls and t - calls[0] >= 1.0:
                calls.popleft()
            if len(calls) >= self.rate:
                return False
            calls.append(t)
            return True


class Realtime(EntityOps):
    """CreateRealtimeEndpoint, DeleteRealtimeEndpoint, Predict."""

    _limiter: RateLimiter

    def create_realtime_endpoint(self, *, MLModelId: str) -> dict[str, Any]:
        entity = self._get("MLModel", MLModelId)
        if entity.status != "COMPLETED":
            raise InvalidInputException(
                f"MLModelId: ML model {MLModelId} is {entity.status}; "
                "a realtime endpoint needs a COMPLETED model."
            )
        info = entity.attrs.get("EndpointInfo") or {}
        if info.get("EndpointStatus") != "READY":
            self._model(MLModelId)  # load (and keep) the model in memory
            info = {
                "PeakRequestsPerSecond": PEAK_RPS,
                "CreatedAt": now(),
                "EndpointUrl": self.endpoint_url,
                "EndpointStatus": "READY",
            }

            def change(e: Entity) -> None:
                e.attrs["EndpointInfo"] = info

            self.state.update("MLModel", MLModelId, change)
        return {
            "MLModelId": MLModelId,
            "RealtimeEndpointInfo": self._out(
                Entity("MLModel", MLModelId, {"EndpointInfo": info}), ("EndpointInfo",)
            )["EndpointInfo"],
        }

    def delete_realtime_endpoint(self, *, MLModelId: str) -> dict[str, Any]:
        self._get("MLModel", MLModelId)

        def change(e: Entity) -> None:
            e.attrs["EndpointInfo"] = dict(NO_ENDPOINT)

        self.state.update("MLModel", MLModelId, change)
        return {"MLModelId": MLModelId, "RealtimeEndpointInfo": dict(NO_ENDPOINT)}

    def predict(
        self,
        *,
        MLModelId: str,
        Record: dict[str, str],
        PredictEndpoint: str,
    ) -> dict[str, Any]:
        entity = self._get("MLModel", MLModelId)
        if entity.status == "DELETED":
            raise ResourceNotFoundException(f"ML model {MLModelId} is DELETED.")
        info = entity.attrs.get("EndpointInfo") or {}
        if info.get("EndpointStatus") != "READY":
            raise PredictorNotMountedException(
                f"ML model {MLModelId} has no READY realtime endpoint; call CreateRealtimeEndpoint first."
            )
        record = {str(k): str(v) for k, v in Record.items()}
        try:
            check_record(record, "Record")  # AML's 100 KB per observation, before any other work
        except EngineError as exc:
            raise from_engine(exc, "Record") from None
        if not self._limiter.allow(MLModelId):
            raise LimitExceededException(
                f"ML model {MLModelId}: more than {self._limiter.rate} Predict requests per second."
            )
        model = self._model(MLModelId)
        threshold = float(entity.attrs.get("ScoreThreshold", 0.5))
        try:  # a record whose features are over the per-record bound is an input error
            prediction = model.predict_record(record, threshold)
        except EngineError as exc:
            raise from_engine(exc, "Record") from None
        return {"Prediction": strip_none(dict(prediction))}
