"""ListenerSet (GEP-1713, experimental): listeners other namespaces add to a Gateway.

A ListenerSet names one Gateway (``spec.parentRef``). The Gateway decides who may attach
(``spec.allowedListeners.namespaces.from``: None - the default -, Same, All, Selector);
a ListenerSet it does not allow gets Accepted=False NotAllowed and adds nothing.

Allowed sets' listeners are merged into the Gateway's ``listeners`` (each carrying its
``listener_set``), so port sharing, both emitters and listener isolation treat them like
the Gateway's own; the Gateway's status still lists only its own. Precedence, as the
spec orders the merged list: the Gateway's own listeners first, then ListenerSets by
creationTimestamp, then "namespace/name"; within a set, list order. A listener that
conflicts with one earlier in that order (same port: another protocol family ->
ProtocolConflict; same family and hostname -> HostnameConflict) is Conflicted and not
served; the earlier one keeps serving.

A listener is resolved as its ListenerSet's own: certificateRefs default to the set's
namespace and need ReferenceGrants from kind ListenerSet; allowedRoutes "Same" means the
set's namespace. The Gateway's spec.tls.frontend (per port) applies to every listener
on the port, the set's included.

Status: Accepted=False ListenersNotValid when no listener of the set is valid
(Programmed), Accepted=True ListenersNotValid when some are not; Programmed follows
(True unless no listener is valid or the Gateway is not programmed). The Gateway
reports ``attachedListenerSets``, the number of accepted sets, when its
allowedListeners admits any namespace.

Routes attach with a parentRef of kind ListenerSet (sectionName = the set's listener
name) and then only to that set's listeners; a parentRef to the Gateway reaches only
the Gateway's own listeners.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping

from controller.objects import GATEWAY_GROUP, Obj, ObjectKey
from controller.translate import conditions as c
from controller.translate.frontendtls import FrontendTLS
from controller.translate.gateway import FAMILY, mark_conflict
from controller.translate.ir import Cond, GatewayIR, ListenerIR, ListenerSetIR, Selector
from controller.translate.listener import namespace_selected, parse_selector, resolve_listener
from controller.translate.reader import Reader
from controller.translate.status import conds
from controller.translate.util import (as_dict, as_list, as_str, creation_timestamp, gen, ref_group,
                                       spec)

KIND = "ListenerSet"
R_NOT_ALLOWED = "NotAllowed"
R_PARENT_NOT_ACCEPTED = "ParentNotAccepted"
R_PARENT_NOT_PROGRAMMED = "ParentNotProgrammed"


def parent_of(ls: Obj) -> ObjectKey | None:
    """The Gateway ``spec.parentRef`` names; None if it names another kind."""
    ref = as_dict(spec(ls).get("parentRef"))
    name = as_str(ref.get("name"))
    if ref_group(ref) != GATEWAY_GROUP or (as_str(ref.get("kind"), "Gateway")
                                           or "Gateway") != "Gateway" or not name:
        return None
    return ObjectKey("Gateway", as_str(ref.get("namespace")) or ObjectKey.of(ls).namespace, name)


def by_parent(sets: Iterable[Obj]) -> dict[ObjectKey, list[Obj]]:
    out: dict[ObjectKey, list[Obj]] = defaultdict(list)
    for ls in sets:
        parent = parent_of(ls)
        if parent is not None:
            out[parent].append(ls)
    return out


def parent_gateway(reader: Reader, key: ObjectKey) -> ObjectKey | None:
    """For a route's parentRef: the Gateway the ListenerSet ``key`` names (both recorded
    as read: the set's resolution lives in that Gateway's IR)."""
    ls = reader.get(KIND, key.namespace, key.name)
    if ls is None:
        return None
    parent = parent_of(ls)
    if parent is not None:
        reader.deps.add(parent)
    return parent


def _allowed(gw: Obj) -> tuple[str, Selector | None]:
    """spec.allowedListeners.namespaces: (from, selector)."""
    ns = as_dict(as_dict(spec(gw).get("allowedListeners")).get("namespaces"))
    frm = as_str(ns.get("from"), "None") or "None"
    return frm, parse_selector(ns.get("selector")) if frm == "Selector" else None


def _permitted(reader: Reader, frm: str, selector: Selector | None, gw_ns: str, ls_ns: str) -> bool:
    if frm == "All":
        return True
    if frm == "Same":
        return ls_ns == gw_ns
    if frm == "Selector" and selector is not None:
        return namespace_selected(reader, selector, ls_ns)
    return False


def _conflict(lis: ListenerIR, earlier: Iterable[ListenerIR]) -> tuple[str, str] | None:
    """(reason, message) if an earlier accepted listener holds ``lis``'s port."""
    if not lis.accepted or lis.protocol not in FAMILY:
        return None
    transport, family = FAMILY[lis.protocol]
    for e in earlier:
        if not e.accepted or e.protocol not in FAMILY or e.port != lis.port or FAMILY[e.protocol][
            0] != transport:
            continue
        # Name no sibling ListenerSet: it may be in a namespace this set's owner cannot see.
        where = ("a listener of the Gateway" if e.listener_set is None
                 else f"listener {e.name}" if e.listener_set == lis.listener_set
                 else "a listener of an older ListenerSet")
        if FAMILY[e.protocol][1] != family:  # TLS Passthrough and Terminate mix (by SNI)
            return (c.R_PROTOCOL_CONFLICT,
                    f"port {lis.port} is used by {where} with another protocol")
        if e.hostname == lis.hostname:
            return (c.R_HOSTNAME_CONFLICT,
                    f"port {lis.port} and hostname {lis.hostname or '(any)'} are used by {where}")
    return None


