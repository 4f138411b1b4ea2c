"""A route of any kind: parentRef attachment, then the per-kind rules -> RouteResult.

Attachment follows the spec's order of checks for each parentRef naming one of our
Gateways: sectionName/port must select listeners (else NoMatchingParent); those must
accept the route's kind and namespace (else NotAllowedByListeners); and, for routes
with hostnames, share a hostname with it (else NoMatchingListenerHostname).

A parentRef of kind ListenerSet is checked the same way against that set's listeners
only (and a parentRef to the Gateway never reaches a set's listeners); a set its
Gateway did not accept gives NoMatchingParent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from controller.objects import GATEWAY_GROUP, Obj, ObjectKey
from controller.translate import backend as be
from controller.translate import backendtls
from controller.translate import conditions as c
from controller.translate import hostname as hn
from controller.translate.extauth import with_policy_ext_auth
from controller.translate.httproute import resolve_rules
from controller.translate.kgwpolicy import apply as apply_policy
from controller.translate.kgwpolicy import route_layers, with_health
from controller.translate import listenerset
from controller.translate.listener import NOT_SERVED, namespace_selected
from controller.translate.ir import (
    Cond, GatewayIR, L4Contribution, L7Contribution, ListenerIR, ParentResult, RouteResult,
)
from controller.translate.precedence import sort_key
from controller.translate.reader import Reader
from controller.translate.util import (
    as_dict, as_int, as_list, as_str, creation_timestamp, gen, ref_group, spec,
)
from kgw_l4 import config as l4
from kgw_l7 import config as l7

L7_KINDS = ("HTTPRoute", "GRPCRoute")


def normalized_parent_ref(ref: dict, route_ns: str) -> dict:
    """The parentRef as status reports it: explicit group, kind and namespace."""
    out: dict = {
        "group": ref_group(ref),
        "kind": ref_kind_of(ref),
        "namespace": as_str(ref.get("namespace")) or route_ns,
        "name": as_str(ref.get("name")),
    }
    if as_str(ref.get("sectionName")):
        out["sectionName"] = as_str(ref.get("sectionName"))
    port = as_int(ref.get("port"))
    if port is not None:
        out["port"] = port
    return out


def ref_kind_of(ref: dict) -> str:
    return as_str(ref.get("kind"), "Gateway") or "Gateway"


def namespace_allowed(reader: Reader, lis: ListenerIR, route_ns: str) -> bool:
    if lis.allowed_from == "All":
        return True
    if lis.allowed_from == "Same":  # the namespace of the Gateway or ListenerSet declaring it
        return route_ns == lis.owner.namespace
    if lis.allowed_from == "Selector" and lis.selector is not None:
        return namespace_selected(reader, lis.selector, route_ns)
    return False


def not_allowed_message(reader: Reader, key: ObjectKey, listeners: list[ListenerIR]) -> str:
    """Why none of ``listeners`` takes the route, listener by listener: a listener that is
    not accepted (a protocol conflict, an unsupported protocol) is named with its own
    reason, not blamed on the route's kind or namespace."""
    why = []
    for lis in listeners:
        if not lis.accepted:
            cond = next((x for x in lis.conditions if x.type == c.ACCEPTED and not x.ok), None)
            detail = f"{cond.reason}: {cond.message}" if cond is not None else "not programmed"
            why.append(f"listener {lis.name} is not accepted ({detail})")
        elif key.kind not in lis.supported_kinds:
            kinds = ", ".join(lis.supported_kinds) or "no route kind"
            why.append(f"listener {lis.name} does not take {key.kind} (it takes {kinds})")
        elif not namespace_allowed(reader, lis, key.namespace):
            frm = {"Same": f"namespace {lis.owner.namespace} only", "None": "no namespace",
                   "Selector": "namespaces matching its selector"}.get(lis.allowed_from,
                                                                       lis.allowed_from)
            why.append(f"listener {lis.name} takes routes from {frm}, not from {key.namespace}")
    text = "; ".join(why) or f"no listener allows a {key.kind} from namespace {key.namespace}"
    return f"{NOT_SERVED[key.kind]}: {text}" if key.kind in NOT_SERVED else text


