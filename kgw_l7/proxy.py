"""Client connections: ``DownstreamConn``, HTTP/1.1 from a client.

``DownstreamConn`` only moves bytes: it feeds the sans-IO ``RequestReader`` and hands the
events to the current ``Exchange`` (``kgw_l7.exchange``), keeps pipelined requests in
order, and enforces the connection-level limits (header-read and idle timeouts, the
pipeline depth, the worker's connection and file-descriptor limits, the default
response timeout). Malformed requests get 400 (431 for oversized headers, 501 for
unknown transfer codings, an HTTP/2 GOAWAY for the HTTP/2 preface) and the connection
is closed; like every request, each refusal is counted with its listener and written to
the access log.

A client that closes its side (FIN) while a request is in flight has gone away: the
request is abandoned and its backend connection closed, as nginx does by default
(``proxy_ignore_client_abort off``); ``WorkerOptions.ignore_client_abort`` keeps
serving such half-closed clients instead.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

from kgw_l7.context import ListenerState, WorkerContext
from kgw_l7.events import Body, EndOfMessage, Event, ProtocolError, Rejected, RequestHead, Upgraded
from kgw_l7.exchange import Exchange
from kgw_l7.h1 import RequestReader, http2_refusal, simple_response
from kgw_l7.streams import DownstreamStream
from kgw_l7.upstream import UpstreamConn

log = logging.getLogger("kgw.l7.proxy")

#: Pipelined requests accepted ahead of the one being served before reading pauses.
MAX_PIPELINED = 16
#: Why reading pauses when too many are (a bit beside the exchange's, kgw_l7.streams).
_PAUSE_PIPELINE = 4


class DownstreamConn(DownstreamStream):
    """An asyncio.Protocol (duck-typed: compiled as an extension type) for one client
    connection, and the ``DownstreamStream`` of the exchange it is answering."""

    __slots__ = ("ctx", "transport", "reader", "queue", "parsing", "paused",
                 "last_activity", "head_started", "tunnel", "_pending_tunnel", "_write",
                 "_is_closing")

    def __init__(self, ctx: WorkerContext, listener: ListenerState) -> None:
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
        if not ctx.admit(self.listener.name):
            transport.abort()  # type: ignore[attr-defined]
            self.closing = True
            return
        if ctx.draining:
            self.closing = True  # served, then closed: the gateway is shutting down
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
                ex = Exchange(self.ctx, self, ev)  # type: ignore[arg-type]
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
                    self.parsing = None
                    ex.on_request_end(ev.trailers)  # type: ignore[union-attr]
            else:
                self._event(ev)

    def _event(self, ev: Event) -> None:
        t = type(ev)
        if t is RequestHead:
            ex = Exchange(self.ctx, self, ev)  # type: ignore[arg-type]
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
                self.parsing = None
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
        self.closing = True
        if not self.queue:
            return False
        if self.ctx.ignore_client_abort:
            # A half-closed client: finish what is in flight, then close (keep_open=True
            # lets the response go out).
            return True
        # The client is gone (nginx's proxy_ignore_client_abort off): abandon what is in
        # flight and its backend connection, rather than hold both sockets for as long
        # as the backend takes.
        for ex in list(self.queue):
            ex.on_client_lost()
        return False

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

    def refused(self, status: int, reason: str, flags: str) -> None:
        """A request refused before it had a head (malformed, too large, too slow):
        counted and logged like any request, with its listener."""
        ctx = self.ctx
        listener = self.listener
        ctx.stats.request(listener.name, listener.gateway, "", "", status, 0.0)
        if ctx.access_log is not None:
            ctx.access_log.log(time.time(), b"", b"", b"", status, 0, 0, 0.0, None, b"",
                               None, b"", None, None, flags, listener.name, reason)

    def on_protocol_error(self, err: ProtocolError) -> None:
        """Malformed input: answer (if no response is under way) and close."""
        self.refused(err.status, err.reason, "DPE")
        if not self.queue:
            if self.reader.http2_preface:
                self.write(http2_refusal())  # an HTTP/2 client understands this one
            else:
                self.write(simple_response(err.status, err.reason.encode() + b"\n",
                                           close=True))
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

    def abort(self) -> None:
        """Cut the connection (no more bytes either way): a response that cannot be
        completed, or what is left when a drain's time is up."""
        if self.transport is not None:
            self.transport.abort()

    def start_tunnel(self, up: Any, data: bytes) -> bool:
        """After 101 Switching Protocols this connection and the backend's become a byte
        pipe; the client bytes held since the Upgrade request go first."""
        if not isinstance(up, UpstreamConn) or self.transport is None \
                or up.transport is None:
            return False
        if data:
            self.write(data)
        up.tunnel = self.transport
        self.tunnel = up
        pending, self._pending_tunnel = self._pending_tunnel, None
        for chunk in pending or ():
            up.transport.write(chunk)
        return True

    def exchange_done(self, ex: Any) -> None:
        """Called when a response is complete: next pipelined request, or close."""
        e: Exchange = ex
        if e.released:
            return
        e.released = True
        if self.queue and self.queue[0] is e:
            self.queue.popleft()
        if self.tunnel is not None:
            return  # the connection is a byte pipe now
        if self.paused & _PAUSE_PIPELINE and len(self.queue) <= MAX_PIPELINED:
            self.resume(_PAUSE_PIPELINE)
        self.last_activity = self.head_started = self.ctx.now
        if e.close_after or self.closing:
            self.close()
            return
        if self.queue:
            self.queue[0].start()

    def sweep(self, now: float, idle_timeout: float, header_timeout: float,
              response_timeout: float) -> None:
        """Per-connection timeouts, checked by the worker's periodic timer."""
        if self.tunnel is not None:
            if now - self.last_activity > idle_timeout * 10:
                self.close()
            return
        if not self.queue:
            if self.reader.mid_head:
                if now - self.head_started > header_timeout:
                    self.refused(408, "request header timeout", "")
                    self.write(simple_response(408, b"request header timeout\n", close=True))
                    self.close()
            elif now - self.last_activity > idle_timeout:
                self.close()
            return
        ex = self.queue[0]
        if not ex.request_done and now - self.last_activity > idle_timeout:
            ex.on_client_lost()
            self.abort()
            return
        up = ex.upstream
        if up is None or ex.rule is None or not ex.rule.default_timeout \
                or response_timeout <= 0:
            return
        # The default response timeout: the backend must make progress (a read) at least
        # every ``response_timeout`` once the request is complete, except while the
        # client is the one not keeping up (reading from the backend paused).
        if up.watch_owner is not ex or up.reads != up.watch_reads or up.read_paused \
                or not ex.request_done:
            up.watch_owner = ex
            up.watch_reads = up.reads
            up.watch_since = now
        elif now - up.watch_since > response_timeout:
            up.watch_owner = None
            ex.on_upstream_timeout(response_timeout)

    def drain(self) -> None:
        """The listener goes away: idle connections close now, busy ones after their
        current response."""
        self.closing = True
        if not self.queue:
            self.close()

