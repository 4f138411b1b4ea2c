"""Offsets of a few kernel struct fields, read from the running kernel's BTF.

bpf/sockmap.c reads TCP_SKB_CB(skb)->seq and tcp_sk(sk)->copied_seq to pop the bytes of a
retransmission that the socket already consumed, and to keep a held direction in order;
and the length of the peer socket's psock queue, for backpressure (see the comments
there). The headers bcc
compiles against may belong to another kernel (on the development VM: Debian's 6.1
headers under a 6.18 kernel), so the offsets come from /sys/kernel/btf/vmlinux, dumped by
bpftool. A field may sit inside an anonymous union or struct (``sk_buff.sk`` does on 6.1,
not on 6.18): anonymous members are followed. When anything is missing the program is
built without that feature (``KGW_SPLICE_TRIM=0``: no trimming;
``KGW_SPLICE_BACKPRESSURE=0``: no backpressure) and one warning says why.
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
from dataclasses import dataclass

log = logging.getLogger("kgw.l4.btf")

BTF_PATH = "/sys/kernel/btf/vmlinux"

#: macro -> (struct, field)
WANTED: dict[str, tuple[str, str]] = {
    "KGW_OFF_SKB_SK": ("sk_buff", "sk"),
    "KGW_OFF_SKB_CB": ("sk_buff", "cb"),
    "KGW_OFF_TCB_SEQ": ("tcp_skb_cb", "seq"),
    "KGW_OFF_TP_COPIED_SEQ": ("tcp_sock", "copied_seq"),
    "KGW_OFF_SK_USER_DATA": ("sock", "sk_user_data"),
    "KGW_OFF_PSOCK_INGRESS_SKB": ("sk_psock", "ingress_skb"),
    "KGW_OFF_SKB_HEAD_QLEN": ("sk_buff_head", "qlen"),
}

#: feature macro -> (the offsets it needs, what is lost without it)
FEATURES: dict[str, tuple[tuple[str, ...], str]] = {
    "KGW_SPLICE_TRIM": (
        ("KGW_OFF_SKB_SK", "KGW_OFF_SKB_CB", "KGW_OFF_TCB_SEQ", "KGW_OFF_TP_COPIED_SEQ"),
        "spliced retransmissions that repeat delivered bytes are not trimmed"),
    "KGW_SPLICE_BACKPRESSURE": (
        ("KGW_OFF_SKB_SK", "KGW_OFF_SKB_CB", "KGW_OFF_TCB_SEQ", "KGW_OFF_TP_COPIED_SEQ",
         "KGW_OFF_SK_USER_DATA", "KGW_OFF_PSOCK_INGRESS_SKB", "KGW_OFF_SKB_HEAD_QLEN"),
        "spliced connections have no backpressure (a slow reader makes the gateway "
        "buffer without limit)"),
}

_TYPE = re.compile(r"^\[(\d+)\] (STRUCT|UNION) '([^']*)' size=\d+ vlen=(\d+)")
_MEMBER = re.compile(r"^\s+'([^']*)' type_id=(\d+) bits_offset=(\d+)")


@dataclass(frozen=True, slots=True)
class Member:
    name: str  # "(anon)" for an anonymous struct or union
    type_id: int
    bits_offset: int


def parse_composites(raw_dump: str) -> tuple[dict[int, list[Member]], dict[str, int]]:
    """Struct and union members by type id, and named structs by name, from
    ``bpftool btf dump file ... format raw``."""
    members: dict[int, list[Member]] = {}
    by_name: dict[str, int] = {}
    cur: list[Member] | None = None
    for line in raw_dump.splitlines():
        if line.startswith("["):
            m = _TYPE.match(line)
            if m is None:
                cur = None
                continue
            tid = int(m.group(1))
            cur = members[tid] = []
            if m.group(2) == "STRUCT" and m.group(3) != "(anon)":
                by_name.setdefault(m.group(3), tid)
            continue
        if cur is not None:
            m = _MEMBER.match(line)
            if m is not None:
                cur.append(Member(m.group(1), int(m.group(2)), int(m.group(3))))
    return members, by_name


def field_offset(members: dict[int, list[Member]], type_id: int, field: str) -> int | None:
    """Byte offset of ``field`` in the composite ``type_id``, looking inside anonymous
    members; None if absent or not byte-aligned (a bitfield)."""
    for m in members.get(type_id, ()):
        if m.name == field:
            return m.bits_offset // 8 if m.bits_offset % 8 == 0 else None
        if m.name == "(anon)" and m.type_id in members:
            inner = field_offset(members, m.type_id, field)
            if inner is not None and m.bits_offset % 8 == 0:
                return m.bits_offset // 8 + inner
    return None


def offsets(raw_dump: str) -> dict[str, int]:
    """Macro -> byte offset for every field of WANTED found in the dump."""
    members, by_name = parse_composites(raw_dump)
    out: dict[str, int] = {}
    for macro, (struct, field) in WANTED.items():
        tid = by_name.get(struct)
        off = field_offset(members, tid, field) if tid is not None else None
        if off is not None:
            out[macro] = off
    return out


def feature_cflags(got: dict[str, int]) -> tuple[tuple[str, ...], list[str]]:
    """-D flags for bpf/sockmap.c from the offsets found, and one warning per feature
    that has to be left out."""
    flags = [f"-D{k}={v}" for k, v in sorted(got.items())]
    warnings = []
    for feature, (needs, loss) in FEATURES.items():
        missing = [n for n in needs if n not in got]
        flags.append(f"-D{feature}={0 if missing else 1}")
        if missing:
            warnings.append(
                f"kernel BTF lacks {', '.join(f'{WANTED[k][0]}.{WANTED[k][1]}' for k in missing)}: "
                f"{loss}")
    return tuple(flags), warnings


@functools.cache
def splice_cflags() -> tuple[str, ...]:
    """-D flags for bpf/sockmap.c: the offsets, and each feature on or off."""
    try:
        dump = subprocess.run(["bpftool", "btf", "dump", "file", BTF_PATH, "format", "raw"],
                              capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        dump = ""
        log.warning("cannot read the kernel's BTF (%s)", e)
    flags, warnings = feature_cflags(offsets(dump))
    for w in warnings:
        log.warning("%s", w)
    return flags
