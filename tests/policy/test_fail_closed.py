"""A SecurityPolicy that fails validation with no previous good version fails closed: its
target refuses every request (a deny-all authorization) and its status says so; a
TrafficPolicy in the same state applies nowhere, as before."""

from __future__ import annotations

from kgw_l7.auth_config import Authorization
from tests.policy.worlds import ancestors, base, ref, rule_policies, run, tp

BROKEN_JWT = {"providers": [{"name": "p", "issuer": "", "localJWKS": {"inline": "{"}}]}


def test_an_invalid_security_policy_refuses_every_request_to_its_target() -> None:
    objs = base() + [tp("sec", [ref("HTTPRoute", "r")], kind="SecurityPolicy", jwt=BROKEN_JWT)]
    t = run(objs)
    [(anc, reason, msg)] = ancestors(t, "sec", kind="SecurityPolicy")
    assert (anc, reason) == ("Gateway/gw", "Invalid")
    assert msg.endswith("until it is fixed, every request to its target is refused (403)")
    for name, policy in rule_policies(t).items():
        assert policy is not None and policy.authorization == Authorization(), name
        assert policy.jwt is None


def test_an_invalid_traffic_policy_applies_nowhere() -> None:
    objs = base() + [tp("tp", [ref("HTTPRoute", "r")], requestLimits={})]
    t = run(objs)
    assert ancestors(t, "tp")[0][1] == "Invalid"
    assert all(p is None for p in rule_policies(t).values())
