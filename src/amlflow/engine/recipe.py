"""AML recipes (aml-reference §5): parsing and validation, suggested recipes, and feature building.

A recipe is JSON with the sections ``groups``, ``assignments`` and ``outputs`` (in that order; an empty
``dependencies`` section is accepted and ignored). :func:`parse_recipe` checks it against a schema and
resolves it into a flat list of *output expressions*, one per input variable (a transformation applied to a
group applies to each member). :class:`FeatureBuilder` is fitted on the training table and maps rows of any
encoded table to a sparse feature matrix:

=================================== =============================================================
output expression type              features
=================================== =============================================================
NUMERIC (a variable, ``normalize``) one real feature, standardised with training mean/std
                                    (missing/invalid → absent, i.e. the training mean)
CATEGORICAL, BINARY, ``quantile_bin``  one indicator per category seen in training except the most
                                    frequent one (the *mode*), plus one "≠ mode" flag set for every
                                    other value (missing and unseen too); equivalent under L2 to a
                                    full one-hot but sparse (MNIST: ~300 non-zeros per row, not 784)
TEXT, ``ngram``, ``osb``, ``cartesian`` one indicator per token seen in training (presence)
=================================== =============================================================

All work is done per distinct value (on an encoded table's dictionaries) and then gathered with numpy
by integer codes; there are no per-row Python loops except in ``cartesian`` (per distinct pair).

Example:
    >>> from amlflow.engine.schema import parse_schema
    >>> schema = parse_schema('{"attributes": [{"attributeName": "age", "attributeType": "NUMERIC"},'
    ...     '{"attributeName": "job", "attributeType": "CATEGORICAL"},'
    ...     '{"attributeName": "y", "attributeType": "BINARY"}], "targetAttributeName": "y"}')
    >>> r = parse_recipe('{"outputs": ["ALL_CATEGORICAL", "quantile_bin(age, 10)"]}', schema)
    >>> [o.name for o in r.outputs]
    ['job', 'quantile_bin(age,10)']
"""

from __future__ import annotations

import json
import math
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from amlflow.engine.errors import RecipeError
from amlflow.engine.schema import BINARY_FALSE, BINARY_TRUE, Schema, binary_view, numeric_view

__all__ = [
    "FUNCTIONS",
    "PREDEFINED_GROUPS",
    "Expr",
    "FeatureBuilder",
    "Recipe",
    "parse_recipe",
    "suggest_recipe",
]

PREDEFINED_GROUPS = ("ALL_TEXT", "ALL_NUMERIC", "ALL_CATEGORICAL", "ALL_BINARY", "ALL_INPUTS")
SECTIONS = ("groups", "assignments", "outputs")
MAX_OUTPUTS = 10_000
MAX_NAME = 64
SUGGESTED_BINS = (10, 20, 50, 100, 200, 500)
MAX_STANDARDISED = 1e4  # |standardised NUMERIC feature| cap

# function -> (number of expression args, has integer parameter, accepted input kinds, (lo, hi) of parameter)
FUNCTIONS: dict[str, tuple[int, bool, tuple[str, ...], tuple[int, int] | None]] = {
    "lowercase": (1, False, ("TEXT", "CATEGORICAL"), None),
    "no_punct": (1, False, ("TEXT", "CATEGORICAL"), None),
    "ngram": (1, True, ("TEXT",), (2, 10)),
    "osb": (1, True, ("TEXT",), (2, 10)),
    "quantile_bin": (1, True, ("NUMERIC",), (2, 1000)),
    "normalize": (1, False, ("NUMERIC",), None),
    "cartesian": (2, False, ("CATEGORICAL", "TEXT", "BINARY", "TOKENS"), None),
}
_PARAM_WORD = {"ngram": "size", "osb": "window", "quantile_bin": "bins"}
_GROUP_FUNCTIONS = ("group", "group_remove")
_QUOTES = "'\"`"
_SPECIAL = set(",()'\"`\t\r\n")


# ------------------------------------------------------------------------------------------ expressions


@dataclass(frozen=True)
class Expr:
    """One output expression on input variables.

    ``fn`` is ``"var"`` (then ``attr`` names the variable) or a transformation of :data:`FUNCTIONS`;
    ``kind`` is the value type it produces: ``NUMERIC``, ``BINARY``, ``CATEGORICAL``, ``TEXT`` or
    ``TOKENS`` (a bag of tokens: ``ngram``, ``osb``, ``cartesian``).
    """

    fn: str
    kind: str
    attr: str | None = None
    args: tuple[Expr, ...] = ()
    n: int | None = None

    @property
    def name(self) -> str:
        """Canonical text, e.g. ``quantile_bin(age,10)`` (also the feature-name prefix)."""
        if self.fn == "var":
            assert self.attr is not None
            return self.attr
        inner = ",".join(a.name for a in self.args)
        if self.n is not None:
            inner += f",{self.n}"
        return f"{self.fn}({inner})"

    def attributes(self) -> tuple[str, ...]:
        """The input variables this expression reads (ordered, unique)."""
        if self.fn == "var":
            assert self.attr is not None
            return (self.attr,)
        out: list[str] = []
        for a in self.args:
            out.extend(x for x in a.attributes() if x not in out)
        return tuple(out)

    def walk(self) -> Iterable[Expr]:
        """Sub-expressions, children first."""
        for a in self.args:
            yield from a.walk()
        yield self


@dataclass
class Recipe:
    """A parsed recipe: resolved groups, assignments and the flat, de-duplicated output expressions."""

    text: str
    groups: dict[str, list[str]] = field(default_factory=dict)
    assignments: dict[str, list[Expr]] = field(default_factory=dict)
    outputs: list[Expr] = field(default_factory=list)
    output_texts: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ parse


class _Syntax(Exception):
    pass


@dataclass
class _Node:
    """A parsed (unresolved) expression: a name, or a call with arguments."""

    name: str
    quoted: bool = False
    args: list[_Node] | None = None  # None: a plain name

    def text(self) -> str:
        if self.args is None:
            return f"'{self.name}'" if self.quoted else self.name
        return f"{self.name}({', '.join(a.text() for a in self.args)})"


