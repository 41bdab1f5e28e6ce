"""AML data schemas (docs/aml-reference.md §3.1–3.2): parsing, validation, and the typed *views* of a
dictionary.

A schema is JSON text in the current spelling (``attributes`` / ``attributeName`` / ``attributeType``,
``targetAttributeName``, ``rowId``, ``rowWeight``, ``excludedAttributeNames``) or the legacy spelling of
the API reference (``variables`` / ``fieldName`` / ``fieldType``, ``targetFieldName``,
``recordAnnotationFieldName``, ``recordWeightFieldName``, ``excludedVariableNames``). Both parse to the
same :class:`Schema`; :meth:`Schema.to_json` always writes the current spelling.

Types are views on an encoded column's dictionary (its distinct stripped strings), never on rows:
:func:`numeric_view`, :func:`binary_view`, :func:`is_invalid`, :func:`is_missing`.

Example:
    >>> s = parse_schema('{"attributes": [{"attributeName": "x", "attributeType": "NUMERIC"},'
    ...                  ' {"attributeName": "y", "attributeType": "BINARY"}], "targetAttributeName": "y"}')
    >>> s.input_names(), s.target, s.type_of("y")
    (['x'], 'y', 'BINARY')
    >>> binary_view(np.array(["yes", " F ", "2", ""], dtype=object)).tolist()
    [1.0, 0.0, nan, nan]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amlflow.engine.errors import SchemaError

__all__ = [
    "BINARY_FALSE",
    "BINARY_TRUE",
    "TYPES",
    "Attribute",
    "Schema",
    "binary_view",
    "is_invalid",
    "is_missing",
    "numeric_view",
    "parse_schema",
]

TYPES = ("NUMERIC", "CATEGORICAL", "TEXT", "BINARY")
_UNSUPPORTED_TYPES = ("WEIGHTED_INT_SEQUENCE", "WEIGHTED_STRING_SEQUENCE")
BINARY_TRUE = frozenset({"1", "y", "yes", "t", "true"})
BINARY_FALSE = frozenset({"0", "n", "no", "f", "false"})
MAX_ATTRIBUTES = 1000
MAX_NAME_LENGTH = 64

# current spelling -> legacy spelling
_ALIASES = {
    "attributes": "variables",
    "targetAttributeName": "targetFieldName",
    "rowId": "recordAnnotationFieldName",
    "rowWeight": "recordWeightFieldName",
    "excludedAttributeNames": "excludedVariableNames",
}


@dataclass(frozen=True)
class Attribute:
    """One CSV column: its name and AML type (``NUMERIC``, ``CATEGORICAL``, ``TEXT`` or ``BINARY``)."""

    name: str
    type: str


@dataclass
class Schema:
    """A parsed, validated data schema (attributes in CSV column order)."""

    attributes: list[Attribute]
    target: str | None = None
    row_id: str | None = None
    row_weight: str | None = None
    excluded: list[str] = field(default_factory=list)
    has_header: bool = False
    version: str = "1.0"
    data_format: str = "CSV"

    def __post_init__(self) -> None:
        self._by_name = {a.name: a for a in self.attributes}

    @property
    def names(self) -> list[str]:
        """Every attribute name, in column order."""
        return [a.name for a in self.attributes]

    def attribute(self, name: str) -> Attribute:
        """The attribute called ``name`` (SchemaError naming it if absent)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"attribute {name!r} is not in the schema", field=name) from None

    def type_of(self, name: str) -> str:
        """The AML type of attribute ``name``."""
        return self.attribute(name).type

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def input_names(self) -> list[str]:
        """Attributes the model may use: all but the target, rowId, rowWeight and excluded ones."""
        skip = {self.target, self.row_id, self.row_weight, *self.excluded}
        return [a.name for a in self.attributes if a.name not in skip]

    def to_dict(self) -> dict[str, Any]:
        """The schema as a JSON-ready dict in the current spelling."""
        out: dict[str, Any] = {
            "version": self.version,
            "rowId": self.row_id,
            "rowWeight": self.row_weight,
            "targetAttributeName": self.target,
            "dataFormat": self.data_format,
            "dataFileContainsHeader": self.has_header,
            "attributes": [{"attributeName": a.name, "attributeType": a.type} for a in self.attributes],
            "excludedAttributeNames": list(self.excluded),
        }
        if self.target is None:
            del out["targetAttributeName"]
        return out

    def to_json(self) -> str:
        """JSON text in the current spelling (parses back to an equal schema)."""
        return json.dumps(self.to_dict(), indent=2)

    def with_types(self, other: Schema) -> Schema:
        """A copy whose attributes shared with ``other`` take ``other``'s types (AML reads evaluation and
        batch data with the *training* schema's types)."""
        attrs = [Attribute(a.name, other.type_of(a.name)) if a.name in other else a for a in self.attributes]
        return Schema(
            attrs,
            self.target,
            self.row_id,
            self.row_weight,
            list(self.excluded),
            self.has_header,
            self.version,
            self.data_format,
        )


