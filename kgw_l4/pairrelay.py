"""TLS passthrough's short connections, copied by compiled code; long ones handed on to
the sockmap splice.

Why (issue 21, bench/results/l4.md "TLS passthrough new connections"): spliced from
the first byte, every TLS handshake flight crossing the gateway is sent by the peer
psock's kernel worker — a wakeup and a work item per flight, ~180 µs of kworker CPU per
connection that a userspace proxy such as haproxy does not pay; copied by the
interpreted relay (kgw_l4.relay), the per-byte Python cost was larger still. Here the
sockets' flights are copied by ``kgw_l4._pairrelay`` (Cython, no GIL, one epoll set
watched by the event loop), and a pair that has moved ``HANDOVER_BYTES`` is given back
with both directions idle in userspace and goes to the splice (``Splicer.splice_now``
counts what was copied before it), so long streams keep the kernel's throughput.

Without the extension (not built, or ``KGW_NO_EXTENSIONS=1``) ``native()`` is None and
passthrough splices every connection from the start, as before.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.machinery
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("kgw.l4.pairrelay")

#: bytes (both ways together) after which a pair goes to the splice: a TLS handshake
#: and a few requests stay here, a bulk transfer moves on after ~1 ms of copying
HANDOVER_BYTES = 256 * 1024
#: bytes read at once (one scratch buffer; a direction keeps only what its destination did
#: not take)
BUFSIZE = 64 * 1024
#: pairs at most; past it new connections are spliced from the start
CAPACITY = 65536
#: on shutdown, pairs still open get this long to finish before they are reset
DRAIN_TIMEOUT = 5.0

FINISHED, RESET, HANDOVER = 0, 1, 2


def native() -> Any:
    """The compiled ``PairRelay`` class, or None: extensions disabled, not built, or
    older than their source (a stale build is never used)."""
    if os.environ.get("KGW_NO_EXTENSIONS", "") not in ("", "0"):
        return None
    here = Path(__file__).resolve().parent
    pyx = here / "_pairrelay.pyx"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        so = here / f"_pairrelay{suffix}"
        if so.exists():
            if pyx.exists() and so.stat().st_mtime < pyx.stat().st_mtime:
                return None
            break
    else:
        return None
    try:
        return importlib.import_module("kgw_l4._pairrelay").PairRelay
    except ImportError as e:
        log.warning("kgw_l4._pairrelay cannot be loaded (%s): TLS passthrough splices "
                    "every connection", e)
        return None


@dataclass(frozen=True, slots=True)
class Ended:
    """How a pair left the relay: ``kind`` FINISHED (both directions ended; sockets
    closed), RESET (an error or a peer's reset; both reset and closed) or HANDOVER
    (sockets ``a``/``b`` open again, the caller's); bytes copied each way."""
    kind: int
    a_to_b: int
    b_to_a: int
    a: socket.socket | None = None
    b: socket.socket | None = None


class PairCopier:
    """The event loop's side of ``_pairrelay.PairRelay``: registers its epoll fd as a
    reader, and tells each pair's ``on_end`` how it ended."""

    def __init__(self, relay_cls: Any, loop: asyncio.AbstractEventLoop,
                 handover: int = HANDOVER_BYTES, capacity: int = CAPACITY) -> None:
        self._relay = relay_cls(capacity, BUFSIZE, handover)
        self._loop = loop
        #: token -> (told how the pair ended, the caller's ``about`` it, when it came)
        self._ends: dict[int, tuple[Callable[[Ended], None], Any, float]] = {}
        self._next = 0
        self._closed = False
        self._idle: asyncio.Future[None] | None = None
        loop.add_reader(self._relay.fileno(), self._ready)

    def __len__(self) -> int:
        return len(self._ends)

    def add(self, a: socket.socket, b: socket.socket,
            on_end: Callable[[Ended], None], about: Any = None) -> bool:
        """Copy connected sockets ``a`` and ``b`` both ways; they are the relay's from
        now on (their socket objects are detached). False: closing or full, nothing
        taken (the caller serves them otherwise). ``about``: returned by ``pairs`` (kept
        as given: the caller formats it only when asked)."""
        if self._closed:
            return False
        token = self._next
        if not self._relay.add(a.fileno(), b.fileno(), token):
            return False
        self._next += 1
        a.detach()
        b.detach()
        self._ends[token] = (on_end, about, time.monotonic())
        return True

    def pairs(self) -> list[tuple[Any, float, int, int]]:
        """The pairs copied now (kgw-inspect): each one's ``about``, age in seconds and
        bytes a->b and b->a so far."""
        now = time.monotonic()
        moved = self._relay.moved()
        return [(about, now - since, *moved[token])
                for token, (_, about, since) in list(self._ends.items()) if token in moved]

    def _ready(self) -> None:
        self._ended(self._relay.process())

    def _ended(self, records: list[tuple[int, int, int, int, int, int]]) -> None:
        for token, kind, up, down, fa, fb in records:
            entry = self._ends.pop(token, None)
            on_end = entry[0] if entry is not None else None
            if kind == HANDOVER:
                a, b = socket.socket(fileno=fa), socket.socket(fileno=fb)
                if on_end is None:  # (cannot happen: every token has its callback)
                    a.close()
                    b.close()
                    continue
                end = Ended(kind, up, down, a, b)
            else:
                if on_end is None:
                    continue
                end = Ended(kind, up, down)
            try:
                on_end(end)
            except Exception:  # noqa: BLE001 — one pair's callback must not stop the rest
                log.exception("pair relay: end-of-pair callback failed")
        if not self._ends and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def close(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Take no more pairs; let those open finish for at most ``timeout`` seconds,
        then reset the rest."""
        self._closed = True
        if self._ends:
            self._idle = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._idle
            except TimeoutError:
                log.info("pair relay: %d connections still open after %.1fs: reset",
                         len(self._ends), timeout)
        self._loop.remove_reader(self._relay.fileno())
        self._ended(self._relay.abort_all())
