"""TrafficPolicy ``circuitBreaker``: per backend limits (kgw_l7.breaker), Envoy
Gateway's names: ``maxConnections``, ``maxPendingRequests``, ``maxParallelRequests``,
``maxParallelRetries``, and kgw's ``retryBudgetPercent`` (retries may also reach that
share of the requests in flight). Each worker enforces its share of a limit (divided by
the worker count, rounded up); a request over one is answered 503, flag UO."""

from __future__ import annotations

from typing import Any

from controller.policy.section import Section
from controller.schema.nodes import Int, obj
from kgw_l7.config import CircuitBreaker


SCHEMA = obj({
    "maxConnections": Int(1, 2**31 - 1, default=1024),
    "maxPendingRequests": Int(1, 2**31 - 1, default=1024),
    "maxParallelRequests": Int(1, 2**31 - 1, default=1024),
    "maxParallelRetries": Int(1, 2**31 - 1, default=3),
    "retryBudgetPercent": Int(1, 100),
})


def compile_breaker(value: dict[str, Any], scope: str) -> CircuitBreaker:
    budget = value.get("retryBudgetPercent")
    return CircuitBreaker(max_connections=value.get("maxConnections", 1024),
                          max_pending_requests=value.get("maxPendingRequests", 1024),
                          max_requests=value.get("maxParallelRequests", 1024),
                          max_retries=value.get("maxParallelRetries", 3),
                          retry_budget_percent=float(budget) if budget else None)


SECTION = Section("circuitBreaker", SCHEMA, compile_breaker, "circuit_breaker")
