"""TrafficPolicy ``healthCheck``: active and passive health checking of each backend of
the targeted routes (Envoy Gateway's BackendTrafficPolicy names).

``active`` (kgw_l7.healthcheck, once per node): ``type`` HTTP (``http.path`` -- must
start with "/" --, ``http.hostname``, ``http.expectedStatuses``), TCP or GRPC
(``grpc.service``); ``interval`` (at least 100ms), ``timeout``, ``unhealthyThreshold``
and ``healthyThreshold`` (at least 1), ``jitter``. An endpoint starts healthy.

``passive`` (outlier detection, kgw_l7.balance, in each worker): ``consecutive5XxErrors``
and ``consecutiveLocalOriginErrors`` (connect failures, resets, timeouts; 0 turns a kind
off, both 0 is refused), ``baseEjectionTime`` (times the endpoint's ejection count, up
to ``maxEjectionTime``), ``maxEjectionPercent`` (at least one endpoint may always be
ejected).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controller.duration import is_duration, parse_duration
from controller.policy.section import Section
from controller.schema.common import DURATION
from controller.schema.errors import FieldError
from controller.schema.nodes import Int, ListOf, Str, obj
from kgw_l7.config import HealthCheck, HealthPolicy, OutlierDetection

#: The shortest interval accepted: faster probing costs more than it tells.
MIN_INTERVAL = 0.1


def _at_least(seconds: float, what: str):  # type: ignore[no-untyped-def]
    def rule(value: Any, path: str) -> Iterable[FieldError]:
        if is_duration(value) and parse_duration(value) < seconds:
            yield FieldError(path, f"must be at least {what} (is {value!r})")
    return rule


def _path_rule(value: Any, path: str) -> Iterable[FieldError]:
    if isinstance(value, str) and not value.startswith("/"):
        yield FieldError(path, f"must start with '/' (is {value!r})")


def _active_rule(value: dict, path: str) -> Iterable[FieldError]:
    kind = value.get("type", "HTTP")
    for field, owner in (("http", "HTTP"), ("grpc", "GRPC")):
        if field in value and kind != owner:
            yield FieldError(f"{path}.{field}", f"only allowed when type is {owner}")
    timeout, interval = value.get("timeout"), value.get("interval")
    if is_duration(timeout) and is_duration(interval) and \
            parse_duration(timeout) > parse_duration(interval):
        yield FieldError(f"{path}.timeout", f"must not be longer than the interval ({interval})")


def _passive_rule(value: dict, path: str) -> Iterable[FieldError]:
    if value.get("consecutive5XxErrors") == 0 and value.get("consecutiveLocalOriginErrors") == 0:
        yield FieldError(path, "consecutive5XxErrors and consecutiveLocalOriginErrors are both "
                               "0: nothing would ever eject an endpoint")


def _some(value: dict, path: str) -> Iterable[FieldError]:
    if not value:
        yield FieldError(path, "must set active or passive")


_POSITIVE = (_at_least(0.001, "1ms"),)

SCHEMA = obj({
    "active": obj({
        "type": Str(enum=("HTTP", "TCP", "GRPC"), default="HTTP"),
        "interval": Str(pattern=DURATION.pattern, pattern_hint=DURATION.pattern_hint,
                        default="5s", rules=(_at_least(MIN_INTERVAL, "100ms"),)),
        "timeout": Str(pattern=DURATION.pattern, pattern_hint=DURATION.pattern_hint,
                       default="1s", rules=_POSITIVE),
        "unhealthyThreshold": Int(1, 1000, default=3),
        "healthyThreshold": Int(1, 1000, default=1),
        "jitter": DURATION,
        "http": obj({
            "path": Str(1, 1024, default="/", rules=(_path_rule,)),
            "hostname": Str(1, 253),
            "expectedStatuses": ListOf(Int(100, 599), min_items=1, max_items=100,
                                       unique=True),
        }),
        "grpc": obj({"service": Str(0, 256)}),
    }, rules=[_active_rule]),
    "passive": obj({
        "consecutive5XxErrors": Int(0, 1000, default=5),
        "consecutiveLocalOriginErrors": Int(0, 1000, default=5),
        "baseEjectionTime": Str(pattern=DURATION.pattern, pattern_hint=DURATION.pattern_hint,
                                default="30s", rules=_POSITIVE),
        "maxEjectionTime": Str(pattern=DURATION.pattern, pattern_hint=DURATION.pattern_hint,
                               default="300s", rules=_POSITIVE),
        "maxEjectionPercent": Int(0, 100, default=10),
    }, rules=[_passive_rule]),
}, rules=[_some])


def _statuses(codes: list[int] | None) -> tuple[tuple[int, int], ...]:
    if not codes:
        return ((200, 299),)
    return tuple((c, c) for c in sorted(codes))


def compile_health(value: dict[str, Any], scope: str) -> HealthPolicy:
    active = passive = None
    a = value.get("active")
    if a is not None:
        http = a.get("http", {})
        active = HealthCheck(
            type=a.get("type", "HTTP"), interval=parse_duration(a.get("interval", "5s")),
            timeout=parse_duration(a.get("timeout", "1s")),
            unhealthy_threshold=a.get("unhealthyThreshold", 3),
            healthy_threshold=a.get("healthyThreshold", 1),
            jitter=parse_duration(a["jitter"]) if "jitter" in a else 0.0,
            path=http.get("path", "/"), host=http.get("hostname", ""),
            expected_statuses=_statuses(http.get("expectedStatuses")),
            grpc_service=a.get("grpc", {}).get("service", ""))
    p = value.get("passive")
    if p is not None:
        passive = OutlierDetection(
            consecutive_5xx=p.get("consecutive5XxErrors", 5),
            consecutive_local_failures=p.get("consecutiveLocalOriginErrors", 5),
            base_ejection_time=parse_duration(p.get("baseEjectionTime", "30s")),
            max_ejection_time=parse_duration(p.get("maxEjectionTime", "300s")),
            max_ejection_percent=float(p.get("maxEjectionPercent", 10)))
    return HealthPolicy(active=active, passive=passive)


SECTION = Section("healthCheck", SCHEMA, compile_health, "health")
