"""kgw_l7.upstream_h2 without sockets: an ``H2Conn`` wired to a real ``h2`` server
connection in memory (frames both ways), a recording owner in place of an exchange. The
H2Conn drives libnghttp2's client session in the compiled build, h2's otherwise: the same
tests for both."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.connection import ConnectionState
from h2.errors import ErrorCodes

import kgw_l7
from kgw_l7 import upstream_h2
from kgw_l7.events import Body, EndOfMessage, ResponseHead
from kgw_l7.streams import UpstreamOwner, out_request
from kgw_l7.upstream_h2 import (CONNECTION_WINDOW, MAX_STREAMS, STREAM_WINDOW, H2Conn,
                                 request_headers)


class Transport:
    """Collects writes; ``pause_writing`` is driven by the test."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def take(self) -> bytes:
        data = b"".join(self.writes)
        self.writes.clear()
        return data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Owner(UpstreamOwner):
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.lost = 0
        self.pauses: list[bool] = []

    def on_upstream_events(self, up, events) -> None:
        self.events.extend(events)

    def on_upstream_lost(self, up) -> None:
        self.lost += 1

    def on_upstream_pause(self, paused: bool) -> None:
        self.pauses.append(paused)


class Pair:
    """kgw's client connection and a backend's server connection, in memory."""

    def __init__(self, server_settings: dict[int, int] | None = None) -> None:
        self.t = Transport()
        self.conn = H2Conn(("10.0.0.1", 80, None))
        self.conn.connection_made(self.t)
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.server.initiate_connection()
        if server_settings:
            self.server.update_settings(server_settings)
        self.to_server()
        self.to_client()
        self.to_server()

    def to_server(self) -> list[Any]:
        data = self.t.take()
        return self.server.receive_data(data) if data else []

    def to_client(self) -> None:
        data = self.server.data_to_send()
        if data:
            self.conn.data_received(data)


def GET(headers=((b"host", b"h.example"), (b"x-a", b"1"))):
    return out_request(b"GET", b"/p?q", list(headers), None, "none")


def test_the_compiled_build_talks_to_http2_backends_with_nghttp2():
    session = upstream_h2.new_session()
    if not kgw_l7.extension_in_use("upstream_h2"):
        assert isinstance(session, h2.connection.H2Connection)
        return
    if not os.path.exists("/usr/include/nghttp2/nghttp2.h"):
        pytest.skip("libnghttp2-dev not installed: h2's session is the right choice")
    assert type(session).__module__ == "kgw_l7._nghttp2", type(session)
    assert type(session).__name__ == "ClientSession"


