"""TrafficPolicy ``connectionRateLimit``: new TCP connections per second from one client
address to a listener, enforced by the kernel program on the SYN (bpf/synlimit.h), before
any socket, let alone a worker, sees the connection.

    connectionRateLimit:
      connectionsPerSecond: 20   # per source address, steady rate
      burst: 40                  # connections a source may open at once (default: the rate)

A SYN over the limit is dropped (the client's TCP retries it after a second or so), and
counted in ``kgw-inspect counters`` (DROP_SYN_RATE). It counts connection attempts, not
requests: keep-alive and HTTP/2 clients open few. It concerns sockets, so only a Gateway
or a listener can set it (a route target is reported Invalid); listeners that share a
port share one limit, the strictest of theirs. It needs the kernel data plane: with
``--l4-mode userspace`` the listener reports it is not enforced.
"""

from __future__ import annotations

from typing import Any

from controller.policy.section import Section
from controller.schema.nodes import Int, obj
from kgw_l7.config import ConnectionRateLimit

#: The highest rate that can be asked for per source.
MAX_RATE = 1_000_000

SCHEMA = obj({
    "connectionsPerSecond": Int(1, MAX_RATE),
    "burst": Int(1, MAX_RATE),
}, required=["connectionsPerSecond"])


def compile_limit(value: dict[str, Any], scope: str) -> ConnectionRateLimit:
    rate = value["connectionsPerSecond"]
    return ConnectionRateLimit(per_second=float(rate), burst=value.get("burst", rate))


def strictest(values: list[ConnectionRateLimit]) -> ConnectionRateLimit:
    """Listeners sharing one port: the lowest rate, then the smallest burst."""
    return min(values, key=lambda v: (v.per_second, v.burst))


SECTION = Section("connectionRateLimit", SCHEMA, compile_limit, "connection_rate_limit",
                  listener_only=True, combine=strictest)
