"""TrafficPolicy ``rateLimit.global`` translated: the same bucket and key fields as the
local limit, the Redis address, timeout and failure mode with their defaults, compiled
onto the rule; bad addresses, timeouts and modes are Invalid naming the field."""

from __future__ import annotations

import pytest

from kgw_l7.config import GlobalRateLimit
from tests.policy.worlds import ancestors, base, ref, rule_policies, run, tp

ROUTE = ref("HTTPRoute", "r")
BUCKET = {"maxTokens": 10, "tokensPerFill": 5, "fillInterval": "1s"}


def glob(**extra) -> dict:
    return {"rateLimit": {"global": {"tokenBucket": BUCKET, "redis": {"address": "redis:6380"},
                                     **extra}}}


def test_defaults_and_fields_land_on_the_rule() -> None:
    t = run(base() + [tp("p", [ROUTE], **glob(key={"type": "ClientIP", "numTrustedHops": 1}))])
    assert [(a, r) for a, r, _ in ancestors(t, "p")] == [("Gateway/gw", "Accepted")]
    got = rule_policies(t)["default/r/a"].rate_limit
    assert got.local is None
    assert got.global_limit == GlobalRateLimit(
        max_tokens=10, tokens_per_fill=5, fill_interval=1.0, key="client_ip", trusted_hops=1,
        scope=got.global_limit.scope, address="redis:6380", timeout=0.1, fail_open=True)
    assert "TrafficPolicy default/p" in got.global_limit.scope


def test_local_and_global_together() -> None:
    spec = glob(timeout="30ms", failureMode="Closed")
    spec["rateLimit"]["local"] = {"tokenBucket": BUCKET}
    got = rule_policies(run(base() + [tp("p", [ROUTE], **spec)]))["default/r/a"].rate_limit
    assert got.local is not None
    assert (got.global_limit.timeout, got.global_limit.fail_open) == (0.03, False)


@pytest.mark.parametrize("spec,field", [
    (glob(redis={"address": "redis:0"}), "spec.rateLimit.global.redis.address"),
    (glob(redis={"address": "redis:x"}), "spec.rateLimit.global.redis.address"),
    (glob(redis={}), "spec.rateLimit.global.redis"),
    (glob(timeout="0s"), "spec.rateLimit.global.timeout"),
    (glob(timeout="1m"), "spec.rateLimit.global.timeout"),
    (glob(failureMode="Maybe"), "spec.rateLimit.global.failureMode"),
    ({"rateLimit": {"global": {"redis": {"address": "redis"}}}}, "spec.rateLimit.global"),
    ({"rateLimit": {"global": {"tokenBucket": {**BUCKET, "maxTokens": 0},
                               "redis": {"address": "redis"}}}},
     "spec.rateLimit.global.tokenBucket.maxTokens"),
    (glob(key={"type": "Claim", "claim": "sub"}), "spec.rateLimit.global.key.type"),
])
def test_bad_input_is_invalid_naming_the_field(spec, field) -> None:
    t = run(base() + [tp("p", [ROUTE], **spec)])
    (_, reason, message), = ancestors(t, "p")
    assert reason == "Invalid" and message.startswith(field), message
    assert rule_policies(t)["default/r/a"] is None
