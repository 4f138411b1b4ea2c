"""ListenerSet (GEP-1713): attachment, precedence and conflicts, status, route parentRefs,
data-plane output. One table per rule; the conformance suite's own ListenerSet cases
are replayed by test_conformance_status.py and test_conformance_routing.py."""

from __future__ import annotations

import pytest

from controller.objects import ObjectKey
from controller.translate import Options, Translator, translate
from controller.translate.listenerset import parent_of
from tests.translate.tlsgen import tls_secret
from tests.translate.worlds import (
    CLASS, gateway, grant, http_route, listener_set, namespace, service, slice_, store_of,
)

GW = "gateway.networking.k8s.io"
GW_KEY = ObjectKey("Gateway", "default", "gw")


def http(name: str, hostname: str | None = None, port: int = 80, frm: str = "All", **extra) -> dict:
    lis: dict = {"name": name, "port": port, "protocol": "HTTP",
                 "allowedRoutes": {"namespaces": {"from": frm}}, **extra}
    if hostname:
        lis["hostname"] = hostname
    return lis


def gw(allowed: dict | None = None, listeners: list[dict] | None = None, **spec) -> dict:
    if allowed is not None:
        spec["allowedListeners"] = {"namespaces": allowed}
    return gateway("gw", listeners or [http("web", "gw.example.com")], **spec)


def base(*objs: dict) -> list[dict]:
    return [CLASS, namespace("default"), namespace("team-a", team="a"),
            namespace("team-b", team="b"), service("svc"), slice_("svc", ["10.0.0.1"]), *objs]


def ls_status(t, name: str, ns: str = "default") -> dict:
    return t.statuses[ObjectKey("ListenerSet", ns, name)]


def cond(conds: list[dict], type_: str) -> tuple[str, str]:
    c = next(x for x in conds if x["type"] == type_)
    return c["status"], c["reason"]


def listener(st: dict, name: str) -> dict:
    return next(x for x in st["listeners"] if x["name"] == name)


def parent(t, route: str, kind: str, name: str, ns: str = "default") -> dict:
    st = t.statuses[ObjectKey("HTTPRoute", ns, route)]
    return next(p for p in st["parents"] if p["parentRef"]["kind"] == kind
                and p["parentRef"]["name"] == name)


# -- allowedListeners ---------------------------------------------------------------------------

ALLOWED = [
    # (what, Gateway allowedListeners.namespaces or None, ListenerSet namespace, Accepted reason)
    ("default is None", None, "default", "NotAllowed"),
    ("None", {"from": "None"}, "default", "NotAllowed"),
    ("Same, same namespace", {"from": "Same"}, "default", "Accepted"),
    ("Same, other namespace", {"from": "Same"}, "team-a", "NotAllowed"),
    ("All", {"from": "All"}, "team-b", "Accepted"),
    ("Selector matches", {"from": "Selector", "selector": {"matchLabels": {"team": "a"}}}, "team-a",
     "Accepted"),
    ("Selector does not match", {"from": "Selector", "selector": {"matchLabels": {"team": "a"}}},
     "team-b", "NotAllowed"),
    ("Selector on the name label", {"from": "Selector", "selector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-b"]}]}}, "team-b",
     "Accepted"),
    ("Selector, namespace object missing",
     {"from": "Selector", "selector": {"matchLabels": {"team": "a"}}}, "nowhere", "NotAllowed"),
]


@pytest.mark.parametrize("what,allowed,ns,reason", ALLOWED, ids=[c[0] for c in ALLOWED])
def test_allowed_listeners(what: str, allowed: dict | None, ns: str, reason: str) -> None:
    t = translate(
        store_of(base(gw(allowed), listener_set("ls", "gw", [http("a", "a.example.com")], ns=ns))))
    st = ls_status(t, "ls", ns)
    ok = reason == "Accepted"
    assert cond(st["conditions"], "Accepted") == ("True" if ok else "False", reason)
    assert cond(st["conditions"], "Programmed") == ("True", "Programmed") if ok else ("False",
                                                                                      "NotAllowed")
    assert [x["name"] for x in st["listeners"]] == (["a"] if ok else [])
    gst = t.statuses[GW_KEY]
    assert gst.get("attachedListenerSets") == (1 if ok else None
                                               if allowed in (None, {"from": "None"}) else 0)
    # the Gateway lists only its own listeners; served hostnames follow acceptance
    assert [x["name"] for x in gst["listeners"]] == ["web"]
    hosts = {vh.hostname for lis in t.l7.listeners for vh in lis.virtual_hosts}
    assert ("a.example.com" in hosts) is ok


