"""Client connections: ``DownstreamConn`` and the per-listener state it serves.

``DownstreamConn`` only moves bytes: it feeds the sans-IO ``RequestReader`` and hands the
events to the current ``Exchange`` (``kgw_l7.exchange``), keeps pipelined requests in
order, and enforces the connection-level limits (header-read and idle timeouts, the
pipeline depth, the worker's connection limit). Malformed requests get 400 (431 for
oversized headers, 501 for unknown transfer codings) and the connection is closed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any

from kgw_l7.events import Body, EndOfMessage, Event, ProtocolError, Rejected, RequestHead, Upgraded
from kgw_l7.exchange import _PAUSE_PIPELINE, Exchange
from kgw_l7.h1 import RequestReader, simple_response
from kgw_l7.router import ListenerRouter
from kgw_l7.upstream import UpstreamConn

if TYPE_CHECKING:
    from kgw_l7.tls import CertStore
    from kgw_l7.worker import WorkerContext

log = logging.getLogger("kgw.l7.proxy")

#: Pipelined requests accepted ahead of the one being served before reading pauses.
MAX_PIPELINED = 16


class ListenerState:
    """What a worker knows about one listener; ``router`` and ``certs`` are swapped in
    place by a new config, so open connections see the new routes on their next request."""

    __slots__ = ("name", "record", "router", "scheme", "port", "certs", "conns", "server",
                 "sock")

    def __init__(self, name: str, record: Any, router: ListenerRouter,
                 certs: "CertStore | None") -> None:
        self.name = name
        self.record = record
        self.router = router
        self.scheme = b"https" if record.protocol == "HTTPS" else b"http"
        self.port = record.port
        self.certs = certs
        self.conns: set[DownstreamConn] = set()
        self.server: asyncio.AbstractServer | None = None
        self.sock: Any = None


class DownstreamConn:  # an asyncio.Protocol (duck-typed: compiled as an extension type)
    __slots__ = ("ctx", "listener", "transport", "reader", "queue", "parsing", "paused",
                 "write_paused", "closing", "peer", "last_activity", "head_started",
                 "ssl_context", "tunnel", "_pending_tunnel", "_write", "_is_closing",
                 "forwarded")

    def __init__(self, ctx: "WorkerContext", listener: ListenerState) -> None:
        self.ctx = ctx
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.reader = RequestReader()
        self.queue: collections.deque[Exchange] = collections.deque()
        self.parsing: Exchange | None = None
        self.paused = 0
        self.write_paused = False
        self.closing = False
        self.peer = b""
        self.last_activity = 0.0
        self.head_started = 0.0
        self.ssl_context: Any = None
        self.tunnel: UpstreamConn | None = None
        self._pending_tunnel: list[bytes] | None = None
        #: The transport's write and is_closing, bound once (called for every response).
        self._write: Any = None
        self._is_closing: Any = None
        #: The X-Forwarded-For/-Proto lines this connection's requests get when their
        #: head goes upstream as received (the same for every request on it).
        self.forwarded = b""

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._write = transport.write  # type: ignore[attr-defined]
        self._is_closing = transport.is_closing
        ctx = self.ctx
        if ctx.stats.active_connections >= ctx.max_connections or ctx.stopping:
            ctx.stats.rejected_connections += 1
            transport.abort()  # type: ignore[attr-defined]
            self.closing = True
            return
        ctx.stats.active_connections += 1
        ctx.stats.connections_total += 1
        ctx.conns.add(self)
        self.listener.conns.add(self)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode()
        self.forwarded = b"\r\nx-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n" % (
            self.peer, self.listener.scheme)
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.ssl_context = sslobj.context
        self.last_activity = self.head_started = ctx.now

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.transport.write(data)  # type: ignore[union-attr]
            return
        if self._pending_tunnel is not None:
            self._pending_tunnel.append(data)
            return
        now = self.ctx.now
        if not self.queue and not self.reader.mid_head:
            self.head_started = now
        self.last_activity = now
        for ev in self.reader.feed(data):
            # The two events of every request are handled inline (one call less each).
            t = type(ev)
            if t is RequestHead:
                ex = Exchange(self, ev)  # type: ignore[arg-type]
                self.parsing = ex
                queue = self.queue
                queue.append(ex)
                n = len(queue)
                if n == 1:
                    ex.start()
                elif n > MAX_PIPELINED:
                    self.pause(_PAUSE_PIPELINE)
            elif t is EndOfMessage:
                ex = self.parsing
                if ex is not None:
                    ex.on_request_end(ev.trailers)  # type: ignore[union-attr]
            else:
                self._event(ev)

    def _event(self, ev: Event) -> None:
        t = type(ev)
        if t is RequestHead:
            ex = Exchange(self, ev)  # type: ignore[arg-type]
            self.parsing = ex
            self.queue.append(ex)
            if len(self.queue) == 1:
                ex.start()
            elif len(self.queue) > MAX_PIPELINED:
                self.pause(_PAUSE_PIPELINE)
        elif t is Body:
            if self.parsing is not None:
                self.parsing.on_request_body(ev.data)  # type: ignore[union-attr]
        elif t is EndOfMessage:
            ex = self.parsing
            if ex is not None:
                ex.on_request_end(ev.trailers)  # type: ignore[union-attr]
        elif t is Rejected:
            self.on_protocol_error(ev.error)  # type: ignore[union-attr]
        elif t is Upgraded:
            # Bytes after an Upgrade request: held until the backend answers 101.
            self._pending_tunnel = [ev.data] if ev.data else []  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            try:
                self.tunnel.transport.write_eof()  # type: ignore[union-attr]
            except (OSError, RuntimeError, NotImplementedError):
                pass
            return True
        # A half-closed client: finish what is in flight, then close (keep_open=True
        # lets the response go out).
        self.closing = True
        if not self.queue:
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        ctx = self.ctx
        if self in ctx.conns:
            ctx.conns.discard(self)
            ctx.stats.active_connections -= 1
        self.listener.conns.discard(self)
        self.closing = True
        if self.tunnel is not None:
            self.tunnel.close()
        for ex in list(self.queue):
            ex.on_client_lost()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.pause_reading()
            return
        ex = self.queue[0] if self.queue else None
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.resume_reading()
            return
        ex = self.queue[0] if self.queue else None
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume_reading()

    # -- helpers ------------------------------------------------------------------------
    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            try:
                self.transport.pause_reading()
            except RuntimeError:
                pass
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.resume_reading()
            except RuntimeError:
                pass

    def write(self, data: bytes) -> None:
        if self._write is not None and not self._is_closing():
            self._write(data)

    def on_protocol_error(self, err: ProtocolError) -> None:
        """Malformed input: answer (if no response is under way) and close."""
        self.ctx.stats.request("", "", "", err.status, 0.0)
        if not self.queue:
            self.write(simple_response(err.status, err.reason.encode() + b"\n", close=True))
            self.close()
        else:
            # A response is in progress: finish it, then close; the broken request is
            # never served. A request whose body broke framing cannot be completed.
            self.closing = True
            ex = self.parsing
            if ex is not None and not ex.request_done:
                ex.on_client_lost()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def exchange_done(self, ex: "Exchange") -> None:
        """Called when a response is complete: next pipelined request, or close."""
        if ex.released:
            return
        ex.released = True
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        if self.tunnel is not None:
            return  # the connection is a byte pipe now
        if self.paused & _PAUSE_PIPELINE and len(self.queue) <= MAX_PIPELINED:
            self.resume(_PAUSE_PIPELINE)
        self.last_activity = self.head_started = self.ctx.now
        if ex.close_after or self.closing:
            self.close()
            return
        if self.queue:
            self.queue[0].start()

    def sweep(self, now: float, idle_timeout: float, header_timeout: float) -> None:
        """Per-connection timeouts, checked by the worker's periodic timer."""
        if self.tunnel is not None:
            if now - self.last_activity > idle_timeout * 10:
                self.close()
            return
        if not self.queue:
            if self.reader.mid_head:
                if now - self.head_started > header_timeout:
                    self.write(simple_response(408, b"request header timeout\n", close=True))
                    self.close()
            elif now - self.last_activity > idle_timeout:
                self.close()
        else:
            ex = self.queue[0]
            if not ex.request_done and now - self.last_activity > idle_timeout:
                ex.on_client_lost()
                if self.transport is not None:
                    self.transport.abort()

    def drain(self) -> None:
        """The listener goes away: idle connections close now, busy ones after their
        current response."""
        self.closing = True
        if not self.queue:
            self.close()