def attach(
    reader: Reader, key: ObjectKey, route_hostnames: list[str], ref: dict, gw: GatewayIR,
    listener_set: ObjectKey | None = None,
) -> ParentResult:
    """``listener_set``: the parentRef names this ListenerSet of ``gw`` (and may reach
    only its listeners); None: it names ``gw`` (and reaches only the Gateway's own)."""
    nref = normalized_parent_ref(ref, key.namespace)
    items = tuple(sorted(nref.items()))
    section, port = nref.get("sectionName"), nref.get("port")
    cands = [lis for lis in gw.listeners
             if lis.listener_set == listener_set
             and (section is None or lis.name == section) and (port is None or lis.port == port)]
    if not gw.accepted:
        return ParentResult(items, gw.key, Cond(c.ACCEPTED, False, c.R_NO_MATCHING_PARENT,
                                                "the Gateway is not accepted"))
    if listener_set is not None:
        ls = listenerset.find(gw, listener_set)
        if ls is None or ls.problem is not None:
            why = (ls.problem.message if ls is not None and ls.problem is not None
                   else "not attached to the Gateway")
            return ParentResult(items, gw.key, Cond(c.ACCEPTED, False, c.R_NO_MATCHING_PARENT,
                                                    f"the ListenerSet is not accepted: {why}"))
    if not cands:
        what = " and ".join(x for x in (section and f"sectionName {section!r}",
                                        port is not None and f"port {port}") if x)
        return ParentResult(items, gw.key, Cond(c.ACCEPTED, False, c.R_NO_MATCHING_PARENT,
                                                f"no listener matches {what}"))
    allowed = [lis for lis in cands
               if lis.accepted and key.kind in lis.supported_kinds
               and namespace_allowed(reader, lis, key.namespace)]
    if not allowed:
        return ParentResult(items, gw.key, Cond(c.ACCEPTED, False, c.R_NOT_ALLOWED_BY_LISTENERS,
                                                not_allowed_message(reader, key, cands)))
    attached: list[tuple[ListenerIR, tuple[str, ...]]] = []
    for lis in allowed:
        if key.kind in ("TCPRoute", "UDPRoute"):
            attached.append((lis, ()))
            continue
        hosts = hn.intersect_all(lis.hostname, route_hostnames)
        if hosts:
            attached.append((lis, tuple(hosts)))
    if not attached:
        return ParentResult(items, gw.key,
                            Cond(c.ACCEPTED, False, c.R_NO_MATCHING_LISTENER_HOSTNAME,
                                 "no listener hostname intersects the route's hostnames"))
    return ParentResult(items, gw.key, Cond(c.ACCEPTED, True, c.R_ACCEPTED, "route accepted"),
                        tuple(attached))


@dataclass(frozen=True, slots=True)
class L4Backends:
    """A route's backendRefs for the L4 plane: as passed through (or a TCP/UDP frontend
    forwards), and as a TLS Terminate listener forwards the decrypted stream."""

    groups: tuple[l4.BackendGroup, ...]
    terminated: tuple[l4.BackendGroup, ...]
    #: (group name, its BackendTLSPolicy's TLS)
    policies: tuple[tuple[str, l7.UpstreamTLS], ...]


def backend_tls(tls: l7.UpstreamTLS, client: tuple[str, str] | None) -> l4.BackendTLS:
    """A BackendTLSPolicy's TLS (and the Gateway's client certificate) for the L4 plane."""
    return l4.BackendTLS(tls.hostname, tls.ca_pem, tls.subject_alt_names,
                         client[0] if client else "", client[1] if client else "")


