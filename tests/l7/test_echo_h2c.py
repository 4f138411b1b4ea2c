"""``kgw echo --h2c-port``: echo-basic's h2c port (H2C_PORT, 3001), which the suite's
HTTPRouteBackendProtocolH2C routes to: HTTP/2 in clear text with prior knowledge or by
``Upgrade: h2c``; plain HTTP/1.1 is refused with 400."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import h2.config
import h2.connection
import h2.events
import pytest

from conformance import requests as rq
from .conftest import ROOT, free_port, wait_port


@pytest.fixture(scope="module")
def h2c_echo(tmp_path_factory: pytest.TempPathFactory):
    """The echo as infra-backend-v1 runs it in the suite: HTTP on one port, h2c on the
    port named by H2C_PORT."""
    tmp = tmp_path_factory.mktemp("h2cecho")
    http_port, h2c_port = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TLS_", "TCP_", "UDP_", "HTTP", "GRPC_"))}
    proc = subprocess.Popen([sys.executable, "-m", "kgw_l7.echo", "--address", "127.0.0.1",
                             "--port", str(http_port)],
                            env={**clean, "PYTHONPATH": str(ROOT), "H2C_PORT": str(h2c_port),
                                 "POD_NAME": "infra-backend-v1-abcdefghij-klmno",
                                 "NAMESPACE": "infra"},
                            stdout=open(tmp / "echo.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_port("127.0.0.1", http_port)
        wait_port("127.0.0.1", h2c_port)
        yield http_port, h2c_port, tmp
    finally:
        proc.terminate()
        proc.wait(5)


def test_prior_knowledge_gets_the_echo_over_http2(h2c_echo) -> None:
    _, port, tmp = h2c_echo
    req = rq.Request("GET", "http", f"127.0.0.1:{port}", "/some/path?x=1", host="h2c.example.com",
                     headers=(("X-Echo-Set-Header", "X-Foo:bar,X-Foo:baz"), ("x-custom", "v")),
                     protocol="H2C_PRIOR_KNOWLEDGE")
    creq, cres = rq.round_trip(req)
    assert (cres.status, cres.protocol) == (200, "HTTP/2.0")
    assert (creq.protocol, creq.path, creq.host, creq.method) == ("HTTP/2.0", "/some/path?x=1",
                                                                  "h2c.example.com", "GET")
    assert creq.headers["X-Custom"] == ["v"] and "Host" not in creq.headers
    assert (creq.pod, creq.namespace) == ("infra-backend-v1-abcdefghij-klmno", "infra")
    assert cres.headers["x-foo"] == ["bar,baz"]
    assert "Echoing back request made to /some/path?x=1 to client" in (tmp / "echo.log").read_text()


def test_the_case_of_httproute_backend_protocol_h2c_passes_against_it_and_not_the_http_port(
    h2c_echo) -> None:
    """The replay of HTTPRouteBackendProtocolH2C's case: right against the h2c port, a
    failed round trip against an HTTP/1.1-only port."""
    http_port, port, _ = h2c_echo
    case_expect = {"statusCodes": [200], "backendRequest": {"path": "/", "method": "GET",
                                                            "_source": "defaults to Request (host "
                                                                       "not checked)"},
                   "backendPodPrefix": "infra-backend-v1", "backendNamespace": "infra"}
    req = rq.Request("GET", "http", f"127.0.0.1:{port}", "/", protocol="H2C_PRIOR_KNOWLEDGE")
    creq, cres = rq.round_trip(req)
    assert rq.compare(req, creq, cres, case_expect, sent={"path": "/", "method": "GET"}) is None
    with pytest.raises(rq.RequestError):
        rq.round_trip(rq.Request("GET", "http", f"127.0.0.1:{http_port}", "/",
                                 protocol="H2C_PRIOR_KNOWLEDGE"))


def test_plain_http1_is_refused_as_echo_basic_does(h2c_echo) -> None:
    _, port, _ = h2c_echo
    creq, cres = rq.round_trip(rq.Request("GET", "http", f"127.0.0.1:{port}", "/"))
    assert cres.status == 400 and cres.body == b"Expected h2c request"


def _read_events(sock: socket.socket, conn: h2.connection.H2Connection, sid: int) -> tuple[dict,
                                                                                           bytes]:
    headers, body = {}, bytearray()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        assert data, "connection closed"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                headers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                return headers, bytes(body)
        sock.sendall(conn.data_to_send())
    raise AssertionError("no complete response")


def test_upgrade_from_http1_answers_101_then_the_echo_on_stream_1(h2c_echo) -> None:
    _, port, _ = h2c_echo
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    settings = conn.initiate_upgrade_connection()
    body = b"hello upgrade"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: up.example.com\r\nConnection: Upgrade, "
                     b"HTTP2-Settings\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: " + settings
                     + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            assert chunk, "closed before 101"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(conn.data_to_send())  # the client preface
        headers, data = _read_events(sock, conn, 1)
    assert headers[":status"] == "200"
    doc = json.loads(data)
    assert (doc["proto"], doc["method"], doc["path"], doc["host"]) == ("HTTP/2.0", "POST", "/up",
                                                                       "up.example.com")
    assert doc["body"] == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert "Upgrade" not in doc["headers"] and "Http2-Settings" not in doc["headers"]


def test_large_request_bodies_flow_and_delay_is_honoured(h2c_echo) -> None:
    """A request body over the initial 64 KiB window (the echo returns the window as it
    reads), several streams on one connection, and ``?delay=``."""
    _, port, _ = h2c_echo
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    body = os.urandom(1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid, [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/big")])
        sent = 0
        deadline = time.monotonic() + 10
        while sent < len(body):
            assert time.monotonic() < deadline, "window never reopened"
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                       len(body) - sent)
            if room > 0:
                conn.send_data(sid, body[sent:sent + room])
                sent += room
                sock.sendall(conn.data_to_send())
                continue
            for _ in conn.receive_data(sock.recv(65536)):
                pass
            sock.sendall(conn.data_to_send())
        conn.end_stream(sid)
        sock.sendall(conn.data_to_send())
        _, data = _read_events(sock, conn, sid)
        assert json.loads(data)["body"] == {"length": len(body),
                                            "sha256": hashlib.sha256(body).hexdigest()}
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                                (":path", "/slow?delay=300ms")], end_stream=True)
        sock.sendall(conn.data_to_send())
        started = time.monotonic()
        headers, data = _read_events(sock, conn, sid)
        assert headers[":status"] == "200" and time.monotonic() - started >= 0.25
