"""Pure: policy outcomes -> each kgw policy's ``status.ancestors`` (PolicyAncestorStatus).

An ancestor is a Gateway of kgw's that the target hangs off: the Gateway itself (or
its listener), or every Gateway a targeted route is attached to. A target that does not
exist, and a targetRef that is Invalid with no target to look up, are reported with the
targetRef itself as the ancestorRef (there is no Gateway to name). A target that exists
but is no business of kgw's (a route attached only to other controllers' Gateways) gets
no entry. Per ancestor, one ``Accepted`` condition: the worst outcome of the policy's
targets under it (Invalid > TargetNotFound > Conflicted > Accepted), with every
non-accepted target's message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from controller.objects import GATEWAY_GROUP, ObjectKey
from controller.policy.attach import (ACCEPTED, SEVERITY, TARGET_NOT_FOUND, NamespacePolicies,
                                      RefOutcome, Target)
from controller.translate.conditions import condition


@dataclass(frozen=True, slots=True)
class Found:
    """Where a target is: the Gateways above it, or why it is not there."""

    gateways: tuple[ObjectKey, ...] = ()
    #: Set when the target does not exist (TargetNotFound); ``gateways`` are then those
    #: of what does (the route of a missing rule, the Gateway of a missing listener).
    missing: str = ""


#: (namespace, target) -> Found, or None when the target is not kgw's business.
Locate = Callable[[str, Target], Found | None]


def _gateway_ref(g: ObjectKey) -> tuple[tuple[str, str], ...]:
    return (("group", GATEWAY_GROUP), ("kind", "Gateway"), ("name", g.name),
            ("namespace", g.namespace))


def _target_ref(o: RefOutcome, namespace: str) -> tuple[tuple[str, str], ...]:
    items = dict(o.ref)
    items.setdefault("namespace", namespace)
    return tuple(sorted(items.items()))


def policy_statuses(resolved: Iterable[NamespacePolicies], locate: Locate,
                    controller_name: str) -> dict[ObjectKey, dict]:
    out: dict[ObjectKey, dict] = {}
    for ns in resolved:
        for pol in ns.results:
            per_ancestor: dict[tuple, list[tuple[str, str]]] = {}
            for o in pol.refs:
                found = locate(ns.namespace, o.target) if o.target is not None else Found()
                if found is None:
                    continue
                reason, message = o.reason, o.message
                if found.missing and SEVERITY[reason] < SEVERITY[TARGET_NOT_FOUND]:
                    reason, message = TARGET_NOT_FOUND, found.missing
                refs = ([_gateway_ref(g) for g in found.gateways] if found.gateways
                        else [_target_ref(o, ns.namespace)])
                for r in refs:
                    per_ancestor.setdefault(r, []).append((reason, message))
            if not per_ancestor:
                continue
            ancestors = []
            for ref in sorted(per_ancestor):
                outcomes = per_ancestor[ref]
                worst = max((r for r, _ in outcomes), key=SEVERITY.__getitem__)
                if worst == ACCEPTED:
                    message = "the policy applies"
                else:
                    message = "; ".join(dict.fromkeys(m for r, m in outcomes if r != ACCEPTED))
                ancestors.append({
                    "ancestorRef": dict(ref),
                    "controllerName": controller_name,
                    "conditions": [condition("Accepted", worst == ACCEPTED, worst, message,
                                             pol.generation)],
                })
            out[pol.key] = {"ancestors": ancestors}
    return out
