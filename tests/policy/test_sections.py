"""Each section's schema (what kgw validate and the translator refuse, naming the field)
and what it compiles to."""

from __future__ import annotations

import pytest

from controller.policy.attach import compile_sections
from controller.schema import apply_defaults, validate
from kgw_l7.config import LocalRateLimit, RateLimit, RequestLimits
from tests.policy.worlds import ref, tp

ROUTE = [ref("HTTPRoute", "r")]


def errors(**sections) -> list[tuple[str, str]]:
    return [(e.path, e.message) for e in validate(apply_defaults(tp("p", ROUTE, **sections)))]


def bucket(**b) -> dict:
    return {"local": {"tokenBucket": {"maxTokens": 10, "fillInterval": "1s", **b}}}


BAD = [
    (dict(rateLimit=bucket(maxTokens=0)), "spec.rateLimit.local.tokenBucket.maxTokens"),
    (dict(rateLimit=bucket(maxTokens=-5)), "spec.rateLimit.local.tokenBucket.maxTokens"),
    (dict(rateLimit=bucket(tokensPerFill=0)), "spec.rateLimit.local.tokenBucket.tokensPerFill"),
    (dict(rateLimit=bucket(tokensPerFill=-1)), "spec.rateLimit.local.tokenBucket.tokensPerFill"),
    (dict(rateLimit=bucket(fillInterval="0s")), "spec.rateLimit.local.tokenBucket.fillInterval"),
    (dict(rateLimit=bucket(fillInterval="-1s")), "spec.rateLimit.local.tokenBucket.fillInterval"),
    (dict(rateLimit=bucket(fillInterval="1ms", tokensPerFill=2000)),
     "spec.rateLimit.local.tokenBucket"),
    (dict(rateLimit={"local": {"tokenBucket": {"maxTokens": 1}}}),
     "spec.rateLimit.local.tokenBucket.fillInterval"),
    (dict(rateLimit={}), "spec.rateLimit"),
    (dict(rateLimit={**bucket(), "local": {**bucket()["local"], "key": {"type": "Header"}}}),
     "spec.rateLimit.local.key.header"),
    (dict(rateLimit={"local": {**bucket()["local"], "key": {"type": "Cookie"}}}),
     "spec.rateLimit.local.key.type"),
    (dict(rateLimit={"local": {**bucket()["local"],
                               "key": {"type": "Header", "header": "x", "numTrustedHops": 1}}}),
     "spec.rateLimit.local.key.numTrustedHops"),
    (dict(rateLimit={"local": {**bucket()["local"], "key": {"type": "Claim"}}}),
     "spec.rateLimit.local.key.claim"),
    (dict(rateLimit={"local": {**bucket()["local"], "key": {"type": "Claim", "claim": "a..b"}}}),
     "spec.rateLimit.local.key.claim"),
    (dict(rateLimit={"local": {**bucket()["local"], "key": {"type": "Claim", "claim": ""}}}),
     "spec.rateLimit.local.key.claim"),
    (dict(rateLimit={"local": {**bucket()["local"],
                               "key": {"type": "Header", "header": "x", "claim": "sub"}}}),
     "spec.rateLimit.local.key.claim"),
    (dict(rateLimit={"local": {**bucket()["local"],
                               "key": {"type": "Claim", "claim": "sub", "numTrustedHops": 1}}}),
     "spec.rateLimit.local.key.numTrustedHops"),
    (dict(requestLimits={}), "spec.requestLimits"),
    (dict(requestLimits={"maxRequestBodySize": 0}), "spec.requestLimits.maxRequestBodySize"),
    (dict(requestLimits={"maxRequestBodySize": "1.5Mi"}),
     "spec.requestLimits.maxRequestBodySize"),
    (dict(requestLimits={"maxRequestHeaders": 0}), "spec.requestLimits.maxRequestHeaders"),
    (dict(requestLimits={"maxRequestHeaders": 101}), "spec.requestLimits.maxRequestHeaders"),
    (dict(requestHeaderTimeout="0s"), "spec.requestHeaderTimeout"),
    (dict(requestHeaderTimeout="10"), "spec.requestHeaderTimeout"),
]


@pytest.mark.parametrize("sections,path", BAD)
def test_bad_values_name_their_field(sections, path) -> None:
    assert path in [p for p, _ in errors(**sections)], errors(**sections)


def test_defaults_and_compiled_records() -> None:
    obj = apply_defaults(tp("p", ROUTE, rateLimit={"local": {
        "tokenBucket": {"maxTokens": 20, "fillInterval": "500ms"},
        "key": {"type": "ClientIP", "numTrustedHops": 2}}},
        requestLimits={"maxRequestBodySize": "2Mi", "maxRequestHeaders": 40},
        requestHeaderTimeout="1m"))
    assert validate(obj) == []
    got = dict(compile_sections("TrafficPolicy", obj, "scope"))
    assert got == {
        "rateLimit": RateLimit(local=LocalRateLimit(20, 1, 0.5, "client_ip", "", 2, "scope")),
        "requestLimits": RequestLimits(max_body_size=2 * 2**20, max_headers=40),
        "requestHeaderTimeout": 60.0,
    }
    header = apply_defaults(tp("p", ROUTE, rateLimit={"local": {
        "tokenBucket": {"maxTokens": 1, "tokensPerFill": 5, "fillInterval": "2s"},
        "key": {"type": "Header", "header": "X-Api-Key"}}}))
    (_, rl), = compile_sections("TrafficPolicy", header, "s")
    assert rl.local == LocalRateLimit(1, 5, 2.0, "header", "x-api-key", 0, "s")


def test_a_claim_key_compiles_with_its_path() -> None:
    obj = apply_defaults(tp("p", ROUTE, rateLimit={"local": {
        "tokenBucket": {"maxTokens": 3, "fillInterval": "1m"},
        "key": {"type": "Claim", "claim": "org.id"}}}))
    assert validate(obj) == []
    (_, rl), = compile_sections("TrafficPolicy", obj, "s")
    assert rl.local == LocalRateLimit(3, 1, 60.0, "claim", "", 0, "s", claim="org.id")
