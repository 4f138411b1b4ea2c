"""Policy attachment, pure: targets, precedence (route rule > route > listener >
Gateway, per section), conflicts (the older wins) and the status each outcome gives
(docs/policies.md writes the same rules down)."""

from __future__ import annotations

import pytest

from kgw_l7.config import RequestLimits
from tests.policy.worlds import ancestors, base, ref, rule_policies, run, tp

GW, LIS, ROUTE, RULE = (ref("Gateway", "gw"), ref("Gateway", "gw", "http"),
                        ref("HTTPRoute", "r"), ref("HTTPRoute", "r", "a"))


def limits(headers: int) -> dict:
    return {"requestLimits": {"maxRequestHeaders": headers}}


def headers_of(policy) -> int | None:
    return policy.request_limits.max_headers if policy and policy.request_limits else None


#: (which targets carry a limit, and the limit) -> effective limit on rule a, the other rule
PRECEDENCE = [
    ({"gw": GW}, 10, 10),
    ({"gw": GW, "lis": LIS}, 20, 20),
    ({"gw": GW, "lis": LIS, "route": ROUTE}, 30, 30),
    ({"gw": GW, "lis": LIS, "route": ROUTE, "rule": RULE}, 40, 30),
    ({"rule": RULE}, 40, None),
    ({"route": ROUTE, "gw": GW}, 30, 30),
    ({"lis": LIS}, 20, 20),
]
LIMIT = {"gw": 10, "lis": 20, "route": 30, "rule": 40}


@pytest.mark.parametrize("targets,on_a,on_other", PRECEDENCE)
def test_the_most_specific_target_wins(targets, on_a, on_other) -> None:
    policies = [tp(f"p-{k}", [r], **limits(LIMIT[k])) for k, r in targets.items()]
    got = rule_policies(run(base() + policies))
    assert headers_of(got["default/r/a"]) == on_a
    assert headers_of(got["default/r/1"]) == on_other


def test_listener_target_applies_to_that_listener_only() -> None:
    t = run(base() + [tp("p", [LIS], **limits(20))])
    assert headers_of(rule_policies(t, 80)["default/r/1"]) == 20
    assert headers_of(rule_policies(t, 81)["default/r/1"]) is None


def test_sections_merge_across_levels_but_never_inside_one() -> None:
    """The Gateway's requestLimits is replaced whole by the route's; the Gateway's
    requestHeaderTimeout (another section) still applies."""
    t = run(base() + [
        tp("g", [GW], requestLimits={"maxRequestHeaders": 10, "maxRequestBodySize": 100},
           requestHeaderTimeout="3s"),
        tp("r", [ROUTE], requestLimits={"maxRequestBodySize": "1Ki"})])
    got = rule_policies(t)["default/r/1"]
    assert got.request_limits == RequestLimits(max_body_size=1024, max_headers=None)
    lis = next(x for x in t.l7.listeners if x.port == 80)
    assert lis.policy is not None and lis.policy.request_header_timeout == 3.0


