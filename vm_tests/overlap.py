"""A TCP client that retransmits with new segment boundaries: some segments repeat bytes
the receiver already has, in order and out of order. Runs in the client namespace.

  python overlap.py IFACE SRC DST PORT

TCP queues such a segment whole when part of it is new (tcp_data_queue's "partial
packet", tcp_ofo_queue) and leaves readers to skip the old part; a sockmap verdict that
redirects whole skbs must trim it (bpf/sockmap.c). The stream is driven by hand: raw IP
out, AF_PACKET in, from a source address configured nowhere (the gateway gets a static
neighbour entry for it), so the client's own kernel never answers the gateway with a
reset. Prints one JSON line: the server's greeting, what was sent, what came back.
"""

from __future__ import annotations

import json
import random
import select
import socket
import struct
import sys
import time

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class RawFlow:
    """One TCP connection from SRC:sport to DST:dport, segments built by hand."""

    def __init__(self, iface: str, src: str, dst: str, dport: int) -> None:
        self.src, self.dst = socket.inet_aton(src), socket.inet_aton(dst)
        self.dst_text = dst
        self.sport, self.dport = random.randint(40000, 60000), dport
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.rx.bind((iface, ETH_P_IP))
        self.isn = random.randint(0, 2**31)
        self.peer_isn = 0
        self.received: dict[int, bytes] = {}  # offset in the peer's stream -> bytes

    def send(self, offset: int, flags: int, payload: bytes = b"", opts: bytes = b"") -> None:
        """A segment carrying our stream from ``offset`` (SYN: offset -1)."""
        seq = (self.isn + 1 + offset) & 0xFFFFFFFF
        ack = (self.peer_isn + 1 + self.contiguous()) & 0xFFFFFFFF if flags & ACK else 0
        tcp = struct.pack("!HHIIBBHHH", self.sport, self.dport, seq, ack,
                          (20 + len(opts)) // 4 << 4, flags, 65535, 0, 0) + opts
        pseudo = self.src + self.dst + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
        c = checksum(pseudo + tcp + payload)
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload),
                         random.randint(0, 0xFFFF), 0x4000, 64, 6, 0, self.src, self.dst)
        self.tx.sendto(ip + tcp + payload, (self.dst_text, 0))

    def segments(self, timeout: float):
        """(seq, flags, payload) of the peer's segments to us, for ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            if not select.select([self.rx], [], [], left)[0]:
                return
            data, addr = self.rx.recvfrom(70000)
            if addr[2] == PACKET_OUTGOING or len(data) < 40 or data[9] != 6:
                continue
            if data[12:16] != self.dst or data[16:20] != self.src:
                continue
            ihl = (data[0] & 15) * 4
            sp, dp, seq, _ack, off, flags = struct.unpack("!HHIIBB", data[ihl:ihl + 14])
            if (sp, dp) != (self.dport, self.sport):
                continue
            total = struct.unpack("!H", data[2:4])[0]
            yield seq, flags, data[ihl + (off >> 4) * 4:total]

    def connect(self) -> bool:
        self.send(-1, SYN, opts=struct.pack("!BBH", 2, 4, 1460))  # MSS 1460
        for seq, flags, _ in self.segments(3):
            if flags & SYN and flags & ACK:
                self.peer_isn = seq
                self.send(0, ACK)
                return True
        return False

    def pump(self, timeout: float, offset: int) -> None:
        """Receive for ``timeout`` seconds, acknowledging what is contiguous."""
        for seq, _flags, payload in self.segments(timeout):
            if payload:
                self.received[(seq - self.peer_isn - 1) & 0xFFFFFFFF] = payload
            self.send(offset, ACK)

    def stream(self) -> bytes:
        """The peer's bytes from offset 0 up to the first hole."""
        out = bytearray()
        while True:
            n = len(out)
            for off, p in self.received.items():
                if off <= n < off + len(p):
                    out += p[n - off:]
                    break
            else:
                return bytes(out)

    def contiguous(self) -> int:
        return len(self.stream())


def main() -> None:
    iface, src, dst, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    flow = RawFlow(iface, src, dst, port)
    if not flow.connect():
        print(json.dumps({"error": "no SYN-ACK"}))
        sys.exit(1)
    flow.pump(1.0, 0)  # the greeting
    greeting = flow.stream()
    data = bytes((i * 7 + 3) % 251 for i in range(3000))
    # In order: [0, 1000), then [500, 1500) (500 bytes old).
    # Out of order: [2000, 3000) waits in the out-of-order queue, then [1500, 2500)
    # fills the hole and repeats 500 bytes of it.
    top = 0  # our snd_nxt: acknowledgements carry it
    for start, end in ((0, 1000), (500, 1500), (2000, 3000), (1500, 2500)):
        flow.send(start, ACK | PSH, data[start:end])
        top = max(top, end)
        flow.pump(0.3, top)
    flow.pump(2.0, top)
    echo = flow.stream()[len(greeting):]
    flow.send(3000, RST)
    print(json.dumps({"greeting": greeting.decode(errors="replace"), "sent": len(data),
                      "echoed": len(echo), "echo_is_prefix": echo == data[:len(echo)]}))


if __name__ == "__main__":
    main()
