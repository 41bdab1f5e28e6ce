r"""Request validation against botocore's input shapes: everything AWS checked server-side.

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

Beyond the model, every request must be storable text and bounded JSON (a value that passes here can be
stored, read back and echoed in a reply):

* no string anywhere (known members or not, map keys included) holds a lone UTF-16 surrogate
  (``"\ud800"`` in a JSON body): it cannot be encoded as UTF-8, so it could be neither stored nor
  returned;
* no string held to a model pattern (ids, names, S3 URLs, tag keys, ...) holds NUL (U+0000);
* numbers are finite, and ``NextToken`` is a token this service issued (:func:`decode_next_token`);
* the embedded JSON documents (``Recipe``, ``DataSchema``, ``DataRearrangement``) are at most
  :data:`MAX_DOCUMENT_CHARS` long, nest at most :data:`MAX_JSON_DEPTH` levels and hold only finite
  numbers (:func:`check_json_document`), before the engine ever parses them.

Messages never echo a surrogate or NUL as such: they are shown as ``\ud800`` / ``\x00`` escapes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import botocore.session
from botocore.model import ServiceModel, Shape

from amlflow.service.errors import InvalidInputException

__all__ = [
    "MAX_DOCUMENT_CHARS",
    "MAX_JSON_DEPTH",
    "check_json_document",
    "decode_next_token",
    "encode_next_token",
    "exceeds_json_depth",
    "loads_bounded",
    "operation_names",
    "printable",
    "service_model",
    "validate_input",
]

MAX_REPORTED = 5
SERVICE_NAME = "machinelearning"

#: Deepest nesting of JSON arrays/objects accepted in a request body or an embedded document (this
#: model's requests nest 4 levels; recipes and schemas 3). Python's parser recurses per level.
MAX_JSON_DEPTH = 64
#: Longest embedded JSON document (the model's own limit for ``Recipe`` and ``DataSchema``; applied to
#: ``DataRearrangement`` too, which the model leaves unbounded).
MAX_DOCUMENT_CHARS = 131071
#: The shapes whose string value is a JSON document the engine parses.
DOCUMENT_SHAPES = frozenset({"Recipe", "DataSchema", "DataRearrangement"})
#: Largest ``NextToken`` offset (far beyond any entity count this service holds).
MAX_TOKEN_OFFSET = 2**31 - 1
MAX_TOKEN_CHARS = 1024


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
        raise InvalidInputException(printable(f"{count} validation {noun} detected: {shown}"))


def printable(text: str) -> str:
    """``text`` with lone surrogates and NUL shown as backslash escapes (always encodable as UTF-8)."""
    if text.isascii():
        return text.replace("\x00", "\\x00") if "\x00" in text else text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
            if not isinstance(name, str) or _has_surrogate(name):
                _fail(errors, shape, name, _join(path, "<key>"), _NO_SURROGATES)
                continue
            member = shape.members.get(name)
            if member is None:
                _check_any_text(item, _join(path, name), errors)
                continue
            if item is None:
                continue
            if operation == "Predict" and not path and name == "PredictEndpoint":
                _check_predict_endpoint(member, item, errors)
                continue
            _check(member, item, _join(path, name), errors, operation)
            if name == "NextToken" and not path and isinstance(item, str) and item:
                try:
                    decode_next_token(item, name)
                except InvalidInputException as exc:
                    errors.append(
                        f"Value '{_show(member, item)}' at 'NextToken' failed to satisfy "
                        f"constraint: {exc.message}"
                    )
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
        if _has_surrogate(value):
            _fail(errors, shape, value, label, _NO_SURROGATES)
            return
        _check_length(shape, value, len(value), label, errors, "have length")
        enum = shape.enum
        if enum and value not in enum:
            _fail(errors, shape, value, label, f"Member must satisfy enum value set: [{', '.join(enum)}]")
        pattern = shape.metadata.get("pattern")
        if pattern is not None:
            if "\x00" in value:
                _fail(errors, shape, value, label, "Member must not contain NUL (U+0000)")
            elif not _matcher(pattern)(value):
                _fail(
                    errors, shape, value, label, f"Member must satisfy regular expression pattern: {pattern}"
                )
        if shape.name in DOCUMENT_SHAPES:
            problem = _document_problem(value)
            if problem is not None:
                _fail(errors, shape, value, label, problem)
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
        if isinstance(value, float) and not math.isfinite(value):
            _fail(errors, shape, value, label, "Member must be a finite number")
            return
        _check_range(shape, value, label, errors)
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            _fail(errors, shape, value, label, "Member must be a boolean")
        return
    # blob / timestamp: not in this model's inputs


_NO_SURROGATES = "Member must be valid Unicode text (no unpaired UTF-16 surrogates)"


def _check_any_text(value: Any, path: str, errors: list[str], depth: int = 0) -> None:
    """A member the model does not know: ignored, but its text must still be valid Unicode."""
    if isinstance(value, str):
        if _has_surrogate(value):
            errors.append(f"Value '{value[:100]}' at '{path}' failed to satisfy constraint: {_NO_SURROGATES}")
    elif depth >= MAX_JSON_DEPTH:
        errors.append(f"Value at '{path}' failed to satisfy constraint: Member nests too deeply")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_any_text(key, f"{path}.<key>", errors, depth + 1)
            _check_any_text(item, f"{path}.{key}", errors, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_any_text(item, f"{path}.{i + 1}", errors, depth + 1)


def _check_predict_endpoint(shape: Shape, value: Any, errors: list[str]) -> None:
    if not isinstance(value, str):
        _fail(errors, shape, value, "PredictEndpoint", "Member must be a string")
        return
    if _has_surrogate(value) or "\x00" in value:
        _fail(errors, shape, value, "PredictEndpoint", _NO_SURROGATES + " and no NUL (U+0000)")
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


# ----------------------------------------------------------------------------------- bounded JSON

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class JsonBoundsError(ValueError):
    """JSON text outside the bounds: too deep, or a number that is not a finite double."""


def exceeds_json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays/objects in JSON ``text`` nest deeper than ``limit`` (brackets in strings do not count).

    Linear, no recursion: any text can be measured before a recursive parser sees it.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for char in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise JsonBoundsError(f"the number {text[:40]} is out of range (not a finite double)")
    return number


def _bounded_int(text: str) -> int:
    if len(text) > 309:  # beyond any double: 1.8e308
        raise JsonBoundsError(f"the number {text[:40]}... is out of range ({len(text)} digits)")
    return int(text)


def _reject_constant(name: str) -> Any:
    raise JsonBoundsError(f"'{name}' is not a JSON number")


def loads_bounded(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses deep nesting and non-finite or oversized numbers.

    Raises:
        JsonBoundsError: nesting deeper than ``max_depth``, ``NaN``/``Infinity``, ``1e400``, or an
            integer of more than 309 digits.
        json.JSONDecodeError: text that is not JSON.
    """
    if exceeds_json_depth(text, max_depth):
        raise JsonBoundsError(f"arrays/objects nest deeper than {max_depth} levels")
    return json.loads(
        text, parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_reject_constant
    )


