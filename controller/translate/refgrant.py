"""ReferenceGrant: may an object in one namespace refer to an object in another?

A grant lives in the *target* namespace and lists ``from`` (group, kind, namespace) and
``to`` (group, kind, optional name). References inside one namespace need no grant.
"""

from __future__ import annotations

from controller.translate.reader import Reader
from controller.translate.util import as_dict, as_list, as_str, spec


def _group(v: object) -> str:
    g = as_str(v)
    return "" if g == "core" else g


def permitted(
    reader: Reader,
    from_group: str,
    from_kind: str,
    from_ns: str,
    to_group: str,
    to_kind: str,
    to_ns: str,
    to_name: str,
) -> bool:
    if from_ns == to_ns:
        return True
    for grant in reader.reference_grants(to_ns):
        s = spec(grant)
        if not any(
            _group(f.get("group")) == from_group
            and as_str(f.get("kind")) == from_kind
            and as_str(f.get("namespace")) == from_ns
            for f in map(as_dict, as_list(s.get("from")))
        ):
            continue
        for t in map(as_dict, as_list(s.get("to"))):
            if _group(t.get("group")) != to_group or as_str(t.get("kind")) != to_kind:
                continue
            name = t.get("name")
            if not name or name == to_name:
                return True
    return False
