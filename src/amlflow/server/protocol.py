"""AWS JSON 1.1 for Amazon ML (``AmazonML_20141212``), driven by botocore's own service model.

What this module does, and nothing else (no HTTP, no service calls):

* :func:`parse_target` — ``X-Amz-Target: AmazonML_20141212.<Operation>`` → the operation name;
* :func:`parse_body` — the request body → a JSON object (``{}`` for an empty body);
* :func:`serialize_output` — a service result → the operation's output shape: members named exactly as
  the model, ``None``/absent members omitted, timestamps as epoch seconds (ms precision), ``long`` and
  ``integer`` as JSON integers, ``float`` as JSON numbers, maps and lists walked recursively;
* :func:`error_payload` — ``{"__type": code, "message": msg}``, the body botocore's JSON parser reads.

The model itself (:func:`service_model`, :func:`operation_names`) is loaded once, in
:mod:`amlflow.service.validate`, and re-exported here.

Errors raised here are :class:`ProtocolError` (``code``, ``message``, ``http_status``), worded like AWS.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from botocore.model import OperationModel, Shape

from amlflow.service.validate import (
    MAX_JSON_DEPTH,
    JsonBoundsError,
    loads_bounded,
    operation_names,
    printable,
    service_model,
)

__all__ = [
    "CONTENT_TYPE",
    "TARGET_PREFIX",
    "ProtocolError",
    "dump_json",
    "error_payload",
    "operation_names",
    "parse_body",
    "parse_target",
    "serialize_output",
    "service_model",
]

logger = logging.getLogger("amlflow.server")

TARGET_PREFIX = "AmazonML_20141212"
CONTENT_TYPE = "application/x-amz-json-1.1"


class ProtocolError(Exception):
    """A request the transport rejects before it reaches the service.

    Attributes:
        code: the AWS error code sent as ``__type`` (e.g. ``SerializationException``).
        message: the human-readable message.
        http_status: the HTTP status (400 unless said otherwise).
    """

    def __init__(self, code: str, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


@functools.lru_cache(maxsize=64)
def _operation(name: str) -> OperationModel:
    return service_model().operation_model(name)


def parse_target(target: str | None) -> str:
    """Return the operation named by an ``X-Amz-Target`` header.

    Raises:
        ProtocolError: ``UnknownOperationException`` when the header is missing, has another service's
            prefix, or names an operation the model does not have.
    """
    if not target:
        raise ProtocolError(
            "UnknownOperationException",
            f"Missing X-Amz-Target header; expected '{TARGET_PREFIX}.<Operation>'.",
        )
    prefix, dot, op = target.strip().partition(".")
    if not dot or prefix != TARGET_PREFIX:
        raise ProtocolError(
            "UnknownOperationException",
            f"Unknown target '{target[:200]}'; expected '{TARGET_PREFIX}.<Operation>'.",
        )
    if op not in operation_names():
        raise ProtocolError(
            "UnknownOperationException",
            f"Unknown operation '{op[:200]}' for {TARGET_PREFIX}; "
            f"known operations: {', '.join(sorted(operation_names()))}.",
        )
    return op


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body: a UTF-8 JSON object, or empty (meaning ``{}``).

    Raises:
        ProtocolError: ``SerializationException`` for undecodable bytes, bad JSON, a non-object, nesting
            deeper than ``MAX_JSON_DEPTH`` levels, or a number that is not a finite double (``NaN``,
            ``Infinity``, ``1e400``).
    """
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            "SerializationException", f"Request body is not valid UTF-8 (byte {exc.start})."
        ) from None
    try:
        value = loads_bounded(text, max_depth=MAX_JSON_DEPTH)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            "SerializationException",
            f"Request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
        ) from None
    except (JsonBoundsError, ValueError) as exc:
        raise ProtocolError("SerializationException", f"Request body is not valid JSON: {exc}.") from None
    if not isinstance(value, dict):
        raise ProtocolError(
            "SerializationException",
            f"Request body must be a JSON object, got {type(value).__name__}.",
        )
    return value


def serialize_output(operation: str, result: Mapping[str, Any] | None) -> dict[str, Any]:
    """Shape a service result as ``operation``'s output, the way AWS puts it on the wire.

    Members the model does not know are dropped (botocore would drop them too) and logged once per
    name at debug level; ``None`` values are omitted.
    """
    shape = _operation(operation).output_shape
    if shape is None or result is None:
        return {}
    out = _walk(shape, result, operation)
    return out if isinstance(out, dict) else {}


_MISSING = object()


def _walk(shape: Shape, value: Any, path: str) -> Any:
    kind = shape.type_name
    if value is None:
        return _MISSING
    if kind == "structure":
        if not isinstance(value, Mapping):
            raise TypeError(f"{path}: expected a mapping for {shape.name}, got {type(value).__name__}")
        members = shape.members
        out: dict[str, Any] = {}
        for key, item in value.items():
            member = members.get(key)
            if member is None:
                _log_unknown(shape.name, key)
                continue
            walked = _walk(member, item, f"{path}.{key}")
            if walked is not _MISSING:
                out[key] = walked
        return out
    if kind == "list":
        items = [_walk(shape.member, item, f"{path}[]") for item in value]
        return [i for i in items if i is not _MISSING]
    if kind == "map":
        if not isinstance(value, Mapping):
            raise TypeError(f"{path}: expected a mapping for {shape.name}, got {type(value).__name__}")
        result: dict[str, Any] = {}
        for key, item in value.items():
            walked = _walk(shape.value, item, f"{path}.{key}")
            if walked is not _MISSING:
                result[str(key)] = walked
        return result
    if kind == "timestamp":
        return _epoch_seconds(value, path)
    if kind in ("integer", "long"):
        if isinstance(value, bool):
            raise TypeError(f"{path}: expected an integer, got a boolean")
        return int(value)
    if kind in ("float", "double"):
        number = float(value)
        if not math.isfinite(number):
            logger.warning("omitting non-finite number at %s", path)
            return _MISSING
        return number
    if kind == "boolean":
        return bool(value)
    if kind == "string":
        return value if isinstance(value, str) else str(value)
    return value


def _epoch_seconds(value: Any, path: str) -> float:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        seconds = value.timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=_dt.UTC)
            seconds = parsed.timestamp()
    else:
        raise TypeError(f"{path}: cannot serialise {type(value).__name__} as a timestamp")
    return round(float(seconds), 3)


_unknown_seen: set[tuple[str, str]] = set()


def _log_unknown(shape_name: str, key: str) -> None:
    if (shape_name, key) not in _unknown_seen:
        _unknown_seen.add((shape_name, key))
        logger.debug("dropping member %r unknown to shape %s", key, shape_name)


def error_payload(code: str, message: str) -> dict[str, str]:
    """The JSON error body AWS JSON services send: ``{"__type": code, "message": message}``.

    Lone surrogates and NUL in ``message`` are shown as backslash escapes, so the body always encodes.
    """
    return {"__type": printable(str(code)), "message": printable(str(message))}


def dump_json(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, never NaN/Infinity (invalid JSON for AWS SDKs).

    Text that UTF-8 cannot encode (a lone surrogate stored before validation refused them) is sent as
    a ``\\uXXXX`` escape instead of failing the response.
    """
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
