"""The ABI shared with the BPF programs: sizes, ctypes mirrors of bpf/kgw_structs.h,
counter indexes and flags, and how each map's keys and values are laid out as bytes.

SIZES is the one source of the tunable sizes: the loader passes it as -D cflags, the
ABI test compiles the C headers with the same flags and compares every size, offset
and constant with this module (tests/l4/test_abi.py).

Maps are read and written as bytes (kgw_l4.maps); the encoders and decoders at the end
of this module are the only place those bytes are made or taken apart, so that the
programmer, the splicer, the inspect CLI and the tests cannot disagree on a layout.
"""

from __future__ import annotations

import ctypes
import enum
import ipaddress
import socket
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence

SIZES: dict[str, int] = {
    "KGW_MAX_FRONTENDS": 64,
    "KGW_MAX_BACKENDS": 4096,
    "KGW_MAGLEV_SIZE": 16381,
    "KGW_CT_SIZE": 262144,
    "KGW_CT_SYN_SIZE": 65536,
    "KGW_MAX_LOCAL_ADDRS": 256,
    "KGW_SOCKHASH_SIZE": 65536,
    "KGW_SPLICE_BACKLOG_MAX": 1024,  # splice backpressure (--l4-splice-backlog; 0: off)
    "KGW_SPLICE_OVERFLOW_MAX": 4096,
    "KGW_NAT_PROBES": 8,
    "KGW_FIB_CACHE_SIZE": 256,
    "KGW_MAX_SYN_LIMITS": 64,  # listening ports with a new-connection rate limit
    "KGW_SYN_SOURCES": 65536,  # sources those limits track (LRU)
}

PIN_DIR = "/sys/fs/bpf/kgw"
NO_BACKEND = 0xFFFFFFFF

#: kgw_settings.flags: the XDP program is attached, it alone rate-limits SYNs
SETTINGS_F_XDP = 1 << 0

CT_F_REPLY = 1 << 0
CT_F_FIN = 1 << 1
CT_F_RST = 1 << 2
CT_F_SYN_TBL = 1 << 3
CT_F_EMBRYO = 1 << 4  # embryonic, re-armed in place in kgw_ct (bpf/nat.h)
#: either way of being embryonic: syn timeout, "embryonic" in kgw-inspect
CT_F_EMBRYONIC = CT_F_SYN_TBL | CT_F_EMBRYO


class Counter(enum.IntEnum):
    """Global counters (enum kgw_counter in bpf/kgw_consts.h), in order."""

    NEW_FLOWS = 0
    CT_HIT = enum.auto()
    CT_MISS = enum.auto()
    CT_EXPIRED = enum.auto()
    CT_PROMOTED = enum.auto()
    PASS_NOT_IPV4 = enum.auto()
    PASS_FRAGMENT = enum.auto()
    IP_OPTIONS = enum.auto()
    FIB_PASS = enum.auto()
    DROP_MALFORMED = enum.auto()
    DROP_NOT_SYN = enum.auto()
    DROP_NO_BACKEND = enum.auto()
    DROP_NAT_EXHAUSTED = enum.auto()
    DROP_CT_INSERT = enum.auto()
    DROP_FIB = enum.auto()
    DROP_REWRITE = enum.auto()
    FWD_TC = enum.auto()
    FWD_XDP = enum.auto()
    SPLICE_REDIRECT = enum.auto()
    SPLICE_PASS = enum.auto()
    SPLICE_DROP = enum.auto()
    SPLICE_TRIM = enum.auto()
    SPLICE_TRIM_FAIL = enum.auto()
    SPLICE_HOLD = enum.auto()
    SPLICE_EVENT_LOST = enum.auto()
    SPLICE_OVERFLOW = enum.auto()
    DROP_SYN_RATE = enum.auto()


COUNTER_COUNT = len(Counter)

#: The drop reasons also counted per frontend (KGW_FE_DROP_FIRST, KGW_FE_DROP_COUNT in
#: bpf/kgw_consts.h): contiguous in Counter, from DROP_NOT_SYN to DROP_REWRITE.
FE_DROPS: tuple[Counter, ...] = tuple(Counter(i) for i in range(Counter.DROP_NOT_SYN,
                                                             Counter.DROP_REWRITE + 1))


