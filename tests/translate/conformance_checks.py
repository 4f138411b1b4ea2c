"""Evaluate the upstream conformance status helpers (as recorded in cases/*.json)
against a Translation's statuses."""

from __future__ import annotations

from controller.objects import GATEWAY_GROUP, ObjectKey

ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute")
#: Helpers about things translation does not decide (pods) -> not evaluated.
SKIPPED_HELPERS = {"NamespacesMustBeReady", "BackendTLSPolicyMustHaveLatestConditions"}
REQUIRED_LISTENER_CONDITIONS = [{"Type": "ResolvedRefs", "Status": "True"},
                                {"Type": "Accepted", "Status": "True"},
                                {"Type": "Programmed", "Status": "True"}]


class CheckFailed(AssertionError):
    pass


def _nn(d: dict, kind: str) -> ObjectKey:
    return ObjectKey(kind, d.get("Namespace", "") or "", d["Name"])


def _cond_ok(conds: list[dict], want: dict) -> bool:
    for c in conds:
        if c["type"] != want["Type"]:
            continue
        if want.get("Status") and c["status"] != want["Status"]:
            return False
        return not (want.get("Reason") and c["reason"] != want["Reason"])
    return False


def _route_status(statuses, nn: dict, kind: str | None) -> tuple[ObjectKey, dict]:
    kinds = [kind] if kind else list(ROUTE_KINDS)
    for k in kinds:
        key = _nn(nn, k)
        if key in statuses:
            return key, statuses[key]
    raise CheckFailed(f"no status for route {nn} ({kinds})")


def _parent(st: dict, gw: dict, kind: str | None = "Gateway") -> dict:
    """The status entry of the parent named ``gw`` (of ``kind``; None: Gateway or
    ListenerSet, as upstream's helpers match by name and namespace only)."""
    for p in st.get("parents", []):
        ref = p["parentRef"]
        if (ref["name"] == gw["Name"] and ref.get("namespace") == gw["Namespace"]
                and (kind is None or ref["kind"] == kind)):
            return p
    raise CheckFailed(f"no parent {gw} in {st}")


def _listener_set(statuses, nn: dict) -> dict:
    key = _nn(nn, "ListenerSet")
    if key not in statuses:
        raise CheckFailed(f"no status for {key}")
    return statuses[key]


def _listeners_match(expected: list[dict], actual: list[dict]) -> None:
    """Upstream listenersMatch: same count, by name; supportedKinds a superset of the
    expected (none expected: none allowed); attachedRoutes equal; conditions present."""
    if len(actual) != len(expected):
        raise CheckFailed(f"want {len(expected)} listeners, have {len(actual)}")
    for want in expected:
        lis = _listener({"listeners": actual}, want["Name"])
        have = {(k["group"], k["kind"]) for k in lis["supportedKinds"]}
        exp = {(GATEWAY_GROUP if k["Group"].startswith("<") else k["Group"], k["Kind"])
               for k in want.get("SupportedKinds") or []}
        if (not exp and have) or not exp <= have:
            raise CheckFailed(f"listener {want['Name']} supportedKinds {have} vs expected {exp}")
        for c in want.get("Conditions") or []:
            if not _cond_ok(lis["conditions"], c):
                raise CheckFailed(f"listener {want['Name']} lacks {c}: {lis['conditions']}")
        if "AttachedRoutes" in want and lis["attachedRoutes"] != want["AttachedRoutes"]:
            raise CheckFailed(
                f"listener {want['Name']} attachedRoutes {lis['attachedRoutes']} != "
                f"{want['AttachedRoutes']}")


def _gateway(statuses, nn: dict) -> dict:
    key = _nn(nn, "Gateway")
    if key not in statuses:
        raise CheckFailed(f"no status for {key}")
    return statuses[key]


def _listener(gst: dict, name: str) -> dict:
    for lis in gst.get("listeners", []):
        if lis["name"] == name:
            return lis
    raise CheckFailed(f"no listener {name}")


def _flatten_nns(args: list) -> list[dict]:
    out = []
    for a in args:
        if isinstance(a, dict) and "Name" in a:
            out.append(a)
        elif isinstance(a, list):
            out += [x for x in a if isinstance(x, dict) and "Name" in x]
    return out


def _route_kind(helper: str) -> str | None:
    for k in ROUTE_KINDS:
        if helper.startswith(k) or helper.startswith(f"GatewayAnd{k}s"):
            return k
    return None


