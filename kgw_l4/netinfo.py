"""Facts about the node's network, read with pyroute2 in the current namespace."""

from __future__ import annotations

from pyroute2 import IPRoute


def up_interfaces() -> list[str]:
    """Every interface that is up, loopback excluded (the default attach set)."""
    out = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if name == "lo" or not (link["flags"] & 1):  # IFF_UP
                continue
            out.append(name)
    return out


def local_ipv4() -> list[str]:
    with IPRoute() as ipr:
        return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2)]


def source_for(dst: str) -> str:
    """The address this node uses to reach dst (the SNAT address for a backend)."""
    with IPRoute() as ipr:
        routes = ipr.route("get", dst=dst)
    for r in routes:
        src = r.get_attr("RTA_PREFSRC")
        if src:
            return src
    raise OSError(f"no route with a source address to {dst}")
