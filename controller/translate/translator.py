"""Translation driver: full and incremental.

Gateways and GatewayClasses are re-resolved on every call (few, and cheap: certificate
checks are cached). Routes are the bulk: each RouteResult records every key it read,
and a later call re-resolves only routes whose own object, or something they read,
changed -- including a Gateway whose resolved IR differs from the previous one.
Emission then rebuilds only the virtual hosts those routes touch.
"""

from __future__ import annotations

import gc
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from controller.ingress import stage as ingress_stage
from controller.ingress.convert import Conversion, Listening
from controller.ingress.overlay import Overlay
from controller.objects import CONTROLLER_NAME, ROUTE_KINDS, Obj, ObjectKey
from controller.policy import l4targets
from controller.policy.attach import ACCEPTED, INVALID, Target
from controller.policy.book import PolicyBook
from controller.policy.status import Found, policy_statuses
from controller.source import Problem
from controller.store import Store
from controller.translate import (backendtls, emit_l4, listenerset, problems, status, tlscert,
                                  tlsoverlap)
from controller.translate import conditions as c
from controller.translate import kindconflict
from controller.translate.emit_l7 import L7Emitter
from controller.translate.gateway import apply_port_sharing, class_conditions, resolve_gateway
from controller.translate.kgwpolicy import rule_names, with_policies
from controller.translate.ir import Cond, GatewayIR, L4Contribution, RouteResult
from controller.translate.reader import Reader, pseudo_keys
from controller.translate.route import L7_KINDS, resolve_route
from controller.translate.util import as_dict, as_str, creation_timestamp, gen, spec
from kgw_l4.config import L4Config
from kgw_l7.config import L7Config


@dataclass(frozen=True)
class Options:
    #: Reported in Gateway status.addresses when spec.addresses asks for none.
    node_addresses: tuple[str, ...] = ("127.0.0.1",)
    controller_name: str = CONTROLLER_NAME
    #: If set, the addresses and prefixes this node owns (the kernel's local table): a
    #: Gateway asking for another IP gets Programmed=False AddressNotUsable. None: every
    #: IP address is taken as usable.
    local_addresses: tuple[str, ...] | None = None
    #: (hostname, its addresses) for the Hostname addresses of Gateways, as the
    #: controller's resolver answered (controller/gwaddress.py); a hostname not here
    #: does not resolve.
    resolved_hostnames: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: ("namespace/name", IP) pairs: the address a Gateway without spec.addresses binds
    #: and reports, instead of 0.0.0.0 + node_addresses (one address per Gateway, as a
    #: cloud load balancer would give; lets several Gateways use one port).
    gateway_addresses: tuple[tuple[str, str], ...] = ()
    #: Where Ingresses of kgw's IngressClasses are served (controller/ingress/).
    ingress: Listening = Listening()


@dataclass(frozen=True)
class Translation:
    l7: L7Config
    l4: L4Config
    #: ObjectKey -> the object's ``status`` (GatewayClasses and Gateways of ours, routes
    #: with a parentRef to one of our Gateways, BackendTLSPolicies with an ancestor).
    statuses: Mapping[ObjectKey, dict] = field(default_factory=dict)
    #: What no status can show (translate/problems.py), origin "": the source knows it.
    problems: tuple[Problem, ...] = ()
    #: The certificates HTTPS listeners serve, with their validity (metrics, and the
    #: expiry warnings status gets at publish time: controller/certexpiry.py).
    certificates: tuple[tlscert.ServedCertificate, ...] = ()
    #: The Ingresses served and the objects generated for them (controller/ingress/).
    ingress: Conversion = Conversion()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Translation allocates many small acyclic records; the cyclic collector's scans of
    them cost as much as the translation itself (measured: 10k routes 1.5 s -> 0.75 s).
    Nothing here creates cycles, so collection waits until the call is over."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