def _strip_comment(text: str) -> str:
    quote: str | None = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in _QUOTES:
            quote = c
        elif text.startswith("//", i):
            return text[:i]
        i += 1
    return text


def _tokenize(text: str) -> list[tuple[str, str, bool]]:
    """(kind, value, quoted) tokens; kinds: ``name``, ``(``, ``)``, ``,``."""
    out: list[tuple[str, str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "(),":
            out.append((c, c, False))
            i += 1
        elif c in _QUOTES:
            j = i + 1
            buf: list[str] = []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise _Syntax(f"unterminated quote {c} at position {i}")
            out.append(("name", "".join(buf), True))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in _SPECIAL:
                j += 1
            out.append(("name", text[i:j].strip(), False))
            i = j
    return out


def _parse_expression(text: str) -> _Node:
    tokens = _tokenize(_strip_comment(text))
    if not tokens:
        raise _Syntax("empty expression")
    pos = 0

    def parse() -> _Node:
        nonlocal pos
        if pos >= len(tokens):
            raise _Syntax("unexpected end of expression")
        kind, value, quoted = tokens[pos]
        if kind != "name":
            raise _Syntax(f"expected a name, found {value!r}")
        pos += 1
        if pos < len(tokens) and tokens[pos][0] == "(":
            if quoted:
                raise _Syntax(f"a quoted name cannot be called: {value!r}")
            pos += 1
            args: list[_Node] = []
            if pos < len(tokens) and tokens[pos][0] == ")":
                pos += 1
                return _Node(value, False, args)
            while True:
                args.append(parse())
                if pos >= len(tokens):
                    raise _Syntax(f"missing ')' after the arguments of {value}")
                if tokens[pos][0] == ",":
                    pos += 1
                    continue
                if tokens[pos][0] == ")":
                    pos += 1
                    return _Node(value, False, args)
                raise _Syntax(f"expected ',' or ')', found {tokens[pos][1]!r}")
        return _Node(value, quoted)

    node = parse()
    if pos != len(tokens):
        raise _Syntax(f"unexpected {tokens[pos][1]!r} after the expression")
    return node


def _check_name(name: str, where: str) -> None:
    if not 1 <= len(name) <= MAX_NAME:
        raise RecipeError(f"{where}: names must be 1..{MAX_NAME} characters, got {name!r}", field=where)
    if name in PREDEFINED_GROUPS:
        raise RecipeError(f"{where}: {name!r} is a predefined group and cannot be redefined", field=where)


class _Resolver:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.inputs = schema.input_names()
        self.input_set = set(self.inputs)
        self.groups: dict[str, list[str]] = {
            "ALL_TEXT": [a for a in self.inputs if schema.type_of(a) == "TEXT"],
            "ALL_NUMERIC": [a for a in self.inputs if schema.type_of(a) == "NUMERIC"],
            "ALL_CATEGORICAL": [a for a in self.inputs if schema.type_of(a) == "CATEGORICAL"],
            "ALL_BINARY": [a for a in self.inputs if schema.type_of(a) == "BINARY"],
            "ALL_INPUTS": list(self.inputs),
        }
        self.assignments: dict[str, list[Expr]] = {}

    def _variable_error(self, name: str) -> str:
        s = self.schema
        if name == s.target:
            return f"{name!r} is the target attribute and cannot be used as an input"
        if name == s.row_id:
            return f"{name!r} is the rowId attribute and cannot be used as an input"
        if name == s.row_weight:
            return f"{name!r} is the rowWeight attribute and cannot be used as an input"
        if name in s.excluded:
            return f"{name!r} is excluded by the schema (excludedAttributeNames)"
        return f"unknown variable, group or assignment {name!r}"

    # groups: lists of variable names
    def group_members(self, node: _Node) -> list[str]:
        if node.args is not None:
            raise _Syntax(f"group members must be variables or groups, not {node.text()}")
        if node.name in self.groups:
            return list(self.groups[node.name])
        if node.name in self.input_set:
            return [node.name]
        raise _Syntax(self._variable_error(node.name))

    def group(self, node: _Node) -> list[str]:
        if node.args is None or node.name not in _GROUP_FUNCTIONS:
            raise _Syntax(f"a group must be group(...) or group_remove(...), got {node.text()}")
        if not node.args:
            raise _Syntax(f"{node.name}() needs at least one argument")
        if node.name == "group":
            out: list[str] = []
            for a in node.args:
                out.extend(m for m in self.group_members(a) if m not in out)
            return out
        first, rest = node.args[0], node.args[1:]
        if first.args is not None or first.name not in self.groups:
            raise _Syntax(f"group_remove's first argument must be a group, got {first.text()}")
        base = list(self.groups[first.name])
        remove: set[str] = set()
        for a in rest:
            remove.update(self.group_members(a))
        return [m for m in base if m not in remove]

    # expressions: lists of Expr (one per member when applied to a group)
    def expressions(self, node: _Node) -> list[Expr]:
        if node.args is None:
            if node.name in self.assignments:
                return list(self.assignments[node.name])
            if node.name in self.groups:
                return [self._var(m) for m in self.groups[node.name]]
            if node.name in self.input_set:
                return [self._var(node.name)]
            raise _Syntax(self._variable_error(node.name))
        fn = node.name
        if fn in _GROUP_FUNCTIONS:
            return [self._var(m) for m in self.group(node)]
        if fn not in FUNCTIONS:
            raise _Syntax(f"unknown function {fn!r} (known: {', '.join([*FUNCTIONS, *_GROUP_FUNCTIONS])})")
        n_args, has_param, kinds, rng = FUNCTIONS[fn]
        expected = n_args + (1 if has_param else 0)
        if len(node.args) != expected:
            plural = "s" if expected > 1 else ""
            raise _Syntax(f"{fn} takes {expected} argument{plural}, got {len(node.args)}")
        param: int | None = None
        if has_param:
            p = node.args[-1]
            assert rng is not None
            word = _PARAM_WORD[fn]
            try:
                if p.args is not None or p.quoted:
                    raise ValueError
                param = int(p.name)
            except ValueError:
                raise _Syntax(
                    f"{fn}'s {word} must be an integer {rng[0]}..{rng[1]}, got {p.text()}"
                ) from None
            if not rng[0] <= param <= rng[1]:
                raise _Syntax(f"{word} must be {rng[0]}..{rng[1]}")
        operands = [self.expressions(a) for a in node.args[:n_args]]
        for arg_node, exprs in zip(node.args[:n_args], operands, strict=True):
            for e in exprs:
                if e.kind not in kinds:
                    where = f" (in {arg_node.text()})" if arg_node.text() != e.name else ""
                    raise _Syntax(
                        f"{fn} needs {' or '.join(k for k in kinds if k != 'TOKENS')} input; "
                        f"{e.name!r} is {e.kind}{where}"
                    )
        if fn == "cartesian":
            out: list[Expr] = []
            for a in operands[0]:
                for b in operands[1]:
                    if a != b:
                        out.append(Expr("cartesian", "TOKENS", None, (a, b)))
            return out
        kind = {
            "lowercase": None,
            "no_punct": None,
            "ngram": "TOKENS",
            "osb": "TOKENS",
            "quantile_bin": "CATEGORICAL",
            "normalize": "NUMERIC",
        }[fn]
        return [Expr(fn, kind or e.kind, None, (e,), param) for e in operands[0]]

    def _var(self, name: str) -> Expr:
        return Expr("var", self.schema.type_of(name), name)


def parse_recipe(text: str | Mapping[str, Any], schema: Schema) -> Recipe:
    """Parse and validate a recipe against ``schema`` (its input variables and types).

    Raises:
        RecipeError: naming the offending entry, e.g.
            ``outputs[3]: quantile_bin(age, 5000): bins must be 2..1000``.
    """
    if isinstance(text, Mapping):
        doc: Any = dict(text)
        raw = json.dumps(doc)
    else:
        raw = text
        try:
            doc = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise RecipeError(f"Recipe: not valid JSON ({exc})", field="Recipe") from None
    if not isinstance(doc, dict):
        raise RecipeError(
            "Recipe: expected a JSON object with groups, assignments and outputs", field="Recipe"
        )
    order = [k for k in doc if k != "dependencies"]
    for key in order:
        if key not in SECTIONS:
            raise RecipeError(
                f"Recipe: unknown section {key!r} (allowed: groups, assignments, outputs)", field=key
            )
    if order != sorted(order, key=SECTIONS.index):
        raise RecipeError(
            f"Recipe: sections must come in the order groups, assignments, outputs; got {', '.join(order)}",
            field="Recipe",
        )
    if doc.get("dependencies") not in (None, {}, []):
        raise RecipeError("dependencies: must be empty (amlflow ignores it)", field="dependencies")
    resolver = _Resolver(schema)
    recipe = Recipe(text=raw)

    groups = doc.get("groups") or {}
    if not isinstance(groups, dict):
        raise RecipeError('groups: expected an object {name: "group(...)"}', field="groups")
    for name, expr in groups.items():
        where = f"groups.{name}"
        _check_name(name, where)
        if name in resolver.input_set or name in resolver.groups:
            raise RecipeError(f"{where}: {name!r} is already the name of a variable or group", field=where)
        if not isinstance(expr, str):
            raise RecipeError(f"{where}: expected an expression string, got {expr!r}", field=where)
        try:
            resolver.groups[name] = recipe.groups[name] = resolver.group(_parse_expression(expr))
        except _Syntax as exc:
            raise RecipeError(f"{where}: {expr}: {exc}", field=where) from None

    assignments = doc.get("assignments") or {}
    if not isinstance(assignments, dict):
        raise RecipeError('assignments: expected an object {name: "expression"}', field="assignments")
    for name, expr in assignments.items():
        where = f"assignments.{name}"
        _check_name(name, where)
        if name in resolver.input_set or name in resolver.groups or name in resolver.assignments:
            raise RecipeError(
                f"{where}: {name!r} is already the name of a variable, group or assignment", field=where
            )
        if not isinstance(expr, str):
            raise RecipeError(f"{where}: expected an expression string, got {expr!r}", field=where)
        try:
            exprs = resolver.expressions(_parse_expression(expr))
            resolver.assignments[name] = recipe.assignments[name] = exprs
        except _Syntax as exc:
            raise RecipeError(f"{where}: {expr}: {exc}", field=where) from None

    outputs = doc.get("outputs")
    if outputs is None or outputs == []:
        raise RecipeError("outputs: required, a non-empty list of expressions", field="outputs")
    if not isinstance(outputs, list):
        raise RecipeError("outputs: expected a list of expression strings", field="outputs")
    seen: set[Expr] = set()
    for i, expr in enumerate(outputs):
        where = f"outputs[{i}]"
        if not isinstance(expr, str):
            raise RecipeError(f"{where}: expected an expression string, got {expr!r}", field=where)
        try:
            exprs = resolver.expressions(_parse_expression(expr))
        except _Syntax as exc:
            raise RecipeError(f"{where}: {expr.strip()}: {exc}", field=where) from None
        recipe.output_texts.append(expr)
        for e in exprs:
            if e not in seen:
                seen.add(e)
                recipe.outputs.append(e)
        if len(recipe.outputs) > MAX_OUTPUTS:
            raise RecipeError(
                f"{where}: the recipe produces more than {MAX_OUTPUTS:,} output variables", field=where
            )
    return recipe


# -------------------------------------------------------------------------------------- text functions

_ASCII_PUNCT = set(string.punctuation)


def _is_punct(c: str) -> bool:
    return c in _ASCII_PUNCT or unicodedata.category(c).startswith("P")


def _strip_punct(token: str) -> str:
    i, j = 0, len(token)
    while i < j and _is_punct(token[i]):
        i += 1
    while j > i and _is_punct(token[j - 1]):
        j -= 1
    return token[i:j]


def _no_punct(text: str) -> str:
    return " ".join(t for t in (_strip_punct(w) for w in text.split()) if t)


def _ngrams(text: str, n: int) -> list[str]:
    words = text.split()
    out: list[str] = []
    for k in range(1, n + 1):
        out.extend(" ".join(words[i : i + k]) for i in range(len(words) - k + 1))
    return out


def _osb(text: str, n: int) -> list[str]:
    words = text.split()
    out: list[str] = []
    for i, w in enumerate(words):
        for d in range(1, n):
            if i + d < len(words):
                out.append(w + "_" * d + words[i + d])
    return out


def _num_scalar(raw: str) -> float:
    s = raw.strip()
    if not s or any(c not in "0123456789+-.eE" for c in s):
        return math.nan
    try:
        v = float(s)
    except ValueError:
        return math.nan
    return v if math.isfinite(v) else math.nan


def _bin_scalar(raw: str) -> float:
    s = raw.strip().lower()
    if s in BINARY_TRUE:
        return 1.0
    if s in BINARY_FALSE:
        return 0.0
    return math.nan


def _obj(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


# ------------------------------------------------------------------------------------ value evaluation
#
# An expression evaluated on a *dictionary* (the distinct raw strings of one attribute) gives one value
# per entry: NUMERIC → float64 (nan = missing/invalid); BINARY/CATEGORICAL → object array of str or None;
# TEXT → object array of str or None; TOKENS → object array of lists of str.


def _var_values(kind: str, dictionary: np.ndarray) -> np.ndarray:
    small = len(dictionary) <= 8
    if kind == "NUMERIC":
        if small:
            return np.array([_num_scalar(str(v)) for v in dictionary], dtype=np.float64)
        return numeric_view(dictionary)
    if kind == "BINARY":
        b = np.array([_bin_scalar(str(v)) for v in dictionary]) if small else binary_view(dictionary)
        return _obj([None if math.isnan(x) else ("1" if x == 1.0 else "0") for x in b])
    # CATEGORICAL, TEXT: the stripped raw string, "" = missing
    return _obj([(s if (s := str(v).strip()) else None) for v in dictionary])


def _apply(e: Expr, child: np.ndarray, state: Mapping[str, Any]) -> np.ndarray:
    fn = e.fn
    if fn == "lowercase":
        return _obj([None if v is None else v.lower() for v in child])
    if fn == "no_punct":
        return _obj([None if v is None else (_no_punct(v) or None) for v in child])
    if fn == "ngram":
        assert e.n is not None
        return _obj([[] if v is None else _ngrams(v, e.n) for v in child])
    if fn == "osb":
        assert e.n is not None
        return _obj([[] if v is None else _osb(v, e.n) for v in child])
    if fn == "normalize":
        st = state[e.name]
        return (child - st["mean"]) / st["std"]
    if fn == "quantile_bin":
        edges = np.asarray(state[e.name]["edges"], dtype=np.float64)
        idx = np.searchsorted(edges, child, side="right")
        return _obj([None if math.isnan(x) else f"bin_{int(i)}" for x, i in zip(child, idx, strict=True)])
    raise AssertionError(fn)  # pragma: no cover


def _tokens_of(kind: str, values: np.ndarray) -> np.ndarray:
    """Values of any non-numeric kind as token lists (TEXT split on white space)."""
    if kind == "TOKENS":
        return values
    if kind == "TEXT":
        return _obj([[] if v is None else v.split() for v in values])
    return _obj([[] if v is None else [v] for v in values])


def _weighted_mean_std(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    ok = ~np.isnan(x) & (w > 0)
    if not ok.any():
        return 0.0, 1.0
    xs, ws = x[ok], w[ok]
    scale = float(np.max(np.abs(xs))) or 1.0  # scaled so huge values cannot overflow the squares
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(np.average(xs / scale, weights=ws))
        std = math.sqrt(float(np.average((xs / scale - mean) ** 2, weights=ws))) * scale
    mean *= scale
    if not math.isfinite(mean):
        mean = 0.0
    return mean, (std if std > 0 and math.isfinite(std) else 1.0)


def _quantile_edges(x: np.ndarray, w: np.ndarray, n: int) -> list[float]:
    """Cut points of ``n`` equal-frequency bins over values ``x`` with counts ``w`` (duplicates collapse)."""
    ok = ~np.isnan(x) & (w > 0)
    if not ok.any():
        return []
    xs, ws = x[ok], w[ok]
    order = np.argsort(xs, kind="stable")
    xs, cum = xs[order], np.cumsum(ws[order])
    total = cum[-1]
    targets = total * np.arange(1, n) / n
    pos = np.searchsorted(cum, targets, side="right")
    pos = np.minimum(pos, len(xs) - 1)
    edges = np.unique(xs[pos])
    # a bin's upper edge is exclusive; an edge equal to the minimum would leave an empty first bin
    edges = edges[edges > xs[0]]
    return [float(v) for v in edges]


# ---------------------------------------------------------------------------------------------- leaves


@dataclass
class _Leaf:
    """One output expression with its place in the feature vector."""

    expr: Expr
    mode: str  # "numeric" (one real feature), "onehot" (one-of), "bag" (token presence)
    offset: int = 0
    vocab: list[str] = field(default_factory=list)
    implicit: str | None = None  # onehot: the most frequent training category (no feature)
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        self._index = {v: i for i, v in enumerate(self.vocab)}

    @property
    def size(self) -> int:
        if self.mode == "numeric":
            return 1
        return len(self.vocab) + (1 if self.mode == "onehot" and self.implicit is not None else 0)

    @property
    def slots(self) -> int:
        """Features a single-valued leaf can set in one row (onehot: the "≠ mode" flag + the value)."""
        return 2 if self.mode == "onehot" and self.implicit is not None else 1

    def set_vocab(self, vocab: list[str]) -> None:
        self.vocab = vocab
        self._index = {v: i for i, v in enumerate(vocab)}

    def feature_names(self) -> list[str]:
        if self.mode == "numeric":
            return [self.expr.name]
        has_flag = self.mode == "onehot" and self.implicit is not None
        flag = [f"{self.expr.name}!={self.implicit}"] if has_flag else []
        return flag + [f"{self.expr.name}={v}" for v in self.vocab]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"expr": self.expr.name, "mode": self.mode, "offset": self.offset}
        if self.mode == "numeric":
            d.update(mean=self.mean, std=self.std)
        else:
            d.update(vocab=self.vocab, implicit=self.implicit)
        return d

    # single-valued leaves: per dictionary entry, one (column or -1, value) pair per slot
    def single_maps(self, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        if self.mode == "numeric":
            with np.errstate(over="ignore", invalid="ignore"):
                v = (values.astype(np.float64) - self.mean) / self.std
            # extreme outliers (or statistics that overflowed) must not blow up the solver
            v = np.clip(v, -MAX_STANDARDISED, MAX_STANDARDISED, out=v, where=~np.isnan(v))
            cols = np.where(np.isnan(v), -1, self.offset).astype(np.int32)
            return [(cols, np.nan_to_num(v).astype(np.float32))]
        get = self._index.get
        idx = np.fromiter(
            (-1 if v is None else get(v, -1) for v in values), dtype=np.int64, count=len(values)
        )
        ones = np.ones(len(values), dtype=np.float32)
        if self.implicit is None:
            return [(np.where(idx >= 0, idx + self.offset, -1).astype(np.int32), ones)]
        # The mode has no feature of its own; every other value (missing and unseen included) sets the
        # "≠ mode" flag. Under L2 this is the same model as a full one-hot, with far fewer non-zeros.
        is_mode = np.fromiter((v == self.implicit for v in values), dtype=bool, count=len(values))
        flag = np.where(is_mode, -1, self.offset).astype(np.int32)
        return [(flag, ones), (np.where(idx >= 0, idx + self.offset + 1, -1).astype(np.int32), ones)]

    # bag leaves: per entry CSR (entries × size)
    def bag_matrix(self, token_lists: np.ndarray) -> sp.csr_matrix:
        get = self._index.get
        indptr = np.zeros(len(token_lists) + 1, dtype=np.int64)
        indices: list[int] = []
        for i, toks in enumerate(token_lists):
            cols = {c for t in toks if (c := get(t)) is not None}
            indices.extend(sorted(cols))
            indptr[i + 1] = len(indices)
        ind = np.asarray(indices, dtype=np.int32)
        return sp.csr_matrix(
            (np.ones(len(ind), dtype=np.float32), ind, indptr), shape=(len(token_lists), self.size)
        )


def _leaf_mode(e: Expr) -> str:
    if e.kind == "NUMERIC":
        return "numeric"
    if e.kind in ("CATEGORICAL", "BINARY"):
        return "onehot"
    return "bag"


# --------------------------------------------------------------------------------------- the builder


class _Dicts:
    """Per-table cache of dictionaries and of expression values on them (types from the model schema)."""

    def __init__(self, table: Any, builder: FeatureBuilder) -> None:
        self.table = table
        self.builder = builder
        self.names = set(table.names)
        self._dict: dict[str, np.ndarray] = {}
        self._values: dict[Expr, np.ndarray] = {}
        self.maps: dict[int, Any] = {}
        self.counts: dict[int, np.ndarray] = {}

    def dictionary(self, attr: str) -> np.ndarray:
        d = self._dict.get(attr)
        if d is None:
            d = self.table.dictionary(attr) if attr in self.names else _obj([""])
            self._dict[attr] = d
        return d

    def codes(self, attr: str, start: int, stop: int) -> np.ndarray:
        if attr in self.names:
            return np.asarray(self.table.codes(attr, start, stop))
        return np.zeros(stop - start, dtype=np.uint8)

    def values(self, e: Expr) -> np.ndarray:
        """Values of a single-attribute expression per entry of its attribute's dictionary."""
        v = self._values.get(e)
        if v is None:
            if e.fn == "var":
                assert e.attr is not None
                v = _var_values(e.kind, self.dictionary(e.attr))
            else:
                v = _apply(e, self.values(e.args[0]), self.builder.state)
            self._values[e] = v
        return v


def _pair_tokens(a: list[str], b: list[str]) -> list[str]:
    return [f"{x}_{y}" for x in a for y in b]


class FeatureBuilder:
    """Maps rows of an encoded table to a CSR float32 feature matrix (see the module docstring).

    Fitted once on the training table (:meth:`fit`), saved as plain JSON (:meth:`to_json`), applied to any
    table read with the training schema's types (:meth:`transform`) or to one realtime record
    (:meth:`encode_record`).
    """

    def __init__(self, recipe: Recipe, schema: Schema) -> None:
        self.recipe = recipe
        self.schema = schema
        self.state: dict[str, dict[str, Any]] = {}
        leaves = [_Leaf(e, _leaf_mode(e)) for e in recipe.outputs]
        # single-valued leaves first (their columns come out sorted row by row), then bags
        self.leaves = [lf for lf in leaves if lf.mode != "bag"] + [lf for lf in leaves if lf.mode == "bag"]
        self.n_features = 0
        self._record_cache: list[dict[str, tuple[np.ndarray, np.ndarray]]] = [{} for _ in self.leaves]
        # realtime: encoded values cached per output expression (≤ ~1M entries in all)
        self._record_cache_size = max(256, 1_000_000 // max(1, len(self.leaves)))

    # ------------------------------------------------------------------------------------------ fit

    @classmethod
    def fit(
        cls,
        recipe: Recipe,
        schema: Schema,
        table: Any,
        rows: np.ndarray | None = None,
        *,
        batch_rows: int = 1 << 16,
    ) -> FeatureBuilder:
        """Learn bin edges, normalisation statistics and vocabularies from ``table`` (only the rows where
        the boolean mask ``rows`` is true, when given)."""
        self = cls(recipe, schema)
        dicts = _Dicts(table, self)
        attrs = sorted({a for lf in self.leaves for a in lf.expr.attributes()})
        counts = {a: np.zeros(len(dicts.dictionary(a)), dtype=np.float64) for a in attrs}
        for start, stop in table.iter_row_batches(batch_rows):
            sel = None if rows is None else rows[start:stop]
            for a in attrs:
                c = dicts.codes(a, start, stop)
                if sel is not None:
                    c = c[sel]
                counts[a] += np.bincount(c, minlength=len(counts[a]))
        # fit stateful sub-expressions bottom-up (quantile_bin edges, normalize statistics)
        for lf in self.leaves:
            for e in lf.expr.walk():
                if e.fn in ("quantile_bin", "normalize") and e.name not in self.state:
                    x = dicts.values(e.args[0]).astype(np.float64)
                    w = counts[e.attributes()[0]]
                    if e.fn == "normalize":
                        mean, std = _weighted_mean_std(x, w)
                        self.state[e.name] = {"mean": mean, "std": std}
                    else:
                        assert e.n is not None
                        self.state[e.name] = {"edges": _quantile_edges(x, w, e.n)}
        offset = 0
        for lf in self.leaves:
            e = lf.expr
            if e.fn == "cartesian":
                lf.set_vocab(self._fit_cartesian(e, table, dicts, rows, batch_rows))
            else:
                (a,) = e.attributes()
                values, w = dicts.values(e), counts[a]
                if lf.mode == "numeric":
                    lf.mean, lf.std = _weighted_mean_std(values.astype(np.float64), w)
                elif lf.mode == "onehot":
                    totals: dict[str, float] = {}
                    for v, c in zip(values, w, strict=True):
                        if v is not None and c > 0:
                            totals[v] = totals.get(v, 0.0) + c
                    if totals:
                        lf.implicit = min(totals, key=lambda k: (-totals[k], k))
                    lf.set_vocab(sorted(k for k in totals if k != lf.implicit))
                else:
                    seen: set[str] = set()
                    for toks, c in zip(_tokens_of(e.kind, values), w, strict=True):
                        if c > 0:
                            seen.update(toks)
                    lf.set_vocab(sorted(seen))
            lf.offset = offset
            offset += lf.size
        self.n_features = offset
        return self

    def _fit_cartesian(
        self, e: Expr, table: Any, dicts: _Dicts, rows: np.ndarray | None, batch_rows: int
    ) -> list[str]:
        seen: set[str] = set()
        done: set[tuple[int, ...]] = set()
        for start, stop in table.iter_row_batches(batch_rows):
            combos, _ = self._combos(e, dicts, start, stop, None if rows is None else rows[start:stop])
            for combo in map(tuple, combos):
                if combo not in done:
                    done.add(combo)
                    seen.update(self._cartesian_tokens(e, dicts, combo))
        return sorted(seen)

    def _combos(
        self, e: Expr, dicts: _Dicts, start: int, stop: int, sel: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unique rows of the codes of ``e``'s attributes, and the inverse mapping."""
        cols = [dicts.codes(a, start, stop).astype(np.int64) for a in e.attributes()]
        stacked = np.stack(cols, axis=1) if cols else np.zeros((stop - start, 0), dtype=np.int64)
        if sel is not None:
            stacked = stacked[sel]
        if len(stacked) == 0:
            return stacked, np.zeros(0, dtype=np.int64)
        uniq, inv = np.unique(stacked, axis=0, return_inverse=True)
        return uniq, inv.reshape(-1)

    def _cartesian_tokens(self, e: Expr, dicts: _Dicts, combo: Sequence[int]) -> list[str]:
        attrs = e.attributes()
        code_of = dict(zip(attrs, combo, strict=True))

        def tokens(x: Expr) -> list[str]:
            if x.fn == "cartesian":
                return _pair_tokens(tokens(x.args[0]), tokens(x.args[1]))
            (a,) = x.attributes()
            return list(_tokens_of(x.kind, dicts.values(x)[code_of[a] : code_of[a] + 1])[0])

        return tokens(e)

    # -------------------------------------------------------------------------------------- transform

    def transform(
        self,
        table: Any,
        start: int = 0,
        stop: int | None = None,
        *,
        batch_rows: int | None = None,
        _dicts: _Dicts | None = None,
    ) -> sp.csr_matrix:
        """Features of rows ``[start, stop)`` of ``table`` as a CSR float32 matrix (n × n_features)."""
        stop = table.n_rows if stop is None else stop
        dicts = _dicts or _Dicts(table, self)
        if batch_rows is None:
            batch_rows = max(1024, 4_000_000 // max(1, len(self.leaves)))
        if stop - start <= batch_rows:
            return self._transform_batch(dicts, start, stop)
        parts = [
            self._transform_batch(dicts, a, min(a + batch_rows, stop)) for a in range(start, stop, batch_rows)
        ]
        return _vstack_csr(parts, self.n_features)

    def encoder(self, table: Any) -> _Dicts:
        """A per-table cache to pass to :meth:`transform` when reading one table in many batches."""
        return _Dicts(table, self)

    def _maps(self, dicts: _Dicts, lf: _Leaf) -> Any:
        got = dicts.maps.get(id(lf))
        if got is None:
            values = dicts.values(lf.expr)
            if lf.mode != "bag":
                got = lf.single_maps(values)
            else:
                got = lf.bag_matrix(_tokens_of(lf.expr.kind, values))
            dicts.maps[id(lf)] = got
        return got

    def row_nnz(self, table: Any, start: int, stop: int, *, _dicts: _Dicts | None = None) -> np.ndarray:
        """Non-zeros of each row ``[start, stop)`` would have in :meth:`transform` (cheap: no values), so a
        caller can allocate one matrix for a whole table instead of stacking batches."""
        dicts = _dicts or _Dicts(table, self)
        out = np.zeros(stop - start, dtype=np.int64)
        for lf in self.leaves:
            if lf.mode == "bag" and lf.expr.fn == "cartesian":
                combos, inv = self._combos(lf.expr, dicts, start, stop, None)
                m = lf.bag_matrix(_obj([self._cartesian_tokens(lf.expr, dicts, c) for c in combos]))
                out += np.diff(m.indptr)[inv] if len(inv) else 0
                continue
            per_entry = dicts.counts.get(id(lf))
            if per_entry is None:
                if lf.mode == "bag":
                    per_entry = np.diff(self._maps(dicts, lf).indptr).astype(np.int32)
                else:
                    per_entry = sum((c >= 0).astype(np.int32) for c, _ in self._maps(dicts, lf))
                dicts.counts[id(lf)] = per_entry
            (a,) = lf.expr.attributes()
            out += per_entry[dicts.codes(a, start, stop)]
        return out

    def _transform_batch(self, dicts: _Dicts, start: int, stop: int) -> sp.csr_matrix:
        n = stop - start
        singles = [lf for lf in self.leaves if lf.mode != "bag"]
        blocks: list[sp.csr_matrix] = []
        n_single = sum(lf.size for lf in singles)
        if singles:
            width = sum(lf.slots for lf in singles)
            cols = np.empty((n, width), dtype=np.int32)
            numeric = any(lf.mode == "numeric" for lf in singles)
            vals = np.ones((n, width), dtype=np.float32) if numeric else None
            j = 0
            for lf in singles:
                (a,) = lf.expr.attributes()
                codes = dicts.codes(a, start, stop)
                for col_map, val_map in self._maps(dicts, lf):
                    np.take(col_map, codes, out=cols[:, j])
                    if vals is not None and lf.mode == "numeric":  # indicators are all 1.0
                        vals[:, j] = val_map[codes]
                    j += 1
            mask = cols >= 0
            indptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(mask.sum(axis=1), out=indptr[1:])
            indices = cols[mask]
            data = vals[mask] if vals is not None else np.ones(len(indices), dtype=np.float32)
            blocks.append(sp.csr_matrix((data, indices, indptr), shape=(n, n_single)))
        for lf in self.leaves:
            if lf.mode != "bag":
                continue
            if lf.expr.fn == "cartesian":
                combos, inv = self._combos(lf.expr, dicts, start, stop, None)
                m = lf.bag_matrix(_obj([self._cartesian_tokens(lf.expr, dicts, c) for c in combos]))
                blocks.append(m[inv] if n else sp.csr_matrix((0, lf.size), dtype=np.float32))
            else:
                (a,) = lf.expr.attributes()
                m = self._maps(dicts, lf)
                blocks.append(m[dicts.codes(a, start, stop).astype(np.int64)])
        if not blocks:
            return sp.csr_matrix((n, self.n_features), dtype=np.float32)
        out = blocks[0] if len(blocks) == 1 else sp.hstack(blocks, format="csr", dtype=np.float32)
        return sp.csr_matrix(out, dtype=np.float32)

    # ------------------------------------------------------------------------------------------ record

    def encode_record(self, record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(column indices, values) of one realtime record (attribute name → string; absent = missing)."""
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        for k, lf in enumerate(self.leaves):
            attrs = lf.expr.attributes()
            raws = tuple(str(record.get(a, "") or "").strip() for a in attrs)
            key = raws[0] if len(raws) == 1 else "\x00".join(raws)
            cache = self._record_cache[k]
            got = cache.get(key)
            if got is None:
                got = self._encode_one(lf, raws)
                if len(cache) < self._record_cache_size:
                    cache[key] = got
            cols.append(got[0])
            vals.append(got[1])
        if not cols:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return np.concatenate(cols), np.concatenate(vals)

    def _encode_one(self, lf: _Leaf, raws: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        names = lf.expr.attributes()
        table = _OneRow(dict(zip(names, raws, strict=True)))
        m = self._transform_leaf_row(lf, _Dicts(table, self))
        return m

    def _transform_leaf_row(self, lf: _Leaf, dicts: _Dicts) -> tuple[np.ndarray, np.ndarray]:
        if lf.mode != "bag":
            pairs = [(c[0], v[0]) for c, v in self._maps(dicts, lf) if c[0] >= 0]
            cols = np.array([c for c, _ in pairs], dtype=np.int64)
            return cols, np.array([v for _, v in pairs], dtype=np.float32)
        if lf.expr.fn == "cartesian":
            toks = self._cartesian_tokens(lf.expr, dicts, [0] * len(lf.expr.attributes()))
            m = lf.bag_matrix(_obj([toks]))
        else:
            m = self._maps(dicts, lf)
        return (m.indices.astype(np.int64) + lf.offset), m.data.astype(np.float32)

    # ---------------------------------------------------------------------------------------- persist

    def feature_names(self) -> list[str]:
        """A readable name per feature column (``job=admin.``, ``quantile_bin(age,10)=bin_3``, ``age``)."""
        out: list[str] = []
        for lf in self.leaves:
            out.extend(lf.feature_names())
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON state (the recipe text, fitted sub-expression state and every leaf)."""
        return {
            "recipe": self.recipe.text,
            "state": self.state,
            "n_features": self.n_features,
            "leaves": [lf.to_json() for lf in self.leaves],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], schema: Schema) -> FeatureBuilder:
        """Rebuild a fitted builder saved by :meth:`to_json` (the recipe is re-parsed with ``schema``)."""
        self = cls(parse_recipe(data["recipe"], schema), schema)
        self.state = {k: dict(v) for k, v in data["state"].items()}
        saved = {d["expr"]: d for d in data["leaves"]}
        for lf in self.leaves:
            d = saved[lf.expr.name]
            lf.offset = int(d["offset"])
            if lf.mode == "numeric":
                lf.mean, lf.std = float(d["mean"]), float(d["std"])
            else:
                lf.set_vocab([str(v) for v in d["vocab"]])
                lf.implicit = d.get("implicit")
        self.leaves.sort(key=lambda lf: lf.offset)
        self.n_features = int(data["n_features"])
        return self


class _OneRow:
    """A one-row stand-in for an encoded table (realtime records)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self.names = list(values)
        self.n_rows = 1

    def dictionary(self, name: str) -> np.ndarray:
        return _obj([self._values[name]])

    def codes(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        return np.zeros(1, dtype=np.uint8)[start:stop]


def _vstack_csr(parts: list[sp.csr_matrix], n_cols: int) -> sp.csr_matrix:
    """Concatenate CSR row blocks into one matrix, freeing each block as it is copied."""
    n_rows = sum(p.shape[0] for p in parts)
    nnz = sum(p.nnz for p in parts)
    data = np.empty(nnz, dtype=np.float32)
    indices = np.empty(nnz, dtype=np.int32)
    indptr = np.empty(n_rows + 1, dtype=np.int64 if nnz >= 2**31 else np.int32)
    indptr[0] = 0
    r = z = 0
    while parts:
        p = parts.pop(0)
        k, m = p.shape[0], p.nnz
        data[z : z + m] = p.data
        indices[z : z + m] = p.indices
        indptr[r + 1 : r + k + 1] = p.indptr[1:] + z
        r += k
        z += m
        del p
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))


# ---------------------------------------------------------------------------------------- suggestions


def suggest_recipe(table: Any, schema: Schema, *, max_rows: int = 200_000) -> str:
    """AML-style suggested recipe (aml-reference §5.4) for ``table`` read with ``schema``.

    Every NUMERIC input is binned with ``quantile_bin``; its bin count is the one of 10, 20, 50, 100, 200,
    500 whose bins best explain the target on the table (bias-corrected mutual information for a
    categorical/binary target, adjusted R² of the bin means for a numeric target; ties → fewer bins; 10
    when the schema has no usable target). Outputs: ``ALL_BINARY`` (when binary inputs exist),
    ``ALL_CATEGORICAL``, one ``quantile_bin(NUMERIC_VARS_QB_<n>,<n>)`` per bin count in use, ``ALL_TEXT``
    (when text inputs exist).
    """
    inputs = schema.input_names()
    numeric = [a for a in inputs if schema.type_of(a) == "NUMERIC"]
    n = min(table.n_rows, max_rows)
    target = _suggest_target(table, schema, n)
    by_bins: dict[int, list[str]] = {}
    for a in numeric:
        best = SUGGESTED_BINS[0]
        if target is not None and a in table.names:
            x = numeric_view(table.dictionary(a))
            best = _best_bins(x, np.asarray(table.codes(a, 0, n), dtype=np.int64), *target)
        by_bins.setdefault(best, []).append(a)
    groups = {
        f"NUMERIC_VARS_QB_{b}": "group(" + ",".join(_quote(a) for a in by_bins[b]) + ")"
        for b in sorted(by_bins)
    }
    outputs: list[str] = []
    if any(schema.type_of(a) == "BINARY" for a in inputs):
        outputs.append("ALL_BINARY")
    outputs.append("ALL_CATEGORICAL")
    outputs.extend(f"quantile_bin(NUMERIC_VARS_QB_{b},{b})" for b in sorted(by_bins))
    if any(schema.type_of(a) == "TEXT" for a in inputs):
        outputs.append("ALL_TEXT")
    return json.dumps({"groups": groups, "assignments": {}, "outputs": outputs}, indent=2)


def _quote(name: str) -> str:
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _suggest_target(table: Any, schema: Schema, n: int) -> tuple[str, np.ndarray] | None:
    t = schema.target
    if t is None or t not in table.names or n == 0:
        return None
    codes = np.asarray(table.codes(t, 0, n), dtype=np.int64)
    d = table.dictionary(t)
    kind = schema.type_of(t)
    if kind == "NUMERIC":
        return "numeric", numeric_view(d)[codes]
    if kind == "BINARY":
        return "classes", binary_view(d)[codes]
    cls = np.where(np.array([str(v).strip() != "" for v in d]), np.arange(len(d)), np.nan)
    return "classes", cls[codes].astype(np.float64)


def _best_bins(x: np.ndarray, codes: np.ndarray, mode: str, y: np.ndarray) -> int:
    """The suggested bin count for one NUMERIC variable: ``x`` per dictionary entry, ``codes`` per row,
    ``y`` the target per row (nan = missing). Works on per-entry statistics, not rows."""
    ok = ~np.isnan(y) & ~np.isnan(x[codes])
    codes, yv = codes[ok], y[ok]
    n = len(yv)
    if n < 2:
        return SUGGESTED_BINS[0]
    n_entries = len(x)
    if mode == "numeric":
        cnt = np.bincount(codes, minlength=n_entries).astype(np.float64)
        s1 = np.bincount(codes, weights=yv, minlength=n_entries)
        s2 = np.bincount(codes, weights=yv * yv, minlength=n_entries)
        sst = float(s2.sum() - s1.sum() ** 2 / n)
        joint = None
    else:
        _, yc = np.unique(yv, return_inverse=True)
        n_cls = int(yc.max()) + 1
        joint = np.bincount(codes * n_cls + yc, minlength=n_entries * n_cls).reshape(n_entries, n_cls)
        cnt = joint.sum(axis=1).astype(np.float64)
    used_entries = np.flatnonzero(cnt > 0)
    xe = x[used_entries]
    best, best_score = SUGGESTED_BINS[0], -math.inf
    for b in SUGGESTED_BINS:
        edges = np.asarray(_quantile_edges(xe, cnt[used_entries], b))
        k = len(edges) + 1
        bin_of = np.searchsorted(edges, xe, side="right")
        nb = np.bincount(bin_of, weights=cnt[used_entries], minlength=k)
        n_used = int((nb > 0).sum())
        if joint is None:
            b1 = np.bincount(bin_of, weights=s1[used_entries], minlength=k)
            b2 = np.bincount(bin_of, weights=s2[used_entries], minlength=k)
            nz = nb > 0
            sse = float((b2[nz] - b1[nz] ** 2 / nb[nz]).sum())
            if sst <= 0 or n <= n_used:
                score = -math.inf
            else:
                score = 1 - (sse / (n - n_used)) / (sst / (n - 1))
        else:
            jb = np.zeros((k, joint.shape[1]))
            np.add.at(jb, bin_of, joint[used_entries])
            p = jb / n
            px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
            nz = p > 0
            mi = float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())
            score = mi - (n_used - 1) * (joint.shape[1] - 1) / (2 * n)
        if score > best_score + 1e-12:
            best, best_score = b, score
    return best
