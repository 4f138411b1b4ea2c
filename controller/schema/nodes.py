"""A small structural schema, and the two walks the API server does with one.

A CRD's OpenAPI schema says, per field, its type, limits and ``default``; its CEL
``x-kubernetes-validations`` add rules that look at a whole object or list. Here each
schema node is a frozen record of the same facts, and each CEL rule is a plain Python
function attached to the node it is attached to in the CRD. Two walks use them:

- :func:`default` — structural defaulting, exactly as the API server does it: a field
  that is absent (or null) and has a ``default`` gets a copy of it, then defaulting
  descends into every field, including the ones it just filled in. Nulls of fields
  without a default are pruned. Nothing else is touched: unknown fields stay, wrong
  types stay (validation reports them).
- :func:`check` — schema validation, then the node's rules. A node's rules run only if
  its subtree passed the schema checks, so rule functions may trust types and shapes
  (the API server likewise reports CEL only for well-typed objects). A rule that raises
  anyway becomes a FieldError, so :func:`check` never raises.

Regular expressions in CRDs are Go RE2 with "search" semantics; :func:`go_regex`
compiles them for Python so that ``$`` means end of text (not "before a final newline").
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.schema.errors import FieldError

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

#: A CEL rule: given the (schema-valid) value and its path, yield what is wrong.
Rule = Callable[[Any, str], Iterable[FieldError]]

#: How deep the walk goes before it calls the input junk. Real objects are < 20 deep.
MAX_DEPTH = 64


def go_regex(pattern: str) -> re.Pattern[str]:
    r"""Compile an RE2 pattern from a CRD so it behaves the same in Python.

    Unescaped ``$`` outside a character class becomes ``\Z``: in Go, ``$`` matches
    only at the end of the text; in Python it also matches before a trailing newline.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            # A ']' right after '[' or '[^' is a literal inside the class.
            if pattern[i + 1:i + 2] == "^":
                out.append("[^")
                i += 2
                if pattern[i:i + 1] == "]":
                    out.append("]")
                    i += 1
                continue
        elif c == "$":
            out.append(r"\Z")
            i += 1
            continue
        out.append(c)
        i += 1
    return re.compile("".join(out))


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def index(path: str, i: int | str) -> str:
    return f"{path}[{i}]"


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: Any, limit: int = 64) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True, eq=False)
class Node:
    """Base of all schema nodes: an optional default and CEL-like rules."""

    default: Any = field(default=MISSING, kw_only=True)
    rules: tuple[Rule, ...] = field(default=(), kw_only=True)


@dataclass(frozen=True, eq=False)
class Str(Node):
    min_len: int | None = None
    max_len: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    #: Shown instead of the raw pattern when a value does not match.
    pattern_hint: str | None = None
    _re: re.Pattern[str] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_re", go_regex(self.pattern) if self.pattern else None)


@dataclass(frozen=True, eq=False)
class Int(Node):
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[int, ...] | None = None


@dataclass(frozen=True, eq=False)
class Bool(Node):
    pass


@dataclass(frozen=True, eq=False)
class IntOrStr(Node):
    """x-kubernetes-int-or-string (e.g. a Service targetPort)."""


@dataclass(frozen=True, eq=False)
class Anything(Node):
    """x-kubernetes-preserve-unknown-fields: any value, not checked."""


@dataclass(frozen=True, eq=False)
class Obj(Node):
    fields: Mapping[str, Node] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    #: Fields not listed are allowed (and not checked) when True.
    open: bool = False


@dataclass(frozen=True, eq=False)
class ListOf(Node):
    items: Node = field(default_factory=Anything)
    min_items: int | None = None
    max_items: int | None = None
    #: listType=map: entries must be unique by these keys.
    map_keys: tuple[str, ...] | None = None
    #: listType=set: entries must be unique.
    unique: bool = False


@dataclass(frozen=True, eq=False)
class MapOf(Node):
    values: Node = field(default_factory=Anything)
    keys: Str | None = None
    max_props: int | None = None


def obj(fields: Mapping[str, Node], *, required: Iterable[str] = (), rules: Iterable[Rule] = (),
        default: Any = MISSING, open: bool = False) -> Obj:
    """Shorthand used by the schema modules: ``obj({...}, required=["name"])``."""
    return Obj(fields=dict(fields), required=frozenset(required), rules=tuple(rules),
               default=default, open=open)


