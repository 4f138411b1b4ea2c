"""The HTTPRoute/GRPCRoute hostname rule (GRPCRouteSpec.Hostnames): on a listener, an
HTTPRoute and a GRPCRoute whose hostnames intersect are not both accepted; the older one
is (then the first by namespace/name), the other is not served there."""

from __future__ import annotations

import pytest

from controller.objects import ObjectKey
from controller.source import Event, EventType
from controller.translate import Translator, translate
from tests.translate.worlds import CLASS, gateway, http_route, norm, service, store_of

HTTP = {"name": "http", "port": 80, "protocol": "HTTP"}
OTHER = {"name": "other", "port": 80, "protocol": "HTTP", "hostname": "other.example.com"}
P = [{"name": "gw"}]


def _route(kind: str, name: str, ts: str, hostnames: list[str] | None = None,
           parents: list[dict] | None = None, ns: str = "default") -> dict:
    rules = [{"backendRefs": [{"name": "svc", "port": 80}]}]
    return http_route(name, parents or P, rules, hostnames, ns=ns, kind=kind,
                      creationTimestamp=f"2026-01-01T00:00:{ts}Z")


def _accepted(t, kind: str, name: str, ns: str = "default") -> tuple[str, str]:
    parent = t.statuses[ObjectKey(kind, ns, name)]["parents"][0]
    c = next(c for c in parent["conditions"] if c["type"] == "Accepted")
    return c["status"], c["reason"]


def _served(t, hostname: str) -> set[str]:
    """The route names (rule.route) the L7 config serves on ``hostname``."""
    return {r.rule.route for lis in t.l7.listeners for vh in lis.virtual_hosts
            if vh.hostname == hostname for r in vh.routes}


# (HTTPRoute's timestamp and hostnames, GRPCRoute's, which one wins or "both")
CASES = [
    ("01", ["a.example.com"], "02", ["a.example.com"], "HTTPRoute"),
    ("02", ["a.example.com"], "01", ["a.example.com"], "GRPCRoute"),
    ("01", None, "02", ["a.example.com"], "HTTPRoute"),  # (no hostnames: every name)
    ("02", ["*.example.com"], "01", ["a.example.com"], "GRPCRoute"),  # (wildcards intersect)
    ("01", ["a.example.com"], "02", ["b.example.com"], "both"),  # (no shared name)
    ("01", ["a.example.com"], "01", ["a.example.com"], "GRPCRoute"),  # (same age: by name)
]


@pytest.mark.parametrize("h_ts,h_hosts,g_ts,g_hosts,winner", CASES)
def test_one_of_an_httproute_and_a_grpcroute_sharing_a_hostname_is_accepted(
        h_ts, h_hosts, g_ts, g_hosts, winner) -> None:
    # (names: "default/a-grpc" sorts before "default/b-http" when the ages are equal)
    objs = [CLASS, gateway("gw", [HTTP]), service("svc"),
            _route("HTTPRoute", "b-http", h_ts, h_hosts),
            _route("GRPCRoute", "a-grpc", g_ts, g_hosts)]
    t = translate(store_of(objs))
    http, grpc = _accepted(t, "HTTPRoute", "b-http"), _accepted(t, "GRPCRoute", "a-grpc")
    if winner == "both":
        assert http == grpc == ("True", "Accepted")
        return
    won, lost = (http, grpc) if winner == "HTTPRoute" else (grpc, http)
    assert won == ("True", "Accepted")
    assert lost == ("False", "HostnameConflict")
    served = set().union(*(_served(t, h) for h in ("a.example.com", "*.example.com", "*")))
    assert ("default/b-http" in served, "default/a-grpc" in served) == (
        winner == "HTTPRoute", winner == "GRPCRoute")


def test_the_loser_stays_accepted_and_served_on_a_listener_without_the_conflict() -> None:
    """A parentRef reaching two listeners, one with the conflict: the route is served on
    the other (its status says so: Accepted), not on the conflicting one."""
    objs = [CLASS, gateway("gw", [HTTP, OTHER]), service("svc"),
            _route("HTTPRoute", "h", "01", ["a.example.com", "other.example.com"]),
            _route("GRPCRoute", "g", "02", ["a.example.com", "other.example.com"],
                   parents=[{"name": "gw", "sectionName": "other"}, {"name": "gw"}])]
    # ("other" only hears other.example.com, where h, older, is too: g loses on both
    # listeners of its second parentRef and on its first)
    t = translate(store_of(objs))
    assert _accepted(t, "GRPCRoute", "g")[0] == "False"
    objs[-2] = _route("HTTPRoute", "h", "01", ["a.example.com"])
    t = translate(store_of(objs))
    parents = t.statuses[ObjectKey("GRPCRoute", "default", "g")]["parents"]
    by_section = {p["parentRef"].get("sectionName"): next(
        c["status"] for c in p["conditions"] if c["type"] == "Accepted") for p in parents}
    assert by_section == {"other": "True", None: "True"}
    assert "default/g" in _served(t, "other.example.com")
    assert "default/g" not in _served(t, "a.example.com")
    assert "default/h" in _served(t, "a.example.com")


def test_incremental_updates_apply_and_lift_the_rule() -> None:
    """Deleting the winner lets the other be accepted; adding an older route of the other
    kind takes the listener from the one accepted before."""
    objs = [CLASS, gateway("gw", [HTTP]), service("svc"),
            _route("HTTPRoute", "h", "02", ["a.example.com"])]
    store = store_of(objs)
    tr = Translator()
    t = tr.update(store, set())
    assert _accepted(t, "HTTPRoute", "h") == ("True", "Accepted")
    g = norm(_route("GRPCRoute", "g", "01", ["a.example.com"]))
    store.apply([Event(EventType.ADDED, ObjectKey.of(g), g, "2", 1)])
    t = tr.update(store, {ObjectKey.of(g)})
    assert _accepted(t, "HTTPRoute", "h") == ("False", "HostnameConflict")
    assert _accepted(t, "GRPCRoute", "g") == ("True", "Accepted")
    assert _served(t, "a.example.com") == {"default/g"}
    assert t.statuses == translate(store).statuses
    store.apply([Event(EventType.DELETED, ObjectKey.of(g), g, "3", 1)])
    t = tr.update(store, {ObjectKey.of(g)})
    assert _accepted(t, "HTTPRoute", "h") == ("True", "Accepted")
    assert _served(t, "a.example.com") == {"default/h"}
    assert t.statuses == translate(store).statuses