def test_listener_set_of_a_foreign_or_missing_gateway_gets_no_status() -> None:
    other = gateway("other", [http("web")], gatewayClassName="someone-else")
    t = translate(store_of(base(gw({"from": "All"}), other,
                                listener_set("to-other", "other", [http("a")]),
                                listener_set("to-missing", "missing", [http("b")]))))
    assert ObjectKey("ListenerSet", "default", "to-other") not in t.statuses
    assert ObjectKey("ListenerSet", "default", "to-missing") not in t.statuses


@pytest.mark.parametrize("ref,want", [
    ({"name": "gw"}, ObjectKey("Gateway", "team-a", "gw")),  # namespace defaults to the set's
    ({"name": "gw", "namespace": "default"}, ObjectKey("Gateway", "default", "gw")),
    ({"name": "gw", "group": GW, "kind": "Gateway"}, ObjectKey("Gateway", "team-a", "gw")),
    ({"name": "gw", "kind": "Service", "group": ""}, None),
    ({"name": "gw", "group": "example.com"}, None),
    ({}, None),
])
def test_parent_ref(ref: dict, want: ObjectKey | None) -> None:
    ls = {"kind": "ListenerSet", "metadata": {"name": "ls", "namespace": "team-a"},
          "spec": {"parentRef": ref}}
    assert parent_of(ls) == want


def test_gateway_not_accepted() -> None:
    bad = gw({"from": "All"}, infrastructure={
        "parametersRef": {"group": "example.com", "kind": "Thing", "name": "x"}})
    t = translate(store_of(base(bad, listener_set("ls", "gw", [http("a", "a.example.com")]),
                                http_route("r",
                                           [{"kind": "ListenerSet", "group": GW, "name": "ls"}]))))
    st = ls_status(t, "ls")
    assert cond(st["conditions"], "Accepted") == ("False", "ParentNotAccepted")
    assert cond(st["conditions"], "Programmed") == ("False", "ParentNotProgrammed")
    assert cond(parent(t, "r", "ListenerSet", "ls")["conditions"],
                "Accepted") == ("False", "NoMatchingParent")


def test_gateway_not_programmed() -> None:
    opts = Options(local_addresses=("127.0.0.1",))
    g = gw({"from": "All"}, addresses=[{"type": "IPAddress", "value": "192.0.2.1"}])
    t = translate(store_of(base(g, listener_set("ls", "gw", [http("a", "a.example.com")]))), opts)
    st = ls_status(t, "ls")
    assert cond(st["conditions"], "Accepted") == ("True", "Accepted")
    assert cond(st["conditions"], "Programmed") == ("False", "ParentNotProgrammed")


# -- precedence and conflicts ----------------------------------------------------------------------

def test_gateway_listener_wins_a_conflict() -> None:
    tcp = {"name": "tcp", "port": 80, "protocol": "TCP"}
    t = translate(store_of(base(
        gw({"from": "Same"}),
        listener_set("ls", "gw",
                     [http("same-host", "gw.example.com"), tcp, http("ok", "ok.example.com")]))))
    gst = t.statuses[GW_KEY]
    assert cond(listener(gst, "web")["conditions"], "Conflicted") == ("False", "NoConflicts")
    st = ls_status(t, "ls")
    for name, reason in (("same-host", "HostnameConflict"), ("tcp", "ProtocolConflict")):
        lis = listener(st, name)
        assert cond(lis["conditions"], "Accepted") == ("False", reason)
        assert cond(lis["conditions"], "Programmed") == ("False", reason)
        assert cond(lis["conditions"], "Conflicted") == ("True", reason)
        assert lis["supportedKinds"] == []
    assert cond(listener(st, "ok")["conditions"], "Accepted") == ("True", "Accepted")
    assert cond(st["conditions"], "Accepted") == ("True", "ListenersNotValid")
    assert cond(st["conditions"], "Programmed") == ("True", "Programmed")
    assert not t.l4.frontends  # the conflicted TCP listener is not served


