"""Which source address the kernel data plane gives each backend's flows (SNAT).

The backend must be able to answer that address, so without an explicit node address
(``--node-address``) each backend gets the address the node itself would use towards it:
the preferred source of the kernel's route to it (``ip route get BACKEND``). One node-wide
address is wrong as soon as backends sit behind different interfaces (a router between
subnets, a multi-homed node), and a loopback address is never right: a backend can never
answer 127.0.0.1 of another host, so a route through loopback is refused, not used.

Lookups are cached per backend address: a new backend is looked up when a configuration
first names it, and every known one again when the node's routes, addresses, rules or
links change (kgw_l4.netinfo.RouteChanges; the plane calls ``refresh``). Each change of a
backend's source is logged once, grouped by source, never per packet or per apply.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping

from . import netinfo

log = logging.getLogger("kgw.l4.snat")

Lookup = Callable[[Iterable[str]], Mapping[str, "netinfo.Route | OSError"]]

#: backends named in one log line before "and N more"
LOG_NAMES = 8


def is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def fixed_source(node_addresses: Iterable[str]) -> str | None:
    """The one SNAT source ``--node-address`` names: its first IPv4 address that is not
    loopback (the kernel plane NATs IPv4 only). None: each backend's route decides."""
    for a in node_addresses:
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            return a  # open_plane says what is wrong with it
        if ip.version == 4 and not ip.is_loopback:
            return a
        if ip.is_loopback:
            log.info("node address %s is a loopback address: the kernel data plane NATs each "
                     "backend from the source of its route instead", a)
    return None


class SnatSources:
    """``snat_for`` of the programmer: the SNAT source of a backend address (raises
    OSError saying why there is none). ``fixed``: one address for every backend."""

    def __init__(self, fixed: str | None = None, lookup: Lookup = netinfo.routes_to):
        if fixed is not None and is_loopback(fixed):
            raise ValueError(f"node address {fixed} is a loopback address: a backend cannot "
                             f"answer it, so the kernel data plane never SNATs to it")
        self.fixed = fixed
        self._lookup = lookup
        self._known: dict[str, netinfo.Route | OSError] = {}

    def __call__(self, addr: str) -> str:
        if self.fixed is not None:
            return self.fixed
        if addr not in self._known:
            self.resolve([addr])
        found = self._known[addr]
        if isinstance(found, OSError):
            raise found
        return found.source

    def resolve(self, addrs: Iterable[str], *, again: bool = False) -> set[str]:
        """Look up the addresses not known yet (every one given, with ``again``), log
        what changed, and return the addresses whose source (or error) changed."""
        if self.fixed is not None:
            return set()
        todo = sorted({a for a in addrs if again or a not in self._known})
        if not todo:
            return set()
        found = self._lookup(todo)
        changed: dict[str, list[str]] = {}  # what the log says -> backends
        for addr in todo:
            new = found.get(addr) or OSError("no route")
            if isinstance(new, netinfo.Route) and is_loopback(new.source):
                new = OSError(f"reached through {new.device} from {new.source}: the kernel data "
                              f"plane never SNATs to a loopback address (a backend on this node "
                              f"must listen on a non-loopback address)")
            old = self._known.get(addr)
            self._known[addr] = new
            if _same(old, new):
                continue
            what = (f"SNAT source {new.source} (route via {new.device})"
                    if isinstance(new, netinfo.Route) else f"no SNAT source: {new}")
            changed.setdefault(what, []).append(addr)
        for what, backends in changed.items():
            named = ", ".join(backends[:LOG_NAMES])
            more = f" and {len(backends) - LOG_NAMES} more" if len(backends) > LOG_NAMES else ""
            plural = "s" if len(backends) > 1 else ""
            (log.info if what.startswith("SNAT source") else log.warning)(
                "%s for backend%s %s%s", what, plural, named, more)
        return {a for group in changed.values() for a in group}

    def keep_only(self, addrs: Iterable[str]) -> None:
        """Forget backends no longer configured (a backend added again is looked up and
        logged again)."""
        keep = set(addrs)
        for a in [a for a in self._known if a not in keep]:
            del self._known[a]

    def known(self) -> dict[str, str]:
        """backend address -> its source, or the error (for the config dump)."""
        if self.fixed is not None:
            return {}
        return {a: (r.source if isinstance(r, netinfo.Route) else f"error: {r}")
                for a, r in list(self._known.items())}  # a snapshot: lookups run in a thread


def _same(a: netinfo.Route | OSError | None, b: netinfo.Route | OSError) -> bool:
    if isinstance(a, netinfo.Route) and isinstance(b, netinfo.Route):
        return a == b
    if isinstance(a, OSError) and isinstance(b, OSError):
        return str(a) == str(b)
    return False
