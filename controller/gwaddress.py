"""What the node can serve Gateway spec.addresses on: its local addresses and what the
Hostname addresses resolve to.

Translation is pure, so the facts it needs about the node come in through ``Options``:
before each translation the supervisor asks ``NodeView.refresh`` for the kernel's local
table (every address a socket can bind here, prefixes such as 127.0.0.0/8 included) and
for the addresses of every Hostname a Gateway names. Both are read in a thread, bounded:
the local table over netlink, each hostname with the system resolver under
``RESOLVE_TIMEOUT_S``; a hostname is asked again after ``RESOLVE_TTL_S``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable

from controller.store import Store
from controller.translate.translator import Options

log = logging.getLogger("kgw.gwaddress")

AF_INET, AF_INET6 = 2, 10
RTN_LOCAL = 2
LOCAL_TABLE = 255
RESOLVE_TIMEOUT_S = 5.0
RESOLVE_TTL_S = 30.0
MAX_HOSTNAMES = 256  # bound on the cache: Gateways name few hostnames


def local_networks() -> tuple[str, ...] | None:
    """The kernel's local routes (``ip route show table local type local``) as CIDRs;
    None when netlink cannot be read (every address is then taken as usable, and a
    bind failure reports what could not be served)."""
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            out: list[str] = []
            for family in (AF_INET, AF_INET6):
                for route in ipr.get_routes(family=family, table=LOCAL_TABLE):
                    dst = route.get_attr("RTA_DST")
                    if route["type"] == RTN_LOCAL and dst:
                        net = ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False)
                        out.append(str(net))
            return tuple(sorted(set(out)))
    except Exception as exc:  # no netlink (non-Linux, a sandbox without it)
        log.warning("cannot read the local addresses of the node: %r", exc)
        return None


def resolve(hostname: str) -> tuple[str, ...]:
    """The addresses the system resolver gives ``hostname`` (empty: it does not resolve)."""
    try:
        infos = socket.getaddrinfo(hostname, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return ()
    seen: list[str] = []
    for family, *_rest, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in seen:
            seen.append(str(sockaddr[0]))
    return tuple(sorted(seen, key=lambda a: (":" in a, a)))


def gateway_hostnames(store: Store) -> list[str]:
    """Every Hostname address of every Gateway, lower-cased, without a trailing dot."""
    names: set[str] = set()
    for gw in store.list("Gateway"):
        for a in (gw.get("spec") or {}).get("addresses") or []:
            value = a.get("value") if isinstance(a, dict) and a.get("type") == "Hostname" else None
            if isinstance(value, str):
                names.add(value.lower().rstrip("."))
    return sorted(names)


@dataclasses.dataclass
class NodeView:
    """The node's side of Options, kept fresh by the supervisor (see the module docstring)."""

    read_local: Callable[[], tuple[str, ...] | None] = local_networks
    resolver: Callable[[str], tuple[str, ...]] = resolve
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, tuple[float, tuple[str, ...]]] = dataclasses.field(default_factory=dict)

    async def refresh(self, store: Store, options: Options) -> Options:
        local = await asyncio.to_thread(self.read_local)
        resolved = await self._resolve(gateway_hostnames(store)[:MAX_HOSTNAMES])
        return dataclasses.replace(options, local_addresses=local, resolved_hostnames=resolved)

    async def _resolve(self, names: Iterable[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
        now = self.clock()
        wanted = list(names)
        for stale in [n for n in self._cache if n not in wanted]:
            del self._cache[stale]
        for name in wanted:
            cached = self._cache.get(name)
            if cached is not None and now - cached[0] < RESOLVE_TTL_S:
                continue
            try:
                found = await asyncio.wait_for(asyncio.to_thread(self.resolver, name),
                                               RESOLVE_TIMEOUT_S)
            except TimeoutError:
                log.warning("Gateway address %s: no answer from the resolver within %.0fs", name,
                            RESOLVE_TIMEOUT_S)
                found = ()
            self._cache[name] = (now, found)
        return tuple((n, self._cache[n][1]) for n in wanted if self._cache[n][1])


def offline_options(store: Store, options: Options = Options()) -> Options:
    """Options for translating without serving (``kgw translate``, ``kgw validate``): the
    Gateways' hostnames resolved as ``kgw run`` would resolve them, every IP address
    taken as usable (the directory may be checked on another machine than the node that
    will serve it)."""
    return asyncio.run(NodeView(read_local=lambda: None).refresh(store, options))
