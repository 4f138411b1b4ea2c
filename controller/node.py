"""The node's own addresses: what Gateway status reports for a Gateway without
spec.addresses (it binds every address of the node).

The kernel data plane does not use these: without ``--node-address`` it NATs each
backend from the source of the route to it (kgw_l4.snat).
"""

from __future__ import annotations

import logging

log = logging.getLogger("kgw.node")

AF_INET, AF_INET6 = 2, 10
RT_SCOPE_UNIVERSE = 0
IFF_UP, IFF_LOOPBACK = 0x1, 0x8


def discover_addresses() -> tuple[str, ...]:
    """The addresses clients are meant to reach this node on, IPv4 first.

    With a default route: the addresses of the interface holding it (a host's public
    side). Without one (a router between connected subnets, an isolated lab host): every
    global-scope address of every interface that is up, since each is as good as any
    other and one of them must not be picked by accident. Only a node with no such
    address at all (loopback alone) reports 127.0.0.1, which is then the truth: nothing
    but the node itself can reach it.

    Read over netlink (pyroute2); nothing is sent anywhere.
    """
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            found: list[str] = []
            for family in (AF_INET, AF_INET6):
                for route in ipr.get_default_routes(family=family):
                    oif = route.get_attr("RTA_OIF")
                    for addr in ipr.get_addr(index=oif, family=family):
                        value = addr.get_attr("IFA_ADDRESS")
                        if value and not value.startswith("fe80") and value not in found:
                            found.append(value)
            if found:
                return tuple(found)
            up = {link["index"] for link in ipr.get_links()
                  if link["flags"] & IFF_UP and not link["flags"] & IFF_LOOPBACK}
            for family in (AF_INET, AF_INET6):
                for addr in ipr.get_addr(family=family):
                    value = addr.get_attr("IFA_ADDRESS")
                    if (addr["index"] in up and addr["scope"] == RT_SCOPE_UNIVERSE and value
                            and value not in found):
                        found.append(value)
            if found:
                log.info("no default route: Gateways without spec.addresses report every address "
                         "of the node (%s)", ", ".join(found))
                return tuple(found)
    except Exception as exc:  # no netlink (containers without it, non-Linux)
        log.debug("address discovery failed: %r", exc)
    return ("127.0.0.1",)