def _gen_ok(conds: list[dict], generation: int = 1) -> bool:
    return all(c["observedGeneration"] == generation for c in conds)


def evaluate(check: dict, statuses, objects: dict[ObjectKey, dict]) -> None:
    """Raise CheckFailed if ``check`` does not hold."""
    h, args = check["helper"], check["args"]
    kind = _route_kind(h)
    if h in SKIPPED_HELPERS:
        return
    if h.startswith("GatewayAnd") and h.endswith("MustBeAccepted"):
        gw = args[0]["gateway"]
        gst = _gateway(statuses, gw)
        if not gst["addresses"]:
            raise CheckFailed("gateway has no address")
        for nn in _flatten_nns(args[1:]):
            _, st = _route_status(statuses, nn, kind)
            p = _parent(st, gw)
            if not _cond_ok(p["conditions"], {"Type": "Accepted", "Status": "True"}):
                raise CheckFailed(f"{nn} not accepted by {gw}: {p['conditions']}")
            if p["controllerName"] != "kgw.dev/gateway-controller" or p["parentRef"][
                "group"] != GATEWAY_GROUP:
                raise CheckFailed(f"bad parent entry {p}")
        return
    if h.endswith("MustHaveResolvedRefsConditionsTrue"):
        _, st = _route_status(statuses, args[0], kind)
        if not _cond_ok(_parent(st, args[1])["conditions"],
                        {"Type": "ResolvedRefs", "Status": "True"}):
            raise CheckFailed(f"{args[0]} ResolvedRefs not True: {st}")
        return
    if kind and h.endswith("MustHaveCondition"):
        _, st = _route_status(statuses, args[0], kind)
        p = _parent(st, args[1], None)
        if not _cond_ok(p["conditions"], args[2]):
            raise CheckFailed(f"{args[0]} lacks {args[2]}: {p['conditions']}")
        return
    if kind and h.endswith("MustHaveNoAcceptedParents"):
        try:
            _, st = _route_status(statuses, args[0], kind)
        except CheckFailed:
            return
        for p in st.get("parents", []):
            if _cond_ok(p["conditions"], {"Type": "Accepted", "Status": "True"}):
                raise CheckFailed(f"{args[0]} has an accepted parent {p}")
        return
    if kind and h.endswith("MustHaveParents"):
        _, st = _route_status(statuses, args[0], kind)
        want = args[1]
        if len(want) != len(st.get("parents", [])):
            raise CheckFailed(f"{args[0]}: want {len(want)} parents, have {st}")
        for w in want:
            ref = w["ParentRef"]
            p = _parent(st, {"Name": ref["Name"],
                             "Namespace": ref.get("Namespace") or args[0]["Namespace"]},
                        ref.get("Kind") or "Gateway")
            want_group = ref.get("Group") or GATEWAY_GROUP
            if p["parentRef"]["group"] != (GATEWAY_GROUP if want_group.startswith("<")
                                           else want_group):
                raise CheckFailed(f"group mismatch {p}")
            if ref.get("SectionName") and p["parentRef"].get("sectionName") != ref["SectionName"]:
                raise CheckFailed(f"sectionName mismatch {p}")
            for c in w.get("Conditions", []):
                if not _cond_ok(p["conditions"], c):
                    raise CheckFailed(f"{args[0]} lacks {c}: {p['conditions']}")
        return
    if h.endswith("MustHaveLatestConditions"):
        what = {"GatewayMustHaveLatestConditions": "Gateway",
                "HTTPRouteMustHaveLatestConditions": "HTTPRoute",
                "GatewayClassMustHaveLatestConditions": "GatewayClass"}[h]
        key = _nn(args[0], what)
        st = statuses.get(key)
        if st is None:
            raise CheckFailed(f"no status for {key}")
        g = int(objects[key]["metadata"].get("generation", 1))
        conds = st.get("conditions",
                       []) + [c for p in st.get("parents", []) for c in p["conditions"]]
        if not conds or not _gen_ok(conds, g):
            raise CheckFailed(f"{key} conditions not at generation {g}")
        return
    if h == "GWCMustHaveAcceptedConditionAny":
        st = statuses.get(ObjectKey("GatewayClass", "", args[0]))
        if st is None or not any(c["type"] == "Accepted" for c in st["conditions"]):
            raise CheckFailed(f"GatewayClass {args[0]} has no Accepted condition")
        return
    if h == "GatewayMustHaveCondition":
        gst = _gateway(statuses, args[0])
        if not _cond_ok(gst["conditions"], args[1]):
            raise CheckFailed(f"{args[0]} lacks {args[1]}: {gst['conditions']}")
        return
    if h == "WaitForGatewayAddress":
        if not _gateway(statuses, args[0]["gateway"])["addresses"]:
            raise CheckFailed("no address")
        return
    if h == "GatewayStatusMustHaveListeners":
        _listeners_match(args[1], _gateway(statuses, args[0])["listeners"])
        return
    if h == "GatewayMustHaveAttachedListeners":
        got = _gateway(statuses, args[0]).get("attachedListenerSets") or 0
        if got != args[1]:
            raise CheckFailed(f"{args[0]} attachedListenerSets {got}, want {args[1]}")
        return
    if h == "ListenerSetMustHaveCondition":
        lst = _listener_set(statuses, args[0])
        if not _cond_ok(lst["conditions"], args[1]):
            raise CheckFailed(f"{args[0]} lacks {args[1]}: {lst['conditions']}")
        return
    if h == "ListenerSetListenersMustHaveConditions":
        lst = _listener_set(statuses, args[0])
        for name in args[2:] or [x["name"] for x in lst["listeners"]]:
            lis = _listener(lst, name)
            for c in args[1]:
                if not _cond_ok(lis["conditions"], c):
                    raise CheckFailed(
                        f"listener {name} of {args[0]} lacks {c}: {lis['conditions']}")
        return
    if h == "ListenerSetStatusMustHaveListeners":
        _listeners_match(args[1], _listener_set(statuses, args[0])["listeners"])
        return
    if h == "RoutesAndParentMustBeAccepted":
        gk, res = args[0]["groupKind"], args[0]["resource"]
        for nn in _flatten_nns(args[2:]):
            _, st = _route_status(statuses, nn, None)
            p = _parent(st, res, gk["Kind"])
            if not _cond_ok(p["conditions"],
                            {"Type": "Accepted", "Status": "True", "Reason": "Accepted"}):
                raise CheckFailed(f"{nn} not accepted by {res}: {p['conditions']}")
            if p["controllerName"] != "kgw.dev/gateway-controller" or p["parentRef"]["group"] != gk[
                "Group"]:
                raise CheckFailed(f"bad parent entry {p}")
        parent = _listener_set(statuses, res) if gk["Kind"] == "ListenerSet" else _gateway(statuses,
                                                                                           res)
        for lis in parent["listeners"]:
            for c in REQUIRED_LISTENER_CONDITIONS:
                if not _cond_ok(lis["conditions"], c):
                    raise CheckFailed(
                        f"listener {lis['name']} of {res} lacks {c}: {lis['conditions']}")
        return
    if h == "GatewayListenerMustHaveConditions":
        lis = _listener(_gateway(statuses, args[0]), args[1])
        for c in args[2]:
            if not _cond_ok(lis["conditions"], c):
                raise CheckFailed(f"listener {args[1]} lacks {c}: {lis['conditions']}")
        return
    if h == "GatewayListenersMustHaveConditions":
        lis = _listener(_gateway(statuses, args[0]), args[2])
        for c in args[1]:
            if not _cond_ok(lis["conditions"], c):
                raise CheckFailed(f"listener {args[2]} lacks {c}: {lis['conditions']}")
        return
    if h == "GatewayMustHaveZeroRoutes":
        for lis in _gateway(statuses, args[0])["listeners"]:
            if lis["attachedRoutes"] != 0:
                raise CheckFailed(f"listener {lis['name']} has {lis['attachedRoutes']} routes")
        return
    if h == "BackendTLSPolicyMustHaveAcceptedConditionTrue":
        h, args = "BackendTLSPolicyMustHaveCondition", [args[0], args[1],
                                                        {"Type": "Accepted", "Status": "True"}]
    if h == "BackendTLSPolicyMustHaveCondition":
        key = _nn(args[0], "BackendTLSPolicy")
        st = statuses.get(key)
        if st is None:
            raise CheckFailed(f"no status for {key}")
        for a in st["ancestors"]:
            ref = a["ancestorRef"]
            if ref["name"] == args[1]["Name"] and ref["namespace"] == args[1]["Namespace"]:
                if not _cond_ok(a["conditions"], args[2]):
                    raise CheckFailed(f"{key} lacks {args[2]}: {a['conditions']}")
                return
        raise CheckFailed(f"{key} has no ancestor {args[1]}: {st}")
    raise CheckFailed(f"helper {h} not implemented by the test harness")
