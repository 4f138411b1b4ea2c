"""What translation finds wrong that no object's status can show.

Gateway API status lives on the objects a controller is responsible for; a route whose
parentRef names a Gateway that does not exist has no parent to report on (the spec: such
references are not added to ``status.parents``), and a Gateway whose GatewayClass does
not exist belongs to no controller. Nothing anywhere would say so. These become problems
(``/problems``, ``kgw validate``, ``kgw status``), one line each, on the object and field.

Objects that name another implementation's Gateway or GatewayClass (they exist, with
another ``controllerName``) are not problems: in a cluster they are someone else's.

Also here: fields kgw accepts but does not implement and no condition of the object
can express (default Gateways, GEP-3793).
"""

from __future__ import annotations

from controller.objects import GATEWAY_GROUP, Obj, ObjectKey
from controller.source import Problem
from controller.translate import listenerset
from controller.translate.reader import Reader
from controller.translate.util import as_dict, as_list, as_str, ref_group, spec


def route_problems(reader: Reader, route: Obj) -> tuple[Problem, ...]:
    key = ObjectKey.of(route)
    s = spec(route)
    out = []
    refs = as_list(s.get("parentRefs"))
    for i, ref in enumerate(map(as_dict, refs)):
        kind = as_str(ref.get("kind"), "Gateway") or "Gateway"
        if ref_group(ref) != GATEWAY_GROUP or kind not in ("Gateway", listenerset.KIND):
            continue
        ns = as_str(ref.get("namespace")) or key.namespace
        name = as_str(ref.get("name"))
        if reader.get(kind, ns, name) is None:
            out.append(Problem("",
                               f"{kind} {ns}/{name} does not exist: "
                               "the route is not attached to it",
                               key, f"spec.parentRefs[{i}]"))
    default = as_str(s.get("useDefaultGateways"))
    if default and default != "None":
        out.append(Problem("",
                           f"useDefaultGateways {default!r}: kgw does not support default "
                           "Gateways; the "
                           "route is attached only where its parentRefs say", key,
                           "spec.useDefaultGateways"))
    elif not refs:
        out.append(Problem("", "the route has no parentRefs: it is attached to no Gateway", key,
                           "spec.parentRefs"))
    return tuple(out)


def gateway_problems(reader: Reader, gw: Obj, ours: bool) -> tuple[Problem, ...]:
    """``ours``: the Gateway's class is one of kgw's."""
    key = ObjectKey.of(gw)
    cname = as_str(spec(gw).get("gatewayClassName"))
    if not ours:
        if reader.get("GatewayClass", "", cname) is None:
            return (Problem("",
                            f"GatewayClass {cname!r} does not exist: nothing serves this Gateway",
                            key, "spec.gatewayClassName"),)
        return ()
    scope = as_str(spec(gw).get("defaultScope"))
    if scope and scope != "None":
        return (Problem("",
                        f"defaultScope {scope!r}: kgw does not support default Gateways; no route "
                        "is "
                        "attached to this Gateway unless its parentRefs name it", key,
                        "spec.defaultScope"),)
    return ()


def policy_problems(policy: Obj) -> tuple[Problem, ...]:
    """A BackendTLSPolicy applies to core Services only; another target kind gets no status."""
    key = ObjectKey.of(policy)
    out = []
    for i, t in enumerate(map(as_dict, as_list(spec(policy).get("targetRefs")))):
        group, kind = ref_group(t, ""), as_str(t.get("kind"))
        if group != "" or kind != "Service":
            out.append(Problem("",
                               f"{group or 'core'}/{kind} {as_str(t.get('name'))}: kgw applies "
                               "BackendTLSPolicy "
                               "to Services only; this target is ignored", key,
                               f"spec.targetRefs[{i}]"))
    return tuple(out)