class Direction(enum.IntEnum):
    """A flow's two ways (KGW_DIR_* in bpf/kgw_consts.h): what its direction slots count."""

    TO_BACKEND = 0  # client -> frontend -> backend (connection-table entries without REPLY)
    TO_CLIENT = 1  # backend -> client (REPLY entries)


class StatsLayout:
    """Where each range of the kgw_stats index space starts (bpf/kgw_consts.h explains it),
    for one set of sizes."""

    def __init__(self, sizes: Mapping[str, int] = SIZES):
        fe, be = sizes["KGW_MAX_FRONTENDS"], sizes["KGW_MAX_BACKENDS"]
        self.max_frontends, self.max_backends = fe, be
        self.fe_base = 0
        self.backend_base = self.fe_base + 2 * fe
        self.fe_flows_base = self.backend_base + 2 * be
        self.be_flows_base = self.fe_flows_base + fe
        self.fe_drops_base = self.be_flows_base + be
        self.global_base = self.fe_drops_base + fe * len(FE_DROPS)
        self.size = self.global_base + COUNTER_COUNT

    def frontend_slots(self, fe_id: int) -> list[int]:
        """Every slot of one frontend (directions, flows, drops): zeroed when the id is
        given to another frontend."""
        d = len(FE_DROPS)
        return [self.fe_base + 2 * fe_id, self.fe_base + 2 * fe_id + 1, self.fe_flows_base + fe_id,
                *range(self.fe_drops_base + fe_id * d, self.fe_drops_base + (fe_id + 1) * d)]

    def backend_slots(self, backend_id: int) -> list[int]:
        """Every slot of one backend (directions, flows)."""
        return [self.backend_base + 2 * backend_id, self.backend_base + 2 * backend_id + 1,
                self.be_flows_base + backend_id]


def global_base(sizes: Mapping[str, int] = SIZES) -> int:
    return StatsLayout(sizes).global_base


def backend_base(sizes: Mapping[str, int] = SIZES) -> int:
    return StatsLayout(sizes).backend_base


def stats_size(sizes: Mapping[str, int] = SIZES) -> int:
    return StatsLayout(sizes).size


def cflags(sizes: Mapping[str, int] = SIZES, pin_dir: str = PIN_DIR) -> list[str]:
    """-D flags for bcc (and for the ABI test's gcc build)."""
    flags = [f"-D{k}={v}" for k, v in sorted(sizes.items())]
    flags.append(f'-DKGW_PIN_DIR="{pin_dir}"')
    return flags


