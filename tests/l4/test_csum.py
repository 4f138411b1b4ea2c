"""bpf/csum.h, compiled with gcc: a NAT rewrite's checksum differences (one per word
pair, applied once per field, as both hooks do) leave valid IPv4 and TCP/UDP
checksums, compared with a full recomputation over the rewritten headers."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kgw_l4.csource import BPF_DIR

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or not Path("/usr/include/linux/types.h").exists(),
    reason="needs gcc and the kernel UAPI headers (linux-libc-dev)")

PROGRAM = r"""
#include <stdio.h>
#include <linux/types.h>
#define __always_inline inline
#include "csum.h"
int main(void) {
	unsigned long ipc, l4c, s, d, ns, nd, sp, dp, nsp, ndp;
	while (scanf("%lu %lu %lu %lu %lu %lu %lu %lu %lu %lu", &ipc, &l4c, &s, &d, &ns, &nd,
		     &sp, &dp, &nsp, &ndp) == 10) {
		__sum16 ip = ipc, l4 = l4c;
		__u32 addr = kgw_csum_diff2(s, d, ns, nd);
		__u32 port = kgw_csum_diff2_16(sp, dp, nsp, ndp);
		kgw_csum_apply(&ip, addr);
		kgw_csum_apply(&l4, kgw_csum_add(addr, port));
		printf("%u %u\n", ip, l4);
	}
	return 0;
}
"""


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _packet(rnd: random.Random, saddr: bytes, daddr: bytes, sport: int, dport: int,
            payload: bytes, proto: int = 6) -> tuple[bytes, bytes]:
    """(IPv4 header, TCP/UDP segment) with correct checksums."""
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, rnd.getrandbits(32), rnd.getrandbits(32),
                         5 << 4, 0x18, 502, 0, 0) + payload
        coff = 16
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        coff = 6
    pseudo = saddr + daddr + struct.pack("!BBH", 0, proto, len(l4))
    c = ~_sum16(pseudo + l4) & 0xFFFF
    l4 = l4[:coff] + struct.pack("!H", c) + l4[coff + 2:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), rnd.getrandbits(16), 0x4000, 64,
                     proto, 0, saddr, daddr)
    ip = ip[:10] + struct.pack("!H", ~_sum16(ip) & 0xFFFF) + ip[12:]
    return ip, l4


def _mem16(b: bytes) -> int:
    """A 16-bit field as the C code sees it: the wire bytes in host order."""
    return int.from_bytes(b, sys.byteorder)


def test_rewrite_checksums_stay_valid(tmp_path):
    src, exe = tmp_path / "csum.c", tmp_path / "csum"
    src.write_text(PROGRAM)
    subprocess.run(["gcc", "-O2", f"-I{BPF_DIR}", "-o", str(exe), str(src)], check=True,
                   capture_output=True, text=True)
    rnd = random.Random(4)
    cases, lines = [], []
    for i in range(2000):
        proto = 6 if i % 2 else 17
        old = [rnd.randbytes(4), rnd.randbytes(4)]
        new = [rnd.randbytes(4), rnd.randbytes(4)]
        ports = [rnd.randrange(65536) for _ in range(4)]
        if i % 7 == 0:
            new[0], ports[2] = old[0], ports[0]  # some fields unchanged
        if i % 11 == 0:
            new = [bytes(4), b"\xff\xff\xff\xff"]  # zero and all-ones words
        ip, l4 = _packet(rnd, old[0], old[1], ports[0], ports[1], rnd.randbytes(rnd.randrange(40)),
                         proto)
        coff = 16 if proto == 6 else 6
        if proto == 17 and l4[coff:coff + 2] == b"\0\0":
            continue  # "no checksum": the hooks leave it alone
        cases.append((proto, new, ports, ip, l4, coff))
        vals = [_mem16(ip[10:12]), _mem16(l4[coff:coff + 2]),
                *(int.from_bytes(a, sys.byteorder) for a in (*old, *new)),
                *(_mem16(struct.pack("!H", p)) for p in ports)]
        lines.append(" ".join(map(str, vals)))
    out = subprocess.run([str(exe)], input="\n".join(lines) + "\n", check=True,
                         capture_output=True, text=True).stdout.split("\n")
    for (proto, new, ports, ip, l4, coff), line in zip(cases, out):
        ipc, l4c = (int(x).to_bytes(2, sys.byteorder) for x in line.split())
        nip = ip[:10] + ipc + new[0] + new[1]
        nl4 = struct.pack("!HH", ports[2], ports[3]) + l4[4:coff] + l4c + l4[coff + 2:]
        assert _sum16(nip) == 0xFFFF, (ip.hex(), nip.hex())
        pseudo = new[0] + new[1] + struct.pack("!BBH", 0, proto, len(nl4))
        assert _sum16(pseudo + nl4) == 0xFFFF, (l4.hex(), nl4.hex())