def _l4_backends(reader: Reader, route: Obj, key: ObjectKey, problems: list[Cond],
                 services: set) -> L4Backends:
    groups: list[l4.BackendGroup] = []
    terminated: list[l4.BackendGroup] = []
    policies: list[tuple[str, l7.UpstreamTLS]] = []
    for rule in map(as_dict, as_list(spec(route).get("rules"))):
        for ref in map(as_dict, as_list(rule.get("backendRefs"))):
            rb = be.resolve(reader, ref, key.kind, key.namespace, with_tls=False)
            if rb.problem is not None:
                problems.append(rb.problem)
            if rb.service is not None:
                services.add(rb.service)
            group = rb.l4()
            groups.append(group)
            svc = rb.service
            pol = (backendtls.for_service_port(reader, svc.namespace, svc.name, rb.port_name)
                   if key.kind == "TLSRoute" and svc is not None and rb.problem is None else None)
            if pol is not None and pol.tls is None:
                # an unusable policy: never clear text
                group = dataclasses.replace(group, endpoints=())
            elif pol is not None and pol.tls is not None:
                policies.append((group.name, pol.tls))
            terminated.append(group)
    return L4Backends(tuple(groups), tuple(terminated), tuple(policies))


def with_client_certificate(rule: l7.Rule, client: tuple[str, str]) -> l7.Rule:
    """The Gateway's backend client certificate on every TLS backend of the rule."""
    def fix(b: l7.Backend) -> l7.Backend:
        if b.tls is None:
            return b
        return dataclasses.replace(
            b, tls=dataclasses.replace(b.tls, client_cert_pem=client[0], client_key_pem=client[1]))

    mirrors = tuple(dataclasses.replace(m, backend=fix(m.backend)) for m in rule.filters.mirrors)
    ea = rule.filters.ext_auth
    if ea is not None:
        ea = dataclasses.replace(ea, backend=fix(ea.backend))
    return dataclasses.replace(rule, backends=tuple(fix(b) for b in rule.backends),
                               filters=dataclasses.replace(rule.filters, mirrors=mirrors,
                                                           ext_auth=ea))


