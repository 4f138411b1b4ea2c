"""Local rate limits, node-wide: one table of token buckets in shared memory that every
L7 worker process of the node updates with atomic operations.

The buckets are GCRA (the generic cell rate algorithm, RFC 2697's token bucket in its
single-number form): a bucket is one *theoretical arrival time* (TAT). With emission
interval T (fillInterval / tokensPerFill) and burst B (maxTokens), a request at time
``now`` is allowed when ``max(TAT, now) - now <= (B - 1) * T``, and then moves TAT to
``max(TAT, now) + T``. That is exactly a bucket of B tokens refilled continuously at
1/T per second (Envoy refills tokensPerFill at once every fillInterval; over any window
the two allow the same number of requests, give or take one refill).

Being one number, a bucket fits one 64-bit word with its key's tag, and one
compare-and-swap updates it, so the workers (separate processes, SO_REUSEPORT) share one
limit without a lock: the table is a memfd the supervisor creates
(``kgw_l7.ratetable``) and each worker maps (``attach``).

The table (``SharedBuckets``): a 64-byte header (magic, slot count, a random hash
secret), then ``nslots`` 64-bit words, open addressing with ``PROBES`` linear probes.
A word is ``tag << 48 | TAT``: TAT in microseconds since the table's base time
(CLOCK_MONOTONIC, the same clock in every process of the host; 48 bits last 8.9 years),
tag the top 16 bits of the key's hash (never 0: 0 is an empty slot). A bucket whose TAT
has passed is full, the same as no bucket, so its slot may be taken by any other key
(one CAS on the whole word: no torn state). A key is hashed as the tuple (a salt of the
table and the limit's scope, the value) by Python's own ``hash``: the bytes in it by SipHash
keyed with the interpreter's hash secret, which the plane makes one random
``PYTHONHASHSEED`` for all its workers (``kgw_l7.plane``), so every worker finds a
client's bucket in the same slot, and clients, not knowing the secret, cannot choose
values that collide. (It replaced a keyed BLAKE2b: Python builds a hash object per call,
~8.7k instructions per request; ``hash`` of a value already hashed, the connection's
peer address, is a cached read; bench/results/ratelimit.md.) Two keys share a
bucket only if they hash to the same slot neighbourhood *and* tag (about 1 in 2^16 per
pair of live keys in one neighbourhood); a race between two first requests of one key
may create it twice (one extra burst, once). When all ``PROBES`` slots of a key are
live buckets of other keys, the request is let through and counted
(``kgw_l7_rate_limit_table_full``): a full table must not refuse everyone.

Compiled (scripts/build_ext.py), loads and CAS are the C11 atomic builtins (declared in
ratelimit.pxd). Interpreted, the same code runs on ``ctypes`` views of the mapping under
a POSIX record lock of the file (``fcntl.lockf``), which is atomic across processes too,
only slower.
"""

from __future__ import annotations

import ctypes
import fcntl
import math
import os
import time
from typing import Any

from kgw_l7.ratetable import HEADER, PROBES, create_table_fd, map_table

try:
    import cython
except ImportError:
    from kgw_l7 import _cython as cython

_TAG_SHIFT = 48
_TAT_MASK = (1 << 48) - 1
_HASH_MASK = (1 << 64) - 1

if not cython.compiled:  # (compiled: C functions from ratelimit.pxd, the same names)
    def kgw_load(addr: int, i: int) -> int:
        return ctypes.c_uint64.from_address(addr + HEADER + 8 * i).value

    def kgw_cas(addr: int, i: int, expected: int, desired: int) -> bool:
        """Interpreted: the caller holds the table's lock."""
        cell = ctypes.c_uint64.from_address(addr + HEADER + 8 * i)
        if cell.value != expected:
            return False
        cell.value = desired
        return True

    def kgw_monotonic_us() -> int:
        return time.monotonic_ns() // 1000


