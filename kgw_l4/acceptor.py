"""Listening sockets for the L4 proxies that accept connections themselves.

The splice proxy and the TLS passthrough proxy both keep one listening socket per
(address, port), opened and closed as the configuration changes. Each listener is
watched by one reader callback that accepts up to ACCEPT_BATCH connections per wakeup
(one loop turn for a burst instead of one per connection, and no registration churn:
``loop.sock_accept`` adds and removes the reader for every connection) and hands each to
``accepted``; the default runs ``serve`` in a task. The batch bound keeps a flood on one
port from starving the other callbacks of the loop: what is left waits for the next turn
(the listener is still readable). Closing a listener leaves the connections it accepted
alone: they finish on their own.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping

Key = tuple[str, int]

log = logging.getLogger("kgw.l4.accept")

#: connections accepted per wakeup of a listener, at most
ACCEPT_BATCH = 64
#: after an accept error other than "none waiting" (e.g. EMFILE: the connection stays
#: queued, so the listener stays readable), the listener is left alone this long
ACCEPT_RETRY = 0.1
#: TCP keepalive of accepted connections, seconds of silence before the first probe
#: (``--l4-tcp-keepalive``; 0: off). A client that vanishes without a FIN or a reset
#: (power lost, its route gone) would otherwise hold its relayed, spliced or copied
#: connection, both sockets and the backend's, for ever: nothing is sent to it while the
#: connection is idle. The options are set on the listener and inherited by every
#: accepted socket, so they cost nothing per connection.
KEEPALIVE_IDLE = 300
#: unanswered probes, KEEPALIVE_IDLE / 10 s apart, after which the connection is dead
KEEPALIVE_PROBES = 5


def set_keepalive(ls: socket.socket, idle: int) -> None:
    """TCP keepalive on listener ``ls`` for the connections it accepts: the first probe
    after ``idle`` seconds of silence (0: off), then KEEPALIVE_PROBES probes ``idle``/10
    seconds apart (at least 1) before the kernel fails the connection (ETIMEDOUT), which
    ends it in whichever of kgw's relays carries it."""
    if idle <= 0:
        return
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // 10))
    ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


class Acceptor:
    def __init__(self, *, keepalive: int = KEEPALIVE_IDLE) -> None:
        self.keepalive = keepalive
        self._listeners: dict[Key, socket.socket] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, key: Key, conn: socket.socket) -> None:
        raise NotImplementedError

    def accepted(self, key: Key, conn: socket.socket, peer: tuple[str, int]) -> None:
        """A new connection (a blocking socket: set it non-blocking before handing it
        to asyncio streams). Called from the accept callback: must not block."""
        self.spawn(self.serve(key, conn))

    def listening(self, ls: socket.socket) -> None:
        """Options for a new listening socket (before listen()); accepted sockets
        inherit most of them."""

    def spawn(self, coro) -> asyncio.Task:
        assert self._loop is not None
        t = self._loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def listen(self, wanted: Mapping[Key, str]) -> dict[str, str]:
        """Listen on exactly ``wanted`` (address, port) -> name; return name -> error."""
        errors: dict[str, str] = {}
        loop = self._loop = asyncio.get_running_loop()
        for key in [k for k in self._listeners if k not in wanted]:
            ls = self._listeners.pop(key)
            loop.remove_reader(ls.fileno())
            ls.close()
        for key, name in wanted.items():
            if key in self._listeners:
                continue
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                set_keepalive(ls, self.keepalive)
                self.listening(ls)
                ls.bind(key)
                ls.listen(1024)
                ls.setblocking(False)
            except OSError as e:
                ls.close()
                errors[name] = f"cannot listen on {key[0]}:{key[1]}: {e.strerror or e}"
                continue
            self._listeners[key] = ls
            loop.add_reader(ls.fileno(), self._accept_batch, key, ls)
        return errors

    def _accept_batch(self, key: Key, ls: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                c, peer = ls.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("accept on %s:%d failed: %s", key[0], key[1], e)
                self._pause(key, ls)
                return
            try:
                self.accepted(key, c, peer)
            except Exception:  # noqa: BLE001 — one connection's failure, not the listener's
                log.exception("connection on %s:%d: setup failed", key[0], key[1])
                c.close()

    def _pause(self, key: Key, ls: socket.socket) -> None:
        """Stop watching ``ls`` for ACCEPT_RETRY seconds (it would wake every turn)."""
        assert self._loop is not None
        self._loop.remove_reader(ls.fileno())

        def resume() -> None:
            if self._listeners.get(key) is ls:
                self._loop.add_reader(ls.fileno(), self._accept_batch, key, ls)  # type: ignore[union-attr]

        self._loop.call_later(ACCEPT_RETRY, resume)

    def close_listeners(self) -> None:
        for ls in self._listeners.values():
            if self._loop is not None:
                self._loop.remove_reader(ls.fileno())
            ls.close()
        self._listeners.clear()
        for t in list(self._tasks):
            t.cancel()
