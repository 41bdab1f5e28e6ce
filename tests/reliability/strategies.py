"""Hostile request generators built from botocore's ``machinelearning`` model.

Every operation's input shape becomes a hypothesis strategy whose leaves mix values that satisfy the
model (lengths, patterns, enums, ranges) with values an attacker or a careless script would send: lone
UTF-16 surrogates, NUL, huge and deeply nested strings, boundary numbers, wrong JSON types, and ids that
are valid under AML's pattern but special to a filesystem (``.``, ``..``, internal file names, case-only
variants). The generator never needs to know an operation by name.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import botocore.session
from hypothesis import strategies as st

_SESSION = botocore.session.get_session()
MODEL = _SESSION.get_service_model("machinelearning")
OPERATIONS: list[str] = sorted(MODEL.operation_names)

#: Ids AML's ``[a-zA-Z0-9_.-]+`` admits that mean something to a filesystem or to amlflow's own layout.
ODD_IDS = [
    ".",
    "..",
    "...",
    "table",
    "TABLE",
    "Table",
    "model",
    "Model",
    "insights.json",
    "report.json",
    "log",
    "state.db",
    "s3",
    "datasources",
    "-",
    "_",
    "a" * 64,
    "CON",
    "nul",
    ".git",
    "-rf",
]

_DEEP = 2000
#: Strings that must be refused (or stored and read back intact), never crash the server.
HOSTILE_STRINGS = [
    "",
    " ",
    "\ud800",
    "a\ud800b",
    "\udfff\ud800",
    "\x00",
    "a\x00b",
    "\u202e\u0000",
    "💥" * 10,
    "x" * 1025,
    "y" * 70_000,
    "[" * _DEEP + "]" * _DEEP,
    '{"a":' * _DEEP + "1" + "}" * _DEEP,
    '{"splitting": {"percentBegin": 1e400, "percentEnd": -1}}',
    '{"splitting": {"percentBegin": "Infinity"}}',
    '{"outputs": ["' + "cartesian(" * 500 + "x" + ")" * 500 + '"]}',
    '{"outputs": ["cartesian(ngram(a,10),ngram(b,10))"]}',
    '{"version": "1.0", "attributes": ['
    + ",".join(['{"attributeName": "a", "attributeType": "NUMERIC"}'] * 2000)
    + "]}",
    "s3://../../etc/passwd",
    "s3://bucket/../../x",
    "s3://bucket/" + "k/" * 600,
    "s3:///",
    "file:///etc/passwd",
    "../../../etc/passwd",
    "1e400",
    "Infinity",
    "-1",
    "NaN",
    "null",
]

#: Numbers at and beyond the edges of any integer or float member.
BOUNDARY_NUMBERS: list[Any] = [0, -1, 1, 2**31 - 1, 2**31, 2**63, -(2**63) - 1, 10**400, 1.5, -0.0]

#: Values of the wrong JSON type for any member.
WRONG_TYPES = st.sampled_from([None, True, 12, 1.25, "s", [], {}, [None], {"a": {"b": []}}])


def _pick(values: list[Any]) -> st.SearchStrategy[Any]:
    """One of ``values``, drawn by index (so a strategy's repr never spells out the megabyte strings)."""

    def pick(index: int) -> Any:
        return values[index]

    return st.integers(0, len(values) - 1).map(pick)


def _matches(shape: Any, value: str) -> bool:
    """Does ``value`` satisfy the model's own constraints for a string ``shape`` (length, pattern, enum)?"""
    meta = shape.metadata
    if not meta.get("min", 0) <= len(value) <= meta.get("max", 10**9):
        return False
    if meta.get("enum") and value not in meta["enum"]:
        return False
    pattern = meta.get("pattern")
    try:
        return not pattern or re.fullmatch(pattern, value) is not None
    except re.error:  # a Java-style pattern (\\p{L}...) Python's re cannot read: length alone decides
        return True


def _string(shape: Any, hostile: bool) -> st.SearchStrategy[Any]:
    enum = shape.metadata.get("enum")
    if enum and not hostile:
        return st.sampled_from(list(enum))
    # Hostile strings and odd ids that the model itself accepts are "valid" leaves: the server must take
    # them (or refuse them with a 4xx for its own reasons) and never fail on them.
    fitting = [v for v in HOSTILE_STRINGS + ODD_IDS if _matches(shape, v)]
    options: list[st.SearchStrategy[Any]] = []
    if fitting:
        options.append(_pick(fitting))
    pattern = shape.metadata.get("pattern")
    lo, hi = int(shape.metadata.get("min", 0)), int(shape.metadata.get("max", 80))
    if pattern and "\\p" not in pattern:  # Java's \p{L} classes are beyond Python's re
        with contextlib.suppress(Exception):  # a pattern hypothesis cannot compile: other options apply
            options.append(st.from_regex(pattern, fullmatch=True).filter(lambda v: lo <= len(v) <= hi))
    else:
        options.append(st.text(min_size=lo, max_size=min(hi, 80)))
    if hostile or not options:
        options += [_pick(HOSTILE_STRINGS), st.sampled_from(ODD_IDS)]
    return st.one_of(options)


def for_shape(shape: Any, *, hostile: bool, depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy for one botocore shape.

    ``hostile=False``: values the model accepts (lengths, patterns, enums, ranges, required members),
    including the hostile strings and odd ids that happen to fit. ``hostile=True``: anything — out-of-range
    numbers, wrong JSON types, missing required members.
    """
    kind = shape.type_name
    if depth > 4:
        return WRONG_TYPES
    if kind == "structure":
        members = shape.members
        required = set(shape.required_members)

        def member(name: str) -> st.SearchStrategy[Any]:
            return for_shape(members[name], hostile=hostile, depth=depth + 1)

        must = {n for n in members if n in required} if not hostile else set()
        return st.fixed_dictionaries(
            {n: member(n) for n in members if n in must},
            optional={n: member(n) for n in members if n not in must},
        )
    if kind == "string":
        base = _string(shape, hostile)
    elif kind in ("integer", "long"):
        lo, hi = shape.metadata.get("min", -(2**31)), shape.metadata.get("max", 2**31 - 1)
        base = st.integers(lo, hi)
        if hostile:
            base = st.one_of(base, st.sampled_from(BOUNDARY_NUMBERS))
    elif kind in ("float", "double"):
        base = st.floats(allow_nan=False, allow_infinity=False, width=64)
        if hostile:
            base = st.one_of(base, st.sampled_from(BOUNDARY_NUMBERS))
    elif kind == "boolean":
        base = st.booleans()
    elif kind == "timestamp":
        base = st.floats(0, 4e9)
        if hostile:
            base = st.one_of(base, st.sampled_from(BOUNDARY_NUMBERS), _pick(HOSTILE_STRINGS))
    elif kind == "list":
        lo, hi = int(shape.metadata.get("min", 0)), int(shape.metadata.get("max", 4))
        base = st.lists(
            for_shape(shape.member, hostile=hostile, depth=depth + 1), min_size=lo, max_size=min(hi, 4)
        )
    elif kind == "map":
        base = st.dictionaries(
            for_shape(shape.key, hostile=hostile, depth=depth + 1),
            for_shape(shape.value, hostile=hostile, depth=depth + 1),
            max_size=4,
        )
    elif kind == "blob":
        base = st.sampled_from(["", "AAAA", "!!!not base64!!!"])
    else:  # pragma: no cover - the model has no other shape types
        base = WRONG_TYPES
    return st.one_of(base, base, base, WRONG_TYPES) if hostile else base


def input_strategy(operation: str) -> st.SearchStrategy[dict[str, Any]]:
    """Request parameters for ``operation``: half model-valid (with odd but fitting leaves), half hostile."""
    shape = MODEL.operation_model(operation).input_shape
    if shape is None:  # pragma: no cover - every machinelearning operation has an input
        return st.just({})
    return st.one_of(for_shape(shape, hostile=False), for_shape(shape, hostile=True))  # type: ignore[return-value]


def encode(params: Any) -> bytes:
    """JSON body bytes as a client would send them (lone surrogates escaped as ``\\udXXX``, 1e400 kept)."""
    text = json.dumps(params, ensure_ascii=True, allow_nan=True)
    return text.encode("ascii")


#: Raw bodies no well-behaved client sends: (label, target operation, body bytes).
RAW_BODIES: list[tuple[str, str, bytes]] = [
    ("deep array body", "DescribeDataSources", b"[" * 5000 + b"]" * 5000),
    ("deep object body", "DescribeDataSources", b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ("deep member", "DescribeDataSources", b'{"Prefix":' + b"[" * 3000 + b"]" * 3000 + b"}"),
    ("invalid utf-8", "GetDataSource", b'{"DataSourceId": "\xff\xfe"}'),
    ("raw surrogate escape in id", "GetDataSource", b'{"DataSourceId": "\\ud800"}'),
    ("surrogate in name", "UpdateDataSource", b'{"DataSourceId": "ds-x", "DataSourceName": "\\udc00"}'),
    ("truncated json", "GetMLModel", b'{"MLModelId": "ml-'),
    ("not an object", "GetMLModel", b'"MLModelId"'),
    ("null body", "GetMLModel", b"null"),
    ("empty body", "GetMLModel", b""),
    ("huge exponent limit", "DescribeMLModels", b'{"Limit": 1e400}'),
    ("negative infinity", "DescribeMLModels", b'{"Limit": -Infinity}'),
    ("NaN limit", "DescribeMLModels", b'{"Limit": NaN}'),
    ("huge int", "DescribeMLModels", b'{"Limit": ' + b"9" * 5000 + b"}"),
    ("next token 1e400", "DescribeMLModels", b'{"NextToken": "1e400"}'),
    ("next token Infinity", "DescribeMLModels", b'{"NextToken": "Infinity"}'),
    ("next token negative", "DescribeMLModels", b'{"NextToken": "-5"}'),
    ("next token deep", "DescribeMLModels", b'{"NextToken": "' + b"[" * 3000 + b'"}'),
    ("duplicate keys", "GetDataSource", b'{"DataSourceId": "a", "DataSourceId": "b"}'),
    ("unknown member", "GetDataSource", b'{"DataSourceId": "a", "Evil": {"x": 1}}'),
    ("bad target", "../../etc", b"{}"),
    (
        "predict huge record",
        "Predict",
        b'{"MLModelId": "m", "Record": {"a": "'
        + b"z" * 200_000
        + b'"}, "PredictEndpoint": "http://127.0.0.1"}',
    ),
]
