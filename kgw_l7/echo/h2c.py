"""``kgw echo --h2c-port``: echo-basic's h2c server (its H2C_PORT, 3001), with ``h2``.

The suite's HTTPRouteBackendProtocolH2C test routes to this port of infra-backend-v1
(Service appProtocol ``kubernetes.io/h2c``), so the Gateway must speak HTTP/2 in clear
text to it. As echo-basic (Go's h2c handler):

* HTTP/2 with prior knowledge (the connection preface) or an HTTP/1.1 request asking
  ``Upgrade: h2c`` with ``HTTP2-Settings`` (answered ``101``, then over HTTP/2 on
  stream 1) gets the echo JSON of ``kgw echo`` (``proto`` ``HTTP/2.0``, ``host`` the
  ``:authority``, headers under Go's canonical names) and honours ``?delay=``;
* any other HTTP/1.1 request gets ``400 Expected h2c request``.

Response bodies are sent as the peer's flow-control window allows; request bodies are
hashed and their window returned as they arrive.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any
from urllib.parse import parse_qsl

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from kgw_l7.echo import EchoServer, echo_document, parse_duration
from kgw_l7.events import Body, EndOfMessage, Rejected, RequestHead
from kgw_l7.h1 import RequestReader, encode_response_head, simple_response

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class _Stream:
    __slots__ = ("headers", "length", "sha", "pending")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.length = 0
        self.sha: Any = None
        #: The response body the flow-control window has not let out yet; None until the
        #: response headers are sent.
        self.pending: bytes | None = None


class H2cEchoConn(asyncio.Protocol):
    """One connection to the h2c port: HTTP/1.1 until the preface or an upgrade."""

    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.h2: h2.connection.H2Connection | None = None
        self.start = b""  # bytes before we know which protocol this is
        self.h1: RequestReader | None = None
        self.upgrade: RequestHead | None = None
        self.upgrade_body = hashlib.sha256()
        self.upgrade_length = 0
        self.streams: dict[int, _Stream] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = "%s:%s" % (peer[0], peer[1])

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.h2 is not None:
            self._h2_feed(data)
            return
        if self.h1 is None:
            self.start += data
            if len(self.start) < len(PREFACE) and PREFACE.startswith(self.start):
                return  # maybe the preface, not all here yet
            data, self.start = self.start, b""
            if data.startswith(PREFACE):
                self._begin_h2()
                self._h2_feed(data)
                return
            self.h1 = RequestReader()
        self._h1_feed(data)

    # -- HTTP/1.1: only an upgrade to h2c is served ------------------------------------

    def _h1_feed(self, data: bytes) -> None:
        assert self.h1 is not None
        for ev in self.h1.feed(data):
            if isinstance(ev, RequestHead):
                names = {n: v for n, v in ev.headers}
                tokens = [t.strip().lower() for t in names.get(b"upgrade", b"").split(b",")]
                if b"h2c" in tokens and b"http2-settings" in names:
                    self.upgrade = ev
                else:
                    self._refuse()
                    return
            elif isinstance(ev, Body) and self.upgrade is not None:
                self.upgrade_body.update(ev.data)
                self.upgrade_length += len(ev.data)
            elif isinstance(ev, EndOfMessage) and self.upgrade is not None:
                self._upgrade(self.upgrade)
                return
            elif isinstance(ev, Rejected):
                self._refuse()
                return

    def _refuse(self) -> None:
        if self.transport is not None:
            self.transport.write(simple_response(400, b"Expected h2c request", close=True))
            self.transport.close()

    def _upgrade(self, head: RequestHead) -> None:
        """RFC 7540 3.2: 101, then the server's preface; the request is stream 1."""
        settings = next(v for n, v in head.headers if n == b"http2-settings")
        if self.transport is None:
            return
        self.transport.write(encode_response_head(101, [(b"connection", b"Upgrade"),
                                                        (b"upgrade", b"h2c")]))
        self._begin_h2(send_preface=False)
        assert self.h2 is not None
        try:
            self.h2.initiate_upgrade_connection(settings)
        except (h2.exceptions.ProtocolError, ValueError):
            self.transport.close()
            return
        self._send()
        hop = {b"connection", b"upgrade", b"http2-settings", b"keep-alive", b"transfer-encoding"}
        headers = [(b":method", head.method), (b":path", head.target),
                   (b":authority", head.authority)]
        headers += [(n, v) for n, v in head.headers if n not in hop and n != b"host"]
        stream = self.streams[1] = _Stream(headers)
        stream.length = self.upgrade_length
        stream.sha = self.upgrade_body if self.upgrade_length else None
        self._answer(1)
        self._send()

    # -- HTTP/2 -------------------------------------------------------------------------

    def _begin_h2(self, send_preface: bool = True) -> None:
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        if send_preface:
            self.h2.initiate_connection()
            self._send()

    def _send(self) -> None:
        if self.transport is not None and self.h2 is not None:
            out = self.h2.data_to_send()
            if out:
                self.transport.write(out)

    def _h2_feed(self, data: bytes) -> None:
        assert self.h2 is not None
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._send()
            if self.transport is not None:
                self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = _Stream(list(ev.headers))
                if ev.stream_ended:
                    self._answer(ev.stream_id)
            elif isinstance(ev, h2.events.DataReceived):
                stream = self.streams.get(ev.stream_id)
                if stream is not None:
                    if stream.sha is None:
                        stream.sha = hashlib.sha256()
                    stream.sha.update(ev.data)
                    stream.length += len(ev.data)
                if ev.flow_controlled_length:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                if ev.stream_id in self.streams:
                    self._answer(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.WindowUpdated):
                self._flush()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                if self.transport is not None:
                    self._send()
                    self.transport.close()
                return
        self._send()

    def _answer(self, stream_id: int) -> None:
        stream = self.streams[stream_id]
        pseudo = dict(h for h in stream.headers if h[0][:1] == b":")
        target = pseudo.get(b":path", b"/")
        delay = _delay(target)
        if isinstance(delay, str):
            self._respond(stream_id, 500, json.dumps({"message": delay}).encode(), [])
        elif delay > 0:
            asyncio.get_running_loop().call_later(delay, self._echo_later, stream_id)
        else:
            self._echo(stream_id)

    def _echo_later(self, stream_id: int) -> None:
        if self.transport is not None and stream_id in self.streams:
            self._echo(stream_id)
            self._send()

    def _echo(self, stream_id: int) -> None:
        stream = self.streams[stream_id]
        pseudo = dict(h for h in stream.headers if h[0][:1] == b":")
        target = pseudo.get(b":path", b"/")
        self.server.log(target, self.peer)
        body, extra = echo_document(self.server, pseudo.get(b":method", b"GET"), target,
                                    pseudo.get(b":authority", b""), "HTTP/2.0", stream.headers,
                                    "", None, stream.length, stream.sha)
        self._respond(stream_id, 200, body, [(k.lower(), v) for k, v in extra])

    def _respond(self, stream_id: int, status: int, body: bytes,
                 extra: list[tuple[bytes, bytes]]) -> None:
        assert self.h2 is not None
        headers = [(b":status", b"%d" % status), (b"content-type", b"application/json"),
                   (b"content-length", b"%d" % len(body)), *extra]
        try:
            self.h2.send_headers(stream_id, headers)
        except h2.exceptions.StreamClosedError:
            self.streams.pop(stream_id, None)
            return
        self.streams[stream_id].pending = body
        self._flush()

    def _flush(self) -> None:
        """Send what each response has left, as far as the flow-control windows allow;
        end the stream once it is all out."""
        assert self.h2 is not None
        for sid, stream in list(self.streams.items()):
            if stream.pending is None:
                continue
            try:
                while stream.pending:
                    room = min(self.h2.local_flow_control_window(sid),
                               self.h2.max_outbound_frame_size)
                    if room <= 0:
                        break
                    self.h2.send_data(sid, stream.pending[:room])
                    stream.pending = stream.pending[room:]
                if not stream.pending:
                    self.h2.end_stream(sid)
                    del self.streams[sid]
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.streams.pop(sid, None)
        self._send()


def _delay(target: bytes) -> float | str:
    """Seconds of ``?delay=`` (Go duration), or the parse error."""
    _, _, query = target.partition(b"?")
    if not query:
        return 0.0
    params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
    text = params.get("delay")
    if not text:
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as exc:
        return str(exc)


async def serve_h2c(server: EchoServer, address: str, port: int) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: H2cEchoConn(server), address, port, reuse_address=True,
                                   backlog=1024)
    print(f"Starting server, listening on port {port} (h2c)", flush=True)
    return srv
