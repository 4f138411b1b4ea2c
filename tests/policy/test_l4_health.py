"""TrafficPolicy ``healthCheck`` on L4 routes: an active check on a TCPRoute, or a TCP one
on a TLSRoute (passed through or terminated), lands on its backend groups in the L4
config and the policy is Accepted; what the L4 plane does not serve (UDPRoute, HTTP
probes of a TLSRoute, passive checks, request sections) is said in status."""

from __future__ import annotations

from typing import Any

import pytest

from controller.policy import l4targets
from kgw_l7.config import HealthCheck
from tests.policy.worlds import ancestors, ref, run, tp
from tests.translate.tlsgen import tls_secret
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


def tls_world(*policies: dict, mode: str = "Passthrough") -> list[dict]:
    lis: dict = {"name": "l4", "port": 9000, "protocol": "TLS", "tls": {"mode": mode}}
    if mode == "Terminate":
        lis["tls"]["certificateRefs"] = [{"name": "cert"}]
    objs = world(*policies, kind="TLSRoute", protocol="TLS")
    objs[1] = gateway("gw", [lis])
    if mode == "Terminate":
        objs.append(tls_secret("cert", "default"))
    return objs


def sni_groups(t: Any) -> list:
    [port] = t.l4.tls_passthrough
    [route] = port.routes
    return list(route.backends)


def test_udp_routes_refuse_it():
    objs = world(tp("p", [ref("UDPRoute", "r")], healthCheck=ACTIVE), kind="UDPRoute",
                 protocol="UDP")
    t = run(objs)
    [(_, reason, message)] = ancestors(t, "p")
    assert reason == INVALID and "UDP backends" in message, message


@pytest.mark.parametrize("mode", ["Passthrough", "Terminate"])
def test_a_tcp_check_on_a_tlsroute_lands_on_its_groups_and_is_accepted(mode):
    t = run(tls_world(tp("p", [ref("TLSRoute", "r")], healthCheck=ACTIVE), mode=mode))
    assert [a[1:] for a in ancestors(t, "p")] == [(ACCEPTED, "the policy applies")]
    [g] = sni_groups(t)
    assert g.health_check == HealthCheck(type="TCP", interval=1.0, unhealthy_threshold=2)
    assert len(g.endpoints) == 2
    [g] = sni_groups(run(tls_world(mode=mode)))
    assert g.health_check is None


@pytest.mark.parametrize("kind", ["HTTP", "GRPC", None])
def test_an_http_probe_of_a_tlsroute_is_invalid_and_not_applied(kind):
    active = {"interval": "1s"} if kind is None else {"type": kind}
    t = run(tls_world(tp("p", [ref("TLSRoute", "r")], healthCheck={"active": active})))
    [(_, reason, message)] = ancestors(t, "p")
    assert reason == INVALID and "spec.healthCheck.active.type" in message, message
    assert "use type TCP" in message
    assert sni_groups(t)[0].health_check is None


def test_a_gateway_check_reaches_the_tls_listener_only_when_tcp():
    t = run(tls_world(tp("gwp", [ref("Gateway", "gw")], healthCheck={"active": {"type": "TCP"}})))
    assert sni_groups(t)[0].health_check == HealthCheck(type="TCP")
    t = run(tls_world(tp("gwp", [ref("Gateway", "gw")], healthCheck={"active": {}})))
    assert sni_groups(t)[0].health_check is None


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
    ("TLSRoute", {"healthCheck": {"active": {"type": "TCP"}}}, None),
    ("TLSRoute", {"healthCheck": {"active": {"type": "TCP"}, "passive": {}}}, True),
    ("TCPRoute", {"targetRefs": [], "healthCheck": {"active": {}}}, None),
])
def test_limits_table(kind, sections, expect):
    got = l4targets.limits(kind, sections)
    assert (got[0] if got else None) == expect
