"""The node addresses Gateway status reports for a Gateway that binds every address
(controller/node.py), read from a private host's real interfaces and routes."""

from __future__ import annotations

from controller.node import discover_addresses
from tests.netns import Host


def _link(host: Host, name: str, *addrs: str, up: bool = True) -> None:
    """An interface with addresses (a veth whose peer, also in the host, has none)."""
    host.run("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    for a in addrs:
        host.run("ip", "addr", "add", a, "dev", name)
    if up:
        for dev in (name, f"{name}p"):
            host.run("ip", "link", "set", dev, "up")


def test_loopback_only_host_reports_loopback(host: Host) -> None:
    assert host.call(discover_addresses) == ("127.0.0.1",)


def test_no_default_route_reports_every_address_never_loopback(host: Host) -> None:
    """A router between two connected subnets: both sides' addresses, IPv4 first; no
    127.0.0.1, no link-local address, nothing from an interface that is down."""
    _link(host, "d0", "10.9.1.1/24")
    _link(host, "d1", "10.9.2.1/24", "2001:db8::1/64")
    _link(host, "d2", "10.9.3.1/24", up=False)
    got = host.call(discover_addresses)
    assert got[:2] == ("10.9.1.1", "10.9.2.1") and set(got) == {"10.9.1.1", "10.9.2.1",
                                                                "2001:db8::1"}, got


def test_default_route_reports_its_interface(host: Host) -> None:
    _link(host, "d0", "10.9.1.1/24")
    _link(host, "d1", "10.9.2.1/24")
    host.run("ip", "route", "add", "default", "via", "10.9.2.254")
    assert host.call(discover_addresses) == ("10.9.2.1",)