class FeKey(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint32),  # network order
        ("port", ctypes.c_uint16),  # network order
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class FeVal(ctypes.Structure):
    _fields_ = [("fe_id", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class Backend(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint32),  # network order
        ("snat_addr", ctypes.c_uint32),  # network order
        ("port", ctypes.c_uint16),  # network order
        ("flags", ctypes.c_uint16),
    ]


class FlowKey(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class CtEntry(ctypes.Structure):
    _fields_ = [
        ("new_saddr", ctypes.c_uint32),
        ("new_daddr", ctypes.c_uint32),
        ("new_sport", ctypes.c_uint16),
        ("new_dport", ctypes.c_uint16),
        ("fe_id", ctypes.c_uint32),
        ("backend_id", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("created_ns", ctypes.c_uint64),
        ("last_seen_ns", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


class Settings(ctypes.Structure):
    _fields_ = [
        ("ct_timeout_syn_ns", ctypes.c_uint64),
        ("ct_timeout_est_ns", ctypes.c_uint64),
        ("ct_timeout_closing_ns", ctypes.c_uint64),
        ("nat_port_min", ctypes.c_uint16),
        ("nat_port_max", ctypes.c_uint16),
        ("flags", ctypes.c_uint32),
    ]


class CounterVal(ctypes.Structure):
    _fields_ = [("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


class SplicePeer(ctypes.Structure):
    _fields_ = [("peer", ctypes.c_uint64), ("redirected", ctypes.c_uint64),
                ("passed", ctypes.c_uint64), ("next_seq", ctypes.c_uint32),
                ("flags", ctypes.c_uint32)]


class SpliceEvent(ctypes.Structure):
    _fields_ = [("cookie", ctypes.c_uint64), ("kind", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


SPLICE_F_SEQ = 1
SPLICE_F_OVERFLOW = 2
SPLICE_EVT_HOLD = 1
SPLICE_EVT_OVERFLOW = 2


class FibEntry(ctypes.Structure):
    _fields_ = [
        ("stamp_ns", ctypes.c_uint64),
        ("saddr", ctypes.c_uint32),  # network order
        ("daddr", ctypes.c_uint32),  # network order
        ("iif", ctypes.c_uint32),
        ("oif", ctypes.c_uint32),
        ("mtu", ctypes.c_uint16),
        ("smac", ctypes.c_uint8 * 6),
        ("dmac", ctypes.c_uint8 * 6),
        ("pad", ctypes.c_uint8 * 2),
    ]


class SynLimit(ctypes.Structure):
    _fields_ = [("interval_ns", ctypes.c_uint64), ("tolerance_ns", ctypes.c_uint64),
                ("id", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class SynSrcKey(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint32), ("limit_id", ctypes.c_uint32)]  # saddr: network order


class SynSrc(ctypes.Structure):
    _fields_ = [("tat_ns", ctypes.c_uint64)]


#: C struct name -> ctypes mirror, for the ABI test.
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "kgw_fe_key": FeKey,
    "kgw_fe_val": FeVal,
    "kgw_backend": Backend,
    "kgw_flow_key": FlowKey,
    "kgw_ct_entry": CtEntry,
    "kgw_settings": Settings,
    "kgw_counter_val": CounterVal,
    "kgw_fib_entry": FibEntry,
    "kgw_splice_peer": SplicePeer,
    "kgw_splice_event": SpliceEvent,
    "kgw_syn_limit": SynLimit,
    "kgw_syn_src_key": SynSrcKey,
    "kgw_syn_src": SynSrc,
}

PROTO = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP}
PROTO_NAME = {v: k for k, v in PROTO.items()}


def ip_be(address: str) -> int:
    """An IPv4 address as the u32 ctypes sees when the bytes are in network order."""
    return int.from_bytes(ipaddress.IPv4Address(address).packed, sys.byteorder)


def ip_str(be: int) -> str:
    return str(ipaddress.IPv4Address(be.to_bytes(4, sys.byteorder)))


def port_be(port: int) -> int:
    return socket.htons(port)


def port_host(be: int) -> int:
    return socket.ntohs(be)


# ----------------------------------------------------------------------------- map bytes
# Integer keys and values (u32 indexes, ids, counts; u64 socket cookies) are in host
# byte order, as the kernel stores them; __be32 addresses are the address's own bytes.

_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")


def u32(n: int) -> bytes:
    """A u32 key or value: an array index, a backend id, a flag."""
    return _U32.pack(n)


def u32_of(raw: bytes) -> int:
    return _U32.unpack(raw)[0]


def u64(n: int) -> bytes:
    """A u64 key or value: a socket cookie, a byte count."""
    return _U64.pack(n)


def u64_of(raw: bytes) -> int:
    return _U64.unpack(raw)[0]


def u32s(values: Sequence[int]) -> bytes:
    """Consecutive u32 array values (a Maglev row), as one batched read returns them."""
    return struct.pack(f"={len(values)}I", *values)


def u32s_of(raw: bytes) -> list[int]:
    return list(struct.unpack(f"={len(raw) // 4}I", raw))


#: kgw_settings has one entry, at index 0
SETTINGS_KEY = u32(0)
#: the value of every kgw_local_addrs entry (the key's presence is what counts)
LOCAL_ADDR_PRESENT = u32(1)


def fe_key(address: str, port: int, protocol: str) -> bytes:
    """kgw_frontends key; a protocol kgw does not know is encoded as 0."""
    return bytes(FeKey(addr=ip_be(address), port=port_be(port), proto=PROTO.get(protocol, 0)))


def fe_val(fe_id: int) -> bytes:
    return bytes(FeVal(fe_id=fe_id))


def fe_entry(key: bytes, val: bytes) -> tuple[str, int, str, int]:
    """(address, port, protocol, fe_id) of a kgw_frontends entry (an unknown protocol by
    its number)."""
    k, v = FeKey.from_buffer_copy(key), FeVal.from_buffer_copy(val)
    return ip_str(k.addr), port_host(k.port), PROTO_NAME.get(k.proto, str(k.proto)), v.fe_id


def syn_limit_key(address: str, port: int) -> bytes:
    """kgw_syn_limits key: a TCP listening port (address 0.0.0.0 = every local one)."""
    return fe_key(address, port, "TCP")


def syn_limit_val(per_second: float, burst: int, limit_id: int) -> bytes:
    """kgw_syn_limits value for ``per_second`` new connections per source with bursts of
    ``burst`` (GCRA, bpf/synlimit.h): the interval between connections and how far ahead
    of it a source may run."""
    interval = max(1, round(1e9 / per_second))
    return bytes(SynLimit(interval_ns=interval, tolerance_ns=(max(burst, 1) - 1) * interval,
                          id=limit_id))


def syn_limit_of(key: bytes, val: bytes) -> tuple[str, int, float, int, int]:
    """(address, port, per second, burst, id) of a kgw_syn_limits entry."""
    k, v = FeKey.from_buffer_copy(key), SynLimit.from_buffer_copy(val)
    return (ip_str(k.addr), port_host(k.port), 1e9 / v.interval_ns,
            v.tolerance_ns // v.interval_ns + 1, v.id)


def backend_val(address: str, port: int, snat_address: str) -> bytes:
    """kgw_backends value (keyed by ``u32(backend_id)``)."""
    return bytes(Backend(addr=ip_be(address), snat_addr=ip_be(snat_address), port=port_be(port)))


def backend_of(raw: bytes) -> tuple[str, int, str]:
    """(address, port, SNAT address) of a kgw_backends value."""
    b = Backend.from_buffer_copy(raw)
    return ip_str(b.addr), port_host(b.port), ip_str(b.snat_addr)


def backends_of(table: bytes) -> dict[int, bytes]:
    """backend_id -> value of every used slot of a whole kgw_backends read (address 0:
    unused)."""
    size = ctypes.sizeof(Backend)
    unused = bytes(4)
    return {bid: table[off:off + size] for bid, off in enumerate(range(0, len(table), size))
            if table[off:off + 4] != unused}


def maglev_index(fe_id: int, slot: int, ring_size: int) -> int:
    """kgw_maglev index of a frontend's slot (one row of ring_size slots per frontend)."""
    return fe_id * ring_size + slot


def local_addr_key(address: str) -> bytes:
    """kgw_local_addrs key (a __be32)."""
    return ipaddress.IPv4Address(address).packed


def local_addr_of(key: bytes) -> str:
    return str(ipaddress.IPv4Address(key))


def flow_key(saddr: str, sport: int, daddr: str, dport: int, proto: int) -> bytes:
    """kgw_ct / kgw_ct_syn key, the tuple as the packet carries it."""
    return bytes(FlowKey(saddr=ip_be(saddr), daddr=ip_be(daddr), sport=port_be(sport),
                         dport=port_be(dport), proto=proto))


def counter_total(per_cpu: Iterable[bytes]) -> tuple[int, int]:
    """(packets, bytes) of a kgw_stats slot, summed over its per-CPU values."""
    p = b = 0
    for raw in per_cpu:
        v = CounterVal.from_buffer_copy(raw)
        p += v.packets
        b += v.bytes
    return p, b


def counter_totals(raw: bytes, count: int) -> list[tuple[int, int]]:
    """(packets, bytes) of ``count`` consecutive kgw_stats slots, summed over CPUs, from
    one batched read of the per-CPU array (``Map.lookup_range``: per slot, one
    kgw_counter_val per CPU, 16 bytes each, so no padding)."""
    if not count:
        return []
    words = memoryview(raw).cast("Q")  # packets, bytes, packets, bytes, ...
    per_slot = len(words) // count  # 2 * CPUs
    out = []
    for i in range(0, per_slot * count, per_slot):
        out.append((sum(words[i:i + per_slot:2]), sum(words[i + 1:i + per_slot:2])))
    return out


def splice_peer_val(peer_cookie: int) -> bytes:
    """A fresh kgw_splice_peer value (keyed by ``u64(cookie)``): the peer, no bytes yet."""
    return bytes(SplicePeer(peer=peer_cookie))


def sockhash_val(fd: int) -> bytes:
    """kgw_sockhash value: the socket's file descriptor (the kernel stores the socket)."""
    return struct.pack("=i", fd)