# ---------------------------------------------------------------------------------------------- parse


def _pick(doc: Mapping[str, Any], key: str) -> tuple[str, Any]:
    """(spelling used, value) for a key that has a legacy alias; SchemaError if both disagree."""
    legacy = _ALIASES[key]
    if key in doc and legacy in doc and doc[key] != doc[legacy]:
        raise SchemaError(f"{key} and its legacy spelling {legacy} are both given and differ", field=key)
    if key in doc:
        return key, doc[key]
    return legacy, doc.get(legacy)


def _optional_name(doc: Mapping[str, Any], key: str, names: set[str]) -> str | None:
    used, value = _pick(doc, key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SchemaError(f"{used}: expected an attribute name (string) or null, got {value!r}", field=used)
    if value not in names:
        raise SchemaError(f"{used}: {value!r} is not the name of an attribute in the schema", field=used)
    return value


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise SchemaError(f"{key}: expected true or false, got {value!r}", field=key)


def parse_schema(text: str | bytes | Mapping[str, Any]) -> Schema:
    """Parse and validate AML data-schema JSON (current or legacy spelling).

    Raises:
        SchemaError: naming the offending field, e.g. ``attributes[3].attributeType``.
    """
    if isinstance(text, Mapping):
        doc: Any = text
    else:
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SchemaError(f"DataSchema: not valid JSON ({exc})", field="DataSchema") from None
    if not isinstance(doc, dict):
        raise SchemaError("DataSchema: expected a JSON object", field="DataSchema")

    version = doc.get("version", "1.0")
    if version is None:
        version = "1.0"
    if not isinstance(version, str | int | float) or isinstance(version, bool):
        raise SchemaError(f'version: expected a string such as "1.0", got {version!r}', field="version")
    data_format = doc.get("dataFormat", "CSV")
    if data_format is None:
        data_format = "CSV"
    if not isinstance(data_format, str) or data_format.upper() != "CSV":
        raise SchemaError(f"dataFormat: {data_format!r} is not supported (only CSV)", field="dataFormat")
    has_header = _bool(doc.get("dataFileContainsHeader", False), "dataFileContainsHeader")

    key, raw_attrs = _pick(doc, "attributes")
    if raw_attrs is None:
        raise SchemaError(
            "attributes: required (a list of {attributeName, attributeType})", field="attributes"
        )
    if not isinstance(raw_attrs, list) or not raw_attrs:
        raise SchemaError(f"{key}: expected a non-empty list of attributes", field=key)
    if len(raw_attrs) > MAX_ATTRIBUTES:
        raise SchemaError(f"{key}: {len(raw_attrs)} attributes, at most {MAX_ATTRIBUTES} allowed", field=key)
    legacy = key == "variables"
    name_key, type_key = ("fieldName", "fieldType") if legacy else ("attributeName", "attributeType")
    attributes: list[Attribute] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_attrs):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise SchemaError(f"{where}: expected an object with {name_key} and {type_key}", field=where)
        name = entry.get(name_key, entry.get("attributeName" if legacy else "fieldName"))
        typ = entry.get(type_key, entry.get("attributeType" if legacy else "fieldType"))
        if not isinstance(name, str) or not name.strip():
            raise SchemaError(
                f"{where}.{name_key}: expected a non-empty string, got {name!r}", field=f"{where}.{name_key}"
            )
        if len(name) > MAX_NAME_LENGTH:
            raise SchemaError(
                f"{where}.{name_key}: {name!r} is longer than {MAX_NAME_LENGTH} characters",
                field=f"{where}.{name_key}",
            )
        if name in seen:
            raise SchemaError(
                f"{where}.{name_key}: duplicate attribute name {name!r}", field=f"{where}.{name_key}"
            )
        seen.add(name)
        if not isinstance(typ, str):
            raise SchemaError(
                f"{where}.{type_key}: expected one of {', '.join(TYPES)}, got {typ!r}",
                field=f"{where}.{type_key}",
            )
        norm = typ.strip().upper()
        if norm in _UNSUPPORTED_TYPES:
            raise SchemaError(
                f"{where}.{type_key}: {typ!r} is not supported; use one of {', '.join(TYPES)}",
                field=f"{where}.{type_key}",
            )
        if norm not in TYPES:
            raise SchemaError(
                f"{where}.{type_key}: {typ!r} is not one of {', '.join(TYPES)}", field=f"{where}.{type_key}"
            )
        attributes.append(Attribute(name, norm))

    target = _optional_name(doc, "targetAttributeName", seen)
    row_id = _optional_name(doc, "rowId", seen)
    row_weight = _optional_name(doc, "rowWeight", seen)
    ex_key, raw_ex = _pick(doc, "excludedAttributeNames")
    if raw_ex is None:
        raw_ex = []
    if not isinstance(raw_ex, list):
        raise SchemaError(f"{ex_key}: expected a list of attribute names", field=ex_key)
    excluded: list[str] = []
    for i, name in enumerate(raw_ex):
        if not isinstance(name, str) or name not in seen:
            raise SchemaError(
                f"{ex_key}[{i}]: {name!r} is not the name of an attribute in the schema",
                field=f"{ex_key}[{i}]",
            )
        if name not in excluded:
            excluded.append(name)

    if target is not None:
        if target == row_id:
            raise SchemaError(f"rowId: {row_id!r} is also the target attribute", field="rowId")
        if target == row_weight:
            raise SchemaError(f"rowWeight: {row_weight!r} is also the target attribute", field="rowWeight")
        if target in excluded:
            raise SchemaError(f"{ex_key}: the target attribute {target!r} cannot be excluded", field=ex_key)
    if row_weight is not None and next(a for a in attributes if a.name == row_weight).type != "NUMERIC":
        raise SchemaError(f"rowWeight: attribute {row_weight!r} must be NUMERIC", field="rowWeight")

    return Schema(attributes, target, row_id, row_weight, excluded, has_header, str(version), "CSV")