def extend(base: Obj, fields: Mapping[str, Node] | None = None, *, required: Iterable[str] = (),
           rules: Iterable[Rule] = ()) -> Obj:
    """A copy of ``base`` with more fields/rules (Go's inlined structs)."""
    return Obj(fields={**base.fields, **(fields or {})},
               required=base.required | frozenset(required),
               rules=base.rules + tuple(rules), default=base.default, open=base.open)


def with_default(node: Node, value: Any) -> Node:
    """The same node with a different ``default`` (a field's default, not its type's)."""
    return dataclasses.replace(node, default=value)


# -- defaulting ----------------------------------------------------------------------


def default(node: Node, value: Any, depth: int = 0) -> None:
    """Apply structural defaults to ``value`` in place (it must be a private copy)."""
    if depth > MAX_DEPTH:
        return
    if isinstance(node, Obj) and isinstance(value, dict):
        for name, child in node.fields.items():
            if name in value and value[name] is None:
                # Non-nullable nulls are pruned, then the default (if any) applies.
                del value[name]
            if name not in value and child.default is not MISSING:
                value[name] = copy.deepcopy(child.default)
            if name in value:
                default(child, value[name], depth + 1)
    elif isinstance(node, ListOf) and isinstance(value, list):
        for item in value:
            default(node.items, item, depth + 1)
    elif isinstance(node, MapOf) and isinstance(value, dict):
        for item in value.values():
            default(node.values, item, depth + 1)


def prune_nulls(node: Node, value: Any, depth: int = 0) -> None:
    """Drop null fields in place, as the API server does before validating.

    A null required field then reads as missing; rules never see a null field.
    """
    if depth > MAX_DEPTH:
        return
    if isinstance(node, Obj) and isinstance(value, dict):
        for name, child in node.fields.items():
            if name in value:
                if value[name] is None:
                    del value[name]
                else:
                    prune_nulls(child, value[name], depth + 1)
    elif isinstance(node, ListOf) and isinstance(value, list):
        for item in value:
            prune_nulls(node.items, item, depth + 1)
    elif isinstance(node, MapOf) and isinstance(value, dict):
        for item in value.values():
            prune_nulls(node.values, item, depth + 1)


# -- validation ----------------------------------------------------------------------


def check(node: Node, value: Any, path: str, depth: int = 0) -> list[FieldError]:
    """Every way ``value`` breaks ``node``; never raises."""
    if depth > MAX_DEPTH:
        return [FieldError(path, f"nested deeper than {MAX_DEPTH} levels")]
    checker = _CHECKERS.get(type(node))
    errors = checker(node, value, path, depth) if checker else []
    if not errors and node.rules:
        errors = run_rules(node.rules, value, path)
    return errors


