"""Copying a proxied connection both ways at the transport level: what one side's
transport reads is written to the other side's transport from the protocol's callback.

Why not asyncio streams (``StreamReader``/``StreamWriter`` and a ``read``/``write``/
``drain`` loop per direction): each chunk then goes through the reader's buffer (one
copy in, one out), a task switch and a drain; for TLS termination that was most of the
CPU kgw spent per byte beyond OpenSSL's own (bench/results/tlsterm.md). Here a chunk is
written on as it arrives, and flow control is the transports' own: when a side's write
buffer passes its high-water mark its protocol is told ``pause_writing`` and stops the
other side's reading until ``resume_writing``.

End of stream: a side's EOF is passed on as a shutdown when the other side can half-close
(plain TCP) and the other direction keeps flowing; a TLS transport cannot half-close, so
an EOF that cannot be passed on ends the pair (as TLS proxies do). A pair ends when both
sides' connections are lost; closing one side flushes what it still holds, for at most
``CLOSE_TIMEOUT`` seconds, then it is aborted.

States of a side (``Side``): linked or not (a side made before its peer exists — the
client's, whose TLS handshake ends before the backend is connected — is paused and keeps
what it reads until ``link``), EOF seen or not, lost or not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import cast

CLOSE_TIMEOUT = 10.0


class Side(asyncio.Protocol):
    """One connection of a relayed pair. ``count`` is told the size of each chunk read on
    this side (and so written to the other); ``on_made`` is called once the side has its
    transport (a listener's protocol factory: the connection was accepted)."""

    def __init__(self, count: Callable[[int], None] | None = None,
                 on_made: Callable[[Side], None] | None = None) -> None:
        self.on_made = on_made
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.count = count
        self.early: list[bytes] = []
        self.eof = False
        self.lost = asyncio.get_running_loop().create_future()
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        if self.peer is None:
            self.transport.pause_reading()
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
            self._wake()
            return
        out = _usable(peer)
        if out is None:
            return  # the peer is gone: the pair is ending, and this side closes with it
        if self.count is not None:
            self.count(len(data))
        out.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        mine, out = _usable(self), _usable(self.peer)
        if mine is not None and out is not None and self.peer is not None and not self.peer.eof \
                and mine.can_write_eof() and out.can_write_eof():
            out.write_eof()
            return True  # our own write side stays open for the other direction
        self.close()
        return False

    def pause_writing(self) -> None:
        out = _usable(self.peer)
        if out is not None:
            out.pause_reading()

    def resume_writing(self) -> None:
        out = _usable(self.peer)
        if out is not None:
            out.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._wake()
        if self.peer is not None:
            self.peer.close()

    # before the link

    async def arrived(self) -> None:
        """Until this side, not linked yet and reading, has kept more bytes in ``early``,
        seen its EOF or been lost (a reader of what comes first, such as a PROXY protocol
        header; the caller bounds the wait)."""
        if self.eof or self.lost.done():
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # the pair

    def close(self) -> None:
        """Close both sides (each flushes what it holds first)."""
        for side in (self, self.peer):
            t = _usable(side)
            if t is not None:
                t.close()

    def abort(self) -> None:
        for side in (self, self.peer):
            if side is not None and side.transport is not None and not side.lost.done():
                side.transport.abort()


def _usable(side: Side | None) -> asyncio.Transport | None:
    """``side``'s transport while it can be written to, paused or closed: not before it
    is made nor once it is closing or lost (uvloop raises RuntimeError on a closed one)."""
    if side is None or side.transport is None or side.lost.done() or side.transport.is_closing():
        return None
    return side.transport


def link(a: Side, b: Side) -> None:
    """Make ``a`` and ``b`` a pair: what each kept before its peer existed is written on,
    and reading starts."""
    a.peer, b.peer = b, a
    for src, dst in ((a, b), (b, a)):
        out = _usable(dst)
        if out is not None:
            for chunk in src.early:
                if src.count is not None:
                    src.count(len(chunk))
                out.write(chunk)
        src.early.clear()
    for side in (a, b):
        if side.lost.done():
            side.connection_lost(None)  # lost before the link: end the pair
            continue
        if side.eof:  # its EOF came before the link: pass it on now
            side.eof = False
            if side.eof_received():
                continue
        t = _usable(side)
        if t is not None:
            t.resume_reading()


async def run(a: Side, b: Side) -> None:
    """Wait until both sides of a linked pair are lost. Cancelled, or when a side will not
    flush within CLOSE_TIMEOUT of the pair's end, both are aborted."""
    try:
        await asyncio.wait((a.lost, b.lost), return_when=asyncio.FIRST_COMPLETED)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.wait((a.lost, b.lost))
    finally:
        if not (a.lost.done() and b.lost.done()):
            a.abort()
