"""A controllable HTTP/2 (h2c, prior knowledge) backend for the upstream HTTP/2 tests,
built on ``h2`` as a real server: flow control both ways, several connections.

Run: ``python -m tests.l7.h2backend --port N [--goaway-after K]``. Every response says
which connection carried it (``x-conn``, numbered from 1 in accept order) and how many
were accepted so far (``x-conns``). By the path's last segment:

* ``/echo`` -- 200, the request body's length and SHA-256 (``x-body-len``,
  ``x-body-sha``) and the request's fields as ``x-req-<name>`` headers.
* ``/big?n=N`` -- 200 with N bytes (``content-length``), as the window allows.
* ``/trailers`` -- 200, body ``hi``, trailers ``grpc-status: 0`` and
  ``grpc-message: all good``.
* ``/slow-upload`` -- reads the body acknowledging 16 KiB per millisecond at most (a
  slow reader), then answers as ``/echo``.
* ``/cut-after-head`` -- head and 5 bytes of a 1000-byte body, then the connection is
  cut (a backend killed mid-response).
* ``/cut-before-head`` -- the connection is cut before any response.
* ``/flaky`` -- the first one (in this process) is cut as ``/cut-before-head``, the
  others are answered as ``/echo``.
* ``/refuse`` -- RST_STREAM(REFUSED_STREAM) on the first stream per connection carrying
  it, served on later ones.

``--tls-cert F --tls-key F``: TLS, ALPN ``h2`` only.

``--goaway-after K``: after the K-th stream of a connection, the backend sends GOAWAY
with that stream's id as last_stream_id (a graceful shutdown mid-load), finishes the
streams up to it, refuses the later ones (RFC 9113 6.8) and closes when they are done.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import ssl
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes

_conn_ids = itertools.count(1)
accepted = 0
flaky_cuts = 0


class _Server(h2.connection.H2Connection):
    """h2's server connection, still taking frames after its own GOAWAY: the streams up
    to its last_stream_id finish (RFC 9113 6.8)."""

    def close_connection(self, *args, **kwargs) -> None:
        was = self.state_machine.state
        super().close_connection(*args, **kwargs)
        self.state_machine.state = was


class Conn(asyncio.Protocol):
    def __init__(self, goaway_after: int) -> None:
        self.h2 = _Server(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None
        self.id = 0
        self.goaway_after = goaway_after
        self.streams_seen = 0
        self.last_allowed: int | None = None
        self.reqs: dict[int, dict] = {}
        self.sending: dict[int, list] = {}  # stream -> [data, offset, trailers]
        self.refused_once = False
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        global accepted
        accepted += 1
        self.id = next(_conn_ids)
        self.transport = transport
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.transport.close()
            return
        try:
            self.handle(events)
        except h2.exceptions.ProtocolError:  # (kgw's GOAWAY came in the same read)
            pass
        self.flush()
        self.maybe_close()

    def handle(self, events: list) -> None:
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.on_request(ev)
            elif isinstance(ev, h2.events.DataReceived):
                req = self.reqs.get(ev.stream_id)
                if req is None:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    continue
                req["len"] += len(ev.data)
                req["sha"].update(ev.data)
                if req["path"] == "/slow-upload":
                    self.loop.call_later(0.001 * (ev.flow_controlled_length / 16384),
                                         self.ack, ev.flow_controlled_length, ev.stream_id)
                else:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                req = self.reqs.get(ev.stream_id)
                if req is not None:
                    self.respond(ev.stream_id, req)
            elif isinstance(ev, h2.events.WindowUpdated):
                for sid in list(self.sending):
                    self.push(sid)
            elif isinstance(ev, h2.events.StreamReset):
                self.reqs.pop(ev.stream_id, None)
                self.sending.pop(ev.stream_id, None)

    def ack(self, n: int, sid: int) -> None:
        try:
            self.h2.acknowledge_received_data(n, sid)
        except h2.exceptions.ProtocolError:
            return
        self.flush()

    def on_request(self, ev: h2.events.RequestReceived) -> None:
        sid = ev.stream_id
        self.streams_seen += 1
        if self.last_allowed is not None and sid > self.last_allowed:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        headers = dict(ev.headers)
        path = headers[b":path"].decode()
        url = urlsplit(path)
        req = {"path": "/" + url.path.rsplit("/", 1)[-1], "query": parse_qs(url.query),
               "headers": ev.headers, "len": 0, "sha": hashlib.sha256()}
        if req["path"] == "/refuse" and not self.refused_once:
            self.refused_once = True
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        global flaky_cuts
        if req["path"] == "/cut-before-head" or (req["path"] == "/flaky" and flaky_cuts == 0):
            if req["path"] == "/flaky":
                flaky_cuts += 1
            self.transport.abort()
            return
        self.reqs[sid] = req
        if self.goaway_after and self.streams_seen == self.goaway_after:
            self.last_allowed = sid
            self.h2.close_connection(last_stream_id=sid)
        if ev.stream_ended is not None:
            self.respond(sid, req)

    def respond(self, sid: int, req: dict) -> None:
        base = [(b"x-conn", b"%d" % self.id), (b"x-conns", b"%d" % accepted)]
        path = req["path"]
        if path == "/big":
            n = int(req["query"].get("n", ["0"])[0])
            self.h2.send_headers(sid, [(b":status", b"200"), (b"content-length", b"%d" % n)] + base)
            self.sending[sid] = [b"z" * n, 0, None]
            self.push(sid)
        elif path == "/trailers":
            self.h2.send_headers(sid, [(b":status", b"200")] + base)
            self.sending[sid] = [b"hi", 0, [(b"grpc-status", b"0"), (b"grpc-message", b"all good")]]
            self.push(sid)
        elif path == "/cut-after-head":
            self.h2.send_headers(sid, [(b":status", b"200"), (b"content-length", b"1000")] + base)
            self.h2.send_data(sid, b"12345")
            self.flush()
            self.loop.call_later(0.05, self.transport.abort)
            self.reqs.pop(sid, None)
            return
        else:
            fields = [(b"x-req-" + n, v) for n, v in req["headers"] if n[:1] != b":"]
            fields.append((b"x-req-authority", dict(req["headers"])[b":authority"]))
            self.h2.send_headers(sid, [(b":status", b"200"), (b"content-length", b"2"),
                                       (b"x-body-len", b"%d" % req["len"]),
                                       (b"x-body-sha", req["sha"].hexdigest().encode())]
                                 + base + fields)
            self.sending[sid] = [b"ok", 0, None]
            self.push(sid)
        self.reqs.pop(sid, None)

    def push(self, sid: int) -> None:
        entry = self.sending.get(sid)
        if entry is None:
            return
        data, off, trailers = entry
        try:
            while off < len(data):
                n = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size,
                        len(data) - off)
                if n <= 0:
                    entry[1] = off
                    return
                self.h2.send_data(sid, data[off:off + n])
                off += n
            if trailers:
                self.h2.send_headers(sid, trailers, end_stream=True)
            else:
                self.h2.end_stream(sid)
        except h2.exceptions.StreamClosedError:
            pass
        del self.sending[sid]

    def maybe_close(self) -> None:
        if self.last_allowed is not None and not self.reqs and not self.sending:
            self.flush()
            self.loop.call_later(0.05, self.transport.close)


async def main(port: int, goaway_after: int, cert: str | None, key: str | None) -> None:
    loop = asyncio.get_running_loop()
    ctx = None
    if cert and key:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["h2"])
    server = await loop.create_server(lambda: Conn(goaway_after), "127.0.0.1", port, ssl=ctx)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--goaway-after", type=int, default=0)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    asyncio.run(main(args.port, args.goaway_after, args.tls_cert, args.tls_key))
