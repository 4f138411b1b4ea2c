"""Client connections: ``DownstreamConn``, HTTP/1.1 from a client.

``DownstreamConn`` only moves bytes: it feeds the sans-IO ``RequestReader`` and hands the
events to the current ``Exchange`` (``kgw_l7.exchange``), keeps pipelined requests in
order, and enforces the connection-level limits (header-read and idle timeouts, the
pipeline depth, the worker's connection and file-descriptor limits). It is the
``DownstreamStream`` (``kgw_l7.streams``) of the exchange it is answering: it frames that
exchange's response for HTTP/1.1 (chunked when the length is unknown, ``Connection``
for HTTP/1.0 and when closing) and becomes a byte pipe after a 101. Malformed requests get
400 (431 for oversized headers, 501 for unknown transfer codings, an HTTP/2 GOAWAY for the
HTTP/2 preface) and the connection
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
from typing import Any

from kgw_l7.context import ListenerState, WorkerContext
from kgw_l7.downstream_h2 import PREFACE, H2Conn, upgraded_head
from kgw_l7.events import Body, EndOfMessage, Event, ProtocolError, Rejected, RequestHead, Upgraded
from kgw_l7.exchange import Exchange
from kgw_l7 import proxyproto
from kgw_l7.h1 import (
    RequestReader, encode_chunk, encode_last_chunk, encode_response_head, http2_refusal,
    simple_response,
)
from kgw_l7.streams import DownstreamStream, UpstreamStream
from kgw_l7.upstream import UpstreamConn

log = logging.getLogger("kgw.l7.proxy")

#: Pipelined requests accepted ahead of the one being served before reading pauses.
MAX_PIPELINED = 16
#: Why reading pauses when too many are (a bit beside the exchange's, kgw_l7.streams).
_PAUSE_PIPELINE = 4
#: ListenerState.proxy_mode: connections must start with a PROXY protocol header, or
#: may (those without one are served with their own address).
PROXY_REQUIRED = 1
PROXY_OPTIONAL = 2


class DownstreamConn(DownstreamStream):
    """An asyncio.Protocol (duck-typed: compiled as an extension type) for one client
    connection, and the ``DownstreamStream`` of the exchange it is answering
    (``current``: the first of ``queue``, the requests received in order)."""

    __slots__ = ("ctx", "transport", "reader", "queue", "parsing", "current", "paused",
                 "chunked", "last_activity", "head_started", "tunnel", "_pending_tunnel",
                 "_write", "_is_closing", "h2_sniff", "_sniffed", "tunnel_ex", "tunnel_in",
                 "tunnel_out", "proxy_wait", "_proxy_buf", "proxy_source")

    def __init__(self, ctx: WorkerContext, listener: ListenerState) -> None:
        self.ctx = ctx
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.reader = RequestReader(h2c_upgrade=True)
        self.queue: collections.deque[Exchange] = collections.deque()
        #: The exchange whose request body is being read (None between bodies).
        self.parsing: Exchange | None = None
        #: The exchange being answered (started), None between them.
        self.current: Exchange | None = None
        self.paused = 0
        #: The current response's body goes out in chunks.
        self.chunked = False
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
        self.forwarded = b""
        #: The first bytes have yet to show whether they are the HTTP/2 preface.
        self.h2_sniff = True
        self._sniffed = b""
        self.remote = b""
        #: After a 101: the exchange that opened the tunnel (its access log line is
        #: written when the tunnel closes), the bytes from the client, and the writer
        #: that counts the backend's bytes to the client.
        self.tunnel_ex: Exchange | None = None
        self.tunnel_in = 0
        self.tunnel_out: _CountingWriter | None = None
        #: The listener takes the PROXY protocol and its header has yet to be read
        #: (kgw_l7.proxyproto): the bytes read so far.
        self.proxy_wait = False
        self._proxy_buf = b""
        #: The client a PROXY header read before TLS named (kgw_l7.proxyaccept): set
        #: before the connection is made, it stands for the socket's peer.
        self.proxy_source: tuple[str, int] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._write = transport.write  # type: ignore[attr-defined]
        self._is_closing = transport.is_closing
        ctx = self.ctx
        listener: ListenerState = self.listener
        if not ctx.admit(listener.name):
            transport.abort()  # type: ignore[attr-defined]
            self.closing = True
            return
        if ctx.draining:
            self.closing = True  # served, then closed: the gateway is shutting down
        ctx.stats.active_connections += 1
        ctx.stats.connections_total += 1
        ctx.conns.add(self)
        listener.conns.add(self)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = host = str(peer[0]).encode()
            if len(peer) > 2:  # (IPv6)
                host = b"[" + host + b"]"
            self.remote = b"%s:%d" % (host, peer[1])
        self.forwarded = b"\r\nx-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n" % (
            self.peer, listener.scheme)
        if self.proxy_source is not None:
            self._client(self.proxy_source)
        sslobj = transport.get_extra_info("ssl_object")
        if listener.proxy_mode and sslobj is None:
            # (Clear text: on TLS the header came before the handshake and was read by
            # the listener's accept loop, kgw_l7.proxyaccept, as proxy_source.)
            self.proxy_wait = True
        if sslobj is not None:
            self.ssl_context = sslobj.context
            self.h2_sniff = False
            if sslobj.selected_alpn_protocol() == "h2":
                H2Conn(ctx, listener).take_over(self, transport, b"")
                return
        self.last_activity = self.head_started = ctx.now

    def data_received(self, data: bytes) -> None:
        if self.proxy_wait:
            data = self._proxy_header(data)
            if not data:
                return
        if self.tunnel is not None:
            self.tunnel_in += len(data)
            self.tunnel.transport.write(data)  # type: ignore[union-attr]
            return
        if self._pending_tunnel is not None:
            self._pending_tunnel.append(data)
            return
        now = self.ctx.now
        if not self.queue and not self.reader.mid_head:
            self.head_started = now
            if self.h2_sniff and self._sniff(data):
                return
        self.last_activity = now
        for ev in self.reader.feed(data):
            # The two events of every request are handled inline (one call less each).
            t = type(ev)
            if t is RequestHead:
                ex = Exchange(self.ctx, self, ev)  # type: ignore[arg-type]
                # A request without a body is whole with its head: its end is not news.
                self.parsing = ex if ex.head.body != "none" else None
                queue = self.queue
                queue.append(ex)
                n = len(queue)
                if n == 1:
                    self.current = ex
                    ex.start()
                elif n > MAX_PIPELINED:
                    self.pause(_PAUSE_PIPELINE)
            elif t is EndOfMessage:
                if self.parsing is not None:
                    ex = self.parsing
                    self.parsing = None
                    ex.on_request_end(ev.trailers)  # type: ignore[union-attr]
            else:
                self._event(ev)

    def _event(self, ev: Event) -> None:
        t = type(ev)
        if t is Body:
            if self.parsing is not None:
                self.parsing.on_request_body(ev.data)  # type: ignore[union-attr]
        elif t is Rejected:
            self.on_protocol_error(ev.error)  # type: ignore[union-attr]
        elif t is Upgraded:
            if self.reader.h2c_head is not None:
                self._h2c(ev.data)  # type: ignore[union-attr]
                return
            # Bytes after an Upgrade request: held until the backend answers 101.
            self._pending_tunnel = [ev.data] if ev.data else []  # type: ignore[union-attr]

    def _proxy_header(self, data: bytes) -> bytes:
        """The PROXY protocol header first (its client address becomes the
        connection's: X-Forwarded-For, access log, everything keyed on the client);
        returns the bytes after it, b"" while it is incomplete or when the connection
        was refused. Without a valid header the connection is closed, unless the
        listener allows connections without one (then they are served as they are)."""
        data = self._proxy_buf + data
        try:
            header = proxyproto.parse(data)
        except proxyproto.ProxyProtocolError as exc:
            self.proxy_wait = False
            self._proxy_buf = b""
            if self.listener.proxy_mode == PROXY_OPTIONAL and not (
                    data.startswith(b"PROXY ") or data.startswith(b"\r\n\r\n")):
                return data  # no header at all, which this listener allows
            self.refused(400, f"PROXY protocol: {exc}", "DPE")
            if self.transport is not None:
                self.transport.abort()
            self.closing = True
            return b""
        if header is None:
            self._proxy_buf = data
            return b""
        self.proxy_wait = False
        self._proxy_buf = b""
        if header.source is not None:
            self._client(header.source)
        return data[header.size:]

    def _client(self, src: tuple[str, int]) -> None:
        """The client a PROXY header named becomes the connection's peer."""
        host = self.peer = src[0].encode()
        if ":" in src[0]:
            host = b"[" + host + b"]"
        self.remote = b"%s:%d" % (host, src[1])
        self.forwarded = b"\r\nx-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n" % (
            self.peer, self.listener.scheme)

    def _sniff(self, data: bytes) -> bool:
        """The first read of a clear-text connection: is it HTTP/2 with prior knowledge
        (RFC 9113 §3.3)? Then the connection is handed over with what was read. A read
        shorter than the preface that could still be one is kept for the next."""
        held = self._sniffed
        if held:
            self._sniffed = b""
            data = held + data
        if len(data) < len(PREFACE) and PREFACE.startswith(data):
            self._sniffed = data
            return True
        self.h2_sniff = False
        if data.startswith(PREFACE):
            assert self.transport is not None  # (data arrives only while connected)
            H2Conn(self.ctx, self.listener).take_over(self, self.transport, data)
            return True
        if held:
            self.data_received(data)
            return True
        return False

    def _h2c(self, data: bytes) -> None:
        """A request asked to upgrade to h2c (``RequestReader.h2c_upgrade``): 101, then
        the connection is HTTP/2, the request its stream 1. Behind pipelined requests
        (no client does that: it waits for the 101) it is served as HTTP/1.1, last."""
        head = self.reader.h2c_head
        assert head is not None  # (h2c_upgrade is set with it)
        if self.queue or self.closing:
            ex = Exchange(self.ctx, self, head)
            ex.close_after = True
            self.queue.append(ex)
            if len(self.queue) == 1:
                self.current = ex
                ex.start()
            return
        self.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                   b"Upgrade: h2c\r\n\r\n")
        assert self.transport is not None  # (data arrives only while connected)
        H2Conn(self.ctx, self.listener).take_over(
            self, self.transport, data, upgraded_head(head), self.reader.h2c_settings)

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
            if self.tunnel_ex is not None:
                ex, self.tunnel_ex = self.tunnel_ex, None
                ex.tunnel_closed(self.tunnel_in, self.tunnel_out.written
                                 if self.tunnel_out is not None else 0)
        for ex in list(self.queue):
            ex.on_client_lost()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.pause_reading()
        elif self.current is not None:
            self.current.on_downstream_pause(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.resume_reading()
        elif self.current is not None:
            self.current.on_downstream_pause(False)

    # -- DownstreamStream: the response to the current request ---------------------------
    def send_response(self, status: int, headers: list[tuple[bytes, bytes]], body: str,
                      data: list[bytes], end: bool, trailers: tuple[tuple[bytes, bytes], ...],
                      close: bool) -> bool:
        ex = self.current
        version = ex.head.version if ex is not None else b"1.1"
        chunked = False
        if body == "chunked" or body == "close":
            if version == b"1.1":
                chunked = True
                headers.append((b"transfer-encoding", b"chunked"))
            else:
                close = True  # the end of the body is the end of the connection
        self.chunked = chunked
        if status != 101:  # (a 101 keeps the backend's Connection: upgrade)
            if close or self.closing:
                close = True
                headers.append((b"connection", b"close"))
            elif version == b"1.0":
                headers.append((b"connection", b"keep-alive"))
        head = encode_response_head(status, headers)
        if not data and not (end and chunked):
            self.write(head)
            return close
        parts = [head]
        if chunked:
            for d in data:
                parts.append(encode_chunk(d))
            if end:
                parts.append(encode_last_chunk(trailers))
        else:
            parts.extend(data)
        self.write(b"".join(parts))
        return close

    def send_raw(self, data: bytes) -> bool:
        if self.closing:
            return False  # (it must say Connection: close)
        self.write(data)
        return True

    def send_body(self, data: bytes) -> None:
        if data:  # (an empty chunk would end a chunked body)
            self.write(encode_chunk(data) if self.chunked else data)

    def send_end(self, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        if self.chunked:
            self.write(encode_last_chunk(trailers))

    def send_continue(self) -> None:
        self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

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

    def abort(self) -> None:
        """Cut the connection (no more bytes either way): a response that cannot be
        completed, or what is left when a drain's time is up."""
        if self.transport is not None:
            self.transport.abort()

    def start_tunnel(self, up: UpstreamStream, data: bytes) -> bool:
        """After 101 Switching Protocols this connection and the backend's become a byte
        pipe; the client bytes held since the Upgrade request go first."""
        if not isinstance(up, UpstreamConn) or self.transport is None \
                or up.transport is None:
            return False
        if data:
            self.write(data)
        self.tunnel_out = _CountingWriter(self.transport, len(data))
        up.tunnel = self.tunnel_out
        self.tunnel = up
        pending, self._pending_tunnel = self._pending_tunnel, None
        for chunk in pending or ():
            self.tunnel_in += len(chunk)
            up.transport.write(chunk)
        return True

    def exchange_done(self, ex: Any) -> None:
        """The current exchange is over: the next pipelined request, or close."""
        e: Exchange = ex
        self.current = None
        if self.queue and self.queue[0] is e:
            self.queue.popleft()
        if self.tunnel is not None:
            self.tunnel_ex = e  # the connection is a byte pipe now
            return
        if self.paused & _PAUSE_PIPELINE and len(self.queue) <= MAX_PIPELINED:
            self.resume(_PAUSE_PIPELINE)
        self.last_activity = self.head_started = self.ctx.now
        # (An Upgrade request that got no 101: the reader stopped at it.)
        if e.close_after or self.closing or e.head.upgrade:
            self.close()
            return
        if self.queue:
            e = self.current = self.queue[0]
            e.start()

    # -- helpers ------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._write is not None and not self._is_closing():
            self._write(data)

    def refused(self, status: int, reason: str, flags: str) -> None:
        """A request refused before it had a head (malformed, too large, too slow):
        counted and logged like any request, with its listener."""
        self.ctx.access_refused(self.listener, status, flags, reason, self.remote)

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
            if ex is not None:
                self.parsing = None
                ex.on_client_lost()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def sweep(self, now: float, idle_timeout: float, header_timeout: float,
              response_timeout: float) -> None:
        """Per-connection timeouts, checked by the worker's periodic timer; the current
        exchange checks its own (``Exchange.sweep``)."""
        if self.tunnel is not None:
            if now - self.last_activity > idle_timeout * 10:
                self.close()
            return
        if not self.queue:
            if self.reader.mid_head or self.proxy_wait:
                if now - self.head_started > header_timeout:
                    self.refused(408, "request header timeout", "")
                    self.write(simple_response(408, b"request header timeout\n", close=True))
                    self.close()
            elif now - self.last_activity > idle_timeout:
                self.close()
            return
        if self.queue[0].sweep(now, now - self.last_activity, idle_timeout, response_timeout):
            self.abort()

    def drain(self) -> None:
        """The listener goes away: idle connections close now, busy ones after their
        current response."""
        self.closing = True
        if not self.queue:
            self.close()


class _CountingWriter:
    """The client's transport as a tunnel's backend side sees it: counts what it writes
    (the access log line of a tunnel has the bytes each way)."""

    __slots__ = ("transport", "written")

    def __init__(self, transport: Any, written: int) -> None:
        self.transport = transport
        self.written = written

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.transport.write(data)

    def write_eof(self) -> None:
        self.transport.write_eof()

    def close(self) -> None:
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()
