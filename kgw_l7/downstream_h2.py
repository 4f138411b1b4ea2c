"""HTTP/2 from clients: ``H2Conn`` (one client connection) and ``H2Stream`` (one request
on it, the ``DownstreamStream`` of its exchange).

``H2Conn`` is an asyncio protocol around one sans-IO HTTP/2 server session
(``new_session``: libnghttp2's in the compiled build, h2's ``H2Connection`` otherwise,
with the same calls and events): it feeds it what the socket brings, turns its events
into exchanges (one per request stream, started at once: streams are concurrent) and
writes what the session has to send once per read, so the frames a read causes go out
in one write. Routing, filters, tries,
timeouts and metrics are the exchange's (``kgw_l7.exchange``), the same as for
HTTP/1.1; this module only moves a request in and its response out.

How a connection starts (``kgw_l7.proxy`` decides, then hands the socket over with
``take_over``): ALPN "h2" on a TLS listener, the HTTP/2 preface on a clear-text one
(prior knowledge), or an HTTP/1.1 request asking ``Upgrade: h2c`` (its stream 1).

Flow control, both ways, so that one slow stream never holds memory without bound nor
stalls the others:

* request bodies: each stream's window (``STREAM_WINDOW``) is what a client may send
  ahead; received DATA is acknowledged (the window reopened) only while the exchange
  reads the stream (``pause``/``resume``). The connection window is large enough for
  every stream's window at once (``MAX_STREAMS`` x ``STREAM_WINDOW``), so a paused
  stream never closes it for the others;
* responses: DATA goes out within the client's windows; what the windows do not take
  waits in the stream (``pending``), and past ``PENDING_HIGH`` the stream is
  ``write_paused`` and its exchange stops reading the backend (at most one more read
  arrives). A stream whose client opens no window for ``idle_timeout`` is reset.

Abuse that costs the server more than the client (each answered with GOAWAY
ENHANCE_YOUR_CALM and counted in ``kgw_l7_http2_errors_total{reason}``): rapid reset
(CVE-2023-44487: more than ``MAX_RESETS`` streams reset by the client per
``ABUSE_WINDOW``), floods of SETTINGS, PING, WINDOW_UPDATE, empty DATA frames and frames
on closed streams (``MAX_CONTROL`` per window; the WINDOW_UPDATEs that DATA sent asks for
are not counted), header blocks beyond
``MAX_HEADER_LIST`` decoded (HPACK bombs) or more than h2's 64 CONTINUATION frames.
A request whose header list is merely larger than HTTP/1.1 allows gets 431, as it would
over HTTP/1.1. Malformed requests (RFC 9113 §8.2: upper-case names, connection-specific
fields, TE other than "trailers", bad pseudo-headers) are refused with a stream reset
PROTOCOL_ERROR; CONNECT (a tunnel, which kgw does not offer) gets 405.

Draining: a GOAWAY naming the last stream taken; the streams up to it finish, later
ones are refused (REFUSED_STREAM, which a client may retry elsewhere), and the
connection closes when the last one ends.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from kgw_l7.context import ListenerState, WorkerContext
from kgw_l7.events import BodyKind, RequestHead, h2_error_name, request_head
from kgw_l7.exchange import BODY_HIGH_WATER, Exchange
from kgw_l7.hpack_codec import server_session, use_fast_codec
from kgw_l7.streams import DownstreamStream, UpstreamStream

log = logging.getLogger("kgw.l7.h2")

#: Concurrent request streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
MAX_STREAMS = 100
#: What a client may send ahead on one stream (SETTINGS_INITIAL_WINDOW_SIZE): as much as
#: the exchange buffers before it pauses reading a request body.
STREAM_WINDOW = BODY_HIGH_WATER
#: The connection's receive window: every stream's at once.
CONNECTION_WINDOW = MAX_STREAMS * STREAM_WINDOW
#: Response bytes a stream holds for a client's window before its backend is paused.
PENDING_HIGH = 64 * 1024
#: Decoded header list size (SETTINGS_MAX_HEADER_LIST_SIZE): beyond it h2 stops decoding
#: and the connection ends (its HPACK state is lost). Requests above the HTTP/1.1 limits
#: (kgw_l7.h1: 60 KiB, 100 fields) but below this get 431.
MAX_HEADER_LIST = 256 * 1024
MAX_HEADER_BYTES = 60 * 1024
MAX_HEADERS = 100
#: Abuse limits, per connection and ``ABUSE_WINDOW`` seconds.
ABUSE_WINDOW = 1.0
MAX_RESETS = 200
MAX_CONTROL = 5000
#: After the GOAWAY of an error (a protocol error, a flood) on a cleartext connection, it
#: is shut for writing and what the client still sends is read and dropped for at most
#: this long, so that the GOAWAY reaches it: closing with input unread resets the
#: connection, and the kernel then drops what it still had to send (a client flooding
#: while it reads nothing keeps the GOAWAY queued behind its full window). TLS closes
#: with its close_notify, as before (a TLS transport has no write_eof).
LINGER_S = 1.0

#: What an HTTP/2 client sends first (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: What kgw announces in its SETTINGS.
SETTINGS = {
    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
    h2.settings.SettingCodes.ENABLE_PUSH: 0,
}

_EMPTY: tuple[Any, ...] = ()
#: Fields that only describe an HTTP/1.1 connection (RFC 9113 §8.2.2): a request
#: carrying one is malformed, and a response never gets one.
CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                                 b"transfer-encoding", b"upgrade"})
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
#: What a field value never has (RFC 9113 §8.2.1): NUL, CR, LF, or white space first
#: or last.
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
#: Bytes never allowed in a field name (RFC 9113 §8.2.1: controls, space, DEL; a colon
#: only as a pseudo-field's first byte: searched from the second).
_BAD_NAME_BYTE = re.compile(rb"[\x00-\x20\x7f:]")


def request_problem(headers: list[tuple[bytes, bytes]], trailers: bool = False) -> str | None:
    """Why a request's header list is malformed (RFC 9113 §8.2, §8.3.1), or None. The
    reason is a metric label: short, fixed words."""
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        if not name:
            return "empty_name"
        if name[0] == 0x3A:  # ":"
            if trailers:
                return "pseudo_in_trailers"
            if regular:
                return "pseudo_after_regular"
            if name not in _REQUEST_PSEUDO:
                return "unknown_pseudo"
            if name in seen:
                return "repeated_pseudo"
            seen.add(name)
        else:
            regular = True
            if name in CONNECTION_SPECIFIC:
                return "connection_specific"
            if name == b"te" and value.strip().lower() != b"trailers":
                return "te_not_trailers"
        if name.lower() != name:
            return "uppercase_name"
        # (regular expressions, searching in C: a loop over the bytes here cost more than
        # the rest of the request's checks, and ``bytes in bytes`` first tries its operand
        # as an int, raising and clearing a TypeError each time)
        if _BAD_NAME_BYTE.search(name, 1 if name[0] == 0x3A else 0) is not None:
            return "bad_name"
        if _BAD_VALUE.search(value) is not None:
            return "bad_value"
    if trailers:
        return None
    if b":method" not in seen:
        return "missing_pseudo"
    return None


def upgraded_head(head: RequestHead) -> RequestHead:
    """The HTTP/1.1 request that asked for h2c as the request of stream 1 (its response
    goes out in HTTP/2): without the fields of the upgrade itself."""
    drop = CONNECTION_SPECIFIC | {b"http2-settings"}
    fields = tuple([(n, v) for n, v in head.headers if n not in drop])
    return request_head(head.method, head.target, b"2", fields, head.host, head.authority,
                        True, "none", None, False, False, None)


def _pseudo(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
        if n[:1] != b":":
            return None
    return None


class ServerConnection(h2.connection.H2Connection):
    """h2's connection, counting the frames that cost the server work but bring no
    request: SETTINGS, PING, WINDOW_UPDATE, PRIORITY, RST_STREAM, unknown frames, empty
    DATA without END_STREAM, and any frame on a stream already closed (h2 answers each
    of those itself: its events do not show them)."""

    def __init__(self) -> None:
        # Inbound fields are checked by ``request_problem`` (h2's check raises where a
        # stream error is due); outbound ones are built here (``send_response``: lower-case
        # names, no connection-specific field) from a response kgw parsed or made: h2's
        # validation and normalisation of them again cost more than the rest of sending
        # a response head (as upstream_h2 found for requests).
        super().__init__(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False,
            validate_outbound_headers=False, normalize_outbound_headers=False))
        use_fast_codec(self)  # (nghttp2's HPACK when compiled: kgw_l7.hpack_codec)
        self.control_frames = 0
        self.closed_stream_frames = 0
        #: WINDOW_UPDATEs the DATA frames sent have earned (one for the stream, one for
        #: the connection each): a client with small windows sends many, and rightly.
        self.window_credit = 0
        #: (nghttp2's session sets it when it stopped at its bound on queued ACKs)
        self.flooded = False

    # -- the part of the session interface that is not h2's (see ``new_session``) --
    def start(self, settings: dict[h2.settings.SettingCodes, int], connection_window: int,
              upgrade_settings: bytes | None) -> None:
        self.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        if upgrade_settings is not None:
            self.initiate_upgrade_connection(upgrade_settings)
        else:
            self.initiate_connection()
        self.increment_flow_control_window(connection_window - 65535)
        # (h2 applies the limit once the client acknowledges the SETTINGS; a request
        # may come before that.)
        self.decoder.max_header_list_size = settings[
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE]

    def header_block_open(self) -> bool:
        return bool(self.incoming_buffer._headers_buffer)

    def closed(self) -> bool:
        return bool(self.state_machine.state == h2.connection.ConnectionState.CLOSED)

    def error_reason(self, exc: Exception) -> str:
        """The metric reason for the ProtocolError h2 raised."""
        msg = str(exc)
        if isinstance(exc, h2.exceptions.DenialOfServiceError):
            if "Oversized header block" in msg:
                return "hpack_bomb"
            return "header_list_too_large" if "header" in msg.lower() else "denial_of_service"
        if "continuation" in msg.lower():
            return "continuation_flood"
        if "preamble" in msg.lower():
            return "invalid_preface"
        if isinstance(exc, h2.exceptions.FlowControlError):
            return "flow_control"
        return "protocol_error"

    def _receive_frame(self, frame: Any) -> list[Any]:
        t = frame.type
        if t == 0x1 or t == 0x9:  # HEADERS, CONTINUATION: requests (bounded elsewhere)
            return super()._receive_frame(frame)
        if t == 0x8 and self.window_credit > 0:  # WINDOW_UPDATE
            self.window_credit -= 1
            return super()._receive_frame(frame)
        counted = t != 0x0 or (not frame.data and "END_STREAM" not in frame.flags)
        sid = frame.stream_id
        if sid and t != 0x2 and sid <= self.highest_inbound_stream_id:  # (PRIORITY)
            st = self.streams.get(sid)
            if st is None or st.closed:
                self.closed_stream_frames += 1
                counted = True
        if counted:
            self.control_frames += 1
        return super()._receive_frame(frame)


def new_session() -> Any:
    """The sans-IO HTTP/2 server connection an ``H2Conn`` drives: libnghttp2's
    (``kgw_l7._nghttp2.ServerSession``, C) in the compiled build, h2's
    (``ServerConnection``, pure Python) otherwise; ``kgw_l7.hpack_codec`` decides, as it
    does for HPACK. Both take h2's calls and return h2's events; beyond h2's interface
    they have ``start``, ``header_block_open``, ``closed``, ``error_reason``, the frame
    counters and ``flooded``."""
    session = server_session()
    if session is None:
        return ServerConnection()
    session.max_header_list = MAX_HEADER_LIST
    return session


class H2Stream(DownstreamStream):
    """One request stream and the response it gets: the exchange's ``DownstreamStream``.

    ``pending`` holds response DATA the client's windows did not take yet (then the end:
    ``end_pending``, with ``trailers``); ``held`` the request bytes received but not
    acknowledged while the exchange does not read (``paused``)."""

    __slots__ = ("conn", "sid", "ex", "pending", "pending_size", "end_pending", "trailers",
                 "request_open", "response_open", "held", "paused", "last_activity",
                 "blocked_since", "done", "reset")

    def __init__(self, conn: H2Conn, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.listener = conn.listener
        self.peer = conn.peer
        self.remote = conn.remote
        self.ssl_context = conn.ssl_context
        self.forwarded = b""
        self.closing = False
        self.write_paused = False
        self.ex: Exchange | None = None
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.end_pending = False
        self.trailers: tuple[tuple[bytes, bytes], ...] = _EMPTY
        #: The client may still send request DATA (no END_STREAM yet).
        self.request_open = True
        #: The response's end has not been sent yet.
        self.response_open = True
        self.held = 0
        self.paused = 0
        self.last_activity = conn.ctx.now
        self.blocked_since = 0.0
        #: The exchange is over (``exchange_done``).
        self.done = False
        #: The stream was reset (either side): nothing more is sent on it.
        self.reset = False

    # -- DownstreamStream ---------------------------------------------------------------
    def send_response(self, status: int, headers: list[tuple[bytes, bytes]], body: str,
                      data: list[bytes], end: bool, trailers: tuple[tuple[bytes, bytes], ...],
                      close: bool) -> bool:
        if self.reset:
            return True
        fields = [(b":status", b"%d" % status)]
        for n, v in headers:
            n = n.lower()
            if n not in CONNECTION_SPECIFIC and n != b"te":
                fields.append((n, v))
        c = self.conn
        try:
            c.h2.send_headers(self.sid, fields, end_stream=end and not data and not trailers)
        except (h2.exceptions.ProtocolError, ValueError, TypeError) as exc:
            log.warning("HTTP/2 stream %d: response head not sendable: %s", self.sid, exc)
            self.abort()
            return True
        if end and not data and not trailers:
            self.response_open = False
        else:
            for d in data:
                if d:
                    self.pending.append(d)
                    self.pending_size += len(d)
            if end:
                self.end_pending = True
                self.trailers = trailers
            c.push(self)
        c.flush()
        # A request still being received ends with its response (RFC 9113 §8.1: the
        # stream is reset with NO_ERROR once the response is out): the exchange need
        # not read the rest.
        return self.request_open

    def send_raw(self, data: bytes) -> bool:
        return False

    def send_body(self, data: bytes) -> None:
        if data and not self.reset:
            self.pending.append(data)
            self.pending_size += len(data)
            c = self.conn
            c.push(self)
            c.flush()

    def send_end(self, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        if self.reset or not self.response_open:
            return
        self.end_pending = True
        self.trailers = trailers
        c = self.conn
        c.push(self)
        c.flush()

    def send_continue(self) -> None:
        if self.reset:
            return
        c = self.conn
        try:
            c.h2.send_headers(self.sid, [(b":status", b"100")])
        except h2.exceptions.ProtocolError:
            return
        c.flush()

    def pause(self, reason: int) -> None:
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.held:
            c = self.conn
            c.release_held(self)
            c.flush()

    def abort(self) -> None:
        self.conn.reset_stream(self, h2.errors.ErrorCodes.INTERNAL_ERROR)

    def exchange_done(self, ex: Any) -> None:
        self.ex = None
        self.done = True
        self.conn.settle(self)

    def start_tunnel(self, up: UpstreamStream, data: bytes) -> bool:
        return False


class H2Conn:
    """An asyncio.Protocol (duck-typed: compiled as an extension type) for one HTTP/2
    client connection; its streams are ``H2Stream``s in ``streams`` (by id)."""

    __slots__ = ("ctx", "listener", "transport", "h2", "streams", "peer", "remote",
                 "ssl_context", "closing", "write_paused", "last_activity", "started", "in_read",
                 "goaway_id", "window_start", "resets", "pings", "settings_frames",
                 "window_updates", "preface_done",
                 "head_since", "counted", "lingering")

    def __init__(self, ctx: WorkerContext, listener: ListenerState) -> None:
        self.ctx = ctx
        self.listener = listener
        self.transport: Any = None
        self.h2 = new_session()
        self.streams: dict[int, H2Stream] = {}
        self.peer = b""
        self.remote = b""
        self.ssl_context: Any = None
        self.closing = False
        self.write_paused = False
        self.last_activity = ctx.now
        self.started = ctx.now
        #: Inside data_received: writes wait for its end (one write per read).
        self.in_read = False
        #: The last stream id of the GOAWAY sent (-1: none sent).
        self.goaway_id = -1
        self.window_start = 0.0
        self.resets = 0
        #: Kinds of control frames in the current window (which flood it was).
        self.pings = 0
        self.settings_frames = 0
        self.window_updates = 0
        #: The client's preface and first SETTINGS arrived (header timeout until then).
        self.preface_done = False
        #: Since when a header block has been incomplete (0: none is).
        self.head_since = 0.0
        #: Counted in the worker's connections (by this protocol or the one before it).
        self.counted = False
        #: Shut for writing after an error's GOAWAY; input is dropped until LINGER_S.
        self.lingering = False

    # -- starting -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A connection that is HTTP/2 from its first byte (not used by kgw's listeners
        today, which start HTTP/1.1 and hand over: ``take_over``)."""
        ctx = self.ctx
        if not ctx.admit(self.listener.name):
            transport.abort()  # type: ignore[attr-defined]
            self.closing = True
            return
        ctx.stats.active_connections += 1
        ctx.stats.connections_total += 1
        self._attach(transport)
        self.start(None)

    def take_over(self, old: Any, transport: asyncio.BaseTransport, data: bytes,
                  upgrade: RequestHead | None = None, settings: bytes | None = None) -> None:
        """Serve the connection ``old`` (a ``kgw_l7.proxy.DownstreamConn``, already
        admitted and counted) as HTTP/2 from now on: ``data`` is what was read and not
        used; ``upgrade`` the HTTP/1.1 request that asked for h2c (stream 1), with its
        HTTP2-Settings value."""
        ctx = self.ctx
        ctx.conns.discard(old)
        self.listener.conns.discard(old)
        self.closing = old.closing
        # compiled, H2Conn is an extension type: it cannot subclass asyncio.Protocol
        transport.set_protocol(self)  # type: ignore[arg-type]
        self._attach(transport)
        # The client as the HTTP/1.1 side knew it (a PROXY protocol header may have
        # named it; the socket's peer is then the balancer).
        self.peer = old.peer
        self.remote = old.remote
        self.start(upgrade, settings)
        if data:
            self.data_received(data)

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        ctx = self.ctx
        self.transport = transport
        self.counted = True
        ctx.conns.add(self)
        self.listener.conns.add(self)
        ctx.stats.http2_connection()
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = host = str(peer[0]).encode()
            if len(peer) > 2:  # (IPv6)
                host = b"[" + host + b"]"
            self.remote = b"%s:%d" % (host, peer[1])
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.ssl_context = sslobj.context
        self.last_activity = self.started = ctx.now

    def start(self, upgrade: RequestHead | None, settings: bytes | None = None) -> None:
        self.h2.start(SETTINGS, CONNECTION_WINDOW, settings if upgrade is not None else None)
        if upgrade is not None:
            # Stream 1 is the upgrade request, half-closed: its response goes out on it.
            self.preface_done = False
            st = H2Stream(self, 1)
            st.request_open = False
            self.streams[1] = st
            ex = st.ex = Exchange(self.ctx, st, upgrade)
            self.in_read = True
            try:
                ex.start()
            finally:
                self.in_read = False
        self.flush()

    # -- asyncio.Protocol ---------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # (dropped: see LINGER_S)
        ctx = self.ctx
        now = ctx.now
        self.last_activity = now
        if now - self.window_start > ABUSE_WINDOW:
            self.window_start = now
            self.resets = 0
            self.pings = self.settings_frames = self.window_updates = 0
            self.h2.control_frames = self.h2.closed_stream_frames = 0
        self.in_read = True
        pool = ctx.pool
        corked = pool.cork()  # (the requests of this read go to each backend in one write)
        try:
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                self._protocol_error(exc)
                return
            for ev in events:
                self._event(ev)
                if self.transport is None or self.transport.is_closing():
                    return
            if self.h2.control_frames > MAX_CONTROL or self.h2.flooded:
                self.calm(self._flood_kind())
                return
            if self.h2.header_block_open():
                if not self.head_since:
                    self.head_since = now
            else:
                self.head_since = 0.0
        finally:
            self.in_read = False
            if corked:
                pool.uncork()
        self.flush()

    def _event(self, ev: Any) -> None:
        t = type(ev)
        if t is h2.events.DataReceived:
            st = self.streams.get(ev.stream_id)
            n = ev.flow_controlled_length
            if st is None or st.ex is None or not st.request_open:
                if n:
                    self.h2.acknowledge_received_data(n, ev.stream_id)
                return
            st.last_activity = self.ctx.now
            length = st.ex.head.content_length
            if length is not None and st.ex.received + len(ev.data) > length:
                # (RFC 9113 §8.1.1; h2 ends the connection itself, nghttp2 with its HTTP
                # checks off does not check)
                self._malformed(st, "content_length_mismatch")
                self.h2.acknowledge_received_data(n, ev.stream_id)
                return
            st.ex.on_request_body(ev.data)
            if n:
                if st.paused:
                    st.held += n
                elif not st.reset:
                    self.h2.acknowledge_received_data(n, ev.stream_id)
        elif t is h2.events.RequestReceived:
            self._request(ev.stream_id, ev.headers, ev.stream_ended is not None)
        elif t is h2.events.StreamEnded:
            st = self.streams.get(ev.stream_id)
            if st is not None:
                self._request_end(st, _EMPTY)
        elif t is h2.events.TrailersReceived:
            st = self.streams.get(ev.stream_id)
            if st is not None:
                problem = request_problem(ev.headers, trailers=True)
                if problem is not None:
                    self._malformed(st, problem)
                    return
                self._request_end(st, tuple(ev.headers))
        elif t is h2.events.WindowUpdated:
            self.window_updates += 1
            if ev.stream_id:
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    self.push(st)
            else:
                for st in list(self.streams.values()):
                    if st.pending or st.end_pending:
                        self.push(st)
        elif t is h2.events.StreamReset:
            st = self.streams.get(ev.stream_id)
            self.resets += 1
            code = h2_error_name(ev.error_code)
            self.ctx.stats.http2_reset("client", code)
            if self.resets > MAX_RESETS:
                self.calm("rapid_reset")
            if st is not None:
                ex = st.ex
                if ex is not None and not st.done and not ex.flags:
                    # Envoy's flag: the client reset the stream (DC: it went away).
                    ex.flags = "DR"
                    ex.detail = "client reset the stream (RST_STREAM %s)" % code
                self._lost(st)
        elif t is h2.events.RemoteSettingsChanged:
            self.settings_frames += 1
            self.preface_done = True
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
                for st in list(self.streams.values()):
                    if st.pending or st.end_pending:
                        self.push(st)
        elif t is h2.events.PingReceived:
            self.pings += 1
        elif t is h2.events.ConnectionTerminated:
            self.closing = True
            for st in list(self.streams.values()):
                self._lost(st)
            self.flush()
            self.close()

    def eof_received(self) -> bool:
        self.closing = True
        if self.lingering:
            return False  # (the transport closes: the client has read the GOAWAY)
        if not self.ctx.ignore_client_abort:
            for st in list(self.streams.values()):
                self._lost(st)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        ctx = self.ctx
        if self in ctx.conns:
            ctx.conns.discard(self)
            if self.counted:
                ctx.stats.active_connections -= 1
                self.counted = False
        self.listener.conns.discard(self)
        self.closing = True
        for st in list(self.streams.values()):
            self._lost(st)
        self.transport = None

    def pause_writing(self) -> None:
        self.write_paused = True
        for st in list(self.streams.values()):
            if not st.write_paused:
                st.write_paused = True
                if st.ex is not None:
                    st.ex.on_downstream_pause(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        for st in list(self.streams.values()):
            if st.write_paused and st.pending_size <= PENDING_HIGH:
                st.write_paused = False
                if st.ex is not None:
                    st.ex.on_downstream_pause(False)

    # -- requests -----------------------------------------------------------------------
    def _request(self, sid: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        ctx = self.ctx
        st = H2Stream(self, sid)
        self.streams[sid] = st
        if self.goaway_id >= 0 and sid > self.goaway_id:
            self.reset_stream(st, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if ended:
            st.request_open = False
        problem = request_problem(headers)
        if problem is not None:
            self._malformed(st, problem)
            return
        method = _pseudo(headers, b":method") or b""
        if method == b"CONNECT":
            ctx.stats.http2_error("connect_refused")
            self._refuse(st, 405, "CONNECT is not served", method)
            return
        path = _pseudo(headers, b":path")
        scheme = _pseudo(headers, b":scheme")
        if not path or scheme is None:
            self._malformed(st, "missing_pseudo")
            return
        authority = _pseudo(headers, b":authority")
        fields = []
        size = 0
        host = None
        length = None
        expect = False
        for n, v in headers:
            size += len(n) + len(v) + 4
            if n[0] == 0x3A:
                continue
            if n == b"host":
                if host is not None:
                    self._malformed(st, "repeated_host")
                    return
                host = v
                continue
            if n == b"content-length":
                if length is not None or not v.isdigit():
                    self._malformed(st, "bad_content_length")
                    return
                length = int(v)
            elif n == b"expect":
                expect = v.strip().lower() == b"100-continue"
            fields.append((n, v))
        if size > MAX_HEADER_BYTES or len(fields) > MAX_HEADERS:
            ctx.stats.http2_error("header_list_too_large")
            self._refuse(st, 431, "request header block too large", method)
            return
        # :authority wins over Host (RFC 9113 §8.3.1); either is the Host upstream.
        if authority is None:
            authority = host or b""
        if authority:
            fields.insert(0, (b"host", authority))
        host_name = authority
        if not host_name.endswith(b"]"):
            colon = host_name.rfind(b":")
            if colon >= 0:
                host_name = host_name[:colon]
        if ended:
            body: BodyKind = "none"
        elif length is not None:
            body = "length"
        else:
            body = "chunked"
        head = request_head(method, path, b"2", tuple(fields), host_name.lower(), authority,
                            True, body, length, expect and body != "none", False, None)
        ex = st.ex = Exchange(ctx, st, head)
        ex.start()

    def _request_end(self, st: H2Stream, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        if not st.request_open:
            return
        ex = st.ex
        if ex is not None and ex.head.content_length is not None \
                and ex.received != ex.head.content_length and not st.done:
            st.request_open = False
            self._malformed(st, "content_length_mismatch")
            return
        st.request_open = False
        self.release_held(st)
        if ex is not None and ex.head.body != "none":
            ex.on_request_end(trailers)
        self.settle(st)

    def _malformed(self, st: H2Stream, problem: str) -> None:
        """A malformed request (RFC 9113 §8.1.1): a stream error PROTOCOL_ERROR, counted
        and logged like a refused HTTP/1.1 request."""
        self.ctx.stats.http2_error("malformed_" + problem)
        self._log_refused(400, "malformed HTTP/2 request: " + problem.replace("_", " "))
        ex = st.ex
        self.reset_stream(st, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        if ex is not None:
            ex.on_client_lost()

    def _refuse(self, st: H2Stream, status: int, reason: str, method: bytes) -> None:
        self._log_refused(status, reason)
        body = reason.encode() + b"\n"
        try:
            self.h2.send_headers(st.sid, [(b":status", b"%d" % status),
                                          (b"content-type", b"text/plain"),
                                          (b"content-length", b"%d" % len(body))],
                                 end_stream=method == b"HEAD")
        except h2.exceptions.ProtocolError:
            return
        if method != b"HEAD":
            st.pending.append(body)
            st.pending_size = len(body)
            st.end_pending = True
        else:
            st.response_open = False
        st.done = True
        self.push(st)
        self.settle(st)

    def _log_refused(self, status: int, reason: str) -> None:
        self.ctx.access_refused(self.listener, status, "DPE", reason, self.remote)

    def _lost(self, st: H2Stream) -> None:
        """The client reset the stream or went away: its exchange is abandoned."""
        self.release_held(st)
        st.reset = True
        st.pending = []
        st.pending_size = 0
        ex = st.ex
        self.streams.pop(st.sid, None)
        if ex is not None and not st.done:
            st.ex = None
            ex.on_client_lost()
        self._maybe_close()

    # -- responses ----------------------------------------------------------------------
    def push(self, st: H2Stream) -> None:
        """Send what the windows take of the stream's pending response, then its end."""
        if st.reset:
            return
        conn = self.h2
        pending = st.pending
        sid = st.sid
        before = st.pending_size
        try:
            while pending:
                room = conn.local_flow_control_window(sid)
                if room <= 0:
                    break
                frame = conn.max_outbound_frame_size
                if room > frame:
                    room = frame
                chunk = pending[0]
                conn.window_credit += 2
                if len(chunk) <= room:
                    pending.pop(0)
                    st.pending_size -= len(chunk)
                    if not pending and st.end_pending and not st.trailers:
                        # The last DATA frame ends the stream (not an empty one more).
                        conn.send_data(sid, chunk, end_stream=True)
                        st.end_pending = False
                        st.response_open = False
                    else:
                        conn.send_data(sid, chunk)
                else:
                    conn.send_data(sid, chunk[:room])
                    pending[0] = chunk[room:]
                    st.pending_size -= room
            if not pending and st.end_pending:
                st.end_pending = False
                st.response_open = False
                if st.trailers:
                    conn.send_headers(sid, [(n.lower(), v) for n, v in st.trailers],
                                      end_stream=True)
                else:
                    conn.end_stream(sid)
        except (h2.exceptions.ProtocolError, ValueError, TypeError) as exc:
            log.warning("HTTP/2 stream %d: response not sendable: %s", sid, exc)
            self.reset_stream(st, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        if not pending:
            st.blocked_since = 0.0
        elif not st.blocked_since or st.pending_size < before:
            st.blocked_since = self.ctx.now  # (waiting for the window since the last send)
        paused = st.pending_size > PENDING_HIGH or self.write_paused
        if paused != st.write_paused:
            st.write_paused = paused
            if st.ex is not None:
                st.ex.on_downstream_pause(paused)
        if st.done:
            self.settle(st)

    def settle(self, st: H2Stream) -> None:
        """Forget a stream whose exchange is over once its response is out; a request
        still open then is reset with NO_ERROR (RFC 9113 §8.1)."""
        if not st.done or st.response_open or st.reset:
            if st.reset:
                self.streams.pop(st.sid, None)
                self._maybe_close()
            return
        if st.request_open:
            self.reset_stream(st, h2.errors.ErrorCodes.NO_ERROR)
            return
        self.streams.pop(st.sid, None)
        self._maybe_close()

    def release_held(self, st: H2Stream) -> None:
        """Acknowledge the request bytes a paused stream held: its window reopens, and
        the connection's (a stream that ends or is reset while paused must give those
        back, or every such stream would shrink the connection window for good)."""
        held, st.held = st.held, 0
        if held and self.transport is not None:
            try:
                self.h2.acknowledge_received_data(held, st.sid)
            except h2.exceptions.ProtocolError:
                pass

    def reset_stream(self, st: H2Stream, code: int) -> None:
        if not st.reset:
            st.reset = True
            st.pending = []
            st.pending_size = 0
            try:
                self.h2.reset_stream(st.sid, code)
            except h2.exceptions.ProtocolError:
                pass  # (already closed)
            self.release_held(st)
            self.flush()
        self.streams.pop(st.sid, None)
        self._maybe_close()

    def flush(self) -> None:
        if self.in_read or self.lingering:
            return
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- errors, draining, timeouts -----------------------------------------------------
    def _protocol_error(self, exc: Exception) -> None:
        """h2 found the connection broken (it queued a GOAWAY): counted by kind, sent,
        and the connection closed."""
        msg = str(exc)
        reason = self.h2.error_reason(exc)
        self.ctx.stats.http2_error(reason)
        self.ctx.limiter.warning(("h2", reason), "listener %s: HTTP/2 connection from %s "
                                 "closed: %s", self.listener.name, self.peer.decode(), msg)
        self.in_read = False
        if not self.h2.closed():
            try:
                self.h2.close_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR)
            except h2.exceptions.ProtocolError:
                pass
        self.flush()
        self._close_after_goaway()

    def _flood_kind(self) -> str:
        """Which control frames made most of a flood (the metric's reason)."""
        counts = {"ping_flood": self.pings, "settings_flood": self.settings_frames,
                  "window_update_flood": self.window_updates,
                  "closed_stream_flood": self.h2.closed_stream_frames}
        kind = max(counts, key=lambda k: counts[k])
        if counts[kind] * 2 < self.h2.control_frames:
            return "empty_frame_flood"
        return kind

    def calm(self, reason: str) -> None:
        """Abuse: GOAWAY ENHANCE_YOUR_CALM, counted, and the connection closed."""
        if self.transport is None or self.transport.is_closing():
            return
        self.ctx.stats.http2_error(reason)
        self.ctx.limiter.warning(("h2", reason), "listener %s: HTTP/2 connection from %s "
                                 "closed: %s", self.listener.name, self.peer.decode(),
                                 reason.replace("_", " "))
        self.in_read = False
        try:
            self.h2.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        except h2.exceptions.ProtocolError:
            pass
        self.flush()
        self._close_after_goaway()

    def _close_after_goaway(self) -> None:
        """End the connection after the GOAWAY of an error: shut for writing (the GOAWAY
        and all before it go out, then a FIN) and lingering for at most LINGER_S, or
        closed at once over TLS. (See LINGER_S.)"""
        t = self.transport
        if t is None or t.is_closing():
            return
        self.closing = True
        if not t.can_write_eof():
            t.close()
            return
        self.lingering = True
        t.write_eof()
        asyncio.get_running_loop().call_later(LINGER_S, self.abort)

    def goaway(self) -> None:
        """Graceful: GOAWAY NO_ERROR naming the last stream taken. Built here rather
        than by h2's close_connection, which would end the connection's state and with
        it the streams that are to finish."""
        if self.goaway_id >= 0 or self.transport is None or self.lingering:
            return
        self.goaway_id = self.h2.highest_inbound_stream_id
        was, self.in_read = self.in_read, False
        self.flush()
        self.in_read = was
        frame = GoAwayFrame(stream_id=0, last_stream_id=self.goaway_id, error_code=0)
        if not self.transport.is_closing():
            self.transport.write(frame.serialize())

    def _maybe_close(self) -> None:
        if self.closing and not self.streams and self.transport is not None:
            self.goaway()
            self.close()

    def close(self) -> None:
        self.closing = True
        t = self.transport
        if t is not None:
            t.close()

    def abort(self) -> None:
        t = self.transport
        if t is not None:
            t.abort()

    def drain(self) -> None:
        """The listener goes away: GOAWAY; the open streams finish, then it closes."""
        self.closing = True
        self.goaway()
        self._maybe_close()

    def sweep(self, now: float, idle_timeout: float, header_timeout: float,
              response_timeout: float) -> None:
        """Per-connection and per-stream timeouts, from the worker's periodic timer."""
        if self.transport is None or self.lingering:
            return
        if self.closing and self.goaway_id < 0:
            self.goaway()  # (the worker drains: ctx.drain set closing)
            self._maybe_close()
        if not self.preface_done and now - self.started > header_timeout:
            self.ctx.stats.http2_error("preface_timeout")
            self.close()
            return
        if self.head_since and now - self.head_since > header_timeout:
            self.ctx.stats.http2_error("header_timeout")
            self.calm_timeout()
            return
        if not self.streams:
            if now - self.last_activity > idle_timeout:
                self.goaway()
                self.close()
            return
        for st in list(self.streams.values()):
            if st.blocked_since and now - st.blocked_since > idle_timeout:
                # The client opens no window for the response: give up the stream.
                self.ctx.stats.http2_error("send_timeout")
                ex = st.ex
                self.reset_stream(st, h2.errors.ErrorCodes.CANCEL)
                if ex is not None and not st.done:
                    st.ex = None
                    ex.on_client_lost()
                continue
            ex = st.ex
            if ex is not None and ex.sweep(now, now - st.last_activity, idle_timeout,
                                           response_timeout):
                self.reset_stream(st, h2.errors.ErrorCodes.CANCEL)

    def calm_timeout(self) -> None:
        try:
            self.h2.close_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR,
                                     additional_data=b"header block timeout")
        except h2.exceptions.ProtocolError:
            pass
        self.flush()
        self.close()
