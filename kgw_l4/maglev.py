"""Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted, computed in
userspace; and the flow hash the BPF programs use to index the table.

Pure functions: no kernel, no I/O. The programmer writes only the slots that differ
between the old and the new table (``changed_slots``).
"""

from __future__ import annotations

import hashlib
import math
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass

DEFAULT_SIZE = 16381  # a prime; katran and the paper use primes of this order
NO_BACKEND = -1
HASH_SEED = 0x6B67770A
_JHASH_INITVAL = 0xDEADBEEF
_M32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class WeightedEndpoint:
    key: str  # stable identity, e.g. "10.0.0.1:80"; its hash places the endpoint
    weight: int  # relative; 0 = no new flows


def _perm(key: str, size: int) -> tuple[int, int]:
    d = hashlib.blake2b(key.encode(), digest_size=16).digest()
    h1 = int.from_bytes(d[:8], "little")
    h2 = int.from_bytes(d[8:], "little")
    return h1 % size, h2 % (size - 1) + 1


def build_table(endpoints: Sequence[WeightedEndpoint], size: int = DEFAULT_SIZE) -> list[int]:
    """Slot -> index into ``endpoints`` (NO_BACKEND when no endpoint has weight).

    Weighted variant as in katran's MaglevV2: every round each endpoint adds its
    weight to a credit and claims its next preferred slot each time the credit
    reaches the largest weight, so slot shares follow weights while each endpoint's
    preference list (hence stability under change) stays plain Maglev.
    """
    if size < 2:
        raise ValueError("Maglev table size must be at least 2")
    live = [(i, ep) for i, ep in enumerate(endpoints) if ep.weight > 0]
    table = [NO_BACKEND] * size
    if not live:
        return table
    live.sort(key=lambda t: t[1].key)
    perms = [_perm(ep.key, size) for _, ep in live]
    weights = [ep.weight for _, ep in live]
    max_w = max(weights)
    nxt = [0] * len(live)
    credit = [0] * len(live)
    filled = 0
    while True:
        for j, (idx, _) in enumerate(live):
            credit[j] += weights[j]
            if credit[j] < max_w:
                continue
            credit[j] -= max_w
            off, skip = perms[j]
            c = (off + nxt[j] * skip) % size
            while table[c] != NO_BACKEND:
                nxt[j] += 1
                c = (off + nxt[j] * skip) % size
            table[c] = idx
            nxt[j] += 1
            filled += 1
            if filled == size:
                return table


def without_down(endpoints: Sequence[WeightedEndpoint], down: Collection[int],
                 size: int = DEFAULT_SIZE) -> tuple[list[int], bool]:
    """The table of ``endpoints`` when those at the indices ``down`` failed their health
    check, and whether it is in panic (every endpoint with weight is down: all are kept,
    as the L7 plane does, since refusing every new connection helps nobody).

    Only a down endpoint's slots move: every other slot keeps the value of the full
    table, so flows to healthy endpoints keep their backend, and a down endpoint's slots
    go to what a table built without it puts there (weighted Maglev again, so its share
    spreads over the others by weight). When it recovers, the full table is what is
    written again: it gets back exactly the slots it had.
    """
    full = build_table(endpoints, size)
    gone = {i for i in down if 0 <= i < len(endpoints) and endpoints[i].weight > 0}
    if not gone:
        return full, False
    if all(i in gone for i, ep in enumerate(endpoints) if ep.weight > 0):
        return full, True
    rest = build_table([WeightedEndpoint(ep.key, 0 if i in gone else ep.weight)
                        for i, ep in enumerate(endpoints)], size)
    return [r if f in gone else f for f, r in zip(full, rest)], False


def group_weights(groups: Sequence[tuple[int, int]]) -> list[int]:
    """Integer per-endpoint weights for (group weight, endpoint count) pairs: a group's
    weight is shared equally among its endpoints (kgw_l4.config.BackendGroup)."""
    counts = [n for _, n in groups if n > 0]
    lcm = math.lcm(*counts) if counts else 1
    return [w * lcm // n if n else 0 for w, n in groups]


def changed_slots(old: Sequence[int], new: Sequence[int]) -> list[tuple[int, int]]:
    """(slot, value) for every slot whose value differs."""
    if len(old) != len(new):
        return list(enumerate(new))
    return [(i, v) for i, (o, v) in enumerate(zip(old, new)) if o != v]


def _rol32(w: int, s: int) -> int:
    return ((w << s) | (w >> (32 - s))) & _M32


def jhash_3words(a: int, b: int, c: int, initval: int) -> int:
    """Linux lib/jhash.h jhash_3words; mirrors kgw_jhash_3words in bpf/maglev.h."""
    initval = (initval + _JHASH_INITVAL + (3 << 2)) & _M32
    a = (a + initval) & _M32
    b = (b + initval) & _M32
    c = (c + initval) & _M32
    c ^= b; c = (c - _rol32(b, 14)) & _M32  # noqa: E702
    a ^= c; a = (a - _rol32(c, 11)) & _M32  # noqa: E702
    b ^= a; b = (b - _rol32(a, 25)) & _M32  # noqa: E702
    c ^= b; c = (c - _rol32(b, 16)) & _M32  # noqa: E702
    a ^= c; a = (a - _rol32(c, 4)) & _M32  # noqa: E702
    b ^= a; b = (b - _rol32(a, 14)) & _M32  # noqa: E702
    c ^= b; c = (c - _rol32(b, 24)) & _M32  # noqa: E702
    return c


def flow_hash(saddr: str, sport: int, daddr: str, dport: int, proto: int) -> int:
    """The hash bpf/maglev.h (kgw_flow_hash) computes for a new flow."""
    ports = ((sport & 0xFFFF) << 16) | (dport & 0xFFFF)
    # (inet_aton: a tenth of ipaddress.IPv4Address's cost, per new connection)
    return jhash_3words(int.from_bytes(socket.inet_aton(saddr), "big"),
                        int.from_bytes(socket.inet_aton(daddr), "big"), ports, HASH_SEED ^ proto)


def flow_slot(saddr: str, sport: int, daddr: str, dport: int, proto: int,
              size: int = DEFAULT_SIZE) -> int:
    return flow_hash(saddr, sport, daddr, dport, proto) % size
