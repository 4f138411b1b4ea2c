"""The upstream status helpers (conformance/utils/kubernetes/helpers.go), against /status.

Each helper polls kgw's admin API until its expectation holds or its timeout passes, as
upstream polls the API server. The comparisons themselves are pure functions returning
``None`` when matched or the reason they did not, so they are unit-tested without a
gateway. Semantics kept from upstream, deliberately:

- every condition's observedGeneration must equal the object's metadata.generation
  wherever upstream checks ``ConditionsHaveLatestObservedGeneration``;
- an expected condition with an empty Reason matches any reason;
- each expected route parent must be matched by some parent in status (any order;
  other parents may exist): controllerName, parentRef group and kind explicitly
  present, name, namespace (may be omitted when the route is in the Gateway's
  namespace), then the conditions;
- Gateway listeners are matched by name in any order; supportedKinds must contain the
  expected kinds (an empty expectation requires none); attachedRoutes must be equal.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from conformance.loader import CONTROLLER_NAME, GATEWAY_GROUP

Obj = dict[str, Any]
NN = tuple[str, str]  # (namespace, name)

ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute")

_PLACEHOLDERS = {
    "<suite.ControllerName>": CONTROLLER_NAME,
    "<v1.GroupName>": GATEWAY_GROUP,
    "<gatewayv1.GroupName>": GATEWAY_GROUP,
}


class CheckFailed(Exception):
    """An expectation did not hold within its timeout (a test failure)."""


class Fatal(str):
    """A poll result that ends the poll at once (upstream's condition func returning an error)."""


class HarnessGap(Exception):
    """The harness cannot replay this from the suite's data (the test is skipped, with this
    reason)."""


# -- pure comparisons ---------------------------------------------------------------


def fill_placeholders(value: Any) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDERS.get(value, value)
    if isinstance(value, list):
        return [fill_placeholders(v) for v in value]
    if isinstance(value, dict):
        return {k: fill_placeholders(v) for k, v in value.items()}
    return value


def generation_of(obj: Obj) -> int:
    return int(((obj.get("metadata") or {}).get("generation")) or 0)


def stale_conditions(obj: Obj, conditions: Iterable[Obj]) -> str | None:
    """Upstream ConditionsHaveLatestObservedGeneration: no condition may lag the spec."""
    gen = generation_of(obj)
    stale = [f"{c.get('type')}(observedGeneration={c.get('observedGeneration')})"
             for c in conditions if c.get("observedGeneration") != gen]
    if stale:
        return f"conditions not at generation {gen}: {', '.join(stale)}"
    return None


def find_condition(conditions: Iterable[Obj], type_: str, status: str,
                   reason: str = "") -> str | None:
    """``None`` when a condition of ``type_`` has ``status`` and ``reason`` (an empty
    status or reason matches any, as upstream's findConditionInList)."""
    seen = []
    for c in conditions or []:
        if c.get("type") == type_:
            if (not status or c.get("status") == status) and (not reason
                                                              or c.get("reason") == reason):
                return None
            seen.append(f"{type_}={c.get('status')}/{c.get('reason')}")
    want = f"{type_}={status}" + (f"/{reason}" if reason else "")
    return f"want {want}, got {', '.join(seen) if seen else 'no ' + type_ + ' condition'}"


def conditions_match(expected: Iterable[Obj], actual: list[Obj]) -> str | None:
    expected = list(expected)
    if len(actual or []) < len(expected):
        return f"expected at least {len(expected)} conditions, got {len(actual or [])}"
    for c in expected:
        why = find_condition(actual, c["Type"], c["Status"], c.get("Reason", ""))
        if why:
            return why
    return None


def parent_matches(e: Obj, a: Obj, namespace_required: bool) -> str | None:
    """One expected parent (Go field names) against one parent in status (API names)."""
    eref, aref = e["ParentRef"], a.get("parentRef") or {}
    if a.get("controllerName") != e["ControllerName"]:
        return f"controllerName {a.get('controllerName')!r}, want {e['ControllerName']!r}"
    if aref.get("group") != eref.get("Group"):
        return f"parentRef.group {aref.get('group')!r}, want {eref.get('Group')!r}"
    if aref.get("kind") != eref.get("Kind"):
        return f"parentRef.kind {aref.get('kind')!r}, want {eref.get('Kind')!r}"
    if aref.get("name") != eref.get("Name"):
        return f"parentRef.name {aref.get('name')!r}, want {eref.get('Name')!r}"
    if aref.get("namespace") != eref.get("Namespace"):
        if namespace_required or aref.get("namespace") is not None:
            return f"parentRef.namespace {aref.get('namespace')!r}, want {eref.get('Namespace')!r}"
    return conditions_match(e.get("Conditions") or [], a.get("conditions") or [])


def parents_match(expected: list[Obj], actual: list[Obj], namespace_required: bool) -> str | None:
    """Upstream parentsForRouteMatch: every expected parent is matched by a parent in status."""
    for e in expected:
        reasons = [why for a in actual if (why := parent_matches(e, a, namespace_required))]
        if len(reasons) == len(actual):
            ref = e["ParentRef"]
            return (f"no parent in status matches {ref.get('Namespace')}/{ref.get('Name')}"
                    + (f" ({'; '.join(reasons)})" if reasons else " (no parents)"))
    return None


def _brief_parents(parents: list[Obj]) -> str:
    out = []
    for p in parents:
        ref = p.get("parentRef") or {}
        conds = ",".join(f"{c.get('type')}={c.get('status')}/{c.get('reason')}"
                         for c in p.get("conditions") or [])
        out.append(
            f"{ref.get('namespace', '')}/{ref.get('name')}#{ref.get('sectionName', '')}[{conds}]")
    return "; ".join(out) or "none"


def listeners_match(expected: list[Obj], actual: list[Obj]) -> str | None:
    """Upstream listenersMatch (order-independent, supportedKinds as a superset)."""
    if len(expected) != len(actual):
        return (
            f"expected {len(expected)} listeners in status, got {len(actual)} "
            f"({[a.get('name') for a in actual]})")
    by_name = {a.get("name"): a for a in actual}
    for e in expected:
        a = by_name.get(e["Name"])
        if a is None:
            return f"listener {e['Name']!r} missing from status"
        a_kinds = a.get("supportedKinds") or []
        e_kinds = e.get("SupportedKinds") or []
        if not e_kinds and a_kinds:
            return f"listener {e['Name']}: expected no supportedKinds, got {a_kinds}"
        for ek in e_kinds:
            eg = ek.get("Group") or GATEWAY_GROUP
            if not any((ak.get("group") or GATEWAY_GROUP) == eg and ak.get("kind") == ek["Kind"]
                       for ak in a_kinds):
                return f"listener {e['Name']}: supportedKinds {a_kinds} lacks {eg}/{ek['Kind']}"
        if a.get("attachedRoutes") != e.get("AttachedRoutes", 0):
            return (
                f"listener {e['Name']}: attachedRoutes {a.get('attachedRoutes')}, want "
                f"{e.get('AttachedRoutes', 0)}")
        why = conditions_match(e.get("Conditions") or [], a.get("conditions") or [])
        if why:
            return f"listener {e['Name']}: {why}"
    return None


# -- the admin API ----------------------------------------------------------------


class AdminClient:
    """Reads kgw's /status (a Kubernetes List of {apiVersion, kind, metadata, status})."""

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        self.base = f"http://{address}"
        self.timeout = timeout

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=self.timeout) as resp:
            return json.loads(resp.read())

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=self.timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def statuses(self) -> dict[tuple[str, str, str], Obj]:
        items = self.get_json("/status").get("items") or []
        out = {}
        for it in items:
            meta = it.get("metadata") or {}
            out[(it.get("kind", ""), meta.get("namespace") or "", meta.get("name", ""))] = it
        return out