@pytest.mark.parametrize("ts_first,ts_second,winner", [
    ("2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z", "b-first"),   # older wins, whatever its name
    ("2026-01-01T00:00:02Z", "2026-01-01T00:00:01Z", "a-second"),
    ("2026-01-01T00:00:01Z", "2026-01-01T00:00:01Z", "a-second"),  # tie: namespace/name order
])
def test_older_listener_set_wins(ts_first: str, ts_second: str, winner: str) -> None:
    t = translate(store_of(base(
        gw({"from": "All"}),
        listener_set("b-first", "gw", [http("x", "x.example.com")], creationTimestamp=ts_first),
        listener_set("a-second", "gw", [http("x", "x.example.com")], creationTimestamp=ts_second))))
    loser = "a-second" if winner == "b-first" else "b-first"
    assert cond(listener(ls_status(t, winner), "x")["conditions"], "Accepted") == ("True",
                                                                                   "Accepted")
    assert cond(listener(ls_status(t, loser), "x")["conditions"],
                "Conflicted") == ("True", "HostnameConflict")
    assert cond(ls_status(t, loser)["conditions"], "Accepted") == ("False", "ListenersNotValid")
    assert t.statuses[GW_KEY]["attachedListenerSets"] == 1


def test_conflict_within_one_set_keeps_the_first() -> None:
    t = translate(store_of(base(gw({"from": "All"}), listener_set("ls", "gw", [
        http("first", port=8080), {"name": "second", "port": 8080, "protocol": "TCP"}]))))
    st = ls_status(t, "ls")
    assert cond(listener(st, "first")["conditions"], "Accepted") == ("True", "Accepted")
    assert cond(listener(st, "second")["conditions"], "Conflicted") == ("True", "ProtocolConflict")


def test_same_listener_name_in_gateway_and_set_is_fine() -> None:
    """Names need only be unique within their object: routes count per object."""
    t = translate(store_of(base(
        gw({"from": "All"}), listener_set("ls", "gw", [http("web", "ls.example.com")]),
        http_route("to-gw", [{"name": "gw", "sectionName": "web"}]),
        http_route("to-ls",
                   [{"kind": "ListenerSet", "group": GW, "name": "ls", "sectionName": "web"}]),
        http_route("to-ls-2", [{"kind": "ListenerSet", "group": GW, "name": "ls"}]))))
    assert listener(t.statuses[GW_KEY], "web")["attachedRoutes"] == 1
    assert listener(ls_status(t, "ls"), "web")["attachedRoutes"] == 2


def test_port_taken_by_another_gateway() -> None:
    other = gateway("older", [{"name": "tcp", "port": 9000, "protocol": "TCP"}],
                    creationTimestamp="2020-01-01T00:00:00Z")
    t = translate(store_of(
        base(other, gw({"from": "All"}), listener_set("ls", "gw", [http("h", port=9000)]))))
    st = ls_status(t, "ls")
    assert cond(listener(st, "h")["conditions"], "Accepted") == ("False", "PortUnavailable")
    assert cond(st["conditions"], "Accepted") == ("False", "ListenersNotValid")
    assert t.statuses[GW_KEY]["attachedListenerSets"] == 0


# -- listeners resolved as the set's own ---------------------------------------------------------

@pytest.mark.parametrize("what,grants,want", [
    ("no grant", [], ("False", "RefNotPermitted")),
    ("grant from ListenerSet", [grant("g", "certs", "ListenerSet", "team-a", to_kind="Secret")],
     ("True", "ResolvedRefs")),
    ("a grant to the Gateway does not extend to the set",
     [grant("g", "certs", "Gateway", "default", to_kind="Secret")], ("False", "RefNotPermitted")),
])
def test_certificate_reference_grant(what: str, grants: list[dict], want: tuple[str, str]) -> None:
    https = {"name": "s", "port": 443, "protocol": "HTTPS", "hostname": "s.example.com",
             "tls": {"certificateRefs": [{"name": "cert", "namespace": "certs"}]}}
    t = translate(store_of(base(namespace("certs"), tls_secret("cert", "certs"), *grants,
                                gw({"from": "All"}),
                                listener_set("ls", "gw", [https], ns="team-a"))))
    st = ls_status(t, "ls", "team-a")
    assert cond(listener(st, "s")["conditions"], "ResolvedRefs") == want
    assert cond(st["conditions"], "Accepted") == ("True", "Accepted") if want[0] == "True" else (
        "False", "ListenersNotValid")
    assert any(lis.certificates for lis in t.l7.listeners) is (want[0] == "True")


