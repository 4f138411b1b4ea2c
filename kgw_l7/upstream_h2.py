"""HTTP/2 to backends: one multiplexed connection per endpoint, one ``UpstreamStream`` per
request on it.

``H2Conn`` is the asyncio protocol of one backend connection: it feeds the bytes to a
client session -- libnghttp2's (``kgw_l7._nghttp2.ClientSession``) in the compiled build,
``h2``'s ``H2Connection`` otherwise (``new_session``) --, turns its events (h2's, from
either) into kgw's (``kgw_l7.events``) for each stream and writes what the session has
to send once per read or send (frames of a batch go out in one ``write``). ``H2Stream``
is one request on it, with the same interface as an HTTP/1.1 connection
(``kgw_l7.streams.UpstreamStream``), so the exchange, its retries, timeouts and mirrors
do not know which protocol the backend speaks. The ``Pool`` (``kgw_l7.upstream``) owns
the connections and decides which backends get HTTP/2.

Flow control, both ways, never buffering more than a window:

* request bodies go out as DATA frames within the stream's and the connection's send
  windows; what the window does not take is queued on the stream and its owner is told
  (``on_upstream_pause(True)``: the exchange stops reading its client) until a
  WINDOW_UPDATE lets it out. A paused socket (``pause_writing``) pauses every stream
  still sending.
* response DATA is acknowledged (the backend's window reopened) only once handed to the
  owner and not paused (``pause_reading``): a slow client holds at most ``STREAM_WINDOW``
  bytes per stream at the backend's door, and ``CONNECTION_WINDOW`` per connection.

A stream ends as follows (the exchange sees the HTTP/1.1 equivalents):

=====================================  ===============================================
from the backend                       for the stream's owner
=====================================  ===============================================
HEADERS (final status)                 ``ResponseHead`` (version ``b"2"``)
HEADERS 1xx                            dropped (as HTTP/1.1 drops interim responses)
DATA                                   ``Body``
END_STREAM / trailers                  ``EndOfMessage(trailers)``
RST_STREAM REFUSED_STREAM              lost, ``stale()``: the request was not processed
GOAWAY, stream id above last_stream_id lost, ``stale()``: retried on a new connection
GOAWAY, stream id up to last_stream_id finishes; no new stream on that connection
RST_STREAM other codes, connection     lost (502/503 before the head, the client cut
lost or broken                         off after it)
=====================================  ===============================================
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any


from kgw_l7.events import (
    HOP_BY_HOP, BodyKind, EndOfMessage, body_event, h2_error_name, response_head,
)
from kgw_l7.hpack_codec import client_session, use_fast_codec
from kgw_l7.streams import OutRequest, UpstreamOwner, UpstreamStream

log = logging.getLogger("kgw.l7.upstream")

#: The receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE): what a backend may
#: send ahead of a slow client on one stream. The same bound the HTTP/1.1 side keeps
#: (socket buffer plus the client transport's high-water mark are of this order).
STREAM_WINDOW = 256 * 1024
#: The receive window of a connection: what all its streams together may have
#: unacknowledged (64 streams with full windows; 16 MiB at most per connection).
CONNECTION_WINDOW = 16 * 1024 * 1024
#: Streams one connection carries at most, whatever the backend allows
#: (SETTINGS_MAX_CONCURRENT_STREAMS, often 100 or 250, can lower it); another connection
#: is opened for more.
MAX_STREAMS = 100

#: Fields an HTTP/2 request must not carry (RFC 9113 8.2.2), besides Host (sent as
#: :authority) and TE (kept when it is "trailers", as gRPC requires).
_DROP = (HOP_BY_HOP | {b"host", b"http2-settings"}) - {b"te"}

#: The ``h2`` package, imported with the first HTTP/2 connection (``_load_h2``): a worker
#: whose backends all speak HTTP/1.1 does not pay for it at start (~100 ms).
h2: Any = None
ErrorCodes: Any = None
_Connection: Any = None
_CONFIG: Any = None


def _load_h2() -> None:
    global h2, ErrorCodes, _Connection, _CONFIG
    if _Connection is not None:
        return
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
    from h2.connection import ConnectionState
    from h2.errors import ErrorCodes

    class Connection(h2.connection.H2Connection):
        """h2's client connection, except that a GOAWAY received leaves it open for the
        streams up to its last_stream_id to finish (RFC 9113 6.8). h2 moves the
        connection to CLOSED on a GOAWAY and then fails on every later frame, in the same
        read too; ``H2Conn.goaway`` keeps new streams off instead."""

        def _receive_goaway_frame(self, frame: Any) -> Any:
            was = self.state_machine.state
            result = h2.connection.H2Connection._receive_goaway_frame(self, frame)
            if was != ConnectionState.CLOSED:
                self.state_machine.state = was
            return result

        # -- the part of the session interface that is not h2's (see ``new_session``) --
        def start(self, settings: dict[Any, int], connection_window: int) -> None:
            self.local_settings = h2.settings.Settings(client=True, initial_values=settings)
            self.initiate_connection()
            self.increment_flow_control_window(connection_window - 65535)

        def stream_limit(self) -> int:
            return int(self.remote_settings.max_concurrent_streams)

        def open_stream(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> int:
            sid: int = self.get_next_available_stream_id()
            self.send_headers(sid, headers, end_stream=end_stream)
            return sid

    # Outbound fields are not validated or normalised again by h2: ``request_headers``
    # builds them from a request kgw parsed (lower-case names, no connection-specific
    # field); that check costs more than the rest of sending a request. What a backend
    # sends is validated.
    _CONFIG = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False)
    _Connection = Connection


def new_session() -> Any:
    """The sans-IO HTTP/2 client connection an ``H2Conn`` drives: libnghttp2's
    (``kgw_l7._nghttp2.ClientSession``, C) in the compiled build, h2's (``Connection``
    above, pure Python) otherwise; ``kgw_l7.hpack_codec`` decides, as for the server side.
    Both take h2's calls and return h2's events; beyond h2's interface they have
    ``start``, ``stream_limit`` and ``open_stream`` (nghttp2 numbers a stream when it
    queues its HEADERS)."""
    _load_h2()
    session = client_session()
    if session is not None:
        return session
    conn = _Connection(config=_CONFIG)
    use_fast_codec(conn)  # (nghttp2's HPACK when compiled: kgw_l7.hpack_codec)
    return conn


class H2Conn:
    """An asyncio.Protocol (duck-typed: compiled as an extension type) for one HTTP/2
    backend connection.

    ``streams``: the open streams by id; ``taken``: streams handed out and not yet
    given back (``Pool.release`` or ``abort``), which is what counts against the
    stream limit; ``goaway``: the backend said GOAWAY, or the pool retired the
    connection: no new stream, closed once the last one is given back."""

    __slots__ = ("transport", "h2", "key", "pool", "counted", "closed", "goaway",
                 "last_stream_id", "streams", "taken", "idle_since", "write_paused",
                 "scheme", "served", "held")

    def __init__(self, key: tuple[Any, ...], pool: Any = None, scheme: bytes = b"http") -> None:
        self.transport: asyncio.Transport | None = None
        self.h2 = new_session()
        self.key = key
        #: The pool counting this connection against its endpoint's limit (as
        #: ``UpstreamConn.pool``); ``counted`` once it does.
        self.pool = pool
        self.counted = False
        self.closed = False
        self.goaway = False
        #: From the backend's GOAWAY: streams above it were not processed.
        self.last_stream_id = -1
        self.streams: dict[int, H2Stream] = {}
        self.taken = 0
        self.idle_since = 0.0
        self.write_paused = False
        self.scheme = scheme
        #: Streams opened so far (a stream on a connection that served others is
        #: ``reused``, as a kept-alive HTTP/1.1 connection is).
        self.served = 0
        #: In the pool's ``held`` list: its write waits for ``Pool.uncork``.
        self.held = False

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.h2.start({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                       h2.settings.SettingCodes.ENABLE_PUSH: 0}, CONNECTION_WINDOW)
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("backend %s:%s broke HTTP/2: %s", self.key[0], self.key[1], exc)
            self.flush()  # (h2 queued a GOAWAY saying why)
            self.abort_all()
            return
        if events:
            self.handle(events)
        self.flush()

    def eof_received(self) -> bool:
        return False  # (the transport closes; connection_lost ends the open streams)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.counted:
            self.counted = False
            self.pool.count(self.key, -1)
        if self.pool is not None:
            self.pool.forget_h2(self)
        streams = list(self.streams.values())
        self.streams.clear()
        for st in streams:
            st.lose()

    def pause_writing(self) -> None:
        self.write_paused = True
        for st in list(self.streams.values()):
            st.update_send_pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        for st in list(self.streams.values()):
            st.update_send_pause()

    # -- streams ------------------------------------------------------------------------
    def has_room(self) -> bool:
        """Can this connection take one more stream now?"""
        if self.closed or self.goaway:
            return False
        limit = self.h2.stream_limit()
        return self.taken < (limit if limit < MAX_STREAMS else MAX_STREAMS)

    def new_stream(self) -> H2Stream:
        """A stream for one request (its id is taken when the request is sent)."""
        self.taken += 1
        st = H2Stream.__new__(H2Stream)
        st.init(self)
        return st

    def stream_done(self, st: H2Stream, now: float) -> None:
        """``st`` is given back (released or aborted): it no longer counts."""
        if st.sid:
            self.streams.pop(st.sid, None)
        self.taken -= 1
        if self.taken == 0:
            self.idle_since = now
            if self.goaway and not self.closed:
                self.close()

    def flush(self) -> None:
        """Write what the session has queued in one write: now, or, while the pool is
        corked (a client's HTTP/2 read is being handled), once that read is done."""
        pool = self.pool
        if pool is not None and pool.corked:
            if not self.held:
                self.held = True
                pool.held.append(self)
            return
        self.write_out()

    def write_out(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def handle(self, events: list[Any]) -> None:
        """Map a read's h2 events to each stream's kgw events, then deliver them: one
        ``on_upstream_events`` per stream per read."""
        batches: dict[H2Stream, list[Any]] = {}
        lost: list[H2Stream] = []
        window = False
        streams = self.streams
        for ev in events:
            t = type(ev)
            if t is h2.events.DataReceived:
                st = streams.get(ev.stream_id)
                if st is None:  # (a stream given back: only the connection window)
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    continue
                st.reads += 1
                st.unacked += ev.flow_controlled_length
                if ev.data:
                    _batch(batches, st).append(body_event(ev.data))
            elif t is h2.events.ResponseReceived:
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.reads += 1
                    st.got_head = True
                    _batch(batches, st).append(st.head_event(ev.headers, ev.stream_ended
                                                             is not None))
            elif t is h2.events.StreamEnded:
                st = streams.get(ev.stream_id)
                if st is not None and not st.remote_done:
                    st.remote_done = True
                    _batch(batches, st).append(EndOfMessage(()))
            elif t is h2.events.TrailersReceived:
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.reads += 1
                    st.remote_done = True
                    _batch(batches, st).append(EndOfMessage(
                        tuple([(n, v) for n, v in ev.headers if n[:1] != b":"])))
            elif t is h2.events.WindowUpdated:
                window = True
            elif t is h2.events.StreamReset:
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.reset = True
                    st.lost_reason = "RST_STREAM " + h2_error_name(ev.error_code)
                    if ev.error_code == ErrorCodes.REFUSED_STREAM:
                        st.refused = True
                    if not st.remote_done:
                        lost.append(st)
            elif t is h2.events.ConnectionTerminated:
                self.goaway = True
                last = ev.last_stream_id if ev.last_stream_id is not None else 0
                self.last_stream_id = last
                if self.pool is not None:
                    self.pool.forget_h2(self)
                for sid, st in streams.items():
                    if sid > last:
                        st.refused = True
                        st.lost_reason = "GOAWAY " + h2_error_name(ev.error_code or 0)
                        lost.append(st)
            elif t is h2.events.RemoteSettingsChanged:
                window = True  # (a new initial window may let queued DATA out)
            # InformationalResponseReceived is dropped; SettingsAcknowledged, PingReceived
            # (h2 answers it), PriorityUpdated and the rest need nothing.
        for st, evs in batches.items():
            owner = st.owner
            if owner is not None:
                owner.on_upstream_events(st, evs)
            if st.unacked and not st.read_paused and st.sid in streams:
                st.ack()
        for st in lost:
            if st.sid in streams:
                del streams[st.sid]
                st.lose()
        if window:
            for st in list(streams.values()):
                if st.pending or st.end_pending:
                    st.push()
        if self.goaway and self.taken == 0 and not self.closed:
            self.close()

    def close(self) -> None:
        """Close gracefully (GOAWAY, then the socket)."""
        if self.closed:
            return
        self.goaway = True
        if self.transport is not None:
            try:
                self.h2.close_connection()
            except h2.exceptions.ProtocolError:
                pass
            self.write_out()  # (now: the transport closes next)
            self.closed = True
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        self.closed = True
        self.goaway = True
        if self.transport is not None:
            self.transport.abort()

    def abort_all(self) -> None:
        """The connection is unusable: cut it (its streams are lost)."""
        self.goaway = True
        if self.transport is not None:
            self.transport.abort()
        else:
            self.connection_lost(None)


def _batch(batches: dict[H2Stream, list[Any]], st: H2Stream) -> list[Any]:
    evs = batches.get(st)
    if evs is None:
        evs = batches[st] = []
    return evs


class H2Stream(UpstreamStream):
    """One request on an ``H2Conn`` (see the module docstring); never reused: the
    connection is (``reusable``)."""

    __slots__ = ("conn", "sid", "pending", "end_pending", "trailers", "local_done",
                 "remote_done", "got_head", "refused", "reset", "unacked", "send_paused",
                 "is_head", "given_back")

    def init(self, conn: H2Conn) -> None:
        self.conn = conn
        self.owner = None
        self.lost_reason = ""
        self.reused = conn.served > 0
        conn.served += 1
        self.reads = 0
        self.read_paused = False
        self.sid = 0
        #: Request body bytes the send window has not taken yet.
        self.pending: list[bytes] = []
        self.end_pending = False
        self.trailers: tuple[tuple[bytes, bytes], ...] = ()
        self.local_done = False
        self.remote_done = False
        self.got_head = False
        self.refused = False
        self.reset = False
        #: Response bytes delivered but not acknowledged yet (reading is paused).
        self.unacked = 0
        #: The owner was told the backend takes no more (``on_upstream_pause(True)``).
        self.send_paused = False
        self.is_head = False
        self.given_back = False

    # -- UpstreamStream -----------------------------------------------------------------
    def send_request(self, owner: UpstreamOwner, out: OutRequest, chunks: list[bytes],
                     end: bool, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.owner = owner
        conn = self.conn
        if conn.closed or conn.goaway:
            self.refused = True
            asyncio.get_running_loop().call_soon(self.lose)
            return
        h = conn.h2
        self.is_head = out.method == b"HEAD"
        headers = request_headers(out, conn.scheme)
        data = [c for c in chunks if c]
        try:
            if end and not data and not trailers:
                sid = self.sid = h.open_stream(headers, True)
                conn.streams[sid] = self
                self.local_done = True
            else:
                sid = self.sid = h.open_stream(headers, False)
                conn.streams[sid] = self
                self.pending = data
                if end:
                    self.end_pending = True
                    self.trailers = trailers
                self.push()
        except h2.exceptions.ProtocolError:
            # The backend lowered its stream limit after this stream was handed out
            # (TooManyStreamsError), or the connection is closing: not processed, so
            # the exchange may retry it on another connection.
            conn.streams.pop(self.sid, None)
            self.refused = True
            asyncio.get_running_loop().call_soon(self.lose)
            return
        conn.flush()

    def send_body(self, data: bytes) -> None:
        if not data or self.local_done or self.sid == 0 or self.conn.closed:
            return
        self.pending.append(data)
        self.push()
        self.conn.flush()

    def send_end(self, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        if self.local_done or self.sid == 0 or self.conn.closed:
            return
        self.end_pending = True
        self.trailers = trailers
        self.push()
        self.conn.flush()

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False
        if self.unacked and self.sid in self.conn.streams:
            self.ack()
            self.conn.flush()

    def abort(self) -> None:
        self.owner = None
        self.give_back(0.0)

    def stale(self) -> bool:
        return self.refused and not self.got_head

    def reusable(self) -> bool:
        conn = self.conn
        return not conn.closed and not conn.goaway

    def response_as_received(self) -> bytes | None:
        return None

    # -- the connection's side ----------------------------------------------------------
    def push(self) -> None:
        """Send queued body bytes as the windows allow, then the end if it is due; tell
        the owner when the backend stops taking more, and when it takes again."""
        h = self.conn.h2
        sid = self.sid
        pending = self.pending
        try:
            while pending:
                window = h.local_flow_control_window(sid)
                if window <= 0:
                    break
                chunk = pending[0]
                n = h.max_outbound_frame_size
                if window < n:
                    n = window
                if n < len(chunk):
                    h.send_data(sid, chunk[:n])
                    pending[0] = chunk[n:]
                    continue
                del pending[0]
                if not pending and self.end_pending and not self.trailers:
                    h.send_data(sid, chunk, end_stream=True)
                    self.end_pending = False
                    self.local_done = True
                else:
                    h.send_data(sid, chunk)
            if not pending and self.end_pending:
                self.end_pending = False
                self.local_done = True
                if self.trailers:
                    h.send_headers(sid, list(self.trailers), end_stream=True)
                else:
                    h.end_stream(sid)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            # The backend reset the stream or closed it (it answered without the rest
            # of the body): nothing more goes out on it.
            pending.clear()
            self.end_pending = False
            self.local_done = True
        self.update_send_pause()

    def update_send_pause(self) -> None:
        blocked = not self.local_done and (bool(self.pending) or self.conn.write_paused)
        if blocked != self.send_paused:
            self.send_paused = blocked
            owner = self.owner
            if owner is not None:
                owner.on_upstream_pause(blocked)

    def ack(self) -> None:
        """Give the backend back the window of what the owner has taken."""
        n = self.unacked
        self.unacked = 0
        self.conn.h2.acknowledge_received_data(n, self.sid)

    def head_event(self, headers: list[tuple[bytes, bytes]], ended: bool) -> Any:
        status = 0
        fields = []
        length = None
        for n, v in headers:
            if n[:1] == b":":
                if n == b":status":
                    status = int(v)
                continue
            if n == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = None
            fields.append((n, v))
        if ended:
            body: BodyKind = "none"
            if length is None and not self.is_head and status != 204 and status != 304:
                # An HTTP/1.1 client must be told there is no body (else it reads to
                # the connection's close).
                fields.append((b"content-length", b"0"))
        elif self.is_head or status == 204 or status == 304:
            body = "none"
        elif length is not None:
            body = "length"
        else:
            body = "chunked"
        return response_head(status, b"2", tuple(fields), True, body, length)

    def lose(self) -> None:
        """The stream ended before its response did (reset, GOAWAY, connection lost)."""
        self.remote_done = True
        self.local_done = True
        self.pending = []
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.on_upstream_lost(self)

    def give_back(self, now: float) -> None:
        """The stream is over for its owner: reset it if it is still open, return the
        window of what it left unacknowledged, stop counting it."""
        if self.given_back:
            return
        self.given_back = True
        conn = self.conn
        sid = self.sid
        if sid and not conn.closed:
            h = conn.h2
            if self.unacked:  # (the stream's window no longer matters; the connection's does)
                n, self.unacked = self.unacked, 0
                h.acknowledge_received_data(n, sid)
            if not (self.local_done and self.remote_done) and not self.reset:
                try:
                    h.reset_stream(sid, ErrorCodes.CANCEL)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    pass
            conn.flush()
        self.pending = []
        self.local_done = self.remote_done = True
        conn.stream_done(self, now)


def request_headers(out: OutRequest, scheme: bytes) -> list[tuple[bytes, bytes]]:
    """The HEADERS of ``out``: pseudo-fields first, then its fields without those HTTP/2
    forbids. ``:authority`` is the Host field."""
    fields = out.headers
    if fields is None:  # (the router gives HTTP/2 backends headers: see head_suffix_for)
        fields = _fields_of(out.raw)
    authority = b""
    rest = []
    for n, v in fields:
        n = n.lower()
        if n in _DROP:
            if n == b"host":
                authority = v
            continue
        if n == b"te":
            if v.strip().lower() == b"trailers":
                rest.append((n, b"trailers"))
            continue
        rest.append((n, v))
    head = [(b":method", out.method), (b":scheme", scheme), (b":authority", authority),
            (b":path", out.target)]
    head.extend(rest)
    return head


def _fields_of(raw: bytes | None) -> list[tuple[bytes, bytes]]:
    """The fields of an HTTP/1.1 head (request line dropped)."""
    if not raw:
        return []
    out = []
    for line in raw.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out.append((name.strip().lower(), value.strip()))
    return out