# -- polling helpers -----------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    """Upstream's DefaultTimeoutConfig, optionally capped (kgw converges in well under a
    second; upstream's budgets are sized for controllers in a cluster)."""

    cap: float | None = 30.0

    def of(self, upstream_seconds: float) -> float:
        return upstream_seconds if self.cap is None else min(upstream_seconds, self.cap)


# Upstream DefaultTimeoutConfig values (seconds).
T_GATEWAY_ADDRESS = 180
T_GATEWAY_CONDITION = 180
T_GATEWAY_LISTENERS = 60
T_LISTENERS_CONDITIONS = 60
T_GWC_ACCEPTED = 180
T_ROUTE_NO_PARENTS = 60
T_ROUTE_CONDITION = 60
T_ROUTE_PARENTS = 60
T_NAMESPACES_READY = 300
T_LATEST_GENERATION = 60


class StatusChecker:
    """Runs the recorded status checks. ``pods_ready(namespaces)`` tells whether the echo
    pods in those namespaces are all running; ``skip_readiness`` names Gateways annotated
    to be left out of NamespacesMustBeReady."""

    def __init__(self, admin: AdminClient, timeouts: Timeouts, *,
                 pods_ready: Callable[[list[str]], str | None] = lambda ns: None,
                 skip_readiness: Callable[[], set[NN]] = set,
                 spec_listeners: Callable[[NN], list[Obj]] = lambda nn: [], interval: float = 0.1,
                 exists: Callable[[str, str, str], bool] = lambda kind, ns, name: True,
                 gateways_in: Callable[[list[str]], list[Obj]] | None = None,
                 log: Callable[[str], None] = lambda m: None) -> None:
        self.admin = admin
        self.timeouts = timeouts
        self.pods_ready = pods_ready
        self.skip_readiness = skip_readiness
        self.spec_listeners = spec_listeners
        self.exists = exists
        self.gateways_in = gateways_in
        self.interval = interval
        self.log = log

    # -- plumbing --

    def poll(self, what: str, upstream_timeout: float, fn: Callable[[dict], str | None]) -> None:
        """Call ``fn(statuses)`` until it returns None; raise CheckFailed with its last reason."""
        deadline = time.monotonic() + self.timeouts.of(upstream_timeout)
        why: str | None = "not checked"
        while True:
            try:
                why = fn(self.admin.statuses())
            except (urllib.error.URLError, OSError, ValueError) as exc:
                why = f"admin API: {exc}"
            if why is None:
                return
            if isinstance(why, Fatal):
                raise CheckFailed(f"{what}: {why}")
            if time.monotonic() >= deadline:
                raise CheckFailed(f"{what}: {why}{self._refusals(why)}")
            time.sleep(self.interval)

    def run(self, check: Obj) -> str | None:
        helper = check["helper"]
        fn = getattr(self, helper, None)
        if fn is None:
            raise HarnessGap(f"status helper {helper} is not implemented by the harness")
        args = fill_placeholders(check.get("args") or [])
        return fn(*args)

    def _refusals(self, why: str) -> str:
        """When an object never got a status, say whether kgw's source refused it (what
        the API server would have rejected at apply time)."""
        if "has no status" not in why:
            return ""
        try:
            problems = self.admin.get_json("/problems").get("problems") or []
        except (urllib.error.URLError, OSError, ValueError):
            return ""
        name = why.split(" has no status")[0].rsplit("/", 1)[-1]
        hits = [p.get("text", "") for p in problems if name and name in (p.get("text") or "")]
        return f" (kgw refused it: {'; '.join(hits)[:500]})" if hits else ""

    def _absent(self, kind: str, nn: NN) -> str:
        """Why an object is not in kgw's /status: not applied at all is a lookup error
        (upstream's client.Get fails: the poll ends at once); applied but not listed means
        kgw has not written its status (yet), which is polled like any other miss."""
        kinds = {"Route": ROUTE_KINDS, "ListenerSet": ("ListenerSet", "XListenerSet")}.get(kind,
                                                                                           (kind,))
        if not any(self.exists(k, nn[0], nn[1]) for k in kinds):
            return Fatal(f"{kind} {nn[0]}/{nn[1]} not found: no such object is applied")
        return f"{kind} {nn[0]}/{nn[1]} has no status"

    @staticmethod
    def _nn(ref: Obj) -> NN:
        return ref.get("Namespace") or "", ref["Name"]

    @staticmethod
    def _get(st: dict, kind: str, nn: NN) -> Obj | None:
        return st.get((kind, nn[0], nn[1]))

    def _route(self, st: dict, nn: NN, kind: str | None = None) -> tuple[Obj | None, str]:
        kinds = (kind,) if kind else ROUTE_KINDS
        for k in kinds:
            obj = self._get(st, k, nn)
            if obj is not None:
                return obj, k
        return None, kind or "Route"

    # -- Gateway / GatewayClass --

    def NamespacesMustBeReady(self, namespaces: list[str]) -> None:
        """Upstream lists every Gateway in the namespaces (from the API server: here, the
        applied ones; kgw's status is what it reports for each) and needs each, unless
        annotated to be skipped, Accepted and Programmed at its latest generation; then
        the namespaces' pods (``pods_ready``)."""
        def fn(st: dict) -> str | None:
            skip = self.skip_readiness()
            if self.gateways_in is not None:
                keys = sorted(((o.get("metadata") or {}).get("namespace", "default"),
                               o["metadata"]["name"])
                              for o in self.gateways_in(namespaces))
            else:
                keys = sorted((ns, name) for (kind, ns, name) in st if kind == "Gateway"
                              and ns in namespaces)
            for ns, name in keys:
                if (ns, name) in skip:
                    continue
                obj = st.get(("Gateway", ns, name))
                if obj is None:
                    return f"Gateway {ns}/{name} not Accepted yet: kgw reports no status for it"
                conds = (obj.get("status") or {}).get("conditions") or []
                why = (stale_conditions(obj, conds) or find_condition(conds, "Accepted", "True")
                       or find_condition(conds, "Programmed", "True"))
                if why:
                    return f"Gateway {ns}/{name} not ready: {why}"
            return self.pods_ready(namespaces)
        self.poll(f"NamespacesMustBeReady({','.join(namespaces)})", T_NAMESPACES_READY, fn)

    def WaitForGatewayAddress(self, gwref: Obj) -> str:
        nn = self._nn(gwref["gateway"])
        listeners = gwref.get("listeners") or []
        return self.gateway_address(nn, listeners[0] if listeners else "")

    def gateway_address(self, nn: NN, listener: str = "", port: int | None = None,
                        spec_listeners: list[Obj] | None = None) -> str:
        """host:port of a Gateway as upstream's WaitForGatewayAddress computes it: the
        first IPAddress/Hostname address in status, and the port of the named listener
        (or the first listener) from the Gateway's spec."""
        result: dict[str, str] = {}

        def fn(st: dict) -> str | None:
            gw = self._get(st, "Gateway", nn)
            if gw is None:
                return self._absent("Gateway", nn)
            status = gw.get("status") or {}
            why = stale_conditions(gw, status.get("conditions") or [])
            if why:
                return f"Gateway {nn[0]}/{nn[1]}: {why}"
            p = port
            if p is None:
                specs = spec_listeners if spec_listeners is not None else self.spec_listeners(nn)
                if not specs:
                    return f"Gateway {nn[0]}/{nn[1]} has no listeners in its spec"
                ls = [lst for lst in specs if lst.get("name") == listener] or specs[:1]
                p = ls[0].get("port")
            for a in status.get("addresses") or []:
                if a.get("type"):
                    result["addr"] = f"{a['value']}:{p}" if ":" not in a[
                        "value"] else f"[{a['value']}]:{p}"
                    return None
            return (f"Gateway {nn[0]}/{nn[1]} has no typed address in status: "
                    f"{status.get('addresses')}")
        self.poll(f"WaitForGatewayAddress({nn[0]}/{nn[1]})", T_GATEWAY_ADDRESS, fn)
        return result["addr"]

    def GatewayMustHaveLatestConditions(self, gw: Obj) -> None:
        self._latest("Gateway", self._nn(gw),
                     lambda o: (o.get("status") or {}).get("conditions") or [])

    def GatewayClassMustHaveLatestConditions(self, gwc: Obj) -> None:
        self._latest("GatewayClass", ("", gwc["Name"]),
                     lambda o: (o.get("status") or {}).get("conditions") or [])

    def HTTPRouteMustHaveLatestConditions(self, route: Obj) -> None:
        self._latest("HTTPRoute", self._nn(route),
                     lambda o: [c for p in (o.get("status") or {}).get("parents") or []
                                for c in p.get("conditions") or []])

    def _latest(self, kind: str, nn: NN, conditions: Callable[[Obj], list[Obj]]) -> None:
        def fn(st: dict) -> str | None:
            obj = self._get(st, kind, nn)
            if obj is None:
                return self._absent(kind, nn)
            return stale_conditions(obj, conditions(obj))
        self.poll(f"{kind}MustHaveLatestConditions({nn[0]}/{nn[1]})", T_LATEST_GENERATION, fn)

    def GWCMustHaveAcceptedConditionAny(self, name: str) -> None:
        def fn(st: dict) -> str | None:
            obj = self._get(st, "GatewayClass", ("", name))
            if obj is None:
                return self._absent("GatewayClass", ("", name))
            conds = (obj.get("status") or {}).get("conditions") or []
            return stale_conditions(obj, conds) or find_condition(conds, "Accepted", "")
        self.poll(f"GWCMustHaveAcceptedConditionAny({name})", T_GWC_ACCEPTED, fn)

    def GWCMustHaveAcceptedConditionTrue(self, name: str) -> None:
        def fn(st: dict) -> str | None:
            obj = self._get(st, "GatewayClass", ("", name))
            if obj is None:
                return self._absent("GatewayClass", ("", name))
            conds = (obj.get("status") or {}).get("conditions") or []
            return stale_conditions(obj, conds) or find_condition(conds, "Accepted", "True")
        self.poll(f"GWCMustHaveAcceptedConditionTrue({name})", T_GWC_ACCEPTED, fn)

    def GatewayMustHaveCondition(self, gw: Obj, cond: Obj) -> None:
        nn = self._nn(gw)

        def fn(st: dict) -> str | None:
            obj = self._get(st, "Gateway", nn)
            if obj is None:
                return self._absent("Gateway", nn)
            conds = (obj.get("status") or {}).get("conditions") or []
            stale = stale_conditions(obj, conds)
            if stale:
                return Fatal(stale)
            return find_condition(conds, cond["Type"], cond["Status"], cond.get("Reason", ""))
        self.poll(f"GatewayMustHaveCondition({nn[0]}/{nn[1]})", T_GATEWAY_CONDITION, fn)

    def GatewayStatusMustHaveListeners(self, gw: Obj, listeners: list[Obj]) -> None:
        self._status_has_listeners("Gateway", self._nn(gw), listeners, T_GATEWAY_LISTENERS)

    def _status_has_listeners(self, kind: str, nn: tuple[str, str], listeners: list[Obj],
                              timeout: float) -> None:
        def fn(st: dict) -> str | None:
            obj = self._get(st, kind, nn)
            if obj is None:
                return self._absent(kind, nn)
            status = obj.get("status") or {}
            return (stale_conditions(obj, status.get("conditions") or [])
                    or listeners_match(listeners, status.get("listeners") or []))
        self.poll(f"{kind}StatusMustHaveListeners({nn[0]}/{nn[1]})", timeout, fn)

    def GatewayListenersMustHaveConditions(self, gw: Obj, conditions: list[Obj],
                                           listener: str = "") -> None:
        nn = self._nn(gw)

        def fn(st: dict) -> str | None:
            obj = self._get(st, "Gateway", nn)
            if obj is None:
                return self._absent("Gateway", nn)
            seen = False
            for lst in (obj.get("status") or {}).get("listeners") or []:
                if listener and lst.get("name") != listener:
                    continue
                seen = True
                for c in conditions:
                    why = find_condition(lst.get("conditions") or [], c["Type"], c["Status"],
                                         c.get("Reason", ""))
                    if why:
                        return f"listener {lst.get('name')}: {why}"
            if listener and not seen:
                return f"listener {listener} missing from status"
            return None
        self.poll(f"GatewayListenersMustHaveConditions({nn[0]}/{nn[1]})", T_LISTENERS_CONDITIONS,
                  fn)

    def GatewayListenerMustHaveConditions(self, gw: Obj, listener: str,
                                          conditions: list[Obj]) -> None:
        nn = self._nn(gw)

        def fn(st: dict) -> str | None:
            obj = self._get(st, "Gateway", nn)
            if obj is None:
                return self._absent("Gateway", nn)
            for lst in (obj.get("status") or {}).get("listeners") or []:
                if lst.get("name") == listener:
                    return conditions_match(conditions, lst.get("conditions") or [])
            return f"listener {listener} missing from status"
        self.poll(f"GatewayListenerMustHaveConditions({nn[0]}/{nn[1]}#{listener})",
                  T_LISTENERS_CONDITIONS, fn)

    def GatewayMustHaveZeroRoutes(self, gw: Obj) -> None:
        nn = self._nn(gw)

        def fn(st: dict) -> str | None:
            obj = self._get(st, "Gateway", nn)
            if obj is None:
                return self._absent("Gateway", nn)
            stale = stale_conditions(obj, (obj.get("status") or {}).get("conditions") or [])
            if stale:
                return stale
            ls = (obj.get("status") or {}).get("listeners") or []
            if not ls or (len(ls) == 1 and ls[0].get("attachedRoutes") == 0):
                return None
            return (
                "want no listeners or one with 0 attachedRoutes, got "
                f"{[(lst.get('name'), lst.get('attachedRoutes')) for lst in ls]}")
        self.poll(f"GatewayMustHaveZeroRoutes({nn[0]}/{nn[1]})", T_GATEWAY_LISTENERS, fn)

    def GatewayMustHaveAttachedListeners(self, gw: Obj, count: int) -> None:
        nn = self._nn(gw)

        def fn(st: dict) -> str | None:
            obj = self._get(st, "Gateway", nn)
            if obj is None:
                return self._absent("Gateway", nn)
            status = obj.get("status") or {}
            got = status.get("attachedListenerSets") or 0
            return stale_conditions(obj, status.get("conditions") or []) or (
                None if got == count else f"attachedListenerSets {got}, want {count}")
        self.poll(f"GatewayMustHaveAttachedListeners({nn[0]}/{nn[1]})", T_GATEWAY_LISTENERS, fn)

    # -- ListenerSet --

    def ListenerSetMustHaveCondition(self, ls: Obj, cond: Obj) -> None:
        nn = self._nn(ls)

        def fn(st: dict) -> str | None:
            obj = self._get(st, "ListenerSet", nn)
            if obj is None:
                return self._absent("ListenerSet", nn)
            conds = (obj.get("status") or {}).get("conditions") or []
            return stale_conditions(obj, conds) or find_condition(conds, cond["Type"],
                                                                  cond["Status"],
                                                                  cond.get("Reason", ""))
        self.poll(f"ListenerSetMustHaveCondition({nn[0]}/{nn[1]})", T_GATEWAY_CONDITION, fn)

    def ListenerSetListenersMustHaveConditions(self, ls: Obj, conditions: list[Obj],
                                               *listeners: str) -> None:
        self._listeners_conditions("ListenerSet", self._nn(ls), conditions, list(listeners),
                                   stale_fatal=True)

    def ListenerSetStatusMustHaveListeners(self, ls: Obj, listeners: list[Obj]) -> None:
        self._status_has_listeners("ListenerSet", self._nn(ls), listeners, T_LISTENERS_CONDITIONS)

    def RoutesAndParentMustBeAccepted(self, ref: Obj, _route_type: Any = None,
                                      *routes: Any) -> None:
        """Upstream RoutesAndParentMustBeAccepted for a Gateway or a ListenerSet parent."""
        gk, res = ref["groupKind"], ref["resource"]
        pnn = self._nn(res)
        listeners = ref.get("listeners") or [""]
        for r in _flatten_refs(routes):
            rnn = self._nn(r)
            parents = [{"ParentRef": {"Group": gk.get("Group"), "Kind": gk.get("Kind"),
                                      "Name": pnn[1], "Namespace": pnn[0], "SectionName": ln},
                        "ControllerName": CONTROLLER_NAME,
                        "Conditions": [
                            {"Type": "Accepted", "Status": "True", "Reason": "Accepted"}]}
                       for ln in listeners]
            self._route_parents(rnn, parents, rnn[0] != pnn[0], None)
        required = [{"Type": "ResolvedRefs", "Status": "True"},
                    {"Type": "Accepted", "Status": "True"},
                    {"Type": "Programmed", "Status": "True"}]
        if gk.get("Kind") == "ListenerSet":
            self._listeners_conditions("ListenerSet", pnn, required, [], stale_fatal=True)
        else:
            self.GatewayListenersMustHaveConditions(res, required)

    def _listeners_conditions(self, kind: str, nn: NN, conditions: list[Obj], names: list[str],
                              stale_fatal: bool) -> None:
        def fn(st: dict) -> str | None:
            obj = self._get(st, kind, nn)
            if obj is None:
                return self._absent(kind, nn)
            status = obj.get("status") or {}
            stale = stale_conditions(obj, status.get("conditions") or [])
            if stale:
                return Fatal(stale) if stale_fatal else stale
            missing = set(names)
            for lst in status.get("listeners") or []:
                if names and lst.get("name") not in names:
                    continue
                for c in conditions:
                    why = find_condition(lst.get("conditions") or [], c["Type"], c["Status"],
                                         c.get("Reason", ""))
                    if why:
                        return f"listener {lst.get('name')}: {why}"
                missing.discard(lst.get("name"))
            return f"listeners {sorted(missing)} missing from status" if missing else None
        self.poll(f"{kind}ListenersMustHaveConditions({nn[0]}/{nn[1]})", T_LISTENERS_CONDITIONS, fn)

    # -- BackendTLSPolicy --

    def BackendTLSPolicyMustHaveCondition(self, policy: Obj, gw: Obj, cond: Obj) -> None:
        pnn, gnn = self._nn(policy), self._nn(gw)

        def fn(st: dict) -> str | None:
            obj = self._get(st, "BackendTLSPolicy", pnn)
            if obj is None:
                return self._absent("BackendTLSPolicy", pnn)
            ancestors = (obj.get("status") or {}).get("ancestors") or []
            last = f"no ancestor status for Gateway {gnn[0]}/{gnn[1]}"
            for a in ancestors:
                stale = stale_conditions(obj, a.get("conditions") or [])
                if stale:
                    return stale
                ref = a.get("ancestorRef") or {}
                if ref.get("name") == gnn[1] and ref.get("namespace") in (None, gnn[0]):
                    why = find_condition(a.get("conditions") or [], cond["Type"], cond["Status"],
                                         cond.get("Reason", ""))
                    if why is None:
                        return None
                    last = why
            return last
        self.poll(f"BackendTLSPolicyMustHaveCondition({pnn[0]}/{pnn[1]})", T_ROUTE_CONDITION, fn)

    def BackendTLSPolicyMustHaveAcceptedConditionTrue(self, policy: Obj, gw: Obj) -> None:
        self.BackendTLSPolicyMustHaveCondition(policy, gw, {"Type": "Accepted", "Status": "True",
                                                            "Reason": "Accepted"})

    # -- routes --

    def GatewayAndHTTPRoutesMustBeAccepted(self, gwref: Obj, *routes: Any) -> str:
        return self._gateway_and_routes(gwref, _flatten_refs(routes), "HTTPRoute")

    def GatewayAndRoutesMustBeAccepted(self, gwref: Obj, _route_type: Any = None,
                                       use_port: Any = True, *routes: Any) -> str:
        addr = self._gateway_and_routes(gwref, _flatten_refs(routes), None)
        return addr if use_port else addr.rpartition(":")[0]

    def GatewayAndTLSRoutesMustBeAccepted(self, gwref: Obj, *routes: Any) -> str:
        return self._gateway_and_routes(gwref, _flatten_refs(routes), "TLSRoute")

    def GatewayAndTCPRoutesMustBeAccepted(self, gwref: Obj, *routes: Any) -> str:
        return self._gateway_and_routes(gwref, _flatten_refs(routes), "TCPRoute")

    def GatewayAndUDPRoutesMustBeAccepted(self, gwref: Obj, *routes: Any) -> str:
        return self._gateway_and_routes(gwref, _flatten_refs(routes), "UDPRoute")

    def _gateway_and_routes(self, gwref: Obj, routes: list[Obj], kind: str | None) -> str:
        """Upstream GatewayAndRoutesMustBeAccepted: the Gateway has an address, every route
        has exactly the expected parents (one per listener name, Accepted=True/Accepted),
        and every listener is ResolvedRefs, Accepted and Programmed."""
        gnn = self._nn(gwref["gateway"])
        listeners = gwref.get("listeners") or [""]
        addr = self.gateway_address(gnn, listeners[0])
        for r in routes:
            rnn = self._nn(r)
            parents = [{"ParentRef": {"Group": GATEWAY_GROUP, "Kind": "Gateway", "Name": gnn[1],
                                      "Namespace": gnn[0], "SectionName": ln},
                        "ControllerName": CONTROLLER_NAME,
                        "Conditions": [
                            {"Type": "Accepted", "Status": "True", "Reason": "Accepted"}]}
                       for ln in listeners]
            self._route_parents(rnn, parents, rnn[0] != gnn[0], kind)
        required = [{"Type": "ResolvedRefs", "Status": "True"},
                    {"Type": "Accepted", "Status": "True"},
                    {"Type": "Programmed", "Status": "True"}]
        self.GatewayListenersMustHaveConditions(gwref["gateway"], required)
        return addr

    def HTTPRouteMustHaveParents(self, route: Obj, parents: list[Obj],
                                 namespace_required: bool) -> None:
        self._route_parents(self._nn(route), parents, namespace_required, "HTTPRoute")

    def TLSRouteMustHaveParents(self, route: Obj, parents: list[Obj],
                                namespace_required: bool) -> None:
        self._route_parents(self._nn(route), parents, namespace_required, "TLSRoute")

    def TCPRouteMustHaveParents(self, route: Obj, parents: list[Obj],
                                namespace_required: bool) -> None:
        self._route_parents(self._nn(route), parents, namespace_required, "TCPRoute")

    def UDPRouteMustHaveParents(self, route: Obj, parents: list[Obj],
                                namespace_required: bool) -> None:
        self._route_parents(self._nn(route), parents, namespace_required, "UDPRoute")

    def _route_parents(self, rnn: NN, parents: list[Obj], namespace_required: bool,
                       kind: str | None) -> None:
        """Upstream RouteMustHaveParents; like upstream, the staleness check looks at the
        parents seen by the previous poll against the object's current generation."""
        previous: list[Obj] = []

        def fn(st: dict) -> str | None:
            obj, k = self._route(st, rnn, kind)
            if obj is None:
                return self._absent(k, rnn)
            for p in previous:
                stale = stale_conditions(obj, p.get("conditions") or [])
                if stale:
                    previous[:] = (obj.get("status") or {}).get("parents") or []
                    return f"{k} {rnn[0]}/{rnn[1]}: {stale}"
            previous[:] = (obj.get("status") or {}).get("parents") or []
            return parents_match(parents, previous, namespace_required)
        self.poll(f"RouteMustHaveParents({rnn[0]}/{rnn[1]})", T_ROUTE_PARENTS, fn)

    def HTTPRouteMustHaveCondition(self, route: Obj, gw: Obj, cond: Obj) -> None:
        self._route_condition("HTTPRoute", self._nn(route), self._nn(gw), cond)

    def HTTPRouteMustHaveResolvedRefsConditionsTrue(self, route: Obj, gw: Obj) -> None:
        self._route_condition("HTTPRoute", self._nn(route), self._nn(gw),
                              {"Type": "ResolvedRefs", "Status": "True", "Reason": "ResolvedRefs"})

    def TLSRouteMustHaveCondition(self, route: Obj, gw: Obj, cond: Obj) -> None:
        self._route_condition("TLSRoute", self._nn(route), self._nn(gw), cond)

    def TLSRouteMustHaveResolvedRefsConditionsTrue(self, route: Obj, gw: Obj) -> None:
        self._route_condition("TLSRoute", self._nn(route), self._nn(gw),
                              {"Type": "ResolvedRefs", "Status": "True", "Reason": "ResolvedRefs"})

    def TCPRouteMustHaveCondition(self, route: Obj, gw: Obj, cond: Obj) -> None:
        self._route_condition("TCPRoute", self._nn(route), self._nn(gw), cond)

    def UDPRouteMustHaveCondition(self, route: Obj, gw: Obj, cond: Obj) -> None:
        self._route_condition("UDPRoute", self._nn(route), self._nn(gw), cond)

    def _route_condition(self, kind: str, rnn: NN, gnn: NN, cond: Obj) -> None:
        def fn(st: dict) -> str | None:
            obj = self._get(st, kind, rnn)
            if obj is None:
                return self._absent(kind, rnn)
            return route_has_condition(obj, gnn, cond)
        want = f"{cond['Type']}={cond['Status']}" + (f"/{cond['Reason']}" if cond.get("Reason")
                                                     else "")
        self.poll(f"{kind}MustHaveCondition({rnn[0]}/{rnn[1]}, {want})", T_ROUTE_CONDITION, fn)

    def HTTPRouteMustHaveNoAcceptedParents(self, route: Obj) -> None:
        self._no_accepted_parents("HTTPRoute", self._nn(route))

    def TLSRouteMustHaveNoAcceptedParents(self, route: Obj) -> None:
        self._no_accepted_parents("TLSRoute", self._nn(route))

    def _no_accepted_parents(self, kind: str, rnn: NN) -> None:
        """Either no parents (seen empty twice, a second apart, as upstream's 1 s poll
        does) or exactly one parent that is Accepted=False."""
        empty_since: list[float] = []

        def fn(st: dict) -> str | None:
            obj = self._get(st, kind, rnn)
            if obj is None:  # an object kgw does not list is not one with empty parents
                empty_since.clear()
                return self._absent(kind, rnn)
            parents = (obj.get("status") or {}).get("parents") or []
            if not parents:
                now = time.monotonic()
                if not empty_since:
                    empty_since.append(now)
                return None if now - empty_since[0] >= 1.0 else "no parents yet (confirming)"
            empty_since.clear()
            if len(parents) > 1:
                return f"expected at most one parent, got {_brief_parents(parents)}"
            stale = stale_conditions(obj or {}, parents[0].get("conditions") or [])
            if stale:
                return stale
            return conditions_match([{"Type": "Accepted", "Status": "False"}],
                                    parents[0].get("conditions") or [])
        self.poll(f"{kind}MustHaveNoAcceptedParents({rnn[0]}/{rnn[1]})", T_ROUTE_NO_PARENTS, fn)


def route_has_condition(route: Obj, gnn: NN, cond: Obj) -> str | None:
    """Upstream HTTPRouteMustHaveCondition on one snapshot: all parents' conditions are at
    the route's generation, and the parent for the Gateway has the condition."""
    parents = (route.get("status") or {}).get("parents") or []
    found: bool | str | None = None
    for p in parents:
        why = stale_conditions(route, p.get("conditions") or [])
        if why:
            return why
        ref = p.get("parentRef") or {}
        if ref.get("name") == gnn[1] and (ref.get("namespace") in (None, gnn[0])):
            miss = find_condition(p.get("conditions") or [], cond["Type"], cond["Status"],
                                  cond.get("Reason", ""))
            if miss is None:
                found = True
            elif found is None:
                found = miss
    if found is True:
        return None
    return found or f"no parent status for Gateway {gnn[0]}/{gnn[1]}: {_brief_parents(parents)}"


def _flatten_refs(routes: Iterable[Any]) -> list[Obj]:
    out: list[Obj] = []
    for r in routes:
        if isinstance(r, list):
            out.extend(r)
        elif isinstance(r, dict) and "Name" in r:
            out.append(r)
    return out
