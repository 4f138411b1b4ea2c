"""The rate limit table's memory: created by the supervisor, mapped by every worker.

Standard library only, so the supervisor (``kgw_l7.plane``) creates it without importing
the per-request modules; ``kgw_l7.ratelimit`` holds the buckets' algorithm and says why
the layout is what it is.

Layout: a 64-byte header (magic, slot count, the base time in microseconds of
CLOCK_MONOTONIC, a 16-byte random hash secret, then zeros), then ``nslots`` 64-bit
words, all zero at first (empty). In a memfd: no file to clean up, and every process
that holds the descriptor maps the same pages.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time
from dataclasses import dataclass

#: Slots in the table (8 bytes each): 512 KiB, about 50k live keys at a quarter full.
NSLOTS = 65536
#: Slots tried for one key before it is let through unlimited (table full there).
PROBES = 8
HEADER = 64
MAGIC = 0x6B67772D726C3031  # "kgw-rl01"
_LAYOUT = struct.Struct("<QQQ16s")


def create_table_fd(nslots: int = NSLOTS) -> int:
    """A new, empty table in a memfd (close-on-exec: pass it on with ``pass_fds``)."""
    if nslots & (nslots - 1) or nslots < PROBES:
        raise ValueError(f"nslots must be a power of two >= {PROBES} (is {nslots})")
    fd = os.memfd_create("kgw-ratelimit", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, HEADER + 8 * nslots)
        os.pwrite(fd, _LAYOUT.pack(MAGIC, nslots, time.monotonic_ns() // 1000,
                                   os.urandom(16)), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class Mapping:
    mm: mmap.mmap
    #: The address of the first byte (the header), valid while ``view`` lives.
    addr: int
    nslots: int
    base: int
    secret: bytes
    view: ctypes.c_char


def map_table(fd: int) -> Mapping:
    """Map the table in ``fd`` (the descriptor may be closed afterwards)."""
    magic, nslots, base, secret = _LAYOUT.unpack(os.pread(fd, _LAYOUT.size, 0))
    if magic != MAGIC or nslots & (nslots - 1) or nslots < PROBES:
        raise ValueError("not a kgw rate limit table")
    mm = mmap.mmap(fd, HEADER + 8 * nslots, mmap.MAP_SHARED,
                   mmap.PROT_READ | mmap.PROT_WRITE)
    # (a buffer export: the mapping cannot be closed or moved while the view lives)
    view = ctypes.c_char.from_buffer(mm)
    return Mapping(mm, ctypes.addressof(view), nslots, base, secret, view)
