"""A small blocking HTTP/2 client over the h2 library, for the tests: prior knowledge on
clear text, ALPN h2 over TLS; several streams at once; raw frames for the attack tests."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings


class H2Resp:
    """A stream's outcome: ``status``, ``headers`` (str pairs, no pseudo-headers),
    ``body``, ``trailers``, ``reset`` (the RST_STREAM error code, or None)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.trailers: list[tuple[str, str]] = []
        self.reset: int | None = None
        self.informational: list[int] = []
        self.ended = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        import json
        return json.loads(self.body)


class H2Client:
    def __init__(self, port: int, addr: str = "127.0.0.1", timeout: float = 10.0,
                 tls: ssl.SSLContext | None = None, server_hostname: str | None = None,
                 settings: dict[int, int] | None = None, window: int | None = None,
                 auto_window: bool = True) -> None:
        sock = socket.create_connection((addr, port), timeout=timeout)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            sock = tls.wrap_socket(sock, server_hostname=server_hostname or addr)
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        self.sock = sock
        self.timeout = timeout
        self.auto_window = auto_window
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        if window:
            self.conn.increment_flow_control_window(window)
        self.flush()
        self.streams: dict[int, H2Resp] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def start(self, method: str, path: str, host: str, headers: Any = None,
              body: bytes | None = None, end: bool = True, host_header: bool = False,
              lower: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(b":method", method.encode()), (b":scheme", b"http"), (b":path", path.encode())]
        if host_header:
            fields.append((b"host", host.encode()))
        else:
            fields.append((b":authority", host.encode()))
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        for k, v in items:
            fields.append(((k.lower() if lower else k).encode(), v.encode()))
        if body is not None:
            fields.append((b"content-length", b"%d" % len(body)))
        self.conn.send_headers(sid, fields, end_stream=end and not body)
        self.streams[sid] = H2Resp()
        if body:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid: int, data: bytes, end: bool = False) -> None:
        while data:
            room = min(self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size)
            if room <= 0:
                self.flush()
                self.read_once()
                continue
            self.conn.send_data(sid, data[:room])
            data = data[room:]
        if end:
            self.conn.end_stream(sid)
        self.flush()

    def read_once(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            raise ConnectionError(f"server closed the connection (GOAWAY: {self.goaway!r})")
        for ev in self.conn.receive_data(data):
            self.on_event(ev)
        self.flush()

    def on_event(self, ev: Any) -> None:
        st = self.streams.get(getattr(ev, "stream_id", None) or 0)
        if isinstance(ev, h2.events.ResponseReceived) and st is not None:
            for n, v in ev.headers:
                if n == b":status":
                    st.status = int(v)
                else:
                    st.headers.append((n.decode(), v.decode()))
        elif isinstance(ev, h2.events.InformationalResponseReceived) and st is not None:
            st.informational.append(int(dict(ev.headers)[b":status"]))
        elif isinstance(ev, h2.events.DataReceived) and st is not None:
            st.body += ev.data
            if self.auto_window:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived) and st is not None:
            st.trailers = [(n.decode(), v.decode()) for n, v in ev.headers]
        elif isinstance(ev, h2.events.StreamEnded) and st is not None:
            st.ended = True
        elif isinstance(ev, h2.events.StreamReset) and st is not None:
            st.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
            if ev.error_code == 0:
                # A graceful GOAWAY: the streams up to its last stream id go on, which
                # h2's client state machine does not allow once it saw one.
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN

    def wait(self, sids: list[int] | None = None, timeout: float | None = None) -> None:
        """Read until every stream in ``sids`` (default: all) ended or was reset."""
        deadline = time.monotonic() + (timeout or self.timeout)
        todo = sids if sids is not None else list(self.streams)
        while not all(self.streams[s].ended or self.streams[s].reset is not None
                      for s in todo):
            if time.monotonic() > deadline:
                raise TimeoutError("streams not finished")
            if self.goaway is not None and self.closed:
                raise ConnectionError("connection closed: %r" % self.goaway)
            self.read_once()

    def request(self, method: str, path: str, host: str, headers: Any = None,
                body: bytes | None = None, trailers: list[tuple[str, str]] | None = None
                ) -> H2Resp:
        if trailers:
            sid = self.start(method, path, host, headers, body, end=False)
            self.conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in trailers],
                                   end_stream=True)
            self.flush()
        else:
            sid = self.start(method, path, host, headers, body)
        self.wait([sid])
        return self.streams[sid]

    def read_until_closed(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.read_once()
            except (ConnectionError, OSError):
                return
        raise TimeoutError("the server kept the connection open")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def h2_request(port: int, path: str, method: str = "GET", host: str | None = None,
               headers: Any = None, body: bytes | None = None, conn: Any = None,
               timeout: float = 10.0, addr: str = "127.0.0.1") -> H2Resp:
    """``tests.l7.conftest.request`` over HTTP/2 (prior knowledge): one connection per
    request unless ``conn`` (an H2Client) is given."""
    c = conn or H2Client(port, addr, timeout)
    try:
        return c.request(method, path, host or f"{addr}:{port}", headers, body)
    finally:
        if conn is None:
            c.close()