def test_request_headers_are_pseudo_fields_then_fields_without_connection_ones():
    out = out_request(b"POST", b"/x", [
        (b"host", b"a.example:8080"), (b"connection", b"keep-alive, x-drop"),
        (b"keep-alive", b"5"), (b"transfer-encoding", b"chunked"), (b"te", b"trailers"),
        (b"upgrade", b"websocket"), (b"x-one", b"1"), (b"content-length", b"3")], None, "length")
    assert request_headers(out, b"http") == [
        (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a.example:8080"),
        (b":path", b"/x"), (b"te", b"trailers"), (b"x-one", b"1"), (b"content-length", b"3")]
    # a head forwarded as received (never made for HTTP/2 backends) still works
    raw = b"GET /y HTTP/1.1\r\nHost: b.example\r\nX-Two: 2\r\nTE: gzip\r\n\r\n"
    out = out_request(b"GET", b"/y", None, raw, "none")
    assert request_headers(out, b"https") == [
        (b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"b.example"),
        (b":path", b"/y"), (b"x-two", b"2")]


def test_get_response_and_trailers_map_to_kgw_events():
    p = Pair()
    st = p.conn.new_stream()
    owner = Owner()
    st.send_request(owner, GET(), [], True, ())
    evs = p.to_server()
    req = [e for e in evs if isinstance(e, h2.events.RequestReceived)][0]
    assert req.headers[:4] == [(b":method", b"GET"), (b":scheme", b"http"),
                               (b":authority", b"h.example"), (b":path", b"/p?q")]
    assert req.stream_ended is not None
    p.server.send_headers(req.stream_id, [(b":status", b"200"), (b"content-type", b"text/x")])
    p.server.send_data(req.stream_id, b"hello")
    p.server.send_headers(req.stream_id, [(b"grpc-status", b"0"), (b"grpc-message", b"ok")],
                          end_stream=True)
    p.to_client()
    head, body, end = owner.events
    assert isinstance(head, ResponseHead)
    assert (head.status, head.version, head.body, head.headers) == (
        200, b"2", "chunked", ((b"content-type", b"text/x"),))
    assert body == Body(b"hello")
    assert end == EndOfMessage(((b"grpc-status", b"0"), (b"grpc-message", b"ok")))
    assert st.reads == 3 and not st.stale() and st.reusable()


def test_a_response_ended_with_its_headers_says_its_length_is_zero():
    p = Pair()
    st = p.conn.new_stream()
    owner = Owner()
    st.send_request(owner, GET(), [], True, ())
    sid = [e for e in p.to_server() if isinstance(e, h2.events.RequestReceived)][0].stream_id
    p.server.send_headers(sid, [(b":status", b"200")], end_stream=True)
    p.to_client()
    head, end = owner.events
    assert head.body == "none" and head.headers == ((b"content-length", b"0"),)
    assert end == EndOfMessage(())


def test_interim_heads_are_dropped_and_the_final_one_delivered():
    p = Pair()
    st = p.conn.new_stream()
    owner = Owner()
    st.send_request(owner, GET(), [], True, ())
    sid = [e for e in p.to_server() if isinstance(e, h2.events.RequestReceived)][0].stream_id
    p.server.send_headers(sid, [(b":status", b"103"), (b"link", b"</s.css>")])
    p.server.send_headers(sid, [(b":status", b"200"), (b"content-length", b"2")])
    p.server.send_data(sid, b"ok", end_stream=True)
    p.to_client()
    head, body, end = owner.events
    assert (head.status, head.headers) == (200, ((b"content-length", b"2"),))
    assert (body, end) == (Body(b"ok"), EndOfMessage(()))


def test_a_malformed_response_loses_its_stream_and_is_never_relayed():
    """A connection-specific field in a response (RFC 9113 8.2.2): nghttp2 resets that
    stream, h2 cuts the connection; either way its owner gets no head, only the loss
    (a 502), and nghttp2's other streams go on."""
    p = Pair()
    p.server.config.validate_outbound_headers = False
    p.server.config.normalize_outbound_headers = False
    a, b = p.conn.new_stream(), p.conn.new_stream()
    oa, ob = Owner(), Owner()
    a.send_request(oa, GET(), [], True, ())
    b.send_request(ob, GET(), [], True, ())
    p.to_server()
    p.server.send_headers(a.sid, [(b":status", b"200"), (b"connection", b"close")],
                          end_stream=True)
    p.to_client()
    if p.t.closed:  # (h2: the transport's connection_lost follows its abort)
        p.conn.connection_lost(None)
        assert (oa.lost, ob.lost) == (1, 1)
        return
    assert oa.lost == 1 and oa.events == [] and a.lost_reason == "RST_STREAM PROTOCOL_ERROR"
    p.server.send_headers(b.sid, [(b":status", b"204")], end_stream=True)
    p.to_client()
    assert ob.lost == 0 and ob.events[0].status == 204


@pytest.mark.asyncio
async def test_a_stream_past_a_lowered_stream_limit_is_refused_not_queued():
    """The backend lowered SETTINGS_MAX_CONCURRENT_STREAMS after the stream was handed
    out: it is lost at once and stale (the exchange retries it elsewhere), where nghttp2
    alone would hold its HEADERS until a stream closes."""
    p = Pair({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    first, late = p.conn.new_stream(), p.conn.new_stream()
    o1, o2 = Owner(), Owner()
    first.send_request(o1, GET(), [], True, ())
    late.send_request(o2, GET(), [], True, ())
    await asyncio.sleep(0)
    assert (o1.lost, o2.lost) == (0, 1) and late.stale()
    assert [e.stream_id for e in p.to_server() if isinstance(e, h2.events.RequestReceived)] \
        == [1]


def test_request_body_goes_out_within_the_window_and_pauses_the_owner():
    p = Pair()
    st = p.conn.new_stream()
    owner = Owner()
    out = out_request(b"POST", b"/up", [(b"host", b"h"), (b"transfer-encoding", b"chunked")],
                      None, "chunked")
    st.send_request(owner, out, [b"a" * 50000], False, ())
    got = p.to_server()
    sid = got[0].stream_id
    st.send_body(b"b" * 50000)  # 100000 > the default 65535 window
    received = sum(len(e.data) for e in got + p.to_server()
                   if isinstance(e, h2.events.DataReceived))
    assert received == 65535
    assert owner.pauses == [True]
    st.send_end(((b"x-checksum", b"abc"),))
    assert sum(len(e.data) for e in p.to_server() if isinstance(e, h2.events.DataReceived)) == 0
    # the backend reads: its WINDOW_UPDATE lets the rest out, then the trailers
    p.server.acknowledge_received_data(65535, sid)
    p.to_client()
    evs = p.to_server()
    assert sum(len(e.data) for e in evs if isinstance(e, h2.events.DataReceived)) == 100000 - 65535
    trailers = [e for e in evs if isinstance(e, h2.events.TrailersReceived)]
    assert trailers and trailers[0].headers == [(b"x-checksum", b"abc")]
    assert owner.pauses == [True, False]


def test_response_data_is_acknowledged_only_as_the_client_takes_it():
    p = Pair()
    assert p.server.remote_settings.initial_window_size == STREAM_WINDOW
    assert p.server.outbound_flow_control_window == CONNECTION_WINDOW
    st = p.conn.new_stream()
    owner = Owner()
    st.send_request(owner, GET(), [], True, ())
    sid = [e for e in p.to_server() if isinstance(e, h2.events.RequestReceived)][0].stream_id
    p.server.send_headers(sid, [(b":status", b"200")])

    def send_window() -> int:
        """The backend sends all its window lets it, in 16 KiB frames; what it sent."""
        sent = 0
        while (n := min(16384, p.server.local_flow_control_window(sid))) > 0:
            p.server.send_data(sid, b"x" * n)
            p.to_client()
            p.to_server()
            sent += n
        return sent

    st.pause_reading()  # the client is slow: nothing is acknowledged
    assert send_window() == STREAM_WINDOW
    assert p.server.local_flow_control_window(sid) == 0
    assert sum(len(e.data) for e in owner.events if isinstance(e, Body)) == STREAM_WINDOW
    st.resume_reading()  # the client took it: the whole window is back
    p.to_server()
    assert p.server.local_flow_control_window(sid) == STREAM_WINDOW
    # not paused, what arrives is acknowledged as it is delivered (h2 sends the update
    # once half a window is consumed)
    p.server.send_data(sid, b"y" * 16384)
    for _ in range(8):
        p.server.send_data(sid, b"y" * 16384)
        p.to_client()
        p.to_server()
    assert p.server.local_flow_control_window(sid) > STREAM_WINDOW // 2


def test_many_streams_share_one_connection_up_to_the_backends_limit():
    p = Pair({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 3})
    streams = []
    for _ in range(3):
        assert p.conn.has_room()
        st = p.conn.new_stream()
        st.send_request(Owner(), GET(), [], True, ())
        streams.append(st)
    assert not p.conn.has_room()
    assert [s.sid for s in streams] == [1, 3, 5]
    streams[0].abort()  # -> RST_STREAM(CANCEL), room again
    resets = [e for e in p.to_server() if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(1, ErrorCodes.CANCEL)]
    assert p.conn.has_room()


@pytest.mark.asyncio
async def test_goaway_lets_streams_up_to_its_last_id_finish_and_makes_the_others_stale():
    p = Pair()
    owners = [Owner() for _ in range(3)]
    streams = [p.conn.new_stream() for _ in owners]
    for st, owner in zip(streams, owners):
        st.send_request(owner, GET(), [], True, ())
    p.to_server()
    p.server.send_headers(1, [(b":status", b"200"), (b"content-length", b"2")])
    p.server.close_connection(last_stream_id=3)
    p.server.state_machine.state = ConnectionState.SERVER_OPEN  # (h2 would send no more)
    p.to_client()
    assert p.conn.goaway and not p.conn.has_room()
    assert [o.lost for o in owners] == [0, 0, 1]
    assert streams[2].stale() and not streams[0].stale() and not streams[0].reusable()
    p.server.send_data(1, b"ok", end_stream=True)
    p.server.send_headers(3, [(b":status", b"204")], end_stream=True)
    p.to_client()
    assert owners[0].events[1:] == [Body(b"ok"), EndOfMessage(())]
    assert owners[1].events[0].status == 204
    for st in streams:
        st.abort()
    assert p.t.closed  # the last stream given back closes a connection going away
    # a stream handed out from a connection that went away is lost at once, stale
    late = p.conn.new_stream()
    owner = Owner()
    late.send_request(owner, GET(), [], True, ())
    await asyncio.sleep(0)
    assert owner.lost == 1 and late.stale()


def test_refused_stream_is_stale_other_resets_are_not():
    p = Pair()
    a, b = p.conn.new_stream(), p.conn.new_stream()
    oa, ob = Owner(), Owner()
    a.send_request(oa, GET(), [], True, ())
    b.send_request(ob, GET(), [], True, ())
    p.to_server()
    p.server.reset_stream(a.sid, ErrorCodes.REFUSED_STREAM)
    p.server.reset_stream(b.sid, ErrorCodes.INTERNAL_ERROR)
    p.to_client()
    assert (oa.lost, ob.lost) == (1, 1)
    assert a.stale() and not b.stale()
    # The code goes to the owner (the exchange: access log and metrics).
    assert (a.lost_reason, b.lost_reason) == ("RST_STREAM REFUSED_STREAM",
                                              "RST_STREAM INTERNAL_ERROR")
    assert p.conn.has_room() and a.reusable()


def test_connection_lost_loses_every_open_stream():
    p = Pair()
    owners = [Owner(), Owner()]
    for o in owners:
        p.conn.new_stream().send_request(o, GET(), [], True, ())
    p.conn.connection_lost(None)
    assert [o.lost for o in owners] == [1, 1]
    assert not p.conn.has_room()


def test_a_broken_frame_cuts_the_connection():
    p = Pair()
    owner = Owner()
    p.conn.new_stream().send_request(owner, GET(), [], True, ())
    p.conn.data_received(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00")  # 0 increment
    assert p.t.closed


async def test_pool_opens_one_connection_for_requests_arriving_together():
    """Requests that find no HTTP/2 connection while one is being opened wait for it:
    one connection, one stream each (a real socket; the peer only accepts)."""
    from kgw_l7.config import Backend, Endpoint
    from kgw_l7.router import CompiledBackend
    from kgw_l7.tls import TLSContexts
    from kgw_l7.upstream import Pool

    accepted = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = CompiledBackend(Backend("b", endpoints=(Endpoint("127.0.0.1", port),),
                                      protocol="h2c"))
    pool = Pool(TLSContexts(), 8)
    try:
        streams = await asyncio.gather(*[pool.acquire("127.0.0.1", port, backend, 0.0)
                                         for _ in range(10)])
        assert len({id(s.conn) for s in streams}) == 1 and streams[0].conn.taken == 10
        assert pool.take_idle("127.0.0.1", port, backend, 0.0).conn is streams[0].conn
        await asyncio.sleep(0.05)
        assert len(accepted) == 1
        # past MAX_STREAMS on it, the next requests open one more connection, together
        more = await asyncio.gather(*[pool.acquire("127.0.0.1", port, backend, 0.0)
                                      for _ in range(MAX_STREAMS + 20)])
        conns = {id(s.conn): s.conn for s in streams + more}
        assert sorted(c.taken for c in conns.values()) == [31, MAX_STREAMS]  # (+ take_idle)
        await asyncio.sleep(0.05)
        assert len(accepted) == 2
    finally:
        pool.close()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


class ClientTransport(Transport):
    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


def test_the_requests_of_one_client_read_go_to_the_backend_in_one_write():
    """An HTTP/2 client's read with several requests (h2load's, gRPC clients'): the pool
    is corked while it is handled, so their HEADERS leave in one write to the backend
    connection, not one write each."""
    from kgw_l7.channel import WorkerOptions
    from kgw_l7.config import (Backend, Endpoint, L7Config, Listener, PathMatch, Route,
                               RouteMatch, Rule, VirtualHost)
    from kgw_l7.context import ListenerState, WorkerContext
    from kgw_l7.downstream_h2 import H2Conn as ClientConn

    loop = asyncio.new_event_loop()
    try:
        ctx = WorkerContext(loop, WorkerOptions(access_log="off"))
        rule = Rule("t/r/0", "t/r", "t/gw", backends=(
            Backend("t/b:80", endpoints=(Endpoint("127.0.0.1", 9),), protocol="h2c"),))
        config = L7Config((Listener("l", "127.0.0.1", 8080, virtual_hosts=(VirtualHost(
            "*", (Route(RouteMatch(path=PathMatch("PathPrefix", "/")), rule),)),)),), 1)
        listener = ListenerState("l", config.listeners[0], ctx.cache.build(config)["l"], None)
        key = ("127.0.0.1", 9, None)
        up = H2Conn(key, ctx.pool)
        backend = Transport()
        up.connection_made(backend)
        ctx.pool._h2[key] = [up]
        server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        server.initiate_connection()
        server.receive_data(backend.take())
        up.data_received(server.data_to_send())
        server.receive_data(backend.take())

        conn = ClientConn(ctx, listener)
        client_t = ClientTransport()
        conn.connection_made(client_t)
        client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        conn.data_received(client.data_to_send())
        fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x"),
                  (b":authority", b"a.example")]
        for sid in (1, 3, 5):
            client.send_headers(sid, fields, end_stream=True)
        conn.data_received(client.data_to_send())
        assert len(backend.writes) == 1
        got = server.receive_data(backend.take())
        assert [e.stream_id for e in got if isinstance(e, h2.events.RequestReceived)] \
            == [1, 3, 5]
        assert not ctx.pool.corked and not ctx.pool.held
    finally:
        loop.close()