def resolve_route(reader: Reader, route: Obj,
                  gateways: Mapping[ObjectKey, GatewayIR]) -> RouteResult | None:
    """None when the route names no Gateway of ours (it gets no status from us)."""
    key = ObjectKey.of(route)
    s = spec(route)
    parents: list[ParentResult] = []
    seen: set = set()
    hostnames = [hn.normalize(h) for h in as_list(s.get("hostnames")) if isinstance(h, str) and h]
    for ref in map(as_dict, as_list(s.get("parentRefs"))):
        kind = ref_kind_of(ref)
        if ref_group(ref) != GATEWAY_GROUP or kind not in ("Gateway", listenerset.KIND):
            continue
        ns = as_str(ref.get("namespace")) or key.namespace
        name = as_str(ref.get("name"))
        ls_key: ObjectKey | None = None
        if kind == "Gateway":
            gkey: ObjectKey | None
            gkey = ObjectKey("Gateway", ns, name)
            reader.deps.add(gkey)
        else:
            ls_key = ObjectKey(listenerset.KIND, ns, name)
            gkey = listenerset.parent_gateway(reader, ls_key)
        gw = gateways.get(gkey) if gkey is not None else None
        if gw is None:
            continue
        pr = attach(reader, key, hostnames, ref, gw, ls_key)
        if pr.parent_ref in seen:
            continue
        seen.add(pr.parent_ref)
        parents.append(pr)
    if not parents:
        return None

    problems: list[Cond] = []
    services: set[ObjectKey] = set()
    l7c: list[L7Contribution] = []
    l4c: list[L4Contribution] = []
    created = creation_timestamp(route)
    # A listener reached through several parentRefs (say, by name and by port) serves
    # the route once.
    attached = []
    seen_listeners: set = set()
    for p in parents:
        if p.accepted.ok:
            for lis, hosts in p.listeners:
                if lis.id not in seen_listeners:
                    seen_listeners.add(lis.id)
                    attached.append((p, lis, hosts))

    if key.kind in L7_KINDS:
        rr = resolve_rules(reader, route, key)
        problems.extend(rr.problems)
        services |= rr.services
        layers = route_layers(reader, key, route)
        # The compiled rules differ per Gateway, and per listener policy.
        per_gw: dict[tuple[ObjectKey, tuple], list] = {}
        for p, lis, hosts in attached:
            if not lis.programmed:
                continue
            gk = (p.gateway, lis.policy)
            if gk not in per_gw:
                gname = f"{p.gateway.namespace}/{p.gateway.name}"
                client = gateways[p.gateway].backend_client_cert
                entries = []
                for ri, rule, matches in rr.rules:
                    rule = dataclasses.replace(rule, gateway=gname)
                    if lis.policy or layers:
                        rule = apply_policy(rule, lis.policy, layers, ri)
                        pea = with_policy_ext_auth(reader, rule)
                        rule = pea.rule
                        if pea.problem is not None and pea.problem not in problems:
                            problems.append(pea.problem)
                        if pea.service is not None:
                            services.add(pea.service)
                    if client is not None:
                        rule = with_client_certificate(rule, client)
                    for mi, m in enumerate(matches):
                        entries.append((sort_key(m, created, key.namespace, key.name, ri, mi,
                                                 rr.ranks.get((ri, mi))), l7.Route(m, rule)))
                per_gw[gk] = entries
            routes = tuple(per_gw[gk])
            for addr in gateways[p.gateway].binds:
                for h in hosts:
                    l7c.append(L7Contribution((addr, lis.port), h, lis, routes))
    else:
        bk = _l4_backends(reader, route, key, problems, services)
        l4_layers = (route_layers(reader, key, route) if key.kind in ("TCPRoute", "TLSRoute")
                     else None)
        for p, lis, hosts in attached:
            if not lis.programmed:
                continue
            proto = {"TCPRoute": "TCP", "UDPRoute": "UDP", "TLSRoute": "TLS"}[key.kind]
            if lis.protocol != proto:
                continue
            groups = bk.groups
            checked = l4_layers if l4_layers is not None and (lis.policy or l4_layers) else None
            if checked is not None:
                groups = with_health(groups, lis.policy, checked, key.kind)
            terminated: tuple[l4.BackendGroup, ...] = ()
            btls: tuple[tuple[str, l4.BackendTLS], ...] = ()
            if lis.protocol == "TLS" and lis.tls_mode == "Terminate":
                client = gateways[p.gateway].backend_client_cert
                terminated = bk.terminated
                if checked is not None:
                    terminated = with_health(terminated, lis.policy, checked, key.kind)
                btls = tuple((name, backend_tls(t, client)) for name, t in bk.policies)
            for addr in gateways[p.gateway].binds:
                l4c.append(L4Contribution((addr, lis.port), proto, lis, key, created, groups,
                                          hosts, terminated, btls))

    refs_bad = next((p for p in problems if p.type == c.RESOLVED_REFS and not p.ok), None)
    acc_bad = next((p for p in problems if p.type == c.ACCEPTED and not p.ok), None)
    if acc_bad is not None:
        parents = [dataclasses.replace(p, accepted=acc_bad, listeners=()) if p.accepted.ok else p
                   for p in parents]
        l7c, l4c = [], []
    resolved = refs_bad or Cond(c.RESOLVED_REFS, True, c.R_RESOLVED_REFS, "all references resolved")
    gws = {p.gateway for p in parents if p.accepted.ok}
    return RouteResult(
        key=key, generation=gen(route), parents=tuple(parents), resolved_refs=resolved,
        l7=tuple(l7c), l4=tuple(l4c),
        services=frozenset((svc, g) for svc in services for g in gws),
        deps=frozenset(reader.deps),
        terminating=frozenset(con.listener.gateway for con in l4c
                              if con.listener.tls_mode == "Terminate"),
    )
