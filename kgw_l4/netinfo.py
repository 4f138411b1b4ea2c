"""Facts about the node's network, read with pyroute2 in the current namespace."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

# rtnetlink multicast groups (include/uapi/linux/rtnetlink.h, the RTMGRP_* bits)
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV4_RULE = 0x80


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


@dataclass(frozen=True, slots=True)
class Route:
    """How this node reaches an address: the source it would use and the device."""

    source: str
    device: str


def routes_to(addrs: Iterable[str]) -> dict[str, Route | OSError]:
    """The kernel's route lookup (``ip route get``) for each address, over one netlink
    socket: the source address the node itself would use towards it, or why there is none
    (an OSError whose text is the reason)."""
    out: dict[str, Route | OSError] = {}
    with IPRoute() as ipr:
        for dst in addrs:
            try:
                routes = ipr.route("get", dst=dst)
            except NetlinkError as e:
                out[dst] = OSError(f"no route ({os.strerror(e.code)})")
                continue
            except (OSError, ValueError) as e:
                out[dst] = OSError(f"route lookup failed: {e}")
                continue
            found: Route | OSError = OSError("no route with a source address")
            for r in routes:
                src = r.get_attr("RTA_PREFSRC")
                if src:
                    oif = r.get_attr("RTA_OIF")
                    try:
                        dev = socket.if_indextoname(oif) if oif else "?"
                    except OSError:
                        dev = str(oif)
                    found = Route(src, dev)
                    break
            out[dst] = found
    return out


class RouteChanges:
    """A netlink socket subscribed to the node's IPv4 route, address, rule and link
    changes. It becomes readable when any of them changes; the messages are only
    counted (whoever listens looks the routes up again), so nothing is parsed here."""

    GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_RULE

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK,
                                  socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        try:
            self.sock.bind((0, self.GROUPS))
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> int:
        """Read every pending notification; the number of reads that returned something
        (an overflowed socket, ENOBUFS, counts as a change: some were lost)."""
        n = 0
        while True:
            try:
                if not self.sock.recv(65536):
                    return n
            except BlockingIOError:
                return n
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
            n += 1

    def close(self) -> None:
        self.sock.close()
