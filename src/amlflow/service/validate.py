"""Request validation against botocore's input shapes: everything AWS checked server-side.

Used by ``Service.dispatch`` and by the server (:mod:`amlflow.server.validate`).

botocore's client checks only required members, JSON types and minimums; AWS (and this server) also
enforce maximum lengths, patterns (Java ``matches`` semantics: the whole value), enums and numeric ranges.
Failures are collected and raised as one ``InvalidInputException`` worded like AWS::

    2 validation errors detected: Value 'NOPE' at 'MLModelType' failed to satisfy constraint: Member
    must satisfy enum value set: [REGRESSION, BINARY, MULTICLASS]; Value '500' at 'Limit' ...

The one deliberate exception: ``Predict.PredictEndpoint`` is not held to the ``VipURL`` pattern
(``https://...amazonaws.com``), because this server advertises its own URL as the realtime endpoint; it
must still be an http(s) URL within the length limit. Members the model does not know are ignored, as AWS
JSON services do. Values of sensitive members (passwords) are never echoed.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import botocore.session
from botocore.model import ServiceModel, Shape

from amlflow.service.errors import InvalidInputException

__all__ = ["operation_names", "service_model", "validate_input"]

MAX_REPORTED = 5
SERVICE_NAME = "machinelearning"


@functools.lru_cache(maxsize=1)
def service_model() -> ServiceModel:
    """botocore's ``machinelearning`` 2014-12-12 service model (loaded once, shared with the server)."""
    return botocore.session.get_session().get_service_model(SERVICE_NAME)


@functools.lru_cache(maxsize=1)
def operation_names() -> frozenset[str]:
    """The 28 operation names (PascalCase)."""
    return frozenset(service_model().operation_names)


_PREDICT_ENDPOINT_RE = re.compile(r"https?://[^\s/]+/?")


def validate_input(operation: str, params: dict[str, Any]) -> None:
    """Check ``params`` against ``operation``'s input shape.

    Raises:
        InvalidInputException: listing the failed constraints (members by name).
    """
    shape = service_model().operation_model(operation).input_shape
    if shape is None:
        return
    errors: list[str] = []
    _check(shape, params, "", errors, operation)
    if errors:
        count = len(errors)
        noun = "error" if count == 1 else "errors"
        shown = "; ".join(errors[:MAX_REPORTED]) + ("; ..." if count > MAX_REPORTED else "")
        raise InvalidInputException(f"{count} validation {noun} detected: {shown}")


def _show(shape: Shape, value: Any) -> str:
    if shape.metadata.get("sensitive"):
        return "***"
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 100 else text[:100] + "..."


def _fail(errors: list[str], shape: Shape, value: Any, path: str, constraint: str) -> None:
    errors.append(f"Value '{_show(shape, value)}' at '{path}' failed to satisfy constraint: {constraint}")


def _check(shape: Shape, value: Any, path: str, errors: list[str], operation: str) -> None:
    kind = shape.type_name
    label = path or shape.name
    if kind == "structure":
        if not isinstance(value, dict):
            _fail(errors, shape, value, label, "Member must be a structure (JSON object)")
            return
        for name in shape.required_members:
            if value.get(name) is None:
                errors.append(
                    f"Value null at '{_join(path, name)}' failed to satisfy constraint: "
                    f"Member must not be null"
                )
        for name, item in value.items():
            member = shape.members.get(name)
            if member is None or item is None:
                continue
            if operation == "Predict" and not path and name == "PredictEndpoint":
                _check_predict_endpoint(member, item, errors)
                continue
            _check(member, item, _join(path, name), errors, operation)
        return
    if kind == "list":
        if not isinstance(value, list):
            _fail(errors, shape, value, label, "Member must be a list")
            return
        _check_length(shape, value, len(value), label, errors, "have length")
        for i, item in enumerate(value):
            _check(shape.member, item, f"{label}.{i + 1}.member", errors, operation)
        return
    if kind == "map":
        if not isinstance(value, dict):
            _fail(errors, shape, value, label, "Member must be a map (JSON object)")
            return
        _check_length(shape, value, len(value), label, errors, "have length")
        for key, item in value.items():
            _check(shape.key, key, f"{label}.key", errors, operation)
            _check(shape.value, item, f"{label}.{key}", errors, operation)
        return
    if kind == "string":
        if not isinstance(value, str):
            _fail(errors, shape, value, label, "Member must be a string")
            return
        _check_length(shape, value, len(value), label, errors, "have length")
        enum = shape.enum
        if enum and value not in enum:
            _fail(errors, shape, value, label, f"Member must satisfy enum value set: [{', '.join(enum)}]")
        pattern = shape.metadata.get("pattern")
        if pattern is not None and not _matcher(pattern)(value):
            _fail(errors, shape, value, label, f"Member must satisfy regular expression pattern: {pattern}")
        return
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(errors, shape, value, label, "Member must be an integer")
            return
        _check_range(shape, value, label, errors)
        return
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(errors, shape, value, label, "Member must be a number")
            return
        _check_range(shape, value, label, errors)
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            _fail(errors, shape, value, label, "Member must be a boolean")
        return
    # blob / timestamp: not in this model's inputs


def _check_predict_endpoint(shape: Shape, value: Any, errors: list[str]) -> None:
    if not isinstance(value, str):
        _fail(errors, shape, value, "PredictEndpoint", "Member must be a string")
        return
    _check_length(shape, value, len(value), "PredictEndpoint", errors, "have length")
    if not _PREDICT_ENDPOINT_RE.fullmatch(value):
        _fail(
            errors,
            shape,
            value,
            "PredictEndpoint",
            "Member must be an http(s) endpoint URL (this server accepts its own EndpointUrl)",
        )


def _check_length(shape: Shape, value: Any, length: int, path: str, errors: list[str], what: str) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and length < low:
        _fail(errors, shape, value, path, f"Member must {what} greater than or equal to {low}")
    if high is not None and length > high:
        _fail(errors, shape, value, path, f"Member must {what} less than or equal to {high}")


def _check_range(shape: Shape, value: float, path: str, errors: list[str]) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and value < low:
        _fail(errors, shape, value, path, f"Member must have value greater than or equal to {low}")
    if high is not None and value > high:
        _fail(errors, shape, value, path, f"Member must have value less than or equal to {high}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


_UNICODE_CLASS = re.compile(r"\\p\{([A-Z])\}")


@functools.lru_cache(maxsize=64)
def _matcher(pattern: str) -> Callable[[str], bool]:
    r"""A full-match predicate for a model pattern (Java regex syntax).

    Python's ``re`` has no ``\p{...}`` classes; the model's only such pattern is TagKey/TagValue's
    ``^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$``, a single character class repeated, checked here with
    ``unicodedata`` categories.
    """
    if "\\p{" in pattern:
        inner = re.fullmatch(r"\^?\(?\[(.*)\]\*\)?\$?", pattern)
        if inner is None:
            return lambda value: True
        body = inner.group(1)
        categories = tuple(_UNICODE_CLASS.findall(body))
        literal = _UNICODE_CLASS.sub("", body).replace("\\-", "-").replace("\\", "")

        def unicode_class(value: str) -> bool:
            return all(ch in literal or unicodedata.category(ch)[0] in categories for ch in value)

        return unicode_class
    compiled = re.compile(pattern, re.DOTALL)
    return lambda value: compiled.fullmatch(value) is not None
