"""Listener sections on listeners that cannot serve them (``proxyProtocol`` on UDP;
``connectionRateLimit`` on TCP): the status says where they do not apply rather than
Accepted. On HTTPS and TLS the header is read before the TLS handshake
(kgw_l7.proxyaccept), on TCP before the bytes are forwarded (the userspace L4 modes; the
kernel modes refuse the listener, saying why): the policy applies there."""

from __future__ import annotations

from tests.policy.worlds import ancestors, base, ref, run, tp
from tests.translate.tlsgen import tls_secret

LISTENERS = [{"name": "http", "port": 80, "protocol": "HTTP"},
             {"name": "secure", "port": 443, "protocol": "HTTPS",
              "tls": {"certificateRefs": [{"name": "cert"}]}},
             {"name": "tcp", "port": 9000, "protocol": "TCP"},
             {"name": "udp", "port": 9001, "protocol": "UDP"}]


def outcome(section: str = "") -> list[tuple[str, str, str]]:
    objs = base(LISTENERS) + [tp("pp", [ref("Gateway", "gw", section)], proxyProtocol={})]
    return ancestors(run(objs), "pp")


def test_on_a_udp_listener_it_is_invalid() -> None:
    [(anc, reason, msg)] = outcome("udp")
    assert (anc, reason) == ("Gateway/gw", "Invalid")
    assert msg.startswith("spec.proxyProtocol: not applied on listener(s) udp")


def test_on_a_tcp_listener_it_reaches_the_frontend() -> None:
    objs = base(LISTENERS) + [tp("pp", [ref("Gateway", "gw", "tcp")], proxyProtocol={})]
    t = run(objs)
    assert ancestors(t, "pp") == [("Gateway/gw", "Accepted", "the policy applies")]
    assert {(f.protocol, f.proxy_protocol) for f in t.l4.frontends} == {
        ("TCP", "required"), ("UDP", "")}


def test_on_a_whole_gateway_it_is_accepted_saying_where_it_does_not_apply() -> None:
    [(anc, reason, msg)] = outcome()
    assert (anc, reason) == ("Gateway/gw", "Accepted")
    assert msg.startswith("the policy applies; spec.proxyProtocol: not applied on "
                          "listener(s) udp")


def test_on_a_clear_text_listener_it_applies() -> None:
    assert outcome("http") == [("Gateway/gw", "Accepted", "the policy applies")]


def test_on_an_https_listener_it_applies_and_reaches_its_socket() -> None:
    objs = base(LISTENERS) + [tp("pp", [ref("Gateway", "gw", "secure")], proxyProtocol={}),
                              tls_secret("cert", "default")]
    t = run(objs)
    assert ancestors(t, "pp") == [("Gateway/gw", "Accepted", "the policy applies")]
    secure = next(x for x in t.l7.listeners if x.port == 443)
    assert secure.policy is not None and secure.policy.proxy_protocol is not None


def test_connection_rate_limit_on_a_tcp_listener_says_it_is_not_applied() -> None:
    listeners = [{"name": "http", "port": 80, "protocol": "HTTP"},
                 {"name": "tcp", "port": 9000, "protocol": "TCP"}]
    limit = {"connectionsPerSecond": 10, "burst": 20}
    objs = base(listeners) + [tp("tcp-only", [ref("Gateway", "gw", "tcp")],
                                 connectionRateLimit=limit),
                              tp("whole", [ref("Gateway", "gw")], connectionRateLimit=limit,
                                 created="2026-01-01T00:00:00Z")]
    t = run(objs)
    [(_, reason, msg)] = ancestors(t, "tcp-only")
    assert reason == "Invalid"
    assert "spec.connectionRateLimit: not applied on listener(s) tcp" in msg
    [(_, reason, msg)] = ancestors(t, "whole")
    assert reason == "Accepted" and "not applied on listener(s) tcp" in msg


def test_backend_proxy_protocol_is_not_applied_on_udp() -> None:
    listeners = [{"name": "tcp", "port": 9000, "protocol": "TCP"},
                 {"name": "udp", "port": 9001, "protocol": "UDP"}]
    t = run(base(listeners) + [tp("to-be", [ref("Gateway", "gw")],
                                  backendProxyProtocol={"version": "V2"})])
    [(_, reason, msg)] = ancestors(t, "to-be")
    assert reason == "Accepted" and "spec.backendProxyProtocol: not applied on listener(s) " \
                                    "udp" in msg
    assert {(f.protocol, f.backend_proxy_protocol) for f in t.l4.frontends} == {
        ("TCP", 2), ("UDP", 0)}
