"""Per-worker counters (the access log is ``kgw_l7.accesslog``).

Workers count in plain dicts (a dict increment per request, no locks, no shared memory);
the supervisor gathers ``WorkerStats.snapshot()`` from every worker and renders one
Prometheus exposition (``kgw_l7.metrics``). This keeps the hot path cheap and the numbers
exact.
"""

from __future__ import annotations

import logging
import time
from typing import Any

#: Request duration buckets, seconds (Prometheus client defaults, extended downwards:
#: a proxy's own latency is sub-millisecond).
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)


#: Upstream connect time buckets, seconds (a connect on loopback or in a cluster takes
#: well under a millisecond; the timeout is 5 s).
CONNECT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0)

#: Where the per-key list holds what (``WorkerStats._per``).
_N = len(DURATION_BUCKETS)
_SUM = _N + 2
_RECEIVED = _N + 3
_SENT = _N + 4


def _histogram_add(h: list[float], buckets: tuple[float, ...], seconds: float) -> None:
    """``h``: [bucket counts..., +Inf count, sum] (not cumulative)."""
    n = len(buckets)
    i = 0
    while i < n and buckets[i] < seconds:
        i += 1
    h[i] += 1
    h[n + 1] += seconds


class WorkerStats:
    __slots__ = ("_per", "connect_failures", "active_connections", "generation",
                 "connections_total", "rejected_connections", "tls_refusals",
                 "upstream_overflows", "http2_errors", "http2_connections", "retries",
                 "connect_times")

    def __init__(self) -> None:
        #: (listener, gateway, route, backend, code) -> [count, bucket counts..., +Inf
        #: count, sum, body bytes received, body bytes sent]. One dict lookup per request;
        #: the request counters, the per-route duration histograms and byte counts are
        #: aggregated from it on scrape (``snapshot``).
        self._per: dict[tuple[str, str, str, str, int], list[float]] = {}
        #: (gateway, route) -> retries (tries after the first; counted on the retry path).
        self.retries: dict[tuple[str, str], int] = {}
        #: backend -> [bucket counts (CONNECT_BUCKETS)..., +Inf count, sum]: new upstream
        #: connections' connect (and TLS handshake) time.
        self.connect_times: dict[str, list[float]] = {}
        self.connect_failures: dict[str, int] = {}
        self.active_connections = 0
        self.connections_total = 0
        #: Connections closed as soon as accepted, by reason ("limit": the worker's
        #: connection limit, "descriptors": out of file descriptors, "shutting_down").
        self.rejected_connections: dict[str, int] = {}
        #: (listener, reason) -> TLS handshakes refused for their server name.
        self.tls_refusals: dict[tuple[str, str], int] = {}
        #: (backend, reason) -> tries refused a new backend connection ("endpoint_limit":
        #: the per-endpoint limit, "descriptors": out of file descriptors).
        self.upstream_overflows: dict[tuple[str, str], int] = {}
        #: reason -> HTTP/2 client connections and streams ended for breaking the
        #: protocol or abusing it (kgw_l7.downstream_h2).
        self.http2_errors: dict[str, int] = {}
        #: Client connections served as HTTP/2.
        self.http2_connections = 0
        self.generation = 0

    def request(self, listener: str, gateway: str, route: str, backend: str, code: int,
                seconds: float, received: int = 0, sent: int = 0) -> None:
        """One request answered; ``received``, ``sent``: its body bytes each way."""
        key = (listener, gateway, route, backend, code)
        h = self._per.get(key)
        if h is None:
            h = self._per[key] = [0] * (len(DURATION_BUCKETS) + 5)
        h[0] += 1
        # bisect_left by hand: nearly every request falls in the first bucket or two,
        # and compiled this is a few comparisons instead of a call.
        buckets = DURATION_BUCKETS
        n = len(buckets)
        i = 0
        while i < n and buckets[i] < seconds:
            i += 1
        h[1 + i] += 1
        h[n + 2] += seconds
        h[n + 3] += received
        h[n + 4] += sent

    def retry(self, gateway: str, route: str) -> None:
        key = (gateway, route)
        self.retries[key] = self.retries.get(key, 0) + 1

    def connected(self, backend: str, seconds: float) -> None:
        """A new upstream connection took ``seconds`` to open (TLS included)."""
        h = self.connect_times.get(backend)
        if h is None:
            if len(self.connect_times) > 10000:  # (backends come from the config)
                self.connect_times.clear()
            h = self.connect_times[backend] = [0.0] * (len(CONNECT_BUCKETS) + 2)
        _histogram_add(h, CONNECT_BUCKETS, seconds)

    @property
    def requests(self) -> dict[tuple[str, str, str, str, int], int]:
        """(listener, gateway, route, backend, code) -> count."""
        return {k: int(h[0]) for k, h in self._per.items()}

    @property
    def durations(self) -> dict[tuple[str, str], list[float]]:
        """(gateway, route) -> [bucket counts..., +Inf count, sum] (not cumulative)."""
        return self._by_route(1, _SUM + 1)

    @property
    def body_bytes(self) -> dict[tuple[str, str], list[float]]:
        """(gateway, route) -> [body bytes received, body bytes sent]."""
        return self._by_route(_RECEIVED, _SENT + 1)

    def _by_route(self, start: int, end: int) -> dict[tuple[str, str], list[float]]:
        out: dict[tuple[str, str], list[float]] = {}
        for (_, gateway, route, _, _), h in self._per.items():
            cur = out.get((gateway, route))
            if cur is None:
                out[(gateway, route)] = [float(x) for x in h[start:end]]
            else:
                for i, x in enumerate(h[start:end]):
                    cur[i] += x
        return out

    def connect_failure(self, backend: str) -> None:
        self.connect_failures[backend] = self.connect_failures.get(backend, 0) + 1

    def reject_connection(self, reason: str) -> None:
        self.rejected_connections[reason] = self.rejected_connections.get(reason, 0) + 1

    def tls_refused(self, listener: str, reason: str) -> None:
        key = (listener, reason)
        self.tls_refusals[key] = self.tls_refusals.get(key, 0) + 1

    def upstream_overflow(self, backend: str, reason: str) -> None:
        key = (backend, reason)
        self.upstream_overflows[key] = self.upstream_overflows.get(key, 0) + 1

    def http2_error(self, reason: str) -> None:
        self.http2_errors[reason] = self.http2_errors.get(reason, 0) + 1

    def http2_connection(self) -> None:
        self.http2_connections += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "durations": self.durations,
            "body_bytes": self.body_bytes,
            "retries": dict(self.retries),
            "connect_times": {k: list(v) for k, v in self.connect_times.items()},
            "connect_failures": dict(self.connect_failures),
            "active_connections": self.active_connections,
            "connections_total": self.connections_total,
            "rejected_connections": dict(self.rejected_connections),
            "tls_refusals": dict(self.tls_refusals),
            "upstream_overflows": dict(self.upstream_overflows),
            "http2_errors": dict(self.http2_errors),
            "http2_connections": self.http2_connections,
            "generation": self.generation,
        }


class LogLimiter:
    """At most one log line per key every ``interval`` seconds, for events a client or a
    broken backend can repeat at will (refused handshakes, descriptors running out, a
    dead backend): each is logged, but a scanner must not flood the log. Lines held back
    are counted, and the count is told with the next line of that key."""

    __slots__ = ("_log", "interval", "_last", "_held")

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._log = logger
        self.interval = interval
        self._last: dict[Any, float] = {}
        self._held: dict[Any, int] = {}

    def warning(self, key: Any, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        if len(self._last) > 1000:  # keys come from the config, but stay bounded anyway
            self._last.clear()
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            msg += " (%d more like this in the last %.0f s)"
            args = (*args, held, now - last if last is not None else self.interval)
        self._log.warning(msg, *args)
