"""Active health checks of L4 backends, once per node: the endpoints of every TCP
frontend's and every TLS route's (passed through or terminated) backend group that has a
``health_check`` are probed by the L7 plane's prober (kgw_l7.healthcheck.HealthChecker:
one prober for both planes, same thresholds, jitter and logging), and the set of failing
ones goes to whoever picks the backends: the kernel plane's programmer (their Maglev
slots move, kgw_l4.programmer.set_health), the userspace proxy and the TLS ports
(kgw_l4.tlspass: their picker tables, the same rule). Every mode, one mechanism.

UDP frontends are not probed: a UDP backend gives no answer a generic probe can judge
(no handshake; silence is what a healthy one sends too), so the controller refuses a
health check on a UDPRoute rather than pretend.

Each endpoint's state for status and ``kgw-inspect frontends``: ``unknown`` until its
first probe's result, then ``healthy`` or ``unhealthy``, with the wall-clock time the
state began (the first time it was probed for, or its last verdict change).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from typing import Any

from kgw_l7.healthcheck import HealthChecker, Key, Target

from .config import BackendGroup, L4Config


def checked_groups(config: L4Config) -> Iterator[BackendGroup]:
    """The backend groups of ``config`` whose endpoints are probed: those with a health
    check, of TCP frontends and of TLS routes."""
    for fe in config.frontends:
        if fe.protocol == "TCP":
            yield from (g for g in fe.backends if g.health_check is not None)
    for t in config.tls_passthrough:
        for r in t.routes:
            yield from (g for g in r.backends if g.health_check is not None)


def targets(config: L4Config) -> dict[Key, Target]:
    """Every endpoint of every group with a health check (``checked_groups``), keyed
    (group name, address, port): a group shared by frontends or routes is probed once."""
    out: dict[Key, Target] = {}
    for g in checked_groups(config):
        assert g.health_check is not None
        for ep in g.endpoints:
            t = Target(g.name, ep.address, ep.port, g.health_check)
            out.setdefault(t.key, t)
    return out


class L4Health:
    """The prober for the L4 plane; ``on_change(down)`` is called (on the event loop)
    whenever the set of failing endpoints changes."""

    def __init__(self, on_change: Callable[[frozenset[Key]], None],
                 clock: Callable[[], float] = time.time) -> None:
        self._on_change = on_change
        self._clock = clock
        self.checker = HealthChecker(self._changed)
        self._down: frozenset[Key] = frozenset()
        #: endpoint -> when its present state began
        self._since: dict[Key, float] = {}

    def update(self, config: L4Config) -> None:
        """Probe what ``config`` asks for (needs a running event loop)."""
        wanted = targets(config)
        now = self._clock()
        self._since = {k: self._since.get(k, now) for k in wanted}
        self.checker.set_targets(wanted)

    def down(self) -> frozenset[Key]:
        return self._down

    def _changed(self) -> None:
        down = self.checker.unhealthy()
        now = self._clock()
        for k in down ^ self._down:
            if k in self._since:
                self._since[k] = now
        self._down = down
        self._on_change(down)

    def states(self) -> dict[Key, dict[str, Any]]:
        """endpoint -> {"health": healthy | unhealthy | unknown, "since": ISO 8601 UTC,
        "checks", "failures", "last_error"}."""
        out: dict[Key, dict[str, Any]] = {}
        for row in self.checker.view():
            addr, _, port = row["endpoint"].rpartition(":")
            key = (row["backend"], addr, int(port))
            if not row["checks"]:
                health = "unknown"
            else:
                health = "healthy" if row["healthy"] else "unhealthy"
            since = self._since.get(key)
            out[key] = {"health": health, "type": row["type"],
                        "since": _iso(since) if since is not None else "",
                        "checks": row["checks"], "failures": row["failures"],
                        "last_error": row["last_error"]}
        return out

    def view(self) -> list[dict[str, Any]]:
        """One entry per probed endpoint (the admin API's /l4 page, config dump)."""
        return [{"backend": k[0], "endpoint": f"{k[1]}:{k[2]}", **v}
                for k, v in sorted(self.states().items())]

    def metrics(self) -> str:
        return self.checker.metrics().replace("kgw_l7_", "kgw_l4_")

    async def close(self) -> None:
        await self.checker.close()


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds")


def endpoint_health(states: dict[Key, dict[str, Any]], groups: list[str], endpoint: str
                    ) -> dict[str, Any] | None:
    """The state of ``endpoint`` ("addr:port") under the first of ``groups`` that probes
    it (a frontend's groups), or None when none does."""
    addr, _, port = endpoint.rpartition(":")
    for g in groups:
        st = states.get((g, addr, int(port)))
        if st is not None:
            return st
    return None