class SharedBuckets:
    """The token buckets of one node (or of one process: ``fd`` -1, for tests and for a
    worker started without a table)."""

    __slots__ = ("mm", "addr", "mask", "base", "secret", "salt", "fd", "full", "_view")

    def __init__(self, fd: int = -1) -> None:
        owned = fd < 0
        if owned:
            fd = create_table_fd()
        m = map_table(fd)
        self.mm = m.mm
        self._view = m.view
        self.addr = m.addr
        self.mask = m.nslots - 1
        self.base = m.base
        self.secret = m.secret
        #: Per table: another table (another plane) puts a key elsewhere.
        self.salt = int.from_bytes(m.secret[:8], "little")
        #: The descriptor locked interpreted; -1 when this process owns a private table.
        self.fd = -1 if owned else fd
        if owned:
            os.close(fd)
        #: Requests let through because their key found no slot.
        self.full = 0

    def key_hash(self, key: bytes, salt: Any = None) -> int:
        """The bucket of ``key`` (``salt``: the limit's, ``scope_salt``): the same in every
        process of the node that has the same ``PYTHONHASHSEED`` (the module's docstring
        says why)."""
        return hash((self.salt if salt is None else salt, key)) & _HASH_MASK

    def scope_salt(self, scope: bytes) -> int:
        """A limit's own salt: its keys' buckets differ from every other limit's."""
        return hash((self.salt, scope))

    def take(self, h: int, emission: int, tau: int) -> int:
        """One request against bucket ``h`` (a ``key_hash``): >= 0, allowed, with that
        many more requests allowed now; < 0, refused: minus the microseconds until one
        is allowed. ``emission``: microseconds per token; ``tau``: (burst - 1) *
        emission."""
        if cython.compiled:
            return self._take(h, emission, tau)
        fd = self.fd
        if fd < 0:
            return self._take(h, emission, tau)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            return self._take(h, emission, tau)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def _take(self, h: int, emission: int, tau: int) -> int:
        addr = self.addr
        mask = self.mask
        tag = (h >> _TAG_SHIFT) or 1
        start = h & mask
        for _attempt in range(4):  # (a CAS lost to another worker: look again)
            now = kgw_monotonic_us() - self.base
            slot = -1
            free = -1
            old = 0
            for p in range(PROBES):
                i = (start + p) & mask
                w = kgw_load(addr, i)
                if w >> _TAG_SHIFT == tag:
                    slot = i
                    old = w
                    break
                if free < 0 and (w == 0 or (w & _TAT_MASK) <= now):
                    free = i
                    old = w
            if slot < 0:
                if free < 0:
                    self.full += 1
                    return 0
                slot = free
                tat = now  # a new (or a reused, expired) bucket: full
            else:
                tat = old & _TAT_MASK
                if tat < now:
                    tat = now
            if tat - now > tau:
                return now + tau - tat  # (negative: the wait)
            new_tat = tat + emission
            if kgw_cas(addr, slot, old, (tag << _TAG_SHIFT) | (new_tat & _TAT_MASK)):
                return (tau + emission - (new_tat - now)) // emission
        return 0  # contended beyond reason: let it through


#: This worker's table (``attach``); a private one is made on first use otherwise.
_TABLE: SharedBuckets | None = None


def attach(fd: int) -> SharedBuckets:
    """Map the supervisor's table in this worker."""
    global _TABLE
    _TABLE = SharedBuckets(fd)
    return _TABLE


def table() -> SharedBuckets:
    global _TABLE
    if _TABLE is None:
        _TABLE = SharedBuckets()
    return _TABLE


def table_full() -> int:
    """Requests this worker let through for want of a slot (a metric)."""
    return _TABLE.full if _TABLE is not None else 0


KEY_NONE, KEY_CLIENT_IP, KEY_HEADER, KEY_CLAIM = 0, 1, 2, 3
_KEY_KINDS = {"": KEY_NONE, "client_ip": KEY_CLIENT_IP, "header": KEY_HEADER,
              "claim": KEY_CLAIM}


