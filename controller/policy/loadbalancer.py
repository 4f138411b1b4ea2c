"""TrafficPolicy ``loadBalancer``: how each backend of the targeted routes spreads its
requests over its endpoints (kgw_l7.balance), with Envoy Gateway's field names.

``type``: RoundRobin (the default without a policy), LeastRequest (power of
``leastRequest.choiceCount`` choices, weight-aware), Random, or ConsistentHash (Maglev)
on ``consistentHash.type``: Header (``header.name``), Cookie (``cookie.name``),
QueryParameter (``queryParameter.name``) or SourceIP. A request without the hashed
header, cookie or parameter is balanced round robin. ``slowStart.window``: a new
endpoint's share ramps up from 10% over the window. ``healthyPanicThreshold`` (percent,
default 50): below that share of usable endpoints, every endpoint is used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controller.duration import parse_duration
from controller.policy.section import Section
from controller.schema.common import DURATION, HEADER_NAME
from controller.schema.errors import FieldError
from controller.schema.nodes import Int, Str, obj
from kgw_l7.config import HashOn, LoadBalancer

_NAME = obj({"name": Str(1, 256)}, required=["name"])
_HASH_FIELDS = {"Header": "header", "Cookie": "cookie", "QueryParameter": "queryParameter"}


def _hash_rule(value: dict, path: str) -> Iterable[FieldError]:
    kind = value.get("type")
    field = _HASH_FIELDS.get(kind or "")
    if field is not None and field not in value:
        yield FieldError(f"{path}.{field}", f"required when type is {kind}")
    for other in set(_HASH_FIELDS.values()) - {field}:
        if other in value:
            yield FieldError(f"{path}.{other}", f"only allowed when type is "
                                                f"{dict(map(reversed, _HASH_FIELDS.items()))[other]}")


def _type_rule(value: dict, path: str) -> Iterable[FieldError]:
    kind = value.get("type", "RoundRobin")
    if kind == "ConsistentHash" and "consistentHash" not in value:
        yield FieldError(f"{path}.consistentHash", "required when type is ConsistentHash")
    if kind != "ConsistentHash" and "consistentHash" in value:
        yield FieldError(f"{path}.consistentHash", "only allowed when type is ConsistentHash")
    if kind != "LeastRequest" and "leastRequest" in value:
        yield FieldError(f"{path}.leastRequest", "only allowed when type is LeastRequest")
    if kind == "ConsistentHash" and "slowStart" in value:
        yield FieldError(f"{path}.slowStart", "not allowed with ConsistentHash (a hash maps "
                                              "keys, it does not share load)")


SCHEMA = obj({
    "type": Str(enum=("RoundRobin", "LeastRequest", "Random", "ConsistentHash"),
                default="RoundRobin"),
    "consistentHash": obj({
        "type": Str(enum=("Header", "Cookie", "QueryParameter", "SourceIP")),
        "header": obj({"name": HEADER_NAME}, required=["name"]),
        "cookie": _NAME,
        "queryParameter": _NAME,
    }, required=["type"], rules=[_hash_rule]),
    "leastRequest": obj({"choiceCount": Int(2, 100)}),
    "slowStart": obj({"window": DURATION}, required=["window"]),
    "healthyPanicThreshold": Int(0, 100),
}, rules=[_type_rule])


def compile_lb(value: dict[str, Any], scope: str) -> LoadBalancer:
    on = None
    ch = value.get("consistentHash")
    if ch is not None:
        kind = ch["type"]
        on = HashOn(header=ch["header"]["name"] if kind == "Header" else None,
                    cookie=ch["cookie"]["name"] if kind == "Cookie" else None,
                    query=ch["queryParameter"]["name"] if kind == "QueryParameter" else None,
                    source_ip=kind == "SourceIP")
    slow = value.get("slowStart")
    return LoadBalancer(
        algorithm=value.get("type", "RoundRobin"),
        choice_count=value.get("leastRequest", {}).get("choiceCount", 2),
        hash_on=on,
        slow_start_window=parse_duration(slow["window"]) if slow else 0.0,
        panic_threshold=float(value.get("healthyPanicThreshold", 50)))


SECTION = Section("loadBalancer", SCHEMA, compile_lb, "load_balancer")