def _document_problem(text: str) -> str | None:
    if len(text) > MAX_DOCUMENT_CHARS:
        return f"Member must have length less than or equal to {MAX_DOCUMENT_CHARS}"
    try:
        loads_bounded(text)
    except JsonBoundsError as exc:
        return f"Member must be a bounded JSON document: {exc}"
    except ValueError:
        return None  # not JSON at all: the engine's parser says why, in its own words
    return None


def check_json_document(text: str, member: str) -> None:
    """Check an embedded JSON document (recipe, schema, rearrangement) before the engine parses it.

    For documents that do not arrive in the request (``RecipeUri``, ``DataSchemaLocationS3``): size,
    nesting and numbers as :func:`validate_input` checks the inline ones. Text that is not JSON passes
    (the engine reports it).

    Raises:
        InvalidInputException: naming ``member``.
    """
    problem = _document_problem(text)
    if problem is not None:
        raise InvalidInputException(printable(f"{member}: {problem.removeprefix('Member must ')}"))


def encode_next_token(offset: int) -> str:
    """The ``NextToken`` of the page starting at ``offset`` (what :func:`decode_next_token` reads)."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_next_token(text: str, member: str = "NextToken") -> int:
    """The offset held by a ``NextToken`` this service issued (:func:`encode_next_token`).

    Raises:
        InvalidInputException: ``"<member>: not a token this service issued."`` for anything else,
            including offsets that are negative, not integers, ``1e400`` or ``Infinity``.
    """
    refused = InvalidInputException(f"{member}: not a token this service issued.")
    if not isinstance(text, str) or len(text) > MAX_TOKEN_CHARS or not text.isascii():
        raise refused
    try:
        decoded = base64.urlsafe_b64decode(text.encode("ascii")).decode("utf-8")
        value = loads_bounded(decoded, max_depth=2)
    except (ValueError, binascii.Error):
        raise refused from None
    offset = value.get("offset") if isinstance(value, dict) else None
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_TOKEN_OFFSET:
        raise refused
    return offset
