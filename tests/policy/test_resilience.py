"""TrafficPolicy ``loadBalancer``, ``healthCheck`` and ``circuitBreaker`` (issue 20): what
they compile to, where they land (every backend of the targeted rules, through
``config.with_rule_policy``), and bad input reported Invalid naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from kgw_l7.config import (
    CircuitBreaker, HashOn, HealthCheck, HealthPolicy, LoadBalancer, OutlierDetection,
    with_rule_policy,
)
from kgw_l7.healthcheck import targets
from tests.policy.worlds import ancestors, base, ref, rule_policies, run, tp

ROUTE, RULE = ref("HTTPRoute", "r"), ref("HTTPRoute", "r", "a")


def policy_of(**sections: Any):  # type: ignore[no-untyped-def]
    t = run(base() + [tp("p", [ROUTE], **sections)])
    assert [a[1] for a in ancestors(t, "p")] == ["Accepted"], ancestors(t, "p")
    return t, rule_policies(t)["default/r/1"]


@pytest.mark.parametrize("section,expect", [
    ({"type": "LeastRequest"}, LoadBalancer("LeastRequest")),
    ({"type": "LeastRequest", "leastRequest": {"choiceCount": 3},
      "slowStart": {"window": "30s"}, "healthyPanicThreshold": 0},
     LoadBalancer("LeastRequest", choice_count=3, slow_start_window=30.0, panic_threshold=0)),
    ({"type": "Random"}, LoadBalancer("Random")),
    ({"type": "ConsistentHash", "consistentHash": {"type": "Header",
                                                   "header": {"name": "x-user"}}},
     LoadBalancer("ConsistentHash", hash_on=HashOn(header="x-user"))),
    ({"type": "ConsistentHash", "consistentHash": {"type": "Cookie", "cookie": {"name": "s"}}},
     LoadBalancer("ConsistentHash", hash_on=HashOn(cookie="s"))),
    ({"type": "ConsistentHash", "consistentHash": {"type": "QueryParameter",
                                                   "queryParameter": {"name": "u"}}},
     LoadBalancer("ConsistentHash", hash_on=HashOn(query="u"))),
    ({"type": "ConsistentHash", "consistentHash": {"type": "SourceIP"}},
     LoadBalancer("ConsistentHash", hash_on=HashOn(source_ip=True))),
])
def test_load_balancer_compiles(section, expect):
    _, p = policy_of(loadBalancer=section)
    assert p.load_balancer == expect


def test_health_check_compiles_with_defaults():
    _, p = policy_of(healthCheck={
        "active": {"interval": "1s", "http": {"path": "/healthz", "hostname": "svc.local",
                                              "expectedStatuses": [204, 200]}},
        "passive": {"consecutive5XxErrors": 3, "baseEjectionTime": "10s"}})
    assert p.health == HealthPolicy(
        active=HealthCheck(interval=1.0, path="/healthz", host="svc.local",
                           expected_statuses=((200, 200), (204, 204))),
        passive=OutlierDetection(consecutive_5xx=3, base_ejection_time=10.0))
    _, p = policy_of(healthCheck={"active": {"type": "GRPC", "grpc": {"service": "x"}}})
    assert p.health.active == HealthCheck(type="GRPC", grpc_service="x")
    assert p.health.passive is None


def test_circuit_breaker_compiles():
    _, p = policy_of(circuitBreaker={"maxParallelRequests": 10, "retryBudgetPercent": 20})
    assert p.circuit_breaker == CircuitBreaker(max_requests=10, retry_budget_percent=20.0)


def test_sections_land_on_every_backend_of_the_rule_and_the_checker_sees_them():
    t, p = policy_of(healthCheck={"active": {"type": "TCP"}},
                     loadBalancer={"type": "Random"})
    lis = next(x for x in t.l7.listeners if x.port == 80)
    rule = next(r.rule for vh in lis.virtual_hosts for r in vh.routes
                if r.rule.name == "default/r/1")
    [b] = rule.backends
    assert b.load_balancer is None  # (on the rule's policy, not copied in the config)
    eff = with_rule_policy(b, rule.policy)
    assert eff.load_balancer == LoadBalancer("Random")
    assert eff.health_check == HealthCheck(type="TCP") and eff.outlier_detection is None
    assert {(k[0], k[1]) for k in targets(t.l7)} == {(b.name, "10.0.0.1")}


def test_rule_level_beats_route_level():
    t = run(base() + [tp("route", [ROUTE], loadBalancer={"type": "Random"}),
                      tp("rule", [RULE], loadBalancer={"type": "LeastRequest"})])
    pols = rule_policies(t)
    assert pols["default/r/a"].load_balancer == LoadBalancer("LeastRequest")
    assert pols["default/r/1"].load_balancer == LoadBalancer("Random")


#: Bad input: (section, value) -> the field the Invalid message names
BAD = [
    ("healthCheck", {"active": {"unhealthyThreshold": 0}},
     "spec.healthCheck.active.unhealthyThreshold"),
    ("healthCheck", {"active": {"healthyThreshold": 0}},
     "spec.healthCheck.active.healthyThreshold"),
    ("healthCheck", {"active": {"interval": "50ms"}}, "spec.healthCheck.active.interval"),
    ("healthCheck", {"active": {"http": {"path": "healthz"}}},
     "spec.healthCheck.active.http.path"),
    ("healthCheck", {"active": {"type": "TCP", "http": {"path": "/"}}},
     "spec.healthCheck.active.http"),
    ("healthCheck", {"active": {"interval": "1s", "timeout": "2s"}},
     "spec.healthCheck.active.timeout"),
    ("healthCheck", {"active": {"http": {"expectedStatuses": [99]}}},
     "spec.healthCheck.active.http.expectedStatuses[0]"),
    ("healthCheck", {"passive": {"consecutive5XxErrors": 0, "consecutiveLocalOriginErrors": 0}},
     "spec.healthCheck.passive"),
    ("healthCheck", {"passive": {"maxEjectionPercent": 101}},
     "spec.healthCheck.passive.maxEjectionPercent"),
    ("healthCheck", {}, "spec.healthCheck"),
    ("loadBalancer", {"type": "ConsistentHash"}, "spec.loadBalancer.consistentHash"),
    ("loadBalancer", {"type": "ConsistentHash", "consistentHash": {"type": "Header"}},
     "spec.loadBalancer.consistentHash.header"),
    ("loadBalancer", {"type": "Fastest"}, "spec.loadBalancer.type"),
    ("loadBalancer", {"type": "RoundRobin", "leastRequest": {"choiceCount": 2}},
     "spec.loadBalancer.leastRequest"),
    ("loadBalancer", {"healthyPanicThreshold": 120}, "spec.loadBalancer.healthyPanicThreshold"),
    ("circuitBreaker", {"maxParallelRequests": 0}, "spec.circuitBreaker.maxParallelRequests"),
]


@pytest.mark.parametrize("section,value,field", BAD)
def test_bad_input_is_invalid_naming_the_field(section, value, field):
    t = run(base() + [tp("p", [ROUTE], **{section: value})])
    [(_, reason, message)] = ancestors(t, "p")
    assert reason == "Invalid" and message.startswith(field + ": "), message
    pol = rule_policies(t)["default/r/1"]
    assert pol is None or getattr(pol, {"healthCheck": "health",
                                        "loadBalancer": "load_balancer",
                                        "circuitBreaker": "circuit_breaker"}[section]) is None
