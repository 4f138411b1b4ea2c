"""Gateway API match precedence (precedence.py), as a table, and end to end."""

import pytest

from controller.translate import translate
from controller.translate.precedence import sort_key
from kgw_l7.config import HeaderMatch, PathMatch, QueryParamMatch, RouteMatch
from tests.translate.worlds import CLASS, gateway, http_route, store_of

H = (HeaderMatch("a", "1"),)
HH = (HeaderMatch("a", "1"), HeaderMatch("b", "2"))
Q = (QueryParamMatch("q", "1"),)

# (higher-precedence match + route identity, lower one), each (match, created, ns, name, rule, match
# idx)
BEATS = [
    ("exact beats longer prefix", (RouteMatch(PathMatch("Exact", "/a")),),
     (RouteMatch(PathMatch("PathPrefix", "/a/b/c")),)),
    ("longer prefix wins", (RouteMatch(PathMatch("PathPrefix", "/a/b")),),
     (RouteMatch(PathMatch("PathPrefix", "/a")),)),
    ("regex between exact and prefix", (RouteMatch(PathMatch("RegularExpression", "/a.*")),),
     (RouteMatch(PathMatch("PathPrefix", "/a/b/c/d")),)),
    ("method beats headers", (RouteMatch(method="GET"),), (RouteMatch(headers=HH),)),
    ("more headers win", (RouteMatch(headers=HH),), (RouteMatch(headers=H),)),
    ("headers beat query params", (RouteMatch(headers=H),), (RouteMatch(query_params=Q),)),
    ("query params beat nothing", (RouteMatch(query_params=Q),), (RouteMatch(),)),
    ("path beats method", (RouteMatch(PathMatch("PathPrefix", "/ab")),),
     (RouteMatch(PathMatch("PathPrefix", "/a"), method="GET"),)),
]


@pytest.mark.parametrize("what,hi,lo", BEATS, ids=[b[0] for b in BEATS])
def test_match_precedence(what, hi, lo):
    assert sort_key(hi[0], "t", "ns", "r", 0, 0) < sort_key(lo[0], "t", "ns", "r", 0, 0)


def test_tie_breakers_age_then_name_then_rule_then_match():
    m = RouteMatch()
    assert sort_key(m, "2026-01-01T00:00:00Z", "z", "z", 5, 5) < sort_key(m, "2026-01-02T00:00:00Z",
                                                                          "a", "a", 0, 0)
    assert sort_key(m, "t", "a", "z", 5, 5) < sort_key(m, "t", "b", "a", 0, 0)
    assert sort_key(m, "t", "a", "a", 5, 5) < sort_key(m, "t", "a", "b", 0, 0)
    assert sort_key(m, "t", "a", "a", 0, 5) < sort_key(m, "t", "a", "a", 1, 0)
    assert sort_key(m, "t", "a", "a", 0, 0) < sort_key(m, "t", "a", "a", 0, 1)


def test_routes_in_a_virtual_host_are_sorted_across_routes():
    gw = gateway("gw", [{"name": "http", "port": 80, "protocol": "HTTP"}])
    p = [{"name": "gw"}]
    objs = [
        CLASS, gw,
        http_route("old", p, [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}],
                   creationTimestamp="2026-01-01T00:00:00Z"),
        http_route("new", p, [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]},
                              {"matches": [{"path": {"type": "Exact", "value": "/x"}},
                                           {"path": {"value": "/x/y"}}]}],
                   creationTimestamp="2026-01-02T00:00:00Z"),
        http_route("hdr", p, [{"matches": [{"headers": [{"name": "v", "value": "2"}]}]}],
                   creationTimestamp="2026-01-03T00:00:00Z"),
    ]
    vh = translate(store_of(objs)).l7.listeners[0].virtual_hosts[0]
    order = [(r.rule.name, r.match.path.type, r.match.path.value) for r in vh.routes]
    assert order == [
        ("default/new/1", "Exact", "/x"),
        ("default/new/1", "PathPrefix", "/x/y"),
        ("default/hdr/0", "PathPrefix", "/"),
        ("default/old/0", "PathPrefix", "/"),
        ("default/new/0", "PathPrefix", "/"),
    ]


def test_more_specific_hostname_first_then_less_specific_routes_still_apply():
    gw = gateway("gw", [{"name": "http", "port": 80, "protocol": "HTTP"}])
    p = [{"name": "gw"}]
    rule = lambda v: [{"matches": [{"path": {"type": "PathPrefix", "value": v}}]}]  # noqa: E731
    objs = [CLASS, gw,
            http_route("any", p, rule("/a/b/c")),
            http_route("wild", p, rule("/"), hostnames=["*.example.com"]),
            http_route("wider", p, rule("/x"), hostnames=["*.com"]),
            http_route("exact", p, rule("/a"), hostnames=["a.example.com"])]
    vhosts = {vh.hostname: [r.rule.route for r in vh.routes]
              for vh in translate(store_of(objs)).l7.listeners[0].virtual_hosts}
    assert vhosts == {
        "*": ["default/any"],
        "*.com": ["default/wider", "default/any"],
        "*.example.com": ["default/wild", "default/wider", "default/any"],
        "a.example.com": ["default/exact", "default/wild", "default/wider", "default/any"],
    }