class LocalLimit:
    """A ``config.LocalRateLimit`` compiled: what ``take`` needs per request, and the
    429's headers prepared."""

    __slots__ = ("emission", "tau", "key", "header", "hops", "scope", "salt", "fixed",
                 "policy_header", "name", "table", "claim", "after_auth")

    def __init__(self, rl: Any) -> None:
        self.table = table()
        emission = rl.fill_interval * 1e6 / rl.tokens_per_fill
        self.emission = max(1, int(round(emission)))
        self.tau = self.emission * (rl.max_tokens - 1)
        self.key = _KEY_KINDS[rl.key]
        self.header = rl.header.lower().encode()
        self.hops = rl.trusted_hops
        #: key "claim": the claim's path in the verified JWT; the limit is taken once the
        #: rule's auth checks ran (``after_auth``), with ``take_value`` (the exchange looks
        #: the value up with auth's own claim lookup, ``kgw_l7.auth.claim_key``).
        self.claim = rl.claim.split(".") if rl.claim else []
        self.after_auth = self.key == KEY_CLAIM
        self.scope = rl.scope.encode()
        self.name = rl.scope
        self.salt = self.table.scope_salt(self.scope)
        #: The bucket of a limit without a key.
        self.fixed = self.table.key_hash(b"", self.salt)
        if rl.fill_interval >= 1 and rl.fill_interval == int(rl.fill_interval):
            q, w = rl.tokens_per_fill, int(rl.fill_interval)
        else:
            q, w = max(1, round(rl.tokens_per_fill / rl.fill_interval)), 1
        self.policy_header = b'"local";q=%d;w=%d' % (q, w)

    def bucket(self, headers: tuple[tuple[bytes, bytes], ...], peer: bytes) -> int:
        key = self.key
        if key == KEY_NONE:
            return self.fixed
        if key == KEY_CLIENT_IP:
            value = client_ip(headers, peer, self.hops)
        elif key == KEY_CLAIM:
            return self.fixed  # (the no-claim bucket: the claims are ``take_value``'s)
        else:
            value = b""
            name = self.header
            for n, v in headers:
                if n == name:
                    value = v
                    break
        return self.table.key_hash(value, self.salt)

    def take(self, headers: tuple[tuple[bytes, bytes], ...], peer: bytes) -> int:
        """``SharedBuckets.take`` for this request's bucket."""
        return self.table.take(self.bucket(headers, peer), self.emission, self.tau)

    def take_value(self, value: bytes) -> int:
        """``take`` for the bucket of a key's value found elsewhere (a JWT claim's; b"":
        the bucket of the requests without one, the same as ``fixed``)."""
        return self.table.take(self.table.key_hash(value, self.salt), self.emission, self.tau)

    def refusal_headers(self, wait_us: int) -> list[tuple[bytes, bytes]]:
        """Retry-After, and the IETF draft's RateLimit-Policy and RateLimit fields."""
        seconds = max(1, math.ceil(wait_us / 1e6))
        return [(b"retry-after", b"%d" % seconds),
                (b"ratelimit-policy", self.policy_header),
                (b"ratelimit", b'"local";r=0;t=%d' % seconds)]


def client_ip(headers: tuple[tuple[bytes, bytes], ...], peer: bytes, hops: int) -> bytes:
    """The client's address: the peer's, or with ``hops`` trusted proxies in front, the
    ``hops``-th X-Forwarded-For entry from the right (Envoy's xff_num_trusted_hops); the
    peer's when the header has fewer entries (the request did not come through them)."""
    if hops <= 0:
        return peer
    entries: list[bytes] = []
    for n, v in headers:
        if n == b"x-forwarded-for":
            entries.extend(v.split(b","))
    if len(entries) < hops:
        return peer
    return entries[-hops].strip()
