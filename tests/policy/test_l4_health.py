"""TrafficPolicy ``healthCheck`` on L4 routes: an active check on a TCPRoute lands on its
backend groups in the L4 config and the policy is Accepted; what the L4 plane does not
serve (UDPRoute, TLSRoute, passive checks, request sections) is said in status."""

from __future__ import annotations

from typing import Any

import pytest

from controller.policy import l4targets
from kgw_l7.config import HealthCheck
from tests.policy.worlds import ancestors, ref, run, tp
from tests.translate.worlds import CLASS, gateway, http_route, service, slice_

ACCEPTED, INVALID = "Accepted", "Invalid"

ACTIVE = {"active": {"type": "TCP", "interval": "1s", "unhealthyThreshold": 2}}


def world(*policies: dict, kind: str = "TCPRoute", protocol: str = "TCP") -> list[dict]:
    return [CLASS,
            gateway("gw", [{"name": "l4", "port": 9000, "protocol": protocol}]),
            http_route("r", [{"name": "gw"}], [{"backendRefs": [{"name": "svc", "port": 80}]}],
                       kind=kind),
            service("svc"), slice_("svc", ["10.0.0.1", "10.0.0.2"]), *policies]


def groups(t: Any) -> list:
    [fe] = t.l4.frontends
    return list(fe.backends)


def test_active_check_on_a_tcproute_lands_on_its_groups_and_is_accepted():
    t = run(world(tp("p", [ref("TCPRoute", "r")], healthCheck=ACTIVE)))
    assert [a[1:] for a in ancestors(t, "p")] == [(ACCEPTED, "the policy applies")]
    [g] = groups(t)
    assert g.health_check == HealthCheck(type="TCP", interval=1.0, unhealthy_threshold=2)
    assert len(g.endpoints) == 2


def test_no_policy_no_check():
    [g] = groups(run(world()))
    assert g.health_check is None


def test_a_gateway_policy_reaches_the_tcp_listener_and_the_route_wins():
    t = run(world(tp("gwp", [ref("Gateway", "gw")], healthCheck={"active": {"type": "TCP"}}),
                  tp("p", [ref("TCPRoute", "r")], healthCheck=ACTIVE)))
    assert groups(t)[0].health_check.interval == 1.0
    t = run(world(tp("gwp", [ref("Gateway", "gw")], healthCheck={"active": {"type": "TCP"}})))
    assert groups(t)[0].health_check == HealthCheck(type="TCP")


@pytest.mark.parametrize(("kind", "protocol", "word"), [("UDPRoute", "UDP", "UDP backends"),
                                                        ("TLSRoute", "TLS", "SNI routing")])
def test_udp_and_tls_routes_refuse_it(kind, protocol, word):
    lis = {"name": "l4", "port": 9000, "protocol": protocol}
    if protocol == "TLS":
        lis["tls"] = {"mode": "Passthrough"}
    objs = world(tp("p", [ref(kind, "r")], healthCheck=ACTIVE), kind=kind, protocol=protocol)
    objs[1] = gateway("gw", [lis])
    t = run(objs)
    [(_, reason, message)] = ancestors(t, "p")
    assert reason == INVALID and word in message, message


def test_passive_and_request_sections_are_named_not_applied():
    t = run(world(tp("p", [ref("TCPRoute", "r")],
                     healthCheck={**ACTIVE, "passive": {"consecutive5XxErrors": 2}},
                     circuitBreaker={"maxParallelRequests": 3})))
    [(_, reason, message)] = ancestors(t, "p")
    assert reason == ACCEPTED
    assert "spec.healthCheck.passive" in message and "spec.circuitBreaker" in message
    assert groups(t)[0].health_check is not None
    t = run(world(tp("p", [ref("TCPRoute", "r")], circuitBreaker={"maxParallelRequests": 3})))
    [(_, reason, message)] = ancestors(t, "p")
    assert reason == INVALID and "spec.circuitBreaker" in message


@pytest.mark.parametrize(("kind", "sections", "expect"), [
    ("TCPRoute", {"healthCheck": {"active": {}}}, None),
    ("TCPRoute", {"healthCheck": {"passive": {}}}, False),
    ("TCPRoute", {"healthCheck": {"active": {}, "passive": {}}}, True),
    ("TCPRoute", {"rateLimit": {}}, False),
    ("UDPRoute", {"healthCheck": {"active": {}}}, False),
    ("TLSRoute", {"healthCheck": {"active": {}}}, False),
    ("TCPRoute", {"targetRefs": [], "healthCheck": {"active": {}}}, None),
])
def test_limits_table(kind, sections, expect):
    got = l4targets.limits(kind, sections)
    assert (got[0] if got else None) == expect
