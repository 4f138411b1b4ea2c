"""SecurityPolicy ``extAuth``: validated like the ExternalAuth filter plus kgw's fields,
resolved per route rule into ``Filters.ext_auth`` (the route's own filter wins), an
unusable service answering 500 with the route saying why."""

from __future__ import annotations

from typing import Any

from controller.objects import ObjectKey
from kgw_l7.config import Rule
from tests.policy.worlds import ancestors, base, ref, run, tp
from tests.translate.worlds import service, slice_

AUTHZ = [service("authz", ports=[{"name": "grpc", "port": 9000}]),
         slice_("authz", ["10.0.0.9"], port=9001, port_name="grpc")]
EXT = {"protocol": "GRPC", "backendRef": {"name": "authz", "port": 9000}, "grpc": {},
       "timeout": "500ms", "failOpen": False, "statusOnError": 503}


def sp(name: str, refs: list[dict], **sections: Any) -> dict:
    return tp(name, refs, kind="SecurityPolicy", **sections)


def rules(t: Any, port: int = 80) -> dict[str, Rule]:
    lis = next(x for x in t.l7.listeners if x.port == port)
    return {r.rule.name: r.rule for vh in lis.virtual_hosts for r in vh.routes}


def test_on_a_gateway_every_rule_asks_the_service() -> None:
    t = run([*base(), *AUTHZ, sp("p", [ref("Gateway", "gw")], extAuth=EXT)])
    assert ancestors(t, "p", "SecurityPolicy")[0][1] == "Accepted"
    for rule in rules(t).values():
        ea = rule.filters.ext_auth
        assert ea is not None and ea.protocol == "GRPC" and ea.backend.protocol == "h2c"
        assert (ea.timeout, ea.fail_open, ea.status_on_error) == (0.5, False, 503)
        assert [(e.address, e.port) for e in ea.backend.endpoints] == [("10.0.0.9", 9001)]


def test_on_a_named_rule_only_that_rule() -> None:
    t = run([*base(), *AUTHZ, sp("p", [ref("HTTPRoute", "r", "a")], extAuth=EXT)])
    got = {name: rule.filters.ext_auth is not None for name, rule in rules(t).items()}
    assert got == {"default/r/a": True, "default/r/1": False}


def test_the_routes_own_filter_wins() -> None:
    objs = base()
    route = objs[2]
    route["spec"]["rules"][0]["filters"] = [{"type": "ExternalAuth", "externalAuth": {
        "protocol": "HTTP", "backendRef": {"name": "authz", "port": 9000}, "http": {}}}]
    t = run([*objs, *AUTHZ, sp("p", [ref("Gateway", "gw")], extAuth=EXT)])
    protocols = sorted(r.filters.ext_auth.protocol for r in rules(t).values()
                       if r.filters.ext_auth is not None)
    assert protocols == ["GRPC", "HTTP"]


def test_a_missing_service_answers_500_never_unchecked() -> None:
    t = run([*base(), sp("p", [ref("Gateway", "gw")], extAuth=EXT)])
    for rule in rules(t).values():
        assert rule.direct_status == 500 and rule.filters.ext_auth is None
    parent = t.statuses[ObjectKey("HTTPRoute", "default", "r")]["parents"][0]
    cond = next(c for c in parent["conditions"] if c["type"] == "ResolvedRefs")
    assert cond["status"] == "False" and "SecurityPolicy extAuth" in cond["message"]


def test_invalid_section_is_reported_naming_the_field() -> None:
    bad = {**EXT, "timeout": "0s"}
    t = run([*base(), *AUTHZ, sp("p", [ref("Gateway", "gw")], extAuth=bad)])
    (_, reason, message), = ancestors(t, "p", "SecurityPolicy")
    assert reason == "Invalid" and "extAuth.timeout" in message
    assert all(r.filters.ext_auth is None and r.direct_status is None
               for r in rules(t).values())
