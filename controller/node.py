"""The node's own addresses: what Gateway status reports when spec.addresses is empty,
and what the kernel data plane uses as the SNAT source."""

from __future__ import annotations

import logging

log = logging.getLogger("kgw.node")


def discover_addresses() -> tuple[str, ...]:
    """Addresses of the interface holding the default route (IPv4 first), else loopback.

    Read over netlink (pyroute2); nothing is sent anywhere.
    """
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            found: list[str] = []
            for family in (2, 10):  # AF_INET, AF_INET6
                for route in ipr.get_default_routes(family=family):
                    oif = route.get_attr("RTA_OIF")
                    for addr in ipr.get_addr(index=oif, family=family):
                        value = addr.get_attr("IFA_ADDRESS")
                        if value and not value.startswith("fe80") and value not in found:
                            found.append(value)
            if found:
                return tuple(found)
    except Exception as exc:  # no netlink (containers without it, non-Linux)
        log.debug("address discovery failed: %r", exc)
    return ("127.0.0.1",)
