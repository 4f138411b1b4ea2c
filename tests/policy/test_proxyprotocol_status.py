"""``proxyProtocol`` on TLS listeners: the header would precede the TLS handshake, which
the worker does not read before TLS, so the status says where it does not apply rather
than Accepted."""

from __future__ import annotations

from tests.policy.worlds import ancestors, base, ref, run, tp

LISTENERS = [{"name": "http", "port": 80, "protocol": "HTTP"},
             {"name": "secure", "port": 443, "protocol": "HTTPS",
              "tls": {"certificateRefs": [{"name": "cert"}]}}]


def outcome(section: str = "") -> list[tuple[str, str, str]]:
    objs = base(LISTENERS) + [tp("pp", [ref("Gateway", "gw", section)], proxyProtocol={})]
    return ancestors(run(objs), "pp")


def test_on_a_tls_listener_it_is_invalid() -> None:
    [(anc, reason, msg)] = outcome("secure")
    assert (anc, reason) == ("Gateway/gw", "Invalid")
    assert msg.startswith("spec.proxyProtocol: not applied on listener(s) secure")


def test_on_a_whole_gateway_it_is_accepted_saying_where_it_does_not_apply() -> None:
    [(anc, reason, msg)] = outcome()
    assert (anc, reason) == ("Gateway/gw", "Accepted")
    assert msg.startswith("the policy applies; spec.proxyProtocol: not applied on "
                          "listener(s) secure")


def test_on_a_clear_text_listener_it_applies() -> None:
    assert outcome("http") == [("Gateway/gw", "Accepted", "the policy applies")]
