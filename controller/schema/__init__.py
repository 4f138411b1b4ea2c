"""Gateway API (and core) objects as the API server would accept them.

Standalone mode reads objects from YAML files; these two functions make them look as
if they had gone through a Kubernetes API server with the Gateway API CRDs (standard
and experimental channel) installed:

- :func:`apply_defaults` fills in every CRD ``default:``, at the right nesting.
- :func:`validate` lists every reason the API server would reject the (defaulted)
  object: OpenAPI schema constraints, the CRDs' CEL rules, and ObjectMeta rules.

The schemas are data, one module per group of kinds (:mod:`.gateway`, :mod:`.routes`,
:mod:`.policy`, :mod:`.core`), walked by :mod:`.nodes`; :mod:`.kinds` maps each served
(kind, version) to its schema.

Deliberately not done, because the API server does not do it on create either:
case-insensitive duplicate header names (``listType=map`` keys compare exactly; the
spec says the first entry wins, which translation must honour), and transition rules
(``self == oldSelf``, e.g. GatewayClass controllerName immutability). Not done for
lack of need: status is not validated; core kinds check only the fields kgw reads and
accept the rest unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.objects import KINDS
from controller.schema.core import default_core
from controller.schema.errors import FieldError
from controller.schema.kinds import SCHEMAS, schema_for
from controller.schema.nodes import check, default, prune_nulls

__all__ = ["FieldError", "SCHEMAS", "apply_defaults", "validate"]

#: Deeper than any real object; past this, apply_defaults shares rather than copies.
_COPY_DEPTH = 200


def _copy(value: Any, depth: int = 0) -> Any:
    """A deep copy of JSON-like data that cannot recurse without bound (YAML anchors can loop)."""
    if depth > _COPY_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: _copy(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v, depth + 1) for v in value]
    return value


def apply_defaults(obj: Mapping) -> dict:
    """Return a deep copy of ``obj`` with the CRD (OpenAPI) defaults applied.

    Objects of unknown kinds or versions, and values of the wrong type, are copied
    unchanged: :func:`validate` reports them.
    """
    result = _copy(dict(obj)) if isinstance(obj, Mapping) else {}
    schema = schema_for(result.get("kind"), result.get("apiVersion"))
    if schema is not None:
        default(schema, result)
        default_core(result["kind"], result)
    return result


def validate(obj: Mapping) -> list[FieldError]:
    """Every reason the API server would reject ``obj``; empty means valid. Never raises."""
    try:
        return _validate(obj)
    except RecursionError:
        return [FieldError("", "object is nested too deeply to validate")]


def _validate(obj: Any) -> list[FieldError]:
    if not isinstance(obj, Mapping):
        return [FieldError("", f"an object must be a mapping, not {type(obj).__name__}")]
    kind, api = obj.get("kind"), obj.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        return [FieldError("kind", "required field is missing")]
    if kind not in KINDS:
        return [FieldError("kind",
                           f"unknown kind {kind[:64]!r}; known kinds: {', '.join(sorted(KINDS))}")]
    if not isinstance(api, str) or not api:
        return [FieldError("apiVersion", "required field is missing")]
    schema = schema_for(kind, api)
    if schema is None:
        k = KINDS[kind]
        served = ", ".join(f"{k.group}/{v}" if k.group else v for v in k.versions)
        return [FieldError("apiVersion",
                           f"{kind} is not served at {api[:64]!r}; served versions: {served}")]
    value = _copy(dict(obj))
    prune_nulls(schema, value)
    return check(schema, value, "")
