"""ReferenceGrant and listener allowedRoutes, as tables."""

import pytest

from controller.objects import ObjectKey as ObjectKeyR
from controller.store import Store
from controller.translate import refgrant, translate
from controller.translate.listener import parse_selector
from controller.translate.reader import Reader
from tests.translate.worlds import CLASS, gateway, grant, http_route, namespace, service, store_of

GW = "gateway.networking.k8s.io"

GRANT_CASES = [
    # (grants in target ns "b", from (group, kind, ns), to (kind, ns, name), permitted)
    ("same namespace needs no grant", [], (GW, "HTTPRoute", "b"), ("Service", "b", "s"), True),
    ("no grant", [], (GW, "HTTPRoute", "a"), ("Service", "b", "s"), False),
    ("grant for all Services", [grant("g", "b", "HTTPRoute", "a")], (GW, "HTTPRoute", "a"),
     ("Service", "b", "s"), True),
    ("grant for one Service", [grant("g", "b", "HTTPRoute", "a", to_name="s")],
     (GW, "HTTPRoute", "a"), ("Service", "b", "s"), True),
    ("grant for another Service", [grant("g", "b", "HTTPRoute", "a", to_name="t")],
     (GW, "HTTPRoute", "a"), ("Service", "b", "s"), False),
    ("grant from another kind", [grant("g", "b", "TCPRoute", "a")], (GW, "HTTPRoute", "a"),
     ("Service", "b", "s"), False),
    ("grant from another namespace", [grant("g", "b", "HTTPRoute", "c")], (GW, "HTTPRoute", "a"),
     ("Service", "b", "s"), False),
    ("grant to another kind", [grant("g", "b", "HTTPRoute", "a", to_kind="Secret")],
     (GW, "HTTPRoute", "a"), ("Service", "b", "s"), False),
    ("grant in the wrong namespace", [grant("g", "a", "HTTPRoute", "a")], (GW, "HTTPRoute", "a"),
     ("Service", "b", "s"), False),
    ("grant from another group", [grant("g", "b", "HTTPRoute", "a", from_group="example.com")],
     (GW, "HTTPRoute", "a"), ("Service", "b", "s"), False),
    ("Gateway to Secret", [grant("g", "b", "Gateway", "a", to_kind="Secret")], (GW, "Gateway", "a"),
     ("Secret", "b", "s"), True),
]


@pytest.mark.parametrize("what,grants,frm,to,want", GRANT_CASES, ids=[c[0] for c in GRANT_CASES])
def test_reference_grant(what, grants, frm, to, want):
    reader = Reader(store_of(grants) if grants else Store())
    assert refgrant.permitted(reader, frm[0], frm[1], frm[2], "", to[0], to[1], to[2]) is want


SELECTORS = [
    ({"matchLabels": {"team": "a"}}, {"team": "a"}, True),
    ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
    ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}, {"team": "b"},
     True),
    ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {"team": "b"},
     True),
    ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, {}, True),
    ({"matchExpressions": [{"key": "team", "operator": "Bogus"}]}, {"team": "a"}, False),
    ({"matchLabels": {"team": "a"},
      "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
     {"team": "a", "env": "dev"}, False),
    ({}, {"anything": "x"}, True),
]


@pytest.mark.parametrize("sel,labels,want", SELECTORS)
def test_label_selector(sel, labels, want):
    assert parse_selector(sel).matches(labels) is want


ALLOWED = [
    # (allowedRoutes, route namespace, accepted)
    (None, "default", True),
    (None, "other", False),
    ({"namespaces": {"from": "Same"}}, "other", False),
    ({"namespaces": {"from": "All"}}, "other", True),
    ({"namespaces": {"from": "Selector", "selector": {"matchLabels": {"env": "prod"}}}}, "other",
     True),
    ({"namespaces": {"from": "Selector", "selector": {"matchLabels": {"env": "prod"}}}}, "dev",
     False),
    ({"namespaces": {"from": "Selector", "selector": {
        "matchLabels": {"kubernetes.io/metadata.name": "dev"}}}}, "dev", True),
    ({"namespaces": {"from": "None"}}, "default", False),
    ({"namespaces": {"from": "All"}, "kinds": [{"kind": "GRPCRoute"}]}, "default", False),
    ({"namespaces": {"from": "All"}, "kinds": [{"group": GW, "kind": "HTTPRoute"}]}, "other", True),
]


@pytest.mark.parametrize("allowed,route_ns,accepted", ALLOWED)
def test_allowed_routes(allowed, route_ns, accepted):
    lis = {"name": "http", "port": 80, "protocol": "HTTP"}
    if allowed is not None:
        lis["allowedRoutes"] = allowed
    objs = [CLASS, gateway("gw", [lis]), namespace("default"), namespace("other", env="prod"),
            namespace("dev", env="dev"), service("svc", route_ns),
            http_route("r", [{"name": "gw", "namespace": "default"}], ns=route_ns)]
    t = translate(store_of(objs))
    parent = t.statuses[ObjectKeyR("HTTPRoute", route_ns, "r")]["parents"][0]
    acc = next(c for c in parent["conditions"] if c["type"] == "Accepted")
    assert (acc["status"] == "True") is accepted
    if not accepted:
        assert acc["reason"] == "NotAllowedByListeners"
    gw_status = t.statuses[ObjectKeyR("Gateway", "default", "gw")]
    assert gw_status["listeners"][0]["attachedRoutes"] == (1 if accepted else 0)

