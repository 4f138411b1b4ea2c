"""TrafficPolicy ``rateLimit``: local token buckets (``rateLimit.local``), kgateway's
field names, so its users' YAML moves over with a group change::

    rateLimit:
      local:
        tokenBucket: {maxTokens: 20, tokensPerFill: 10, fillInterval: 1s}
        key: {type: ClientIP, numTrustedHops: 1}     # kgw's: one bucket per client

``maxTokens`` is the burst, ``tokensPerFill`` per ``fillInterval`` the rate. Without
``key`` one bucket serves every request of the target; ``ClientIP`` gives each client
address its own (with ``numTrustedHops`` proxies in front, read from X-Forwarded-For as
Envoy's ``xff_num_trusted_hops``); ``Header`` one per value of a request header
(requests without it share one bucket: leaving the header out does not escape the
limit); ``Claim`` one per value of a claim (a name or a dotted path, ``org.id``) of the
request's verified JWT (SecurityPolicy ``jwt``): the limit is then taken after
authentication, and requests without a verified token or without the claim share one
bucket, as for a missing header (no SecurityPolicy jwt on the target is not an error:
every request then shares that bucket). The buckets belong to the attachment: a policy
on a Gateway is one limit for all its routes together, on a route one for its rules
together, on a named rule that rule's.
They hold for the whole node (kgw_l7.ratelimit: shared memory across the workers).

``rateLimit`` is open for more kinds of limit (``global``, counted in Redis, is another
module's): ``LIMIT_KINDS`` lists the ones the "at least one" rule accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controller.duration import is_duration, parse_duration
from controller.policy import globalratelimit
from controller.policy.section import Section
from controller.schema.common import DURATION, HEADER_NAME
from controller.schema.errors import FieldError
from controller.schema.nodes import Int, Str, join, obj, with_default
from kgw_l7.config import LocalRateLimit, LocalRateLimitKey, RateLimit

#: The fastest refill a bucket can keep (its clock counts microseconds).
MAX_RATE = 1_000_000
#: The sub-fields of ``rateLimit`` that are a limit (one at least must be set).
LIMIT_KINDS: tuple[str, ...] = ("local", "global")


def _bucket_rules(value: dict, path: str) -> Iterable[FieldError]:
    interval = value["fillInterval"]
    if not is_duration(interval):
        return
    seconds = parse_duration(interval)
    if seconds <= 0:
        yield FieldError(join(path, "fillInterval"), f"must be longer than 0s (is {interval!r})")
    elif value.get("tokensPerFill", 1) / seconds > MAX_RATE:
        yield FieldError(path, f"refills faster than {MAX_RATE} tokens per second "
                               f"({value.get('tokensPerFill', 1)} every {interval})")


TOKEN_BUCKET = obj({
    "maxTokens": Int(1, 1_000_000_000),
    "tokensPerFill": with_default(Int(1, 1_000_000_000), 1),
    "fillInterval": DURATION,
}, required=["maxTokens", "fillInterval"], rules=[_bucket_rules])


def _key_rules(value: dict, path: str) -> Iterable[FieldError]:
    claim = value.get("claim")
    if value["type"] == "Claim" and not claim:
        yield FieldError(join(path, "claim"), "required when type is Claim")
    if value["type"] != "Claim" and claim:
        yield FieldError(join(path, "claim"), "allowed only when type is Claim")
    if claim and "" in claim.split("."):
        yield FieldError(join(path, "claim"),
                         f"an empty name in the dotted path {claim!r} (e.g. 'sub', 'org.id')")
    if value["type"] == "Header" and not value.get("header"):
        yield FieldError(join(path, "header"), "required when type is Header")
    if value["type"] != "Header" and value.get("header"):
        yield FieldError(join(path, "header"), "allowed only when type is Header")
    if value["type"] != "ClientIP" and value.get("numTrustedHops"):
        yield FieldError(join(path, "numTrustedHops"), "allowed only when type is ClientIP")


_KEY_FIELDS = {"header": HEADER_NAME, "numTrustedHops": Int(0, 16)}
KEY = obj({"type": Str(enum=("ClientIP", "Header", "Claim")), **_KEY_FIELDS,
           "claim": Str(1, 256)}, required=["type"], rules=[_key_rules])
#: ``rateLimit.global``'s key: no ``Claim`` (its check runs where the claims are not kept).
GLOBAL_KEY = obj({"type": Str(enum=("ClientIP", "Header")), **_KEY_FIELDS},
                 required=["type"], rules=[_key_rules])

LOCAL = obj({"tokenBucket": TOKEN_BUCKET, "key": KEY}, required=["tokenBucket"])


def _some_limit(value: dict, path: str) -> Iterable[FieldError]:
    if not any(value.get(k) is not None for k in LIMIT_KINDS):
        yield FieldError(path, f"must set {' or '.join(LIMIT_KINDS)}")


SCHEMA = obj({"local": LOCAL, "global": globalratelimit.schema(TOKEN_BUCKET, GLOBAL_KEY)},
             rules=[_some_limit])

_KEYS: dict[str | None, LocalRateLimitKey] = {None: "", "ClientIP": "client_ip",
                                               "Header": "header", "Claim": "claim"}


def compile_local(local: dict, scope: str) -> LocalRateLimit:
    bucket = local["tokenBucket"]
    key = local.get("key") or {}
    return LocalRateLimit(
        max_tokens=bucket["maxTokens"], tokens_per_fill=bucket.get("tokensPerFill", 1),
        fill_interval=parse_duration(bucket["fillInterval"]), key=_KEYS[key.get("type")],
        header=(key.get("header") or "").lower(), trusted_hops=key.get("numTrustedHops", 0),
        scope=scope, claim=key.get("claim") or "")


def compile_rate_limit(value: dict, scope: str) -> RateLimit:
    local: Any = value.get("local")
    glob: Any = value.get("global")
    return RateLimit(local=compile_local(local, scope) if local is not None else None,
                     global_limit=globalratelimit.compile_global(glob, scope)
                     if glob is not None else None)


SECTION = Section("rateLimit", SCHEMA, compile_rate_limit, "rate_limit")
