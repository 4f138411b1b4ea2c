"""A pipelined Redis connection that kgw owns, for the global rate limit's checks.

Why not the ``redis`` client: its asyncio command path (connection pool, encoder, reply
parser, per-command locks) cost ~400k instructions per call (bench/results/
ratelimit_global.md), several times the proxy's whole request, and a worker saturated at
~10k checks/s. Here a check is one RESP command appended to a batch and one future:

- Coalescing: commands sent in the same event-loop iteration go out as one write (flushed
  by a ``call_soon`` at the end of the iteration, or at once when ``MAX_BATCH`` are
  waiting). Each command is still one request's one round trip; the batch only shares
  the syscall and the TCP segment.
- Replies come back in the order the commands were written (Redis answers a connection's
  commands in order), so they are matched to a FIFO of waiters. hiredis's ``Reader`` (the
  C parser the ``redis`` client itself uses when installed) parses them; kgw parses no
  RESP itself. Commands are encoded by ``hiredis.pack_command``.
- Each waiter has its own deadline, kept by its caller: a waiter that gave up stays in the
  FIFO (its reply, when it comes, is read and dropped), so a late reply cannot go to the
  wrong waiter, and one command's timeout fails no other command before that one's own
  deadline. The caller then ``retire``s the connection: it takes no new commands (the
  next ones open a fresh connection, not queued behind a slow one) and closes once every
  waiter on it is done.
- Redis closing the connection (shutdown, restart, failover) fails every command still
  waiting on it with ``ConnectionError`` ("closed"); the connection is then ``broken``
  and its owner reports that to the next command instead of sending on it.

Bounds: at most ``MAX_PENDING`` commands waiting per connection (``Busy`` beyond it), so
the write buffer and the FIFO are bounded (a command is ~150 bytes).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Any, cast

import hiredis

#: Commands per write: a bigger batch waits for the next write (a few KB per write).
MAX_BATCH = 128
#: Commands written and not yet answered (or still batched) per connection.
MAX_PENDING = 1024


class ReplyError(Exception):
    """Redis answered a command with an error (``-ERR ...``, ``-NOSCRIPT ...``)."""


class Busy(Exception):
    """The connection has ``MAX_PENDING`` commands waiting: this one was not sent."""


class Connection(asyncio.Protocol):
    """One TCP connection to Redis carrying pipelined commands (see the module's doc)."""

    __slots__ = ("_loop", "_transport", "_reader", "_waiting", "_batch", "_flush_due",
                 "broken", "retired", "writes")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        #: futures of the commands written or batched, in order
        self._waiting: deque[asyncio.Future[Any]] = deque()
        #: encoded commands for the next write
        self._batch: list[bytes] = []
        self._flush_due = False
        #: why the connection cannot be used any more (None while it can)
        self.broken: BaseException | None = None
        #: given up on by a caller (a timeout): no new commands, closed when drained
        self.retired = False
        #: writes made (batches): checks / writes is the coalescing
        self.writes = 0

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # (uvloop's is no subclass)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # a dead peer behind an idle connection is found out
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        waiting = self._waiting
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as e:
                self._abort(ConnectionError(f"redis protocol error: {e}"))
                return
            if reply is False:  # incomplete: the rest comes with the next read
                break
            if not waiting:
                self._abort(ConnectionError("redis sent a reply to no command"))
                return
            fut = waiting.popleft()
            if fut.done():  # its caller gave up (timeout, cancelled): dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(ReplyError(str(reply)))
            else:
                fut.set_result(reply)
        if self.retired:
            self._close_if_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        err = ConnectionError("redis closed the connection")
        err.__cause__ = exc
        self._fail(err)

    # -- commands ---------------------------------------------------------------------

    def send(self, *args: bytes | str | int) -> asyncio.Future[Any]:
        """Queue one command; the future gets its reply (``ReplyError`` for an error
        reply, ``ConnectionError`` if the connection goes first). Raises ``Busy`` and,
        on a broken connection, ``ConnectionError``."""
        if self.broken is not None:
            raise ConnectionError(str(self.broken))
        waiting = self._waiting
        if len(waiting) >= MAX_PENDING:
            raise Busy(f"{MAX_PENDING} redis commands waiting on one connection")
        fut = self._loop.create_future()
        batch = self._batch
        # (hiredis's stub types the argument as a one-element tuple)
        batch.append(hiredis.pack_command(args))  # type: ignore[arg-type]
        waiting.append(fut)
        if len(batch) >= MAX_BATCH:
            self._flush()
        elif not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_due = False
        batch = self._batch
        if batch and self._transport is not None and self.broken is None:
            self._transport.write(b"".join(batch))
            self.writes += 1
        batch.clear()

    def retire(self) -> None:
        """Take no more commands; close once every waiter is done (answered or given up)."""
        self.retired = True
        self._close_if_drained()

    def _close_if_drained(self) -> None:
        for fut in self._waiting:
            if not fut.done():
                return
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._fail(ConnectionError("redis connection closed by kgw"))

    def _abort(self, err: ConnectionError) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._fail(err)

    def _fail(self, err: ConnectionError) -> None:
        if self.broken is None:
            self.broken = err
        self._batch.clear()
        waiting = self._waiting
        while waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_exception(err)


async def connect(host: str, port: int) -> Connection:
    """A connected ``Connection`` (raises what connecting raises: ``socket.gaierror``,
    ``ConnectionRefusedError``, ...)."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Connection(loop), host, port)
    return conn
