"""TrafficPolicy ``connectionRateLimit`` translated: a Gateway or listener target becomes a
kernel connection rate limit on that listener's socket (L4Config.connection_limits);
listeners sharing a port get the strictest; a route target, a zero rate or a missing
rate is Invalid and nothing reaches the kernel."""

from __future__ import annotations

import pytest

from kgw_l4.config import ConnectionRateLimit
from tests.policy.worlds import ancestors, base, ref, run, tp

GW, LIS, ROUTE = ref("Gateway", "gw"), ref("Gateway", "gw", "http"), ref("HTTPRoute", "r")


def limit(rate: int, burst: int | None = None) -> dict:
    v = {"connectionsPerSecond": rate}
    if burst is not None:
        v["burst"] = burst
    return {"connectionRateLimit": v}


def test_gateway_target_limits_every_listener_socket() -> None:
    t = run(base() + [tp("p", [GW], **limit(20, 40))])
    assert [(a, r) for a, r, _ in ancestors(t, "p")] == [("Gateway/gw", "Accepted")]
    assert t.l4.connection_limits == (
        ConnectionRateLimit("connectionRateLimit 0.0.0.0:80", "0.0.0.0", 80, 20.0, 40),
        ConnectionRateLimit("connectionRateLimit 0.0.0.0:81", "0.0.0.0", 81, 20.0, 40))


def test_listener_target_wins_over_the_gateway_on_its_socket_and_burst_defaults() -> None:
    t = run(base() + [tp("p", [GW], **limit(20, 40)), tp("q", [LIS], **limit(5))])
    assert {c.port: (c.per_second, c.burst) for c in t.l4.connection_limits} == \
        {80: (5.0, 5), 81: (20.0, 40)}


def test_listeners_sharing_a_port_get_the_strictest() -> None:
    objs = base([{"name": "a", "port": 80, "protocol": "HTTP", "hostname": "a.example"},
                 {"name": "b", "port": 80, "protocol": "HTTP", "hostname": "b.example"}])
    t = run(objs + [tp("p", [ref("Gateway", "gw", "a")], **limit(50, 60)),
                    tp("q", [ref("Gateway", "gw", "b")], **limit(10, 100))])
    assert [(c.port, c.per_second, c.burst) for c in t.l4.connection_limits] == [(80, 10.0, 100)]


@pytest.mark.parametrize("targets,spec,field", [
    ([ROUTE], limit(5), "spec.connectionRateLimit"),
    ([GW], limit(0), "spec.connectionRateLimit.connectionsPerSecond"),
    ([GW], limit(-3), "spec.connectionRateLimit.connectionsPerSecond"),
    ([GW], limit(5, 0), "spec.connectionRateLimit.burst"),
    ([GW], {"connectionRateLimit": {"burst": 5}}, "spec.connectionRateLimit"),
])
def test_bad_input_is_invalid_and_reaches_no_kernel(targets, spec, field) -> None:
    t = run(base() + [tp("p", targets, **spec)])
    (_, reason, message), = ancestors(t, "p")
    assert reason == "Invalid" and message.startswith(field), message
    assert t.l4.connection_limits == ()
