"""A stand-in for the service, for protocol tests that must not depend on the engine.

``FakeDispatcher.dispatch`` records the call and answers with a *complete* sample of the operation's
output shape (every member filled, generated from botocore's model), so a round trip through the wire
checks every member's serialisation. IDs steer errors: ``err-<Code>`` raises that AWS error,
``boom`` raises a plain bug (→ 500 InternalServerException).
"""

from __future__ import annotations

import threading
from typing import Any

from botocore.model import Shape

from amlflow.server.protocol import service_model

SAMPLE_TIME = 1494706299.462
ERROR_STATUS = {"InternalServerException": 500}


class FakeAmlError(Exception):
    """Duck-typed like ``amlflow.service.errors.AmlError``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = ERROR_STATUS.get(code, 400)


def sample(shape: Shape, depth: int = 0) -> Any:
    """A value for ``shape`` with every member present."""
    kind = shape.type_name
    if kind == "structure":
        return {name: sample(member, depth + 1) for name, member in shape.members.items()}
    if kind == "list":
        return [sample(shape.member, depth + 1)]
    if kind == "map":
        key_shape = shape.key
        key = key_shape.enum[0] if key_shape.enum else "k1"
        return {key: sample(shape.value, depth + 1)}
    if kind == "timestamp":
        return SAMPLE_TIME
    if kind == "integer":
        return 7
    if kind == "long":
        return 2**40 + 3
    if kind in ("float", "double"):
        return 0.77
    if kind == "boolean":
        return True
    if shape.enum:
        return shape.enum[0]
    return f"{shape.name}-value"


def valid_sample(shape: Shape) -> Any:
    """A value for ``shape`` that passes the model's constraints (patterns, lengths, enums)."""
    kind = shape.type_name
    if kind == "structure":
        return {name: valid_sample(member) for name, member in shape.members.items()}
    if kind == "list":
        return [valid_sample(shape.member)]
    if kind == "map":
        key = shape.key.enum[0] if shape.key.enum else "k1"
        return {key: valid_sample(shape.value)}
    if kind != "string":
        value = sample(shape)
        low = shape.metadata.get("min")
        return max(value, low) if low is not None and not isinstance(value, bool) else value
    if shape.enum:
        return shape.enum[0]
    pattern = shape.metadata.get("pattern", "")
    if pattern.startswith("s3://"):
        return "s3://bucket/key.csv"
    if pattern.startswith("https://"):
        return "https://realtime.machinelearning.us-east-1.amazonaws.com"
    if pattern == "[a-z0-9]+":
        return "abc123"
    value = "value-123"
    low = shape.metadata.get("min", 0)
    return value + "x" * max(0, low - len(value))


class FakeDispatcher:
    """Records calls; answers every operation with a full output sample."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def dispatch(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls.append((operation, params))
        ident = next((v for k, v in params.items() if k.endswith("Id") and isinstance(v, str)), "")
        if ident.startswith("err-"):
            raise FakeAmlError(ident[4:], f"fake {ident[4:]} for {operation}")
        if ident == "boom":
            raise RuntimeError("a bug with a secret path /etc/secret in its message")
        if operation == "Predict" and params.get("PredictEndpoint") != self.url:
            raise FakeAmlError("InvalidInputException", "PredictEndpoint does not match")
        out = sample(service_model().operation_model(operation).output_shape)
        if operation.startswith("Describe") and operation != "DescribeTags":
            out.pop("NextToken", None)
        return out
