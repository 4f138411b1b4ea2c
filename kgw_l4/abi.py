"""The ABI shared with the BPF programs: sizes, ctypes mirrors of bpf/kgw_structs.h,
counter indexes and flags.

SIZES is the one source of the tunable sizes: the loader passes it as -D cflags, the
ABI test compiles the C headers with the same flags and compares every size, offset
and constant with this module (tests/l4/test_abi.py).
"""

from __future__ import annotations

import ctypes
import enum
import ipaddress
import socket
import sys
from typing import Mapping

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
}

PIN_DIR = "/sys/fs/bpf/kgw"
NO_BACKEND = 0xFFFFFFFF

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


COUNTER_COUNT = len(Counter)


def global_base(sizes: Mapping[str, int] = SIZES) -> int:
    return sizes["KGW_MAX_FRONTENDS"] + sizes["KGW_MAX_BACKENDS"]


def backend_base(sizes: Mapping[str, int] = SIZES) -> int:
    return sizes["KGW_MAX_FRONTENDS"]


def stats_size(sizes: Mapping[str, int] = SIZES) -> int:
    return global_base(sizes) + COUNTER_COUNT


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
