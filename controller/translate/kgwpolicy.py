"""kgw policies in translation: the sections in effect on each Gateway listener and on
each route rule (precedence: route rule > route > listener > Gateway; the rules are in
controller/policy/attach.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from controller.objects import Obj, ObjectKey
from controller.policy import l4targets
from controller.policy.attach import Sections, Target
from controller.policy.land import merged, rule_policy
from controller.translate.ir import GatewayIR
from controller.translate.reader import Reader
from controller.translate.util import as_dict, as_list, as_str, spec
from kgw_l4 import config as l4
from kgw_l7 import config as l7


def with_policies(reader: Reader, g: GatewayIR) -> GatewayIR:
    """``g`` with each listener's ``policy``: its Gateway's sections, then its own."""
    pols = reader.kgw_policies(g.key.namespace)
    if not pols.applied:
        return g
    whole = pols.at(Target("Gateway", g.key.name))
    listeners = []
    for lis in g.listeners:
        # A ListenerSet's listener is not a sectionName of the Gateway (names may repeat).
        own = pols.at(Target("Gateway", g.key.name, lis.name)) if lis.listener_set is None else ()
        listeners.append(dataclasses.replace(lis, policy=merged((whole, own))))
    return dataclasses.replace(g, listeners=tuple(listeners))


def rule_names(route: Obj) -> list[str]:
    """``spec.rules[i].name`` of each rule ("" for an unnamed one)."""
    return [as_str(as_dict(r).get("name")) for r in as_list(spec(route).get("rules"))]


@dataclasses.dataclass(frozen=True, slots=True)
class RouteLayers:
    """The sections set on a route (all its rules) and on each named rule, by index."""

    route: Sections = ()
    rules: tuple[Sections, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.route) or any(self.rules)


def route_layers(reader: Reader, key: ObjectKey, route: Obj) -> RouteLayers:
    pols = reader.kgw_policies(key.namespace)
    if not pols.applied:
        return RouteLayers()
    names = rule_names(route)
    return RouteLayers(pols.at(Target(key.kind, key.name)),
                       tuple(pols.at(Target(key.kind, key.name, n)) if n else () for n in names))


def apply(rule: l7.Rule, listener: Sections, layers: RouteLayers, index: int) -> l7.Rule:
    """``rule`` (route rule number ``index``) with the policy in effect through a
    listener whose own sections are ``listener``."""
    stack: Sequence[Sections] = (listener, layers.route,
                                 layers.rules[index] if index < len(layers.rules) else ())
    policy = rule_policy(stack)
    return rule if policy is None else dataclasses.replace(rule, policy=policy)


def with_health(groups: tuple[l4.BackendGroup, ...], listener: Sections,
                layers: RouteLayers, kind: str = "TCPRoute") -> tuple[l4.BackendGroup, ...]:
    """A TCPRoute's or TLSRoute's backend groups with the active health check in effect
    through a listener (precedence as for HTTP routes; its first rule stands for the
    route's rules, which an L4 frontend cannot tell apart). Only ``healthCheck.active`` is
    served on an L4 route, and on a TLSRoute only a TCP probe (controller.policy.l4targets
    says so in status; one from the listener or Gateway of another type is not applied)."""
    policy = rule_policy((listener, layers.route, layers.rules[0] if layers.rules else ()))
    hc = policy.health.active if policy is not None and policy.health is not None else None
    if hc is None or not l4targets.probe_served(kind, {"type": hc.type}):
        return groups
    return tuple(dataclasses.replace(g, health_check=hc) for g in groups)