def attach_sets(reader: Reader, g: GatewayIR, gw: Obj, sets: Iterable[Obj]) -> GatewayIR:
    """``g`` with the listeners of the ListenerSets naming it that it allows."""
    frm, selector = _allowed(gw)
    allows = frm in ("All", "Same", "Selector")
    ordered = sorted(sets, key=lambda ls: (creation_timestamp(ls), ObjectKey.of(ls)))
    if not ordered:
        return dataclasses.replace(g, allows_listener_sets=True) if allows else g
    frontend = FrontendTLS(reader, g.key, spec(gw))
    merged = list(g.listeners)
    irs: list[ListenerSetIR] = []
    for ls in ordered:
        key = ObjectKey.of(ls)
        if not _permitted(reader, frm, selector, g.key.namespace, key.namespace):
            irs.append(ListenerSetIR(key, gen(ls), Cond(
                c.ACCEPTED, False, R_NOT_ALLOWED,
                f"Gateway {g.key.namespace}/{g.key.name} does not allow ListenerSets from "
                f"namespace {key.namespace} (allowedListeners.namespaces.from: {frm})")))
            continue
        if not g.accepted:
            irs.append(ListenerSetIR(key, gen(ls), Cond(
                c.ACCEPTED, False, R_PARENT_NOT_ACCEPTED,
                f"Gateway {g.key.namespace}/{g.key.name} is not accepted")))
            continue
        for raw in as_list(spec(ls).get("listeners")):
            lis = resolve_listener(reader, key, as_dict(raw))
            lis = frontend.apply(dataclasses.replace(lis, gateway=g.key, listener_set=key))
            conflict = _conflict(lis, merged)
            if conflict is not None:
                lis = mark_conflict(lis, *conflict)
            merged.append(lis)
        irs.append(ListenerSetIR(key, gen(ls)))
    return dataclasses.replace(g, listeners=tuple(merged), allows_listener_sets=allows,
                               listener_sets=tuple(irs))


def listeners_of(g: GatewayIR, key: ObjectKey) -> list[ListenerIR]:
    return [lis for lis in g.listeners if lis.listener_set == key]


def find(g: GatewayIR, key: ObjectKey) -> ListenerSetIR | None:
    return next((ls for ls in g.listener_sets if ls.key == key), None)


def set_conditions(g: GatewayIR, ls: ListenerSetIR) -> tuple[Cond, Cond]:
    """(Accepted, Programmed) of a ListenerSet, from its listeners as finally resolved
    (after conflicts and port sharing with other Gateways)."""
    if ls.problem is not None:
        # NotAllowed is the Programmed reason too (conformance ListenerSetAllowedNamespace*);
        # a Gateway not accepted is not programmed either.
        reason = (R_PARENT_NOT_PROGRAMMED if ls.problem.reason == R_PARENT_NOT_ACCEPTED
                  else ls.problem.reason)
        return ls.problem, Cond(c.PROGRAMMED, False, reason, ls.problem.message)
    listeners = listeners_of(g, ls.key)
    invalid = sorted(lis.name for lis in listeners if not lis.programmed)
    if len(invalid) == len(listeners):
        why = "no listener is valid: " + ", ".join(invalid) if listeners else "no listeners"
        return (Cond(c.ACCEPTED, False, c.R_LISTENERS_NOT_VALID, why),
                Cond(c.PROGRAMMED, False, c.R_LISTENERS_NOT_VALID, why))
    accepted = (Cond(c.ACCEPTED, True, c.R_LISTENERS_NOT_VALID,
                     "invalid listeners: " + ", ".join(invalid))
                if invalid else Cond(c.ACCEPTED, True, c.R_ACCEPTED, "ListenerSet accepted"))
    gw_programmed = next((x for x in g.conditions if x.type == c.PROGRAMMED), None)
    if gw_programmed is not None and not gw_programmed.ok:
        return accepted, Cond(c.PROGRAMMED, False, R_PARENT_NOT_PROGRAMMED,
                              f"Gateway {g.key.namespace}/{g.key.name} is not programmed: "
                              f"{gw_programmed.message}")
    return accepted, Cond(c.PROGRAMMED, True, c.R_PROGRAMMED, "ListenerSet programmed")


def attached_count(g: GatewayIR) -> int:
    """status.attachedListenerSets: the ListenerSets that are Accepted."""
    return sum(1 for ls in g.listener_sets if set_conditions(g, ls)[0].ok)


def listener_set_status(g: GatewayIR, ls: ListenerSetIR,
                        attached: Mapping[tuple[ObjectKey, str], int]) -> dict:
    return {
        "conditions": conds(set_conditions(g, ls), ls.generation),
        "listeners": [
            {
                "name": lis.name,
                "supportedKinds": [{"group": GATEWAY_GROUP, "kind": k}
                                   for k in lis.supported_kinds],
                "attachedRoutes": attached.get(lis.id, 0),
                "conditions": conds(lis.conditions, ls.generation),
            }
            for lis in listeners_of(g, ls.key)
        ],
    }


def statuses(gateways: Iterable[GatewayIR],
             attached: Mapping[tuple[ObjectKey, str], int]) -> dict[ObjectKey, dict]:
    return {ls.key: listener_set_status(g, ls, attached) for g in gateways
            for ls in g.listener_sets}
