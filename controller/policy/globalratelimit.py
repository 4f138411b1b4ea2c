"""TrafficPolicy ``rateLimit.global``: the same token bucket and key as ``rateLimit.local``
(controller/policy/ratelimit.py), counted in Redis, so that every kgw node shares one
limit::

    rateLimit:
      global:
        tokenBucket: {maxTokens: 100, tokensPerFill: 100, fillInterval: 1s}
        key: {type: ClientIP}                      # as local: none, ClientIP or Header
        redis: {address: "kgw-redis.kgw-system.svc.cluster.local:6379"}
        timeout: 100ms                             # per check (default 100ms)
        failureMode: Open                          # Redis down/slow: Open (default) or Closed

One Redis round trip per request (kgw_l7/globallimit.py: EVALSHA of a Lua refill-and-take
on the server's clock). When Redis fails or does not answer within ``timeout``,
``failureMode`` decides: Open lets the request through, Closed answers 429; the address
is left alone for half a second after a failure, then tried again. With ``local`` set
too, a request must pass both (the local one first: it costs no round trip).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from controller.duration import is_duration, parse_duration
from controller.schema.common import DURATION
from controller.schema.errors import FieldError
from controller.schema.nodes import Node, Obj, Str, obj, with_default
from kgw_l7.config import GlobalRateLimit, LocalRateLimitKey
from kgw_l7.globallimit import parse_address

#: A check that takes longer is decided by the failure mode.
MAX_TIMEOUT = 10.0


def _address_rule(value: Any, path: str) -> Iterable[FieldError]:
    if isinstance(value, str):
        try:
            parse_address(value)
        except ValueError as e:
            yield FieldError(path, str(e))


def _timeout_rule(value: Any, path: str) -> Iterable[FieldError]:
    if isinstance(value, str) and is_duration(value):
        t = parse_duration(value)
        if not 0 < t <= MAX_TIMEOUT:
            yield FieldError(path, f"must be longer than 0s and at most {MAX_TIMEOUT:g}s "
                                   f"(is {value!r})")


REDIS = obj({"address": Str(1, 261, rules=(_address_rule,))}, required=["address"])

def schema(token_bucket: Node, key: Node) -> Obj:
    """``rateLimit.global``, with the local limit's ``tokenBucket`` and ``key`` nodes
    (controller/policy/ratelimit.py passes them: one definition of each; its ``key``
    without the Claim type)."""
    return obj({
        "tokenBucket": token_bucket,
        "key": key,
        "redis": REDIS,
        "timeout": with_default(dataclasses.replace(DURATION, rules=(_timeout_rule,)), "100ms"),
        "failureMode": with_default(Str(enum=("Open", "Closed")), "Open"),
    }, required=["tokenBucket", "redis"])

_KEYS: dict[str | None, LocalRateLimitKey] = {None: "", "ClientIP": "client_ip",
                                               "Header": "header"}


def compile_global(value: dict, scope: str) -> GlobalRateLimit:
    bucket = value["tokenBucket"]
    key = value.get("key") or {}
    return GlobalRateLimit(
        max_tokens=bucket["maxTokens"], tokens_per_fill=bucket.get("tokensPerFill", 1),
        fill_interval=parse_duration(bucket["fillInterval"]), key=_KEYS[key.get("type")],
        header=(key.get("header") or "").lower(), trusted_hops=key.get("numTrustedHops", 0),
        scope=scope, address=value["redis"]["address"],
        timeout=parse_duration(value.get("timeout", "100ms")),
        fail_open=value.get("failureMode", "Open") == "Open")
