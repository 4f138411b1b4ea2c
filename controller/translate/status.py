"""IR -> the ``status`` stanza of each object, as the Kubernetes API holds it.

Conditions are sorted by type and carry observedGeneration but no lastTransitionTime
(the status writer stamps it when a condition's status changes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller.objects import GATEWAY_GROUP, ObjectKey
from controller.translate.conditions import condition
from controller.translate.ir import Cond, GatewayIR, RouteResult
from controller.translate.util import is_ip


def conds(items: Iterable[Cond], generation: int) -> list[dict]:
    return [condition(x.type, x.ok, x.reason, x.message, generation)
            for x in sorted(items, key=lambda x: x.type)]


def gateway_class_status(cs: tuple[Cond, ...], generation: int) -> dict:
    return {"conditions": conds(cs, generation)}


def gateway_status(g: GatewayIR, attached: Mapping[tuple[ObjectKey, str], int],
                   attached_listener_sets: int | None = None) -> dict:
    """``attached_listener_sets``: reported when the Gateway admits ListenerSets at all.
    Listeners of ListenerSets are reported by their sets, not here."""
    out: dict[str, Any] = {
        "addresses": [{"type": "IPAddress" if is_ip(a) else "Hostname", "value": a}
                      for a in g.addresses],
        "conditions": conds(g.conditions, g.generation),
        "listeners": [
            {
                "name": lis.name,
                "supportedKinds": [{"group": GATEWAY_GROUP, "kind": k}
                                   for k in lis.supported_kinds],
                "attachedRoutes": attached.get(lis.id, 0),
                "conditions": conds(lis.conditions, g.generation),
            }
            for lis in g.listeners if lis.listener_set is None
        ],
    }
    if attached_listener_sets is not None:
        out["attachedListenerSets"] = attached_listener_sets
    return out


def route_status(r: RouteResult, controller_name: str) -> dict:
    parents = []
    for p in sorted(r.parents, key=lambda p: p.parent_ref):
        parents.append({
            "parentRef": dict(p.parent_ref),
            "controllerName": controller_name,
            "conditions": conds((p.accepted, r.resolved_refs), r.generation),
        })
    return {"parents": parents}


def policy_status(ancestors: Iterable[ObjectKey], accepted: Cond, resolved: Cond, generation: int,
                  controller_name: str) -> dict:
    return {
        "ancestors": [
            {
                "ancestorRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": g.namespace,
                                "name": g.name},
                "controllerName": controller_name,
                "conditions": conds((accepted, resolved), generation),
            }
            for g in sorted(ancestors)
        ]
    }
