"""The recipe language (docs/aml-reference.md §5): parsing and validation against a schema.

A recipe is JSON with the sections ``groups``, ``assignments`` and ``outputs`` (in that order; an empty
``dependencies`` section is accepted and ignored). :func:`parse_recipe` checks it against a schema and
resolves it into a flat list of *output expressions* (:class:`Expr`), one per input variable (a
transformation applied to a group applies to each member).

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from amlflow.engine.errors import RecipeError
from amlflow.engine.limits import MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_NODES
from amlflow.engine.schema import Schema

__all__ = [
    "FUNCTIONS",
    "MAX_NAME",
    "MAX_OUTPUTS",
    "PREDEFINED_GROUPS",
    "SECTIONS",
    "Expr",
    "Recipe",
    "parse_recipe",
]

PREDEFINED_GROUPS = ("ALL_TEXT", "ALL_NUMERIC", "ALL_CATEGORICAL", "ALL_BINARY", "ALL_INPUTS")
SECTIONS = ("groups", "assignments", "outputs")
MAX_OUTPUTS = 10_000
MAX_NAME = 64


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
    ``TOKENS`` (a bag of tokens: ``ngram``, ``osb``, ``cartesian``). ``depth`` (calls nested, 1 for a
    variable) and ``size`` (nodes of the tree) are computed, not compared.
    """

    fn: str
    kind: str
    attr: str | None = None
    args: tuple[Expr, ...] = ()
    n: int | None = None
    depth: int = field(default=1, init=False, compare=False, repr=False)
    size: int = field(default=1, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth", 1 + max((a.depth for a in self.args), default=0))
        object.__setattr__(self, "size", 1 + sum(a.size for a in self.args))

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

    def parse(depth: int) -> _Node:
        nonlocal pos
        if depth > MAX_EXPRESSION_DEPTH:
            raise _Syntax(f"nested more than {MAX_EXPRESSION_DEPTH} levels deep")
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
                args.append(parse(depth + 1))
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

    node = parse(1)
    if pos != len(tokens):
        raise _Syntax(f"unexpected {tokens[pos][1]!r} after the expression")
    return node


def _short(text: str, limit: int = 200) -> str:
    """``text`` for a message: at most ``limit`` characters (an ellipsis in the middle)."""
    if len(text) <= limit:
        return text
    half = (limit - 1) // 2
    return f"{text[:half]}…{text[-half:]}"


def _bounded(e: Expr) -> Expr:
    """``e``, if within the nesting and size bounds (assignments included: a reference is substituted)."""
    if e.depth > MAX_EXPRESSION_DEPTH:
        raise _Syntax(
            f"{e.fn}(...) is nested {e.depth} levels deep (assignments substituted); at most "
            f"{MAX_EXPRESSION_DEPTH} allowed"
        )
    if e.size > MAX_EXPRESSION_NODES:
        raise _Syntax(
            f"{e.fn}(...) has {e.size} nodes (assignments substituted); "
            f"at most {MAX_EXPRESSION_NODES} allowed"
        )
    return e


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
            if len(operands[0]) * len(operands[1]) > MAX_OUTPUTS + min(len(operands[0]), len(operands[1])):
                raise _Syntax(
                    f"cartesian of {len(operands[0]):,} by {len(operands[1]):,} variables makes more than "
                    f"{MAX_OUTPUTS:,} output variables"
                )
            out: list[Expr] = []
            for a in operands[0]:
                for b in operands[1]:
                    if a != b:
                        out.append(_bounded(Expr("cartesian", "TOKENS", None, (a, b))))
            return out
        kind = {
            "lowercase": None,
            "no_punct": None,
            "ngram": "TOKENS",
            "osb": "TOKENS",
            "quantile_bin": "CATEGORICAL",
            "normalize": "NUMERIC",
        }[fn]
        return [_bounded(Expr(fn, kind or e.kind, None, (e,), param)) for e in operands[0]]

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
            raise RecipeError(f"{where}: {_short(expr)}: {exc}", field=where) from None

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
            raise RecipeError(f"{where}: {_short(expr)}: {exc}", field=where) from None

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
            raise RecipeError(f"{where}: {_short(expr.strip())}: {exc}", field=where) from None
        recipe.output_texts.append(expr)
        for e in exprs:
            if e not in seen:
                seen.add(e)
                recipe.outputs.append(e)
        if len(recipe.outputs) > MAX_OUTPUTS:
            raise RecipeError(
                f"{where}: the recipe produces more than {MAX_OUTPUTS:,} output variables "
                f"({len(recipe.outputs):,} so far; AML's recipe complexity limit, every group member and "
                "cartesian pair counts)",
                field=where,
            )
    return recipe