def run_rules(rules: Iterable[Rule], value: Any, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for rule in rules:
        try:
            errors.extend(rule(value, path))
        except Exception as exc:  # a rule bug must not crash the caller; say where it was
            errors.append(FieldError(
                path, f"could not be validated (internal error in {rule.__name__}: {exc!r})"))
    return errors


def _check_str(node: Str, value: Any, path: str, depth: int) -> list[FieldError]:
    if not isinstance(value, str):
        return [FieldError(path, f"must be a string, not {type_name(value)}")]
    if node.enum is not None:
        if value not in node.enum:
            return [
                FieldError(path,
                           f"unsupported value {_show(value)}: must be one of "
                           f"{', '.join(map(repr, node.enum))}")]
        return []
    errors = []
    if node.min_len is not None and len(value) < node.min_len:
        errors.append(
            FieldError(path,
                       f"must be at least {node.min_len} "
                       f"character{'s' if node.min_len > 1 else ''} long"))
    if node.max_len is not None and len(value) > node.max_len:
        errors.append(
            FieldError(path, f"must be at most {node.max_len} characters long (is {len(value)})"))
    regex = node._re
    # Length first: an over-long value is not also run through the regex.
    if not errors and regex is not None and regex.search(value) is None:
        hint = node.pattern_hint or f"must match {node.pattern}"
        errors.append(FieldError(path, f"invalid value {_show(value)}: {hint}"))
    return errors


def _check_int(node: Int, value: Any, path: str, depth: int) -> list[FieldError]:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type; 8080.0 is the integer 8080
        else:
            return [FieldError(path, f"must be an integer, not {type_name(value)}")]
    if node.enum is not None and value not in node.enum:
        return [FieldError(
            path, f"unsupported value {value}: must be one of {', '.join(map(str, node.enum))}")]
    if node.minimum is not None and value < node.minimum:
        return [FieldError(path, f"must be greater than or equal to {node.minimum} (is {value})")]
    if node.maximum is not None and value > node.maximum:
        return [FieldError(path, f"must be less than or equal to {node.maximum} (is {value})")]
    return []


def _check_bool(node: Bool, value: Any, path: str, depth: int) -> list[FieldError]:
    return [] if isinstance(value, bool) else [
        FieldError(path, f"must be a boolean, not {type_name(value)}")]


def _check_int_or_str(node: IntOrStr, value: Any, path: str, depth: int) -> list[FieldError]:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return []
    return [FieldError(path, f"must be an integer or a string, not {type_name(value)}")]


def _check_anything(node: Anything, value: Any, path: str, depth: int) -> list[FieldError]:
    return []


def _check_obj(node: Obj, value: Any, path: str, depth: int) -> list[FieldError]:
    if not isinstance(value, dict):
        return [FieldError(path, f"must be an object, not {type_name(value)}")]
    errors: list[FieldError] = []
    for name in sorted(node.required):
        if name not in value or value[name] is None:
            errors.append(FieldError(join(path, name), "required field is missing"))
    for key, item in value.items():
        child = node.fields.get(key) if isinstance(key, str) else None
        if child is None:
            if not node.open:
                errors.append(FieldError(join(path, str(key)), f"unknown field {_show(key)}"))
            continue
        errors.extend(check(child, item, join(path, key), depth + 1))
    return errors


def _check_list(node: ListOf, value: Any, path: str, depth: int) -> list[FieldError]:
    if not isinstance(value, list):
        return [FieldError(path, f"must be a list, not {type_name(value)}")]
    errors: list[FieldError] = []
    if node.min_items is not None and len(value) < node.min_items:
        errors.append(FieldError(
            path, f"must have at least {node.min_items} item{'s' if node.min_items > 1 else ''}"))
    if node.max_items is not None and len(value) > node.max_items:
        # Like the API server, do not descend into a list that is far too long.
        return errors + [
            FieldError(path, f"must have at most {node.max_items} items (has {len(value)})")]
    for i, item in enumerate(value):
        errors.extend(check(node.items, item, index(path, i), depth + 1))
    if errors:
        return errors
    if node.map_keys is not None:
        keys = node.map_keys
        errors.extend(_duplicates(
            value, path, lambda item: tuple(_hashable(item.get(k)) for k in keys)))
    elif node.unique:
        errors.extend(_duplicates(value, path, _hashable))
    return errors


def _check_map(node: MapOf, value: Any, path: str, depth: int) -> list[FieldError]:
    if not isinstance(value, dict):
        return [FieldError(path, f"must be an object (a map), not {type_name(value)}")]
    errors: list[FieldError] = []
    if node.max_props is not None and len(value) > node.max_props:
        return [FieldError(path, f"must have at most {node.max_props} entries (has {len(value)})")]
    for key, item in value.items():
        if node.keys is not None:
            errors.extend(FieldError(index(path, str(key)), f"key: {e.message}")
                          for e in check(node.keys, key, path, depth + 1))
        errors.extend(check(node.values, item, index(path, str(key)), depth + 1))
    return errors


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _duplicates(items: list[Any], path: str, key: Callable[[Any], Any]) -> list[FieldError]:
    seen: set[Any] = set()
    errors = []
    for i, item in enumerate(items):
        k = key(item)
        if k in seen:
            shown = k[0] if isinstance(k, tuple) and len(k) == 1 else k
            errors.append(FieldError(index(path, i), f"duplicate entry {_show(shown)}"))
        seen.add(k)
    return errors


_CHECKERS: dict[type, Callable[[Any, Any, str, int], list[FieldError]]] = {
    Str: _check_str,
    Int: _check_int,
    Bool: _check_bool,
    IntOrStr: _check_int_or_str,
    Anything: _check_anything,
    Obj: _check_obj,
    ListOf: _check_list,
    MapOf: _check_map,
}
