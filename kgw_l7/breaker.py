"""Circuit breaking: per backend limits on connections, requests waiting for a
connection, requests in flight and retries in flight (Envoy's circuit breakers).

Each worker enforces its share of a limit (the limit divided by the worker count,
rounded up): the workers share no memory, and a per-request cross-process count would
cost more than the breaker saves. A request over a limit is not queued: it is answered
503 at once, with the access log's response flag ``UO`` (upstream overflow, as Envoy).

The counters only go up and down in pairs (``enter``/``leave``), through the exchange's
try path, so a request that fails or is cancelled still gives its place back.
"""

from __future__ import annotations

import math

from kgw_l7.config import CircuitBreaker

#: Indexes of the counted things (``Breaker.active``), and the names used in metrics and
#: response code details.
CONNECTIONS, PENDING, REQUESTS, RETRIES = 0, 1, 2, 3
NAMES = ("max_connections", "max_pending_requests", "max_requests", "max_retries")


def share(limit: int, workers: int) -> int:
    """One worker's share of a per-backend limit (at least 1)."""
    return max(1, math.ceil(limit / max(1, workers)))


class Breaker:
    """One backend's limits and counts in one worker."""

    __slots__ = ("limits", "active", "budget", "overflows")

    def __init__(self, cb: CircuitBreaker, workers: int = 1) -> None:
        self.limits = [share(cb.max_connections, workers),
                       share(cb.max_pending_requests, workers),
                       share(cb.max_requests, workers), share(cb.max_retries, workers)]
        self.active = [0, 0, 0, 0]
        #: Retry budget: retries may also reach this share of the requests in flight.
        self.budget = cb.retry_budget_percent / 100 if cb.retry_budget_percent else 0.0
        #: Requests refused, per limit (metrics).
        self.overflows = [0, 0, 0, 0]

    def limit(self, kind: int) -> int:
        if kind == RETRIES and self.budget:
            return max(self.limits[RETRIES], int(self.active[REQUESTS] * self.budget))
        return self.limits[kind]

    def enter(self, kind: int) -> bool:
        """Take a place of ``kind``; False (and counted) when the limit is reached."""
        if self.active[kind] >= self.limit(kind):
            self.overflows[kind] += 1
            return False
        self.active[kind] += 1
        return True

    def leave(self, kind: int) -> None:
        if self.active[kind] > 0:
            self.active[kind] -= 1

    def view(self) -> dict[str, object]:
        return {NAMES[i]: {"limit": self.limits[i], "active": self.active[i],
                           "overflows": self.overflows[i]} for i in range(4)}


__all__ = ["CONNECTIONS", "NAMES", "PENDING", "REQUESTS", "RETRIES", "Breaker", "share"]