#: (policies, policy, expected (ancestor, reason) pairs)
STATUS = [
    ([tp("p", [ROUTE], **limits(5))], "p", [("Gateway/gw", "Accepted")]),
    ([tp("p", [GW], **limits(5))], "p", [("Gateway/gw", "Accepted")]),
    ([tp("old", [ROUTE], "2026-01-01T00:00:00Z", **limits(5)),
      tp("new", [ROUTE], "2026-01-02T00:00:00Z", **limits(6))], "new",
     [("Gateway/gw", "Conflicted")]),
    ([tp("old", [ROUTE], "2026-01-01T00:00:00Z", **limits(5)),
      tp("new", [ROUTE], "2026-01-02T00:00:00Z", **limits(6))], "old",
     [("Gateway/gw", "Accepted")]),
    # Same timestamp: the name decides.
    ([tp("b", [ROUTE], "2026-01-01T00:00:00Z", **limits(5)),
      tp("a", [ROUTE], "2026-01-01T00:00:00Z", **limits(6))], "b",
     [("Gateway/gw", "Conflicted")]),
    # Different sectionName: different targets, no conflict.
    ([tp("old", [ROUTE], "2026-01-01T00:00:00Z", **limits(5)),
      tp("new", [RULE], "2026-01-02T00:00:00Z", **limits(6))], "new",
     [("Gateway/gw", "Accepted")]),
    # A TrafficPolicy and a SecurityPolicy never conflict.
    ([tp("t", [ROUTE], "2026-01-01T00:00:00Z", **limits(5)),
      tp("s", [ROUTE], "2026-01-02T00:00:00Z", kind="SecurityPolicy")], "t",
     [("Gateway/gw", "Accepted")]),
    ([tp("p", [ref("HTTPRoute", "missing")], **limits(5))], "p",
     [("HTTPRoute/missing", "TargetNotFound")]),
    ([tp("p", [ref("HTTPRoute", "r", "nope")], **limits(5))], "p",
     [("Gateway/gw", "TargetNotFound")]),
    ([tp("p", [ref("Gateway", "gw", "nope")], **limits(5))], "p",
     [("Gateway/gw", "TargetNotFound")]),
    ([tp("p", [ref("Gateway", "missing")], **limits(5))], "p",
     [("Gateway/missing", "TargetNotFound")]),
    ([tp("p", [ref("Service", "svc", group="")], **limits(5))], "p",
     [("Service/svc", "Invalid")]),
    # Failing validation (a rule the CRD cannot hold): Invalid on every target.
    ([tp("p", [ROUTE, RULE], **limits(5))], "p", [("Gateway/gw", "Invalid")]),
    ([tp("p", [ref("HTTPRoute", "r", namespace="other")], **limits(5))], "p",
     [("HTTPRoute/r", "Invalid")]),
    ([tp("p", [ROUTE], requestHeaderTimeout="2s")], "p", [("Gateway/gw", "Invalid")]),
    # One ancestor, targets with different outcomes: the worst shows, with its message.
    ([tp("p", [RULE, ref("HTTPRoute", "r", "nope")], **limits(5))], "p",
     [("Gateway/gw", "TargetNotFound")]),
]


@pytest.mark.parametrize("policies,name,expected", STATUS)
def test_status(policies, name, expected) -> None:
    got = ancestors(run(base() + policies), name)
    assert [(a, r) for a, r, _ in got] == expected, got


def test_conflict_status_names_the_winner_and_the_loser_does_not_apply() -> None:
    t = run(base() + [tp("old", [ROUTE], "2026-01-01T00:00:00Z", **limits(5)),
                      tp("new", [ROUTE], "2026-01-02T00:00:00Z", **limits(6))])
    (_, _, message), = ancestors(t, "new")
    assert "TrafficPolicy default/old is older" in message
    assert headers_of(rule_policies(t)["default/r/1"]) == 5


def test_invalid_messages_name_the_field() -> None:
    t = run(base() + [tp("p", [ROUTE], requestHeaderTimeout="2s"),
                      tp("q", [ref("Service", "svc", group="")], **limits(5)),
                      tp("n", [ref("HTTPRoute", "r", namespace="other")], **limits(5))])
    assert ancestors(t, "p")[0][2].startswith("spec.requestHeaderTimeout: ")
    assert ancestors(t, "q")[0][2].startswith("spec.targetRefs[0]: cannot target Service")
    assert ancestors(t, "n")[0][2].startswith("spec.targetRefs[0].namespace: ")
    # ...and none of them applies.
    assert headers_of(rule_policies(t)["default/r/1"]) is None


def test_a_route_of_another_controller_gets_no_policy_status() -> None:
    objs = base() + [
        {"kind": "HTTPRoute", "metadata": {"name": "theirs", "namespace": "default"},
         "spec": {"parentRefs": [{"name": "not-ours"}]}},
        tp("p", [ref("HTTPRoute", "theirs")], **limits(5))]
    assert ancestors(run(objs), "p") == []


def test_policy_only_in_its_namespace() -> None:
    """A policy in namespace x naming route r reaches x/r, never default/r."""
    t = run(base() + [tp("p", [ROUTE], ns="x", **limits(5))])
    assert headers_of(rule_policies(t)["default/r/1"]) is None
    assert [(a, r) for a, r, _ in ancestors(t, "p", ns="x")] == [("HTTPRoute/r",
                                                                   "TargetNotFound")]
