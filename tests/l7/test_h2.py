"""HTTP/2 from clients end to end (kgw_l7.downstream_h2): a 1-worker plane in front of
``kgw echo`` and a trailer-sending HTTP/1.1 backend, driven by the h2 library
(tests/l7/h2client.py) and curl: concurrency, flow control, trailers, 100-continue,
CONNECT, header validation, TLS ALPN, draining, and the attacks of issue 16 (each counted
in /metrics, the worker still serving afterwards). What does not depend on the protocol
(routing, filters, retries...) runs over both in test_proxy.py (the ``send`` fixture)."""

from __future__ import annotations

import functools
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from typing import Any

import h2.errors
import h2.settings
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame, DataFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame,
    WindowUpdateFrame,
)

from kgw_l7.hpack_codec import server_implementation
from kgw_l7.config import (
    Backend, Certificate, Endpoint, L7Config, Listener, PathMatch, Route, RouteMatch, Rule,
    VirtualHost,
)

from .conftest import Echo, PlaneRunner, eventually, free_port, request, self_signed
from .h2client import H2Client, H2Resp

pytestmark = pytest.mark.slow

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class TrailerBackend:
    """An HTTP/1.1 backend that answers every request chunked, with the request it got
    (head and body as received) as the body and ``grpc-status: 0`` as a trailer."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c: socket.socket) -> None:
        with c:
            c.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    data += c.recv(65536)
                head = data.split(b"\r\n\r\n", 1)[0].lower()
                if b"transfer-encoding: chunked" in head:
                    while not data.endswith(b"\r\n\r\n") or data.count(b"\r\n0\r\n") == 0:
                        data += c.recv(65536)
                body = data
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                          b"Connection: close\r\n\r\n%x\r\n%s\r\n0\r\ngrpc-status: 0\r\n"
                          b"grpc-message: fine\r\n\r\n" % (len(body), body))
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def be(port: int, name: str = "infra/v1:8080") -> Backend:
    return Backend(name=name, endpoints=(Endpoint("127.0.0.1", port),))


def rule(name: str, *backends: Backend, **kw: Any) -> Rule:
    return Rule(name=f"infra/{name}/0", route=f"infra/{name}", gateway="infra/gw",
                backends=backends, **kw)


@pytest.fixture(scope="module")
def plane(echoes: dict[str, Echo], tmp_path_factory: pytest.TempPathFactory):
    port, tls_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("h2") / "access.log"
    runner = PlaneRunner(workers=1, access_log=str(log), header_timeout=1.0,
                         idle_timeout=2.0)
    trailers = TrailerBackend()
    routes = (
        Route(RouteMatch(path=PathMatch("PathPrefix", "/trailers")),
              rule("trailers", be(trailers.port, "infra/trailers:80"))),
        Route(RouteMatch(path=PathMatch("PathPrefix", "/")),
              rule("default", be(echoes["v1"].port))),
    )
    vhosts = (VirtualHost("*", routes),)
    cert, key = self_signed(["h2.example.com"])
    runner.apply(L7Config((
        Listener("main", "127.0.0.1", port, virtual_hosts=vhosts),
        Listener("tls", "127.0.0.1", tls_port, "HTTPS",
                 (Certificate(("h2.example.com",), cert, key),), vhosts),
    ), 1))
    runner.port = port  # type: ignore[attr-defined]
    runner.tls_port = tls_port  # type: ignore[attr-defined]
    runner.access_log = log  # type: ignore[attr-defined]
    yield runner
    runner.close()
    trailers.close()


def h2_errors(plane: PlaneRunner, reason: str) -> float:
    for line in plane.metrics().splitlines():
        if line.startswith(f'kgw_l7_http2_errors_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def still_serves(plane: PlaneRunner) -> None:
    """After an attack, a normal client is served (over both protocols)."""
    c = H2Client(plane.port)
    try:
        assert c.request("GET", "/after", "x").status == 200
    finally:
        c.close()
    assert request(plane.port, "/after").status == 200


def raw_conn(plane: PlaneRunner, settings: bool = True) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", plane.port), timeout=10)
    s.sendall(PREFACE + (SettingsFrame(0).serialize() if settings else b""))
    return s


def headers_block(path: str = "/", extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    return hpack.Encoder().encode([(b":method", b"GET"), (b":scheme", b"http"),
                                   (b":path", path.encode()), (b":authority", b"x"),
                                   *(extra or [])])


def read_all(s: socket.socket, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def goaway_code(data: bytes) -> int | None:
    """The error code of the first GOAWAY frame in ``data``."""
    i = 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        if data[i + 3] == 0x7:
            return int.from_bytes(data[i + 13:i + 17], "big")
        i += 9 + length
    return None


# -- requests -----------------------------------------------------------------------------

def test_many_concurrent_streams_on_one_connection(plane):
    c = H2Client(plane.port)
    try:
        sids = [c.start("GET", f"/c/{i}", "x") for i in range(80)]
        c.wait(sids, timeout=30)
        for i, sid in enumerate(sids):
            r = c.streams[sid]
            assert r.status == 200 and r.json()["path"] == f"/c/{i}"
    finally:
        c.close()


def test_authority_wins_over_host_and_host_alone_routes(plane):
    c = H2Client(plane.port)
    try:
        r = c.request("GET", "/auth", "a.test:81", headers=[("host", "b.test")])
        assert r.json()["host"] == "a.test:81"
        sid = c.start("GET", "/host-only", "c.test", host_header=True)
        c.wait([sid])
        assert c.streams[sid].json()["host"] == "c.test"
    finally:
        c.close()


def test_request_body_and_100_continue(plane):
    c = H2Client(plane.port)
    try:
        sid = c.start("POST", "/expect", "x", headers={"expect": "100-continue",
                                                       "content-length": "5"}, end=False)
        deadline = time.monotonic() + 5
        while not c.streams[sid].informational and time.monotonic() < deadline:
            c.read_once()
        assert c.streams[sid].informational == [100]
        c.send_body(sid, b"hello", end=True)
        c.wait([sid])
        doc = c.streams[sid].json()
        assert doc["body"]["length"] == 5 and "Expect" not in doc["headers"]
    finally:
        c.close()


def test_trailers_both_ways(plane):
    c = H2Client(plane.port)
    try:
        r = c.request("POST", "/trailers", "x", body=None, trailers=[("x-req-trailer", "t1")])
        assert r.status == 200
        # The backend saw the body framed chunked with the client's trailer in its last chunk.
        assert b"transfer-encoding: chunked" in r.body.lower()
        assert b"x-req-trailer: t1" in r.body.lower()
        assert ("grpc-status", "0") in r.trailers and ("grpc-message", "fine") in r.trailers
    finally:
        c.close()


def test_slow_reader_stream_never_stalls_another(plane):
    """One stream's client never opens its window: kgw holds a bounded amount for it
    (the backend is paused), another stream on the same connection completes, and the
    stalled stream is reset after the idle timeout (counted)."""
    before = h2_errors(plane, "send_timeout")
    c = H2Client(plane.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0},
                 window=1 << 30)
    try:
        slow = c.start("GET", "/bytes/50000000", "x")
        time.sleep(0.3)
        # The other stream's window is opened explicitly; the slow one's never is.
        fast = c.start("GET", "/fast", "x")
        c.conn.increment_flow_control_window(1 << 20, fast)
        c.flush()
        c.wait([fast], timeout=10)
        assert c.streams[fast].status == 200 and c.streams[fast].json()["path"] == "/fast"
        assert c.streams[slow].body == b""
        c.wait([slow], timeout=10)
        assert c.streams[slow].reset == h2.errors.ErrorCodes.CANCEL
    finally:
        c.close()
    assert h2_errors(plane, "send_timeout") == before + 1
    still_serves(plane)


def test_a_slow_reader_with_a_small_window_gets_everything(plane):
    c = H2Client(plane.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    try:
        r = c.request("GET", "/bytes/300000", "x")
        assert r.status == 200 and len(r.body) == 300_000
    finally:
        c.close()


def test_connect_is_refused_with_405(plane):
    c = H2Client(plane.port)
    try:
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(b":method", b"CONNECT"), (b":authority", b"a:443")],
                            end_stream=True)
        c.streams[sid] = H2Resp()
        c.flush()
        c.wait([sid])
        assert c.streams[sid].status == 405
    finally:
        c.close()
    assert h2_errors(plane, "connect_refused") >= 1


@pytest.mark.parametrize("fields,reason", [
    ([(b"X-Upper", b"1")], "uppercase_name"),
    ([(b"connection", b"keep-alive")], "connection_specific"),
    ([(b"transfer-encoding", b"chunked")], "connection_specific"),
    ([(b"te", b"gzip")], "te_not_trailers"),
    ([(b"x-bad", b"a\nb")], "bad_value"),
])
def test_malformed_requests_get_a_stream_reset(plane, fields, reason):
    """RFC 9113 §8.2: a stream error PROTOCOL_ERROR, counted by reason; the connection
    and its other streams go on."""
    before = h2_errors(plane, f"malformed_{reason}")
    c = H2Client(plane.port)
    try:
        sid = c.start("GET", "/bad", "x", headers=[(n.decode(), v.decode()) for n, v in fields],
                      lower=False)
        c.wait([sid])
        assert c.streams[sid].reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert c.request("GET", "/good", "x", headers={"te": "trailers"}).status == 200
    finally:
        c.close()
    assert h2_errors(plane, f"malformed_{reason}") == before + 1


def rst_code(data: bytes, sid: int) -> int | None:
    """The error code of the first RST_STREAM on stream ``sid`` in ``data``."""
    i = 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        if data[i + 3] == 0x3 and int.from_bytes(data[i + 5:i + 9], "big") == sid:
            return int.from_bytes(data[i + 9:i + 13], "big")
        i += 9 + length
    return None


@pytest.mark.parametrize("body", [b"12345", b"1"])
def test_content_length_mismatch_is_malformed(plane, body):
    """RFC 9113 §8.1.1: DATA adding up to more or less than Content-Length. nghttp2
    (HTTP checks off) resets the stream, counted; h2 ends the connection. Either way
    the backend never gets a body longer than the length it was told."""
    before = h2_errors(plane, "malformed_content_length_mismatch")
    s = raw_conn(plane)
    try:
        block = hpack.Encoder().encode([(b":method", b"POST"), (b":scheme", b"http"),
                                        (b":path", b"/upload"), (b":authority", b"x"),
                                        (b"content-length", b"3")])
        s.sendall(HeadersFrame(1, block, flags=["END_HEADERS"]).serialize()
                  + DataFrame(1, body, flags=["END_STREAM"]).serialize())
        data = read_all(s, timeout=1.5)
        if server_implementation() == "h2":
            assert goaway_code(data) == h2.errors.ErrorCodes.PROTOCOL_ERROR
        else:
            assert rst_code(data, 1) == h2.errors.ErrorCodes.PROTOCOL_ERROR
    finally:
        s.close()
    if server_implementation() != "h2":
        assert h2_errors(plane, "malformed_content_length_mismatch") == before + 1
    still_serves(plane)


def test_oversized_header_list_is_431(plane):
    c = H2Client(plane.port)
    # (Huffman-coding 70 kB in Python can take longer than the idle timeout on a loaded
    # machine, and the server rightly closes a connection idle that long.)
    c.conn.encoder.encode = functools.partial(c.conn.encoder.encode, huffman=False)
    try:
        # (70 kB in ten fields: more than HTTP/1.1's 60 KiB, each under nghttp2's bound)
        r = c.request("GET", "/big", "x", headers={f"x-big-{i}": "a" * 7000 for i in range(10)})
        assert r.status == 431
        assert c.request("GET", "/good", "x").status == 200
    finally:
        c.close()


def test_one_field_over_64k(plane):
    """h2 decodes it (431, the connection goes on); nghttp2 refuses any field over 64 KiB
    as a compression error, which ends the connection (counted; the worker goes on)."""
    before = h2_errors(plane, "header_compression")
    c = H2Client(plane.port)
    c.conn.encoder.encode = functools.partial(c.conn.encoder.encode, huffman=False)
    try:
        if server_implementation() == "h2":
            assert c.request("GET", "/big", "x", headers={"x-big": "a" * 70000}).status == 431
            return
        with pytest.raises(ConnectionError):
            c.request("GET", "/big", "x", headers={"x-big": "a" * 70000})
        assert c.goaway is not None
        assert c.goaway.error_code == h2.errors.ErrorCodes.COMPRESSION_ERROR
    finally:
        c.close()
    assert h2_errors(plane, "header_compression") == before + 1
    still_serves(plane)


def test_access_log_and_metrics_say_http2(plane):
    c = H2Client(plane.port)
    try:
        assert c.request("GET", "/logged-h2", "x").status == 200
    finally:
        c.close()

    def logged() -> list[dict[str, Any]]:
        return [json.loads(line) for line in plane.access_log.read_text().splitlines()
                if "/logged-h2" in line]
    eventually(lambda: logged(), timeout=5)
    assert logged()[0]["protocol"] == "HTTP/2"
    assert "kgw_l7_http2_connections_total" in plane.metrics()


def h2_resets(plane: PlaneRunner, peer: str, code: str) -> float:
    for line in plane.metrics().splitlines():
        if line.startswith("kgw_l7_http2_stream_resets_total{") \
                and f'peer="{peer}"' in line and f'code="{code}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_reset_is_counted_and_logged_by_its_code(plane):
    """A request whose client resets it (here mid-body, CANCEL) ends with Envoy's DR and
    the code in its access log line; every RST_STREAM received is counted by code."""
    before = h2_resets(plane, "client", "cancel")
    before_refused = h2_resets(plane, "client", "refused_stream")
    c = H2Client(plane.port)
    try:
        sid = c.start("POST", "/client-reset", "x", end=False)  # (no length: streamed)
        c.send_body(sid, b"part")
        time.sleep(0.2)  # (the exchange forwarded the head and waits for the body)
        c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        sid2 = c.start("POST", "/client-reset-2", "x", end=False)
        c.conn.reset_stream(sid2, h2.errors.ErrorCodes.REFUSED_STREAM)
        c.flush()
        assert c.request("GET", "/after-reset", "x").status == 200
    finally:
        c.close()

    def logged() -> list[dict[str, Any]]:
        return [json.loads(line) for line in plane.access_log.read_text().splitlines()
                if '"/client-reset"' in line]
    eventually(lambda: logged(), timeout=5)
    first = logged()[0]
    assert first["response_flags"] == "DR", first
    assert first["response_code_details"] == "client reset the stream (RST_STREAM CANCEL)"
    assert h2_resets(plane, "client", "cancel") == before + 1
    assert h2_resets(plane, "client", "refused_stream") == before_refused + 1


# -- TLS ----------------------------------------------------------------------------------

def test_tls_alpn_h2_and_http11(plane):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = H2Client(plane.tls_port, tls=ctx, server_hostname="h2.example.com")
    try:
        r = c.request("GET", "/tls", "h2.example.com")
        assert r.status == 200 and r.json()["headers"]["X-Forwarded-Proto"] == ["https"]
    finally:
        c.close()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", plane.tls_port), timeout=10) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname="h2.example.com") as s:
            assert s.selected_alpn_protocol() == "http/1.1"
            s.sendall(b"GET /tls1 HTTP/1.1\r\nHost: h2.example.com\r\nConnection: close\r\n\r\n")
            assert read_all(s).startswith(b"HTTP/1.1 200")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_http2_over_tls(plane):
    p = subprocess.run(["curl", "-sS", "-k", "-i", "--http2", "--resolve",
                        f"h2.example.com:{plane.tls_port}:127.0.0.1",
                        f"https://h2.example.com:{plane.tls_port}/curl-tls"],
                       capture_output=True, timeout=10, check=True)
    assert p.stdout.startswith(b"HTTP/2 200"), p.stdout[:200]


# -- draining -----------------------------------------------------------------------------

def test_goaway_on_drain_lets_streams_finish(echoes):
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off")
    try:
        runner.apply(L7Config((Listener("l", "127.0.0.1", port, virtual_hosts=(VirtualHost(
            "*", (Route(RouteMatch(path=PathMatch("PathPrefix", "/")),
                        rule("d", be(echoes["v1"].port))),)),)),), 1))
        c = H2Client(port)
        assert c.request("GET", "/warm", "x").status == 200
        sid = c.start("GET", "/slow?delay=1s", "x")
        time.sleep(0.2)
        runner.call(runner.plane.drain())
        c.read_until_closed(10)  # closed once the last stream ended
        assert c.streams[sid].status == 200 and c.streams[sid].ended  # in flight: finished
        assert c.goaway is not None and c.goaway.error_code == 0
        assert c.goaway.last_stream_id == sid
        c.close()
    finally:
        runner.close()


# -- attacks (each counted; the worker serves a normal client afterwards) ------------------

def test_rapid_reset_gets_enhance_your_calm(plane):
    before = h2_errors(plane, "rapid_reset")
    s = raw_conn(plane)
    try:
        enc = hpack.Encoder()
        frames = []
        for i in range(400):
            sid = 1 + 2 * i
            block = enc.encode([(b":method", b"GET"), (b":scheme", b"http"),
                                (b":path", b"/rr"), (b":authority", b"x")])
            frames.append(HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
            frames.append(RstStreamFrame(sid, error_code=8).serialize())
        try:
            s.sendall(b"".join(frames))
        except OSError:
            pass
        assert goaway_code(read_all(s)) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        s.close()
    assert h2_errors(plane, "rapid_reset") == before + 1
    still_serves(plane)


def test_continuation_flood_is_bounded(plane):
    before = h2_errors(plane, "continuation_flood")
    s = raw_conn(plane)
    try:
        out = [HeadersFrame(1, headers_block()[:3]).serialize()]
        out += [ContinuationFrame(1, b"\x00" * 1000).serialize() for _ in range(200)]
        try:
            s.sendall(b"".join(out))
        except OSError:
            pass
        assert goaway_code(read_all(s)) == h2.errors.ErrorCodes.PROTOCOL_ERROR
    finally:
        s.close()
    assert h2_errors(plane, "continuation_flood") == before + 1
    still_serves(plane)


def test_hpack_bomb_is_bounded(plane):
    """One large field in the dynamic table, then a header block referring to it over and
    over: tiny on the wire, huge decoded. Decoding stops at the advertised limit."""
    before = h2_errors(plane, "hpack_bomb")
    s = raw_conn(plane)
    try:
        enc = hpack.Encoder()
        enc.header_table_size = 4096
        first = enc.encode([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
                            (b":authority", b"x"), (b"x-bomb", b"b" * 4000)])
        s.sendall(HeadersFrame(1, first, flags=["END_HEADERS", "END_STREAM"]).serialize())
        # The bomb field is now entry 62 of the dynamic table: index it 20000 times.
        bomb = enc.encode([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
                           (b":authority", b"x")]) + b"\xbe" * 20000
        try:
            s.sendall(HeadersFrame(3, bomb[:16000], flags=[]).serialize()
                      + ContinuationFrame(3, bomb[16000:], flags=["END_HEADERS"]).serialize())
        except OSError:
            pass
        assert goaway_code(read_all(s)) is not None
    finally:
        s.close()
    assert h2_errors(plane, "hpack_bomb") == before + 1
    still_serves(plane)


@pytest.mark.parametrize("kind", ["ping_flood", "settings_flood", "window_update_flood",
                                  "empty_frame_flood"])
def test_control_frame_floods(plane, kind):
    before = h2_errors(plane, kind)
    s = raw_conn(plane)
    try:
        if kind == "ping_flood":
            frame = PingFrame(0, b"12345678").serialize()
        elif kind == "settings_flood":
            frame = SettingsFrame(0, {h2.settings.SettingCodes.ENABLE_PUSH: 0}).serialize()
        elif kind == "window_update_flood":
            frame = WindowUpdateFrame(0, 1).serialize()
        else:
            s.sendall(HeadersFrame(1, headers_block("/upload", [(b"x", b"y")]).replace(
                b"GET", b"GET"), flags=["END_HEADERS"]).serialize())
            frame = DataFrame(1, b"").serialize()
        try:
            for _ in range(20):
                s.sendall(frame * 1000)
        except OSError:
            pass
        assert goaway_code(read_all(s)) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        s.close()
    assert h2_errors(plane, kind) == before + 1
    still_serves(plane)


def test_a_flooding_client_that_reads_nothing_still_gets_the_goaway(plane):
    """A client with a small receive buffer floods PINGs and reads only once it has sent
    them all: the PING ACKs sent before the flood was found fill its window, and the
    GOAWAY queues behind them. The gateway shuts the connection for writing and drops
    what still comes (LINGER_S) instead of closing with input unread, which would reset
    the connection and drop the GOAWAY with it."""
    before = h2_errors(plane, "ping_flood")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", plane.port))
    try:
        s.sendall(PREFACE + SettingsFrame(0).serialize())
        s.sendall(PingFrame(0, b"12345678").serialize() * 20000)  # (the gateway reads it all)
        data = read_all(s)
        assert goaway_code(data) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, len(data)
    finally:
        s.close()
    assert h2_errors(plane, "ping_flood") == before + 1
    still_serves(plane)


def test_frames_on_closed_streams_flood(plane):
    before = h2_errors(plane, "closed_stream_flood")
    s = raw_conn(plane)
    try:
        s.sendall(HeadersFrame(1, headers_block(), flags=["END_HEADERS", "END_STREAM"]).serialize())
        time.sleep(0.3)  # stream 1 answered and closed
        frame = WindowUpdateFrame(1, 1).serialize()
        try:
            for _ in range(20):
                s.sendall(frame * 1000)
        except OSError:
            pass
        assert goaway_code(read_all(s)) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        s.close()
    assert h2_errors(plane, "closed_stream_flood") == before + 1, [
        line for line in plane.metrics().splitlines() if "http2_errors" in line]
    still_serves(plane)


def test_invalid_preface(plane):
    """ALPN said h2, then the bytes are not the HTTP/2 preface: GOAWAY PROTOCOL_ERROR."""
    before = h2_errors(plane, "invalid_preface")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", plane.tls_port), timeout=10) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname="h2.example.com") as s:
            assert s.selected_alpn_protocol() == "h2"
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert goaway_code(read_all(s)) == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert h2_errors(plane, "invalid_preface") == before + 1
    still_serves(plane)


def test_silent_client_after_preface_is_closed(plane):
    """The preface and nothing else: closed after the header timeout (counted)."""
    before = h2_errors(plane, "preface_timeout")
    s = socket.create_connection(("127.0.0.1", plane.port), timeout=10)
    try:
        s.sendall(PREFACE)
        t0 = time.monotonic()
        read_all(s, timeout=6)
        assert time.monotonic() - t0 < 5
    finally:
        s.close()
    assert h2_errors(plane, "preface_timeout") == before + 1


def test_idle_connection_gets_goaway_and_is_closed(plane):
    c = H2Client(plane.port)
    try:
        assert c.request("GET", "/idle", "x").status == 200
        t0 = time.monotonic()
        c.read_until_closed(8)  # idle_timeout is 2 s here
        assert time.monotonic() - t0 >= 1.5
        assert c.goaway is not None and c.goaway.error_code == 0
    finally:
        c.close()


def test_unfinished_header_block_times_out(plane):
    before = h2_errors(plane, "header_timeout")
    s = raw_conn(plane)
    try:
        s.sendall(HeadersFrame(1, headers_block()[:4]).serialize())  # no END_HEADERS
        t0 = time.monotonic()
        assert goaway_code(read_all(s, timeout=8)) == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert time.monotonic() - t0 < 6
    finally:
        s.close()
    assert h2_errors(plane, "header_timeout") == before + 1
    still_serves(plane)