#: Listener sections (controller/policy) and the listener protocols that serve them.
LISTENER_SECTION_PROTOCOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "proxyProtocol": (("HTTP",), "kgw reads a PROXY header on clear-text HTTP listeners "
                                 "only (on TLS it precedes the handshake)"),
    "connectionRateLimit": (("HTTP", "HTTPS"), "the kernel's per-source SYN limit is "
                                               "programmed for HTTP and HTTPS listeners "
                                               "only"),
}


class Translator:
    def __init__(self, options: Options = Options()) -> None:
        self.options = options
        self._started = False
        self._gateways: dict[ObjectKey, GatewayIR] = {}
        self._routes: dict[ObjectKey, RouteResult] = {}
        self._route_deps: dict[ObjectKey, frozenset[ObjectKey]] = {}
        self._rdeps: dict[ObjectKey, set[ObjectKey]] = defaultdict(set)
        self._slice_owner: dict[ObjectKey, list[ObjectKey]] = {}
        self._l7 = L7Emitter()
        self._l4: dict[ObjectKey, tuple[L4Contribution, ...]] = {}
        self._attached: Counter = Counter()
        self._route_status: dict[ObjectKey, dict] = {}
        #: Service -> route -> (Gateways through which kgw connects to it itself, so a
        #: BackendTLSPolicy applies; Gateways that forward the route's bytes as they are)
        self._svc_users: dict[ObjectKey, dict[ObjectKey, tuple[frozenset, frozenset]]] = \
            defaultdict(dict)
        self._route_problems: dict[ObjectKey, tuple[Problem, ...]] = {}
        self._gateway_problems: tuple[Problem, ...] = ()
        self._overlay: Overlay | None = None
        #: kgw policies (TrafficPolicy, SecurityPolicy), per namespace.
        self._book = PolicyBook()
        #: What each route's status and contributions are made from: its RouteResult,
        #: less the listeners where it gave way to a route of the other kind
        #: (``kindconflict``; ``_lost`` says where and to which).
        self._shown: dict[ObjectKey, RouteResult] = {}
        self._lost: dict[ObjectKey, dict] = {}
        #: listener id -> the HTTPRoutes and GRPCRoutes attached to it, and their creation
        #: timestamps: the candidates of the HTTPRoute/GRPCRoute hostname rule.
        self._l7_on: dict[tuple, set[ObjectKey]] = defaultdict(set)
        self._created: dict[ObjectKey, str] = {}

    # -- change bookkeeping --------------------------------------------------------

    def _expand(self, store: Store, changed: set[ObjectKey]) -> set[ObjectKey]:
        eff = set(changed)
        for k in changed:
            if k.kind == "EndpointSlice":
                eff.update(self._slice_owner.pop(k, ()))
                obj = store.get_key(k)
                if obj is not None:
                    pk = pseudo_keys(k, obj)
                    self._slice_owner[k] = pk
                    eff.update(pk)
            else:
                eff.update(pseudo_keys(k, None))
        return eff

    def _resolve_gateways(self, store: Store, eff: set[ObjectKey]) -> dict[ObjectKey,
                                                                           tuple[Cond, ...]]:
        reader = Reader(store, book=self._book)
        classes: dict[ObjectKey, tuple[Cond, ...]] = {}
        class_names: set[str] = set()
        for gwc in store.list("GatewayClass"):
            if as_str(spec(gwc).get("controllerName")) == self.options.controller_name:
                k = ObjectKey.of(gwc)
                classes[k] = class_conditions(reader, gwc)
                class_names.add(k.name)
        resolved = []
        assigned = dict(self.options.gateway_addresses)
        hostnames = dict(self.options.resolved_hostnames)
        sets = listenerset.by_parent(store.list(listenerset.KIND))
        gw_problems: list[Problem] = []
        for gw in store.list("Gateway"):
            cname = as_str(spec(gw).get("gatewayClassName"))
            gw_problems.extend(problems.gateway_problems(reader, gw, cname in class_names))
            if cname in class_names:
                k = ObjectKey.of(gw)
                g = resolve_gateway(reader, gw, cname, self.options.node_addresses,
                                    self.options.local_addresses,
                                    assigned.get(f"{k.namespace}/{k.name}"), hostnames)
                g = listenerset.attach_sets(reader, g, gw, sets.get(k, ()))
                g = with_policies(reader, g)
                resolved.append(tlsoverlap.mark_overlapping(g))
        self._gateway_problems = tuple(gw_problems)
        new = apply_port_sharing(resolved)
        for k, g in new.items():
            old = self._gateways.get(k)
            if old == g:
                new[k] = old
            else:
                eff.add(k)
        eff.update(self._gateways.keys() - new.keys())
        self._gateways = new
        return classes

    def _drop_route(self, rk: ObjectKey) -> None:
        self._route_problems.pop(rk, None)
        for d in self._route_deps.pop(rk, ()):
            users = self._rdeps.get(d)
            if users is not None:
                users.discard(rk)
                if not users:
                    del self._rdeps[d]
        old = self._routes.pop(rk, None)
        if old is None:
            return
        self._created.pop(rk, None)
        for lid in {lis.id for p in old.parents for lis, _ in p.listeners}:
            on = self._l7_on.get(lid)
            if on is not None:
                on.discard(rk)
                if not on:
                    del self._l7_on[lid]
        self._l7.set_route(rk, ())
        self._l4.pop(rk, None)
        self._route_status.pop(rk, None)
        shown = self._shown.pop(rk)
        for lid in {lis.id for p in shown.parents for lis, _ in p.listeners}:
            self._attached[lid] -= 1
        for svc, _g in old.services:
            self._svc_users[svc].pop(rk, None)

    def _add_route(self, store: Store, rk: ObjectKey) -> None:
        obj = store.get_key(rk)
        if obj is None:
            return
        reader = Reader(store, book=self._book)
        found = problems.route_problems(reader, obj)
        if found:
            self._route_problems[rk] = found
        res = resolve_route(reader, obj, self._gateways)
        deps = frozenset(reader.deps | {rk})
        self._route_deps[rk] = deps
        for d in deps:
            self._rdeps[d].add(rk)
        if res is None:
            return
        self._routes[rk] = res
        if rk.kind in kindconflict.KINDS:
            self._created[rk] = creation_timestamp(obj)
            for lid in {lis.id for p in res.parents for lis, _ in p.listeners}:
                self._l7_on[lid].add(rk)
        if res.l4:
            self._l4[rk] = res.l4
        self._show(rk, res)
        by_svc: dict[ObjectKey, set[ObjectKey]] = defaultdict(set)
        for svc, g in res.services:
            by_svc[svc].add(g)
        for svc, gws in by_svc.items():
            applies = gws if rk.kind in L7_KINDS else gws & res.terminating
            self._svc_users[svc][rk] = (frozenset(applies), frozenset(gws - applies))

    def _show(self, rk: ObjectKey, shown: RouteResult) -> None:
        """Make ``shown`` (the route's result, or it less the listeners it gave way on)
        what its status and L7 contributions say."""
        old = self._shown.get(rk)
        if old is not None:
            for lid in {lis.id for p in old.parents for lis, _ in p.listeners}:
                self._attached[lid] -= 1
        self._shown[rk] = shown
        self._l7.set_route(rk, shown.l7)
        self._route_status[rk] = status.route_status(shown, self.options.controller_name)
        for lid in {lis.id for p in shown.parents for lis, _ in p.listeners}:
            self._attached[lid] += 1

    def _kind_conflicts(self, redone: set[ObjectKey]) -> None:
        """Apply the HTTPRoute/GRPCRoute hostname rule on the listeners carrying both
        kinds (rare: nothing to do on most updates). ``redone``: routes just resolved
        again, shown whole so far."""
        mixed = [lid for lid, rks in self._l7_on.items()
                 if len({rk.kind for rk in rks}) > 1]
        cands = {rk: self._routes[rk] for lid in mixed for rk in self._l7_on[lid]}
        new = kindconflict.losers(cands, self._created, mixed)
        for rk in set(new) | set(self._lost):
            lost = new.get(rk)
            if rk not in self._routes or (lost == self._lost.get(rk) and rk not in redone):
                continue
            res = self._routes[rk]
            self._show(rk, kindconflict.without(res, lost) if lost else res)
        self._lost = new

    # -- the entry point -------------------------------------------------------------

    def update(self, store: Store, changed: set[ObjectKey]) -> Translation:
        """Translate, redoing only what depends on ``changed`` (everything the first time)."""
        with _gc_paused():
            return self._update(store, changed)

    def _update(self, base: Store, changed: set[ObjectKey]) -> Translation:
        # Ingresses are translated as the Gateway API objects they become, read beside
        # the user's (one router, one precedence); their results go back to them below.
        conv = ingress_stage.conversion(base, self.options.ingress, self.options.controller_name)
        if self._overlay is None or self._overlay.base is not base:
            self._overlay = Overlay(base)
        changed = set(changed) | self._overlay.replace(conv.objects)
        # (without Ingresses, the store itself: reads skip the overlay's indirection)
        store: Store = self._overlay if self._overlay.generated_count() else base
        if not self._started:
            self._started = True
            changed = set(store.keys())
        self._book.changed(store, changed)
        eff = self._expand(store, set(changed))
        classes = self._resolve_gateways(store, eff)

        todo = {k for k in changed if k.kind in ROUTE_KINDS}
        for d in eff:
            todo |= self._rdeps.get(d, set())
        for rk in sorted(todo):
            self._drop_route(rk)
            self._add_route(store, rk)
        self._kind_conflicts(todo)

        l7cfg = self._l7.build(self._gateways)
        l4cfg = emit_l4.build(self._gateways, (con for cons in self._l4.values() for con in cons))
        limits = emit_l4.connection_limits(l7cfg)
        if limits:
            l4cfg = replace(l4cfg, connection_limits=limits)

        statuses: dict[ObjectKey, dict] = dict(self._route_status)
        for k, cs in classes.items():
            statuses[k] = status.gateway_class_status(cs, gen(store.get_key(k) or {}))
        for k, g in self._gateways.items():
            statuses[k] = status.gateway_status(
                g, self._attached,
                listenerset.attached_count(g) if g.allows_listener_sets else None)
        statuses.update(listenerset.statuses(self._gateways.values(), self._attached))
        statuses.update(self._policy_statuses(store))
        statuses.update(policy_statuses(self._book.all(store), self._locator(store),
                                        self.options.controller_name, self._policy_limits))
        found = self._gateway_problems + tuple(p for k in sorted(self._route_problems)
                                               for p in self._route_problems[k])
        found += tuple(p for pol in store.list("BackendTLSPolicy")
                       for p in problems.policy_problems(pol))
        found += tuple(sorted(set(self._policy_problems), key=lambda p: (p.key, p.message)))
        if conv.served or conv.problems:
            statuses, found = ingress_stage.results(conv, statuses, found)
        return Translation(l7=l7cfg, l4=l4cfg, statuses=statuses, problems=found,
                           certificates=tlscert.served(self._gateways.values()), ingress=conv)

    def _policy_limits(self, namespace: str, t: Target, policy: Obj) -> tuple[str, str] | None:
        """What a target cannot take of ``policy``: on an L4 route, all but an active health
        check on a TCPRoute (controller.policy.l4targets); on a Gateway, a listener section on a
        listener whose protocol cannot serve it (LISTENER_SECTION_PROTOCOLS; the section
        is ignored there). Every targeted listener such: Invalid; some: Accepted, saying
        which do not apply it."""
        if t.kind in l4targets.L4_ROUTE_KINDS:
            lim = l4targets.limits(t.kind, as_dict(spec(policy)))
            return None if lim is None else (ACCEPTED if lim[0] else INVALID, lim[1])
        if t.kind != "Gateway":
            return None
        g = self._gateways.get(ObjectKey("Gateway", namespace, t.name))
        if g is None:
            return None
        targeted = [lis for lis in g.listeners if lis.listener_set is None
                    and (not t.section or lis.name == t.section)]
        sections = as_dict(spec(policy))
        for name, (served, why) in LISTENER_SECTION_PROTOCOLS.items():
            if sections.get(name) is None:
                continue
            not_here = [lis.name for lis in targeted if lis.protocol not in served]
            if not_here:
                msg = (f"spec.{name}: not applied on listener(s) {', '.join(not_here)}: "
                       f"{why}")
                return (ACCEPTED if len(not_here) < len(targeted) else INVALID), msg
        return None

    def _locator(self, store: Store) -> Callable[[str, Target], Found | None]:
        """Where a kgw policy's target is: its Gateways, or why it is not there."""
        def locate(namespace: str, t: Target) -> Found | None:
            key = ObjectKey(t.kind, namespace, t.name)
            what = t.describe(namespace)
            if t.kind == "Gateway":
                g = self._gateways.get(key)
                if g is None:
                    return None if key in store else Found(missing=f"{what} does not exist")
                if t.section and not any(lis.name == t.section and lis.listener_set is None
                                         for lis in g.listeners):
                    return Found((key,), missing=f"Gateway {namespace}/{t.name} has no "
                                                 f"listener {t.section!r}")
                return Found((key,))
            obj = store.get_key(key)
            if obj is None:
                return Found(missing=f"{what} does not exist")
            res = self._routes.get(key)
            if res is None:
                return None  # not attached to a Gateway of ours
            gws = tuple(sorted({p.gateway for p in res.parents if p.accepted.ok} or {
                p.gateway for p in res.parents}))
            if t.section and t.section not in rule_names(obj):
                return Found(gws, missing=f"{t.kind} {namespace}/{t.name} has no rule named "
                                          f"{t.section!r}")
            return Found(gws)
        return locate

    def _policy_statuses(self, store: Store) -> dict[ObjectKey, dict]:
        """Statuses of BackendTLSPolicies, with an ancestor per Gateway whose HTTP routes
        (or TLSRoutes it terminates) use a targeted Service (and self._policy_problems for
        the other uses)."""
        self._policy_problems: list[Problem] = []
        out: dict[ObjectKey, dict] = {}
        reader = Reader(store)
        by_ns: dict[str, list] = defaultdict(list)
        for p in store.list("BackendTLSPolicy"):
            by_ns[ObjectKey.of(p).namespace].append(p)
        for ns, policies in by_ns.items():
            losing = backendtls.conflicted(policies)
            for p in policies:
                pk = ObjectKey.of(p)
                ancestors: set[ObjectKey] = set()
                for svc, _section in backendtls.targets(p):
                    users = self._svc_users.get(ObjectKey("Service", ns, svc), {})
                    for rk, (applies, as_is) in users.items():
                        ancestors |= applies
                        if as_is:  # TCP/TLS passthrough bytes: kgw originates no TLS there
                            self._policy_problems.append(Problem(
                                "",
                                f"Service {ns}/{svc} is used by {rk.kind} "
                                f"{rk.namespace}/{rk.name}, whose "
                                "connections kgw forwards as they are: the policy does not apply "
                                "to them",
                                pk, "spec.targetRefs"))
                if not ancestors:
                    continue
                ev = backendtls.evaluate(reader, p)
                accepted = (Cond(c.ACCEPTED, False, c.R_CONFLICTED,
                                 "another policy targets the same Service port")
                            if pk in losing else ev.accepted)
                out[pk] = status.policy_status(ancestors, accepted, ev.resolved_refs, gen(p),
                                               self.options.controller_name)
        return out


def translate(store: Store, options: Options = Options()) -> Translation:
    """Pure: the data-plane configs and statuses for everything in ``store``."""
    return Translator(options).update(store, set())
