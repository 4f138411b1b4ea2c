"""Which HTTP/2 server session H2Conn drives (libnghttp2's in the compiled build: a silent
fallback to h2 would cost ~5x the instructions), and kgw_l7._nghttp2.ServerSession
sans-IO against h2's client: h2's events out, frames in the order and within the windows
h2 would send them, kgw's bounds (floods, header list) reported as H2Conn expects."""

from __future__ import annotations

import os

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
from hyperframe.frame import PingFrame, WindowUpdateFrame

import kgw_l7
from kgw_l7 import downstream_h2, hpack_codec


def test_the_compiled_build_serves_http2_clients_with_nghttp2():
    session = downstream_h2.new_session()
    if not kgw_l7.extension_in_use("downstream_h2"):
        assert isinstance(session, downstream_h2.ServerConnection)
        assert hpack_codec.server_implementation() == "h2"
        return
    if not os.path.exists("/usr/include/nghttp2/nghttp2.h"):
        pytest.skip("libnghttp2-dev not installed: h2's session is the right choice")
    assert type(session).__module__ == "kgw_l7._nghttp2", type(session)
    assert type(session).__name__ == "ServerSession"
    assert hpack_codec.server_implementation() == "nghttp2"


if kgw_l7.extension_path("_nghttp2") is None:
    pytest.skip("kgw_l7._nghttp2 not built", allow_module_level=True)

from kgw_l7 import _nghttp2  # noqa: E402  (only once it is known to be built)

REQUEST = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")]


def pair(window: int = 65535) -> tuple[h2.connection.H2Connection, _nghttp2.ServerSession]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    client.initiate_connection()
    server = _nghttp2.ServerSession()
    server.max_header_list = downstream_h2.MAX_HEADER_LIST
    server.start(downstream_h2.SETTINGS, downstream_h2.CONNECTION_WINDOW, None)
    return client, server


def to_server(client: h2.connection.H2Connection, server: _nghttp2.ServerSession) -> list:
    return server.receive_data(client.data_to_send())


def to_client(client: h2.connection.H2Connection, server: _nghttp2.ServerSession) -> list:
    return client.receive_data(server.data_to_send())


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


def test_request_response_and_trailers():
    client, server = pair()
    client.send_headers(1, REQUEST + [("te", "trailers")], end_stream=False)
    client.send_data(1, b"hello", end_stream=True)
    events = to_server(client, server)
    assert kinds(events) == ["RemoteSettingsChanged", "RequestReceived", "DataReceived",
                             "StreamEnded"]
    assert events[1].headers[0] == (b":method", b"GET") and events[1].stream_ended is None
    assert events[2].data == b"hello" and events[2].flow_controlled_length == 5
    server.acknowledge_received_data(5, 1)
    server.send_headers(1, [(b":status", b"100")])
    server.send_headers(1, [(b":status", b"200"), (b"content-type", b"text/plain")])
    server.send_data(1, b"wor")
    server.send_data(1, b"ld")
    server.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    got = to_client(client, server)
    resp = [e for e in got if isinstance(e, h2.events.ResponseReceived)]
    assert [e.headers[0] for e in got if isinstance(e, (h2.events.InformationalResponseReceived,
                                                        h2.events.ResponseReceived))] \
        == [(b":status", b"100"), (b":status", b"200")]
    assert resp
    assert b"".join(e.data for e in got if isinstance(e, h2.events.DataReceived)) == b"world"
    trailers = [e for e in got if isinstance(e, h2.events.TrailersReceived)]
    assert trailers and trailers[0].headers == [(b"grpc-status", b"0")]
    assert isinstance(got[-1], h2.events.StreamEnded)
    with pytest.raises(h2.exceptions.StreamClosedError):
        server.send_data(1, b"late")


def test_response_data_waits_for_the_clients_window():
    client, server = pair(window=10)
    client.send_headers(1, REQUEST, end_stream=True)
    to_server(client, server)
    to_client(client, server)  # (the client's SETTINGS acknowledged: window 10)
    to_server(client, server)
    server.send_headers(1, [(b":status", b"200")])
    assert server.local_flow_control_window(1) == 10
    server.send_data(1, b"0123456789")
    assert server.local_flow_control_window(1) == 0  # (queued counts before it is framed)
    got = to_client(client, server)
    assert b"".join(e.data for e in got if isinstance(e, h2.events.DataReceived)) \
        == b"0123456789"
    assert server.local_flow_control_window(1) == 0
    client.increment_flow_control_window(4, stream_id=1)
    events = to_server(client, server)
    assert [(type(e).__name__, e.stream_id) for e in events] == [("WindowUpdated", 1)]
    assert server.local_flow_control_window(1) == 4
    server.send_data(1, b"abcd", end_stream=True)
    got = to_client(client, server)
    assert [e.data for e in got if isinstance(e, h2.events.DataReceived)] == [b"abcd"]
    assert isinstance(got[-1], h2.events.StreamEnded)


def test_client_reset_and_closed_stream_frames_are_counted():
    client, server = pair()
    client.send_headers(1, REQUEST, end_stream=True)
    client.reset_stream(1, 8)
    events = to_server(client, server)
    reset = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert reset and reset[0].stream_id == 1 and reset[0].error_code == 8
    before = server.closed_stream_frames
    server.receive_data(WindowUpdateFrame(1, 1).serialize() * 3)
    assert server.closed_stream_frames == before + 3
    assert server.control_frames >= 3


def test_earned_window_updates_are_not_counted():
    client, server = pair()
    to_server(client, server)
    before = server.control_frames
    server.window_credit = 2
    server.receive_data(WindowUpdateFrame(0, 1).serialize() * 3)
    assert server.control_frames == before + 1


def test_a_ping_flood_in_one_read_is_flagged():
    client, server = pair()
    to_server(client, server)
    events = server.receive_data(PingFrame(0, b"12345678").serialize() * 2000)
    assert server.flooded
    assert kinds(events).count("PingReceived") >= 1000


def test_header_list_bound_ends_the_connection_as_hpack_bomb():
    client, server = pair()
    # (one field indexed 70 times: 4 kB on the wire, 280 kB decoded)
    client.send_headers(1, REQUEST + [("x-b", "v" * 4000)] * 70, end_stream=True)
    with pytest.raises(h2.exceptions.ProtocolError) as info:
        to_server(client, server)
    assert server.error_reason(info.value) == "hpack_bomb"
    assert server.closed()
    assert b"\x07" in server.data_to_send()  # (a GOAWAY frame)


def test_invalid_preface():
    server = _nghttp2.ServerSession()
    server.start(downstream_h2.SETTINGS, downstream_h2.CONNECTION_WINDOW, None)
    with pytest.raises(h2.exceptions.ProtocolError) as info:
        server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert server.error_reason(info.value) == "invalid_preface"


def test_header_block_open_until_end_headers():
    client, server = pair()
    to_server(client, server)
    client.send_headers(1, REQUEST + [("x-long", "v" * 40000)], end_stream=True)
    data = client.data_to_send()
    server.receive_data(data[:20000])
    assert server.header_block_open()
    events = server.receive_data(data[20000:])
    assert not server.header_block_open()
    assert "RequestReceived" in kinds(events)
