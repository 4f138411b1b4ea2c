"""Network-namespace topology for kernel tests: client — gw — backend.

    client ns  c0 10.201.1.2/24 ---- gc 10.201.1.1/24  gw ns  gb 10.201.2.1/24 ---- b0 backend ns
                                                                                    10.201.2.11..N
                                                  (other_subnet) gx 10.201.3.1/24 ---- x0 other ns
                                                                                    10.201.3.11

The gw namespace has no default route (a router between connected subnets). The backend
namespace routes everything back through the gateway; the optional other namespace has
only its connected subnet, so it can answer nothing but 10.201.3.0/24 (a backend network
behind another interface, as on a multi-homed node).

Names carry a short unique suffix so parallel or leftover runs never collide;
close() deletes the namespaces (and with them every veth), also after a failure.
Commands inside a namespace go through ``nsenter --net=/run/netns/NAME`` (``ip netns
exec`` remounts /sys and would hide the bpffs pins).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass, field

_seq = itertools.count()

CLIENT_ADDR = "10.201.1.2"
GW_CLIENT_ADDR = "10.201.1.1"
GW_BACKEND_ADDR = "10.201.2.1"
GW_OTHER_ADDR = "10.201.3.1"
OTHER_ADDR = "10.201.3.11"


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Topology:
    backends: int = 3
    xdp_ready: bool = False  # tx checksum offload off + GRO on at the outer ends
    other_subnet: bool = False  # a second backend network (gx -- x0) with no route out
    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}{next(_seq)}")

    def __post_init__(self) -> None:
        self.client, self.gw, self.backend = (f"kc{self.tag}", f"kg{self.tag}", f"kb{self.tag}")
        self.backend_addrs = [f"10.201.2.{11 + i}" for i in range(self.backends)]
        self.gw_ifs = ["gc", "gb"]
        self.other = f"kx{self.tag}"
        if self.other_subnet:
            self.gw_ifs.append("gx")

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.client, self.gw, self.backend) + ((self.other,) if self.other_subnet else ())

    def ns_cmd(self, ns: str, *cmd: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{ns}", *cmd]

    def run(self, ns: str, *cmd: str, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess:
        return sh(*self.ns_cmd(ns, *cmd), check=check, timeout=timeout)

    def popen(self, ns: str, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.ns_cmd(ns, *cmd), **kw)

    def __enter__(self) -> Topology:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        for ns in self.namespaces:
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", f"c{self.tag}", "netns", self.client, "type", "veth",
           "peer", "name", "gc", "netns", self.gw)
        sh("ip", "link", "add", f"b{self.tag}", "netns", self.backend, "type", "veth",
           "peer", "name", "gb", "netns", self.gw)
        self.run(self.client, "ip", "link", "set", f"c{self.tag}", "name", "c0")
        self.run(self.backend, "ip", "link", "set", f"b{self.tag}", "name", "b0")
        for ns, dev, addr in ((self.client, "c0", CLIENT_ADDR), (self.gw, "gc", GW_CLIENT_ADDR),
                              (self.gw, "gb", GW_BACKEND_ADDR)):
            self.run(ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
        for a in self.backend_addrs:
            self.run(self.backend, "ip", "addr", "add", f"{a}/24", "dev", "b0")
        for ns, devs in ((self.client, ["lo", "c0"]), (self.gw, ["lo", "gc", "gb"]),
                         (self.backend, ["lo", "b0"])):
            for d in devs:
                self.run(ns, "ip", "link", "set", d, "up")
        self.run(self.client, "ip", "route", "add", "default", "via", GW_CLIENT_ADDR)
        self.run(self.backend, "ip", "route", "add", "default", "via", GW_BACKEND_ADDR)
        self.run(self.gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if self.other_subnet:
            sh("ip", "link", "add", f"x{self.tag}", "netns", self.other, "type", "veth",
               "peer", "name", "gx", "netns", self.gw)
            self.run(self.other, "ip", "link", "set", f"x{self.tag}", "name", "x0")
            self.run(self.gw, "ip", "addr", "add", f"{GW_OTHER_ADDR}/24", "dev", "gx")
            self.run(self.other, "ip", "addr", "add", f"{OTHER_ADDR}/24", "dev", "x0")
            for ns, d in ((self.gw, "gx"), (self.other, "lo"), (self.other, "x0")):
                self.run(ns, "ip", "link", "set", d, "up")
        if self.xdp_ready:
            # XDP sees no skb checksum state: senders must put full checksums on the
            # wire, and XDP_REDIRECT into a veth needs GRO (or XDP) on its peer.
            for ns, dev in ((self.client, "c0"), (self.backend, "b0")):
                self.run(ns, "ethtool", "-K", dev, "tx", "off", "gro", "on")

    def close(self) -> None:
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)

    def snmp(self, ns: str) -> dict[str, dict[str, int]]:
        """/proc/net/snmp of a namespace as {"Tcp": {"InCsumErrors": 0, ...}, ...}."""
        text = self.run(ns, "cat", "/proc/net/snmp").stdout.splitlines()
        out: dict[str, dict[str, int]] = {}
        for head, vals in zip(text[::2], text[1::2]):
            proto, names = head.split(":", 1)
            _, nums = vals.split(":", 1)
            out[proto] = {n: int(v) for n, v in zip(names.split(), nums.split())}
        return out
