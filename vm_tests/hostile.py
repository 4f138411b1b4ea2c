"""Craft hostile packets with scapy and send them from the client namespace.

  python hostile.py KIND GW_MAC DST PORT COUNT
"""

from __future__ import annotations

import random
import sys

from scapy.all import IP, TCP, Ether, IPOption_RR, Raw, fragment, sendp  # type: ignore


def build(kind: str, mac: str, dst: str, port: int, n: int) -> list:
    src = "10.201.1.2"
    eth = Ether(dst=mac)
    # below the ephemeral range, so no crafted tuple equals a real connection's
    sports = random.sample(range(20000, 32000), n)
    if kind == "not_syn":
        return [eth / IP(src=src, dst=dst) / TCP(sport=s, dport=port, flags="A", seq=1, ack=1)
                for s in sports]
    if kind == "fragment":
        out = []
        for s in sports:
            out += [eth / f
                    for f in fragment(IP(src=src, dst=dst) / TCP(sport=s, dport=port, flags="S")
                                      / Raw(b"x" * 1000), fragsize=256)]
        return out
    if kind == "truncated":
        out = []
        for s in sports:
            # TCP header cut at 8 bytes; and an IHL claiming 60 bytes of IP header
            out.append(eth / IP(src=src, dst=dst,
                                proto=6) / Raw(TCP(sport=s, dport=port, flags="S").build()[:8]))
            out.append(eth / IP(src=src, dst=dst, ihl=15) / TCP(sport=s, dport=port, flags="S"))
        return out
    if kind == "ip_options":
        return [eth / IP(src=src, dst=dst, options=[IPOption_RR()]) / TCP(sport=s, dport=port,
                                                                          flags="S")
                for s in sports]
    if kind == "syn_flood":
        return [eth / IP(src=src, dst=dst) / TCP(sport=s, dport=port, flags="S") for s in sports]
    raise SystemExit(f"unknown kind {kind}")


def main() -> None:
    kind, mac, dst, port, n = sys.argv[1:6]
    pkts = build(kind, mac, dst, int(port), int(n))
    sendp(pkts, iface="c0", verbose=False)
    print(len(pkts))


if __name__ == "__main__":
    main()