def test_certificate_in_the_sets_namespace_needs_no_grant() -> None:
    https = {"name": "s", "port": 443, "protocol": "HTTPS",
             "tls": {"certificateRefs": [{"name": "cert"}]}}
    t = translate(store_of(base(tls_secret("cert", "team-a"), gw({"from": "All"}),
                                listener_set("ls", "gw", [https], ns="team-a"))))
    assert cond(listener(ls_status(t, "ls", "team-a"), "s")["conditions"],
                "ResolvedRefs") == ("True", "ResolvedRefs")


@pytest.mark.parametrize("route_ns,accepted", [("team-a", True), ("default", False)])
def test_allowed_routes_same_means_the_sets_namespace(route_ns: str, accepted: bool) -> None:
    t = translate(store_of(base(
        gw({"from": "All"}),
        listener_set("ls", "gw", [http("a", "a.example.com", frm="Same")], ns="team-a"),
        service("svc", "team-a"),
        http_route("r", [{"kind": "ListenerSet", "group": GW, "name": "ls", "namespace": "team-a"}],
                   ns=route_ns))))
    p = parent(t, "r", "ListenerSet", "ls", route_ns)
    assert cond(p["conditions"], "Accepted") == (("True", "Accepted") if accepted else
                                                 ("False", "NotAllowedByListeners"))
    assert listener(ls_status(t, "ls", "team-a"), "a")["attachedRoutes"] == (1 if accepted else 0)


def test_supported_kinds_and_invalid_route_kinds() -> None:
    tls = {"name": "t", "port": 443, "protocol": "TLS", "tls": {"mode": "Passthrough"},
           "allowedRoutes": {"namespaces": {"from": "All"}, "kinds": [{"kind": "HTTPRoute"}]}}
    t = translate(store_of(base(gw({"from": "All"}), listener_set("ls", "gw", [tls, http("h")]))))
    st = ls_status(t, "ls")
    assert cond(listener(st, "t")["conditions"], "ResolvedRefs") == ("False", "InvalidRouteKinds")
    assert listener(st, "t")["supportedKinds"] == []
    # no GRPCRoute: no HTTP/2
    assert listener(st, "h")["supportedKinds"] == [{"group": GW, "kind": "HTTPRoute"}]


# -- routes ----------------------------------------------------------------------------------------

ROUTES = [
    # (what, parentRef, Accepted (status, reason), hostnames served)
    ("the whole set", {"kind": "ListenerSet", "group": GW, "name": "ls"}, ("True", "Accepted"),
     {"a.example.com", "b.example.com"}),
    ("one listener of the set",
     {"kind": "ListenerSet", "group": GW, "name": "ls", "sectionName": "b"},
     ("True", "Accepted"), {"b.example.com"}),
    ("a port of the set", {"kind": "ListenerSet", "group": GW, "name": "ls", "port": 80},
     ("True", "Accepted"), {"a.example.com", "b.example.com"}),
    ("no such listener in the set",
     {"kind": "ListenerSet", "group": GW, "name": "ls", "sectionName": "web"},
     ("False", "NoMatchingParent"), set()),
    ("the Gateway reaches only its own", {"name": "gw"}, ("True", "Accepted"), {"gw.example.com"}),
    ("the Gateway cannot name a set's listener", {"name": "gw", "sectionName": "a"},
     ("False", "NoMatchingParent"), set()),
    ("a set that is not allowed",
     {"kind": "ListenerSet", "group": GW, "name": "refused", "namespace": "team-a"},
     ("False", "NoMatchingParent"), set()),
]