# ---------------------------------------------------------------------------------------------- views


def _stripped(dictionary: np.ndarray) -> list[str]:
    return [str(v).strip() for v in np.asarray(dictionary, dtype=object).tolist()]


_BINARY_VALUES = {**dict.fromkeys(BINARY_TRUE, 1.0), **dict.fromkeys(BINARY_FALSE, 0.0)}


def is_missing(dictionary: np.ndarray) -> np.ndarray:
    """True where the dictionary entry is empty (a missing value)."""
    return np.array([s == "" for s in _stripped(dictionary)], dtype=bool)


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def numeric_view(dictionary: np.ndarray) -> np.ndarray:
    """float64 value of each dictionary entry; nan for ``""`` and for anything that is not a finite
    decimal/scientific number (``"nan"``, ``"inf"``, ``"1,5"``, ``"0x10"``, ``"1_0"`` are invalid)."""
    values = _stripped(dictionary)
    out = np.full(len(values), np.nan)
    idx = [i for i, v in enumerate(values) if v and "_" not in v]  # float() would accept "1_0"
    if idx:
        texts = [values[i] for i in idx]
        try:
            out[idx] = np.array(texts, dtype=object).astype(np.float64)
        except ValueError:  # some entry is not a number: one by one
            out[idx] = [_float_or_nan(t) for t in texts]
    out[~np.isfinite(out)] = np.nan
    return out


def binary_view(dictionary: np.ndarray) -> np.ndarray:
    """0.0/1.0 for AML's BINARY tokens (``0 n no f false`` / ``1 y yes t true``, case-insensitive,
    white space stripped); nan for ``""`` and every other value."""
    get = _BINARY_VALUES.get
    return np.array([get(v.lower(), np.nan) for v in _stripped(dictionary)], dtype=np.float64)


def is_invalid(dictionary: np.ndarray, type_: str) -> np.ndarray:
    """True where an entry is present (non-empty) but unusable as ``type_``. TEXT and CATEGORICAL values
    are never invalid."""
    t = type_.upper()
    if t == "NUMERIC":
        view = numeric_view(dictionary)
    elif t == "BINARY":
        view = binary_view(dictionary)
    elif t in ("TEXT", "CATEGORICAL"):
        return np.zeros(len(dictionary), dtype=bool)
    else:
        raise SchemaError(f"attributeType: {type_!r} is not one of {', '.join(TYPES)}", field="attributeType")
    invalid: np.ndarray = np.isnan(view) & ~is_missing(dictionary)
    return invalid