@pytest.mark.parametrize("what,ref,want,hosts", ROUTES, ids=[c[0] for c in ROUTES])
def test_route_parent_ref(what: str, ref: dict, want: tuple[str, str], hosts: set[str]) -> None:
    t = translate(store_of(base(
        gw({"from": "Same"}),
        listener_set("ls", "gw", [http("a", "a.example.com"), http("b", "b.example.com")]),
        listener_set("refused", "gw", [http("c", "c.example.com")], ns="team-a"),
        http_route("r", [{"namespace": "default", **ref}]))))
    st = t.statuses[ObjectKey("HTTPRoute", "default", "r")]
    assert len(st["parents"]) == 1
    p = st["parents"][0]
    assert p["parentRef"]["kind"] == ref.get("kind", "Gateway") and p["parentRef"]["group"] == GW
    assert cond(p["conditions"], "Accepted") == want
    served = {vh.hostname for lis in t.l7.listeners for vh in lis.virtual_hosts if vh.routes}
    assert served == hosts


def test_route_to_a_missing_set_gets_no_status() -> None:
    t = translate(store_of(base(gw({"from": "All"}),
                                http_route(
                                    "r", [{"kind": "ListenerSet", "group": GW, "name": "nope"}]))))
    assert ObjectKey("HTTPRoute", "default", "r") not in t.statuses


def test_route_with_gateway_and_set_parents() -> None:
    t = translate(store_of(base(
        gw({"from": "Same"}), listener_set("ls", "gw", [http("a", "a.example.com")]),
        http_route("r", [{"name": "gw"}, {"kind": "ListenerSet", "group": GW, "name": "ls"}]))))
    st = t.statuses[ObjectKey("HTTPRoute", "default", "r")]
    assert sorted(p["parentRef"]["kind"] for p in st["parents"]) == ["Gateway", "ListenerSet"]
    assert all(cond(p["conditions"], "Accepted") == ("True", "Accepted") for p in st["parents"])
    served = {vh.hostname for lis in t.l7.listeners for vh in lis.virtual_hosts if vh.routes}
    assert served == {"gw.example.com", "a.example.com"}
    assert listener(t.statuses[GW_KEY], "web")["attachedRoutes"] == 1
    assert listener(ls_status(t, "ls"), "a")["attachedRoutes"] == 1


def test_tcp_listener_of_a_set_is_an_l4_frontend() -> None:
    tcp = {"name": "tcp", "port": 9000, "protocol": "TCP",
           "allowedRoutes": {"namespaces": {"from": "All"}}}
    t = translate(store_of(base(
        gw({"from": "All"}), listener_set("ls", "gw", [tcp]),
        http_route("t", [{"kind": "ListenerSet", "group": GW, "name": "ls"}],
                   [{"backendRefs": [{"name": "svc", "port": 80}]}], kind="TCPRoute"))))
    [fe] = t.l4.frontends
    assert (fe.port, fe.protocol, fe.name) == (9000, "TCP", "default/ls/tcp")
    assert fe.backends and listener(ls_status(t, "ls"), "tcp")["attachedRoutes"] == 1


def test_status_generation_is_the_sets() -> None:
    t = translate(
        store_of(base(gw({"from": "All"}), listener_set("ls", "gw", [http("a")], generation=7))))
    st = ls_status(t, "ls")
    assert {c["observedGeneration"] for c in st["conditions"]} == {7}
    assert {c["observedGeneration"] for lis in st["listeners"] for c in lis["conditions"]} == {7}


# -- incremental -----------------------------------------------------------------------------------

def test_incremental_follows_set_and_gateway_changes() -> None:
    """A route naming a ListenerSet is redone when the set appears, and when its Gateway
    stops allowing it (the set's own object unchanged)."""
    from controller.source import Event, EventType
    from tests.translate.worlds import norm

    route = http_route("r", [{"kind": "ListenerSet", "group": GW, "name": "ls"}])
    store = store_of(base(gw({"from": "All"}), route))
    tr = Translator()
    tr.update(store, set())
    steps = [
        norm(listener_set("ls", "gw", [http("a", "a.example.com")])),
        norm(gw({"from": "None"})),
        norm(gw({"from": "Same"})),
        norm(listener_set("ls", "gw", [http("b", "b.example.com")])),
    ]
    for obj in steps:
        changed = store.apply([Event(EventType.MODIFIED, ObjectKey.of(obj), obj, "x", 1)])
        got = tr.update(store, changed)
        want = translate(store)
        assert dict(got.statuses) == dict(want.statuses) and got.l7 == want.l7
    assert cond(parent(got, "r", "ListenerSet", "ls")["conditions"], "Accepted") == ("True",
                                                                                     "Accepted")
