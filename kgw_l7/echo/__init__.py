"""``kgw echo``: an HTTP echo backend compatible with the Gateway API conformance
suite's echo server ("echo-basic"), fast enough to be the benchmarks' backend.

Usage: ``kgw echo [--address ADDR] [--port PORT] [--pod NAME] [--namespace NS]
[--service NAME] [--ingress NAME] [--tls-port PORT --tls-cert FILE --tls-key FILE]
[--quiet] [--h2c-port PORT] [--tcp-port PORT] [--udp-port PORT] [--grpc-port PORT]``

Flags (environment variables of echo-basic are honoured as defaults):

``--address``   address to listen on (default 0.0.0.0)
``--port``      HTTP port (default $HTTP_PORT or 3000)
``--pod``       pod name reported in the JSON (default $POD_NAME)
``--namespace`` namespace reported (default $NAMESPACE)
``--service``   service reported (default $SERVICE_NAME)
``--ingress``   ingress reported (default $INGRESS_NAME)
``--tls-port``  also serve HTTPS on this port (default $HTTPS_PORT or 8443, only with
                a certificate)
``--tls-cert``, ``--tls-key``  PEM files (default $TLS_SERVER_CERT, $TLS_SERVER_PRIVKEY)
``--tls-client-ca``  HTTPS requests a client certificate and, when one is presented,
                verifies it against these CAs (default $TLS_CLIENT_CACERTS); the JSON's
                ``tls.peerCertificates`` lists what the client presented (PEM)
``--quiet``     don't print the per-request log line (benchmarks)
``--h2c-port``  also serve the echo over h2c on this port, as echo-basic does on its
                H2C_PORT (default $H2C_PORT; off when unset: ``kgw_l7/echo/h2c.py``)
``--tcp-port``  TCP mode (below) on this port instead of HTTP (default: $TCP_PORT or 3000
                when $TCP_ECHO_SERVER is set, else HTTP mode)
``--udp-port``  UDP mode (below) on this port instead of HTTP (default: $UDP_PORT or 8080
                when $UDP_ECHO_SERVER is set)
``--grpc-port`` gRPC mode (below) on this port instead of HTTP (default: $HTTP_PORT or 3000
                when $GRPC_ECHO_SERVER is set)

Behaviour (as echo-basic):

* any path: a JSON body with ``path`` (the request URI), ``host``, ``method``, ``proto``,
  ``headers`` (name -> list of values, canonical Go casing, Host excluded), ``namespace``,
  ``ingress``, ``service``, ``pod``, ``httpPort``, ``sni`` and ``tls`` (HTTPS only).
  ``Content-Type: application/json``; the pairs of ``X-Echo-Set-Header: k:v,k:v`` are
  copied into the response headers. kgw adds ``body: {length, sha256}`` when the request
  had a body.
* ``?delay=1s`` (Go duration) waits before answering.
* ``/status/NNN`` answers status NNN with an empty body.
* ``/health`` answers ``OK``.
* ``/retry...?uuid=U&succeedAfter=N&responseCode=C&delayRetry=D``: the first N requests
  for U fail (status C after waiting D, or a connection reset when C is absent); later
  ones are echoed.
* ``Upgrade: websocket`` (any path, echo-basic uses ``/ws``): the handshake, then every
  data frame is echoed back; pings are answered.
* kgw extension: ``/bytes/N`` answers N bytes (``?chunked=1`` for chunked encoding), for
  streaming tests and benchmarks.
* every echoed request prints ``Echoing back request made to <URI> to client (<addr>)``.

TCP mode (echo-basic's ``tcpserver``, chosen by ``--tcp-port`` or $TCP_ECHO_SERVER): no
HTTP; every connection gets the welcome line ``Gateway API Test TCP Server``, then each
line the client sends is answered: ``PING`` -> ``PONG``, ``IS_TLS`` -> ``true``/``false``,
``TEST`` -> one line of JSON (``namespace``, ``ingress``, ``service``, ``pod``,
``tcpport``, ``tlsport``, ``isTLS`` and, over TLS, ``tls{version, serverName,
negotiatedProtocol, curves, cipherSuite}``); other lines are ignored. With a certificate
it also serves the same protocol over TLS on ``--tls-port`` (default $TLS_PORT or 8443;
the key defaults to $TLS_SERVER_PRIV_KEY, tcpserver's name for it).

UDP mode (chosen by ``--udp-port`` or $UDP_ECHO_SERVER, as the suite's UDPRoute manifests
set it; port 8080, their containerPort, unless $UDP_PORT says otherwise): every datagram
is answered with one datagram to its sender, echo-basic's udpechoserver envelope: JSON
with ``request`` (the datagram received, UTF-8, undecodable bytes replaced) and the pod
context (``namespace``, ``ingress``, ``service``, ``pod``).

gRPC mode (echo-basic's gRPC echo, chosen by ``--grpc-port`` or $GRPC_ECHO_SERVER, as the
suite's grpc-infra-backend Deployments set it): the suite's ``GrpcEcho`` service served by
grpcio in clear text on the gRPC port and, with a certificate and key ($TLS_SERVER_CERT,
$TLS_SERVER_PRIV_KEY as echo-basic's gRPC server names them), over TLS (ALPN h2) on
``--tls-port`` (default $HTTPS_PORT or 8443): ``kgw_l7/echo/grpcecho.py``. Needs the ``grpc``
extra (grpcio, grpcio-tools, protobuf).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import email.utils
import json
import time
import os
import re
import socket
import ssl
import struct
import sys
from typing import Any, cast
from urllib.parse import parse_qsl

from kgw_l7.events import Body, EndOfMessage, Rejected, RequestHead, Upgraded
from kgw_l7.h1 import RequestReader, encode_chunk, encode_response_head, simple_response

_STATUS_RE = re.compile(rb"^/status/(\d\d\d)$")
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration (seconds): "1s", "1.5s", "300ms", "1m30s"."""
    if text in ("0", ""):
        return 0.0
    pos = 0
    total = 0.0
    sign = 1.0
    if text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        pos = 1
    if pos == len(text):
        raise ValueError(f"time: invalid duration {text!r}")
    while pos < len(text):
        m = _DURATION_RE.match(text, pos)
        if m is None:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def canonical(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey: x-foo-bar -> X-Foo-Bar."""
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


_CANONICAL: dict[bytes, str] = {}


def _canonical_cached(name: bytes) -> str:
    key = _CANONICAL.get(name)
    if key is None:
        key = canonical(name.decode("latin-1"))
        if len(_CANONICAL) < 4096:  # bounded: header names are client-chosen
            _CANONICAL[name] = key
    return key


class EchoServer:
    def __init__(self, pod: str, namespace: str, service: str, ingress: str, port: int,
                 quiet: bool = False) -> None:
        self.context = {"namespace": namespace, "ingress": ingress, "service": service,
                        "pod": pod}
        self.http_port = str(port)
        self.quiet = quiet
        self.retries: dict[str, int] = {}
        self.out = sys.stdout

    def log(self, uri: bytes, peer: str) -> None:
        if not self.quiet:
            self.out.write("Echoing back request made to %s to client (%s)\n"
                           % (uri.decode("latin-1"), peer))
            self.out.flush()


class _Request:
    __slots__ = ("head", "length", "sha")

    def __init__(self, head: RequestHead) -> None:
        self.head = head
        self.length = 0
        self.sha: Any = None


class EchoConn(asyncio.Protocol):
    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.reader = RequestReader()
        self.transport: asyncio.Transport | None = None
        self.current: _Request | None = None
        self.queue: list[_Request] = []
        self.busy = False
        self.peer = ""
        self.tls: dict[str, Any] | None = None
        self.sni = ""
        #: Bytes of WebSocket frames once a request upgraded (None before).
        self.ws: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = "%s:%s" % (peer[0], peer[1])
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            cipher = sslobj.cipher()
            self.sni = getattr(sslobj, "_kgw_sni", "") or ""
            self.tls = {"version": sslobj.version() or "", "serverName": self.sni,
                        "negotiatedProtocol": sslobj.selected_alpn_protocol() or "",
                        "cipherSuite": cipher[0] if cipher else ""}
            peers = peer_certificates(sslobj)
            if peers:
                self.tls["peerCertificates"] = peers

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            self._ws_feed(data)
            return
        for ev in self.reader.feed(data):
            t = type(ev)
            if t is RequestHead:
                self.current = _Request(ev)  # type: ignore[arg-type]
            elif t is Body:
                cur = self.current
                if cur is not None:
                    if cur.sha is None:
                        cur.sha = hashlib.sha256()
                    cur.sha.update(ev.data)  # type: ignore[union-attr]
                    cur.length += len(ev.data)  # type: ignore[union-attr]
            elif t is EndOfMessage:
                if self.current is not None:
                    self.queue.append(self.current)
                    self.current = None
                    self._next()
            elif t is Upgraded:
                if self.ws is not None:
                    self._ws_feed(ev.data)
            elif t is Rejected:
                if self.transport is not None:
                    self.transport.write(simple_response(ev.error.status, close=True))  # type: ignore[union-attr]
                    self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _next(self) -> None:
        while self.queue and not self.busy:
            req = self.queue.pop(0)
            delay = self._answer_now(req)
            if delay is not None:
                self.busy = True
                asyncio.get_running_loop().create_task(self._delayed(req, *delay))

    async def _delayed(self, req: _Request, seconds: float, then: Any) -> None:
        await asyncio.sleep(seconds)
        self.busy = False
        if self.transport is None:
            return
        then()
        self._next()

    def _write(self, data: bytes, close: bool) -> None:
        t = self.transport
        if t is None:
            return
        t.write(data)
        if close:
            t.close()

    def _answer_now(self, req: _Request) -> tuple[float, Any] | None:
        """Answer ``req`` now, or return (delay, callback) to answer later."""
        head = req.head
        close = not head.keep_alive
        target = head.target
        path, _, query = target.partition(b"?")
        if path.startswith(b"/status/"):
            m = _STATUS_RE.match(target)
            code = int(m.group(1)) if m else 400
            self._write(simple_response(code, close=close), close)
            return None
        if path == b"/health":
            self._write(simple_response(200, b"OK", close=close), close)
            return None
        if head.upgrade:
            self._ws_handshake(head)
            return None
        params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {}
        if path.startswith(b"/bytes/"):
            self._bytes(path, params, close)
            return None
        if path.startswith(b"/retry") and "uuid" in params:
            key = params["uuid"]
            n = self.server.retries[key] = self.server.retries.get(key, 0) + 1
            try:
                succeed_after = int(params.get("succeedAfter", "0"))
            except ValueError:
                succeed_after = 0
            if n <= succeed_after:
                response_code = params.get("responseCode")
                delay = parse_duration(params.get("delayRetry", "0") or "0") \
                    if _valid_duration(params.get("delayRetry", "")) else 0.0

                def fail() -> None:
                    self.server.log(target, self.peer)
                    if response_code and response_code.isdigit():
                        body = json.dumps({"message": f"failing attempt {n}"}).encode()
                        self._write(simple_response(int(response_code), body, close=close,
                                                    content_type=b"application/json"), close)
                    else:
                        self._reset()
                if delay > 0:
                    return delay, fail
                fail()
                return None
        delay_text = params.get("delay")
        if delay_text:
            try:
                seconds = parse_duration(delay_text)
            except ValueError as exc:
                self._write(simple_response(500, json.dumps({"message": str(exc)}).encode(),
                                            close=close, content_type=b"application/json"),
                            close)
                return None
            if seconds > 0:
                return seconds, lambda: self._echo(req, close)
        self._echo(req, close)
        return None

    # -- WebSocket echo (RFC 6455 frames are echoed back, unmasked) -------------------------
    def _ws_handshake(self, head: RequestHead) -> None:
        key = None
        upgrade = b""
        for name, value in head.headers:
            if name == b"sec-websocket-key":
                key = value.strip()
            elif name == b"upgrade":
                upgrade = value.strip().lower()
        if key is None or upgrade != b"websocket":
            self._write(simple_response(400, b"expected a WebSocket upgrade", close=True), True)
            return
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
        self.server.log(head.target, self.peer)
        self._write(encode_response_head(101, [(b"upgrade", b"websocket"),
                                               (b"connection", b"Upgrade"),
                                               (b"sec-websocket-accept", accept)]), False)
        self.ws = bytearray()

    def _ws_feed(self, data: bytes) -> None:
        buf = self.ws
        assert buf is not None
        buf += data
        while len(buf) >= 2:
            first = buf[0]
            opcode = first & 0x0F
            masked = buf[1] & 0x80
            size = buf[1] & 0x7F
            pos = 2
            if size == 126:
                if len(buf) < 4:
                    return
                size = struct.unpack("!H", buf[2:4])[0]
                pos = 4
            elif size == 127:
                if len(buf) < 10:
                    return
                size = struct.unpack("!Q", buf[2:10])[0]
                pos = 10
            mask = b""
            if masked:
                mask = bytes(buf[pos:pos + 4])
                pos += 4
            if len(buf) < pos + size:
                return
            payload = bytes(buf[pos:pos + size])
            del buf[:pos + size]
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping -> pong
                self._ws_send(0x8A, payload)
            elif opcode == 0x8:  # close: answer and close
                self._ws_send(0x88, payload[:2])
                if self.transport is not None:
                    self.transport.close()
                return
            elif opcode != 0xA:
                self._ws_send(first & 0x8F, payload)  # same FIN bit and opcode

    def _ws_send(self, first: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", first, n)
        elif n < 65536:
            header = struct.pack("!BBH", first, 126, n)
        else:
            header = struct.pack("!BBQ", first, 127, n)
        self._write(header + payload, False)

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0), like a backend that crashed mid-request."""
        t = self.transport
        if t is None:
            return
        sock = t.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        t.abort()

    def _bytes(self, path: bytes, params: dict[str, str], close: bool) -> None:
        try:
            n = int(path[len(b"/bytes/"):])
        except ValueError:
            self._write(simple_response(400, close=close), close)
            return None
        block = (b"0123456789abcdef" * 4096)
        chunked = params.get("chunked") == "1"
        headers = [(b"content-type", b"application/octet-stream")]
        headers.append((b"transfer-encoding", b"chunked") if chunked
                       else (b"content-length", b"%d" % n))
        if close:
            headers.append((b"connection", b"close"))
        out = [encode_response_head(200, headers)]
        left = n
        while left > 0:
            piece = block[:min(left, len(block))]
            out.append(encode_chunk(piece) if chunked else piece)
            left -= len(piece)
        if chunked:
            out.append(b"0\r\n\r\n")
        self._write(b"".join(out), close)
        return None

    def _echo(self, req: _Request, close: bool) -> None:
        head = req.head
        self.server.log(head.target, self.peer)
        body, resp_headers = echo_document(
            self.server, head.method, head.target, head.authority, "HTTP/" + head.version.decode(),
            head.headers, self.sni, self.tls, req.length, req.sha)
        data = simple_response(200, body, close=close, extra=resp_headers,
                               content_type=b"application/json")
        if head.method == b"HEAD":
            data = data[:-len(body)]
        self._write(data, close)


def echo_document(server: EchoServer, method: bytes, target: bytes, authority: bytes, proto: str,
                  header_pairs: Any, sni: str, tls: dict[str, Any] | None, length: int,
                  sha: Any) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """echo-basic's answer to one request, for HTTP/1.1 and h2c alike: the JSON body and
    the extra response headers (the ``X-Echo-Set-Header`` pairs, nosniff).
    ``header_pairs`` are (lower-case name, value) bytes; Host and HTTP/2 pseudo-headers
    are not reported as headers (Go keeps them out of Request.Header)."""
    headers: dict[str, list[str]] = {}
    set_pairs: list[tuple[str, str]] = []
    for name, value in header_pairs:
        if name == b"host" or name[:1] == b":":
            continue
        key = _canonical_cached(name)
        sval = value.decode("latin-1")
        headers.setdefault(key, []).append(sval)
        if name == b"x-echo-set-header":
            for kv in sval.split(","):
                k, _, v = kv.strip().partition(":")
                if k:
                    set_pairs.append((k, v.strip()))
    doc: dict[str, Any] = {
        "path": target.decode("latin-1"),
        "host": authority.decode("latin-1"),
        "method": method.decode("latin-1"),
        "proto": proto,
        "headers": headers,
        **server.context,
        "httpPort": server.http_port,
        "sni": sni,
    }
    if tls is not None:
        doc["tls"] = tls
    if length:
        doc["body"] = {"length": length, "sha256": sha.hexdigest()}
    # Compact JSON: json's C encoder only runs without ``indent``.
    body = json.dumps(doc).encode()
    extra: dict[str, str] = {}
    for k, v in set_pairs:
        extra[k] = v if k not in extra else extra[k] + "," + v
    resp_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    resp_headers.append((b"x-content-type-options", b"nosniff"))
    resp_headers.append((b"date", _http_date()))
    return body, resp_headers


_DATE: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """The Date header Go's net/http adds to echo-basic's answers (the Ingress
    conformance suite checks for it), formatted once a second."""
    global _DATE
    now = int(time.time())
    if _DATE[0] != now:
        _DATE = (now, email.utils.formatdate(now, usegmt=True).encode())
    return _DATE[1]


TCP_WELCOME = b"Gateway API Test TCP Server\n"
#: bufio.Scanner's default limit: a longer line ends the connection, as in tcpserver.
TCP_MAX_LINE = 64 * 1024
_GO_TLS_VERSIONS = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2",
                    "TLSv1.3": "TLS 1.3"}


class TcpEchoServer:
    """What every connection of the TCP echo reports (echo-basic's tcpserver Context)."""

    def __init__(self, pod: str, namespace: str, service: str, ingress: str, tcp_port: int,
                 tls_port: int) -> None:
        self.context: dict[str, Any] = {"namespace": namespace, "ingress": ingress,
                                        "service": service, "pod": pod, "tcpport": str(tcp_port),
                                        "tlsport": str(tls_port)}

    def payload(self, tls: dict[str, str] | None) -> bytes:
        """The TEST answer: the pod context, ``isTLS`` and, over TLS, the ``tls`` facts."""
        doc = dict(self.context, isTLS=tls is not None)
        if tls is not None:
            doc["tls"] = tls
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


class TcpEchoConn(asyncio.Protocol):
    """One TCP (or TLS: asyncio calls connection_made after the handshake) connection."""

    def __init__(self, server: TcpEchoServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.tls: dict[str, str] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            cipher = sslobj.cipher()
            version = sslobj.version() or ""
            self.tls = {"version": _GO_TLS_VERSIONS.get(version, version),
                        "serverName": getattr(sslobj, "_kgw_sni", "") or "",
                        "cipherSuite": cipher[0] if cipher else ""}
            if sslobj.selected_alpn_protocol():
                self.tls["negotiatedProtocol"] = sslobj.selected_alpn_protocol()
        self.transport.write(TCP_WELCOME)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > TCP_MAX_LINE:
                    self.transport.close()
                return
            line = bytes(self.buf[:nl]).removesuffix(b"\r")  # bufio.ScanLines drops a final CR
            del self.buf[:nl + 1]
            if line == b"TEST":
                self.transport.write(self.server.payload(self.tls))
            elif line == b"IS_TLS":
                self.transport.write(b"true\n" if self.tls is not None else b"false\n")
            elif line == b"PING":
                self.transport.write(b"PONG\n")

    def eof_received(self) -> bool | None:
        return None  # the client is done: close (tcpserver's scanner loop ends)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve_tcp(args: argparse.Namespace) -> None:
    """TCP mode: the line protocol on ``tcp_port``, and over TLS on ``tls_port`` when a
    certificate and key are given."""
    loop = asyncio.get_running_loop()
    with_tls = bool(args.tls_cert and args.tls_key)
    server = TcpEchoServer(args.pod, args.namespace, args.service, args.ingress, args.tcp_port,
                           args.tls_port)
    servers = [await loop.create_server(lambda: TcpEchoConn(server), args.address, args.tcp_port,
                                        reuse_address=True, backlog=1024)]
    print(f"Starting server (tcp), listening on port {args.tcp_port} (tcp)", flush=True)
    if with_tls:
        ctx = _tls_context(args.tls_cert, args.tls_key)
        servers.append(await loop.create_server(lambda: TcpEchoConn(server), args.address,
                                                args.tls_port, ssl=ctx, reuse_address=True,
                                                backlog=1024))
        print(f"Starting server (tcp), listening on port {args.tls_port} (tls)", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


UDP_MAX_DATAGRAM = 65535


class UdpEcho(asyncio.DatagramProtocol):
    """UDP mode: each datagram answered with the pod context and the datagram received."""

    def __init__(self, pod: str, namespace: str, service: str, ingress: str, udp_port: int,
                 quiet: bool = False) -> None:
        self.context: dict[str, Any] = {"namespace": namespace, "ingress": ingress,
                                        "service": service, "pod": pod}
        self.quiet = quiet
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def answer(self, data: bytes) -> bytes:
        doc = {"request": data.decode("utf-8", "replace"), **self.context}
        out = json.dumps(doc, separators=(",", ":")).encode()
        return out if len(out) <= UDP_MAX_DATAGRAM else json.dumps(
            {"request": "", **self.context, "truncated": True}, separators=(",", ":")).encode()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.transport is None:
            return
        if not self.quiet:
            print(f"Echoing back UDP datagram of {len(data)} bytes to client ({addr[0]}:{addr[1]})",
                  flush=True)
        self.transport.sendto(self.answer(data), addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for an earlier answer: the client went away


async def serve_udp(args: argparse.Namespace) -> None:
    """UDP mode: answer datagrams on ``udp_port`` until cancelled."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: UdpEcho(args.pod, args.namespace, args.service, args.ingress, args.udp_port,
                        args.quiet),
        local_addr=(args.address, args.udp_port))
    print(f"Starting server (udp), listening on port {args.udp_port} (udp)", flush=True)
    try:
        await asyncio.Future()
    finally:
        transport.close()


def _valid_duration(text: str) -> bool:
    try:
        parse_duration(text)
        return bool(text)
    except ValueError:
        return False


def peer_certificates(sslobj: Any) -> list[str]:
    """The certificates the client presented, PEM-encoded, leaf first (echo-basic's
    ``tls.peerCertificates``). Python before 3.13 exposes only the leaf."""
    chain = getattr(sslobj, "get_unverified_chain", None)  # public from Python 3.13
    if chain is not None:
        certs = chain() or []
        # (ssl.ENCODING_PEM is Python 3.13's, as is the chain: not in 3.11's stubs)
        return [c.public_bytes(ssl.ENCODING_PEM)  # type: ignore[attr-defined]
                for c in certs if c is not None]
    der = sslobj.getpeercert(binary_form=True)
    return [ssl.DER_cert_to_PEM_cert(der)] if der else []


def _tls_context(cert: str, key: str, alpn: list[str] | None = None,
                 client_ca: str = "") -> ssl.SSLContext:
    """The echo server's TLS (HTTPS with ALPN http/1.1; the TCP mode, like the
    conformance tcpserver, without ALPN): TLS 1.2 or later, the SNI recorded. With
    ``client_ca`` (echo-basic's TLS_CLIENT_CACERTS) a client certificate is requested
    and, when one is given, must chain to those CAs (Go's VerifyClientCertIfGiven)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    if alpn:
        ctx.set_alpn_protocols(alpn)

    def on_sni(sslobj: Any, name: str | None, _ctx: Any) -> None:
        try:
            sslobj._kgw_sni = name or ""
        except AttributeError:
            pass
        return None

    ctx.sni_callback = on_sni
    return ctx


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = EchoServer(args.pod, args.namespace, args.service, args.ingress, args.port,
                        args.quiet)
    servers: list[asyncio.AbstractServer] = [
        await loop.create_server(lambda: EchoConn(server), args.address, args.port,
                                 reuse_address=True, backlog=1024)]
    print(f"Starting server, listening on port {args.port} (http)", flush=True)
    if args.h2c_port is not None:
        from kgw_l7.echo.h2c import serve_h2c

        servers.append(await serve_h2c(server, args.address, args.h2c_port))
    if args.tls_cert and args.tls_key:
        ctx = _tls_context(args.tls_cert, args.tls_key, ["http/1.1"], args.tls_client_ca)
        servers.append(await loop.create_server(lambda: EchoConn(server), args.address,
                                                args.tls_port, ssl=ctx, reuse_address=True))
        print(f"Starting server, listening on port {args.tls_port} (https)", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str]) -> int:
    """``kgw echo ARGS...``: run the echo backend until interrupted; returns the exit code.

    Flags (echo-basic's environment variables are the defaults):

    --address ADDR     listen address (default 0.0.0.0)
    --port PORT        HTTP port (default $HTTP_PORT or 3000)
    --pod NAME         pod name in the JSON (default $POD_NAME)
    --namespace NS     namespace in the JSON (default $NAMESPACE)
    --service NAME     service in the JSON (default $SERVICE_NAME)
    --ingress NAME     ingress in the JSON (default $INGRESS_NAME)
    --tls-port PORT    HTTPS port, used with --tls-cert/--tls-key (default $HTTPS_PORT
                       or 8443)
    --tls-cert FILE    PEM certificate (default $TLS_SERVER_CERT)
    --tls-key FILE     PEM key (default $TLS_SERVER_PRIVKEY)
    --tls-client-ca FILE  HTTPS asks for a client certificate, which must chain to
                       these CAs when given (default $TLS_CLIENT_CACERTS)
    --quiet            no per-request "Echoing back request made to ..." line
    --h2c-port PORT    also the echo over h2c (prior knowledge or Upgrade: h2c) on PORT
                       (default $H2C_PORT; none when unset)
    --tcp-port PORT    TCP mode instead of HTTP: echo-basic's tcpserver line protocol
                       on PORT (default: $TCP_PORT or 3000 when $TCP_ECHO_SERVER is set);
                       over TLS on --tls-port (default $TLS_PORT or 8443) with a
                       certificate, whose key defaults to $TLS_SERVER_PRIV_KEY
    --udp-port PORT    UDP mode instead of HTTP: each datagram answered (default:
                       $UDP_PORT or 8080 when $UDP_ECHO_SERVER is set)
    --grpc-port PORT   gRPC mode instead of HTTP: the suite's GrpcEcho service (default:
                       $HTTP_PORT or 3000 when $GRPC_ECHO_SERVER is set); over TLS on
                       --tls-port (default $HTTPS_PORT or 8443) with a certificate, whose
                       key defaults to $TLS_SERVER_PRIV_KEY

    See the module docstring for what it answers.
    """
    env = os.environ
    p = argparse.ArgumentParser(prog="kgw echo", description=__doc__.split("\n\n")[0])
    p.add_argument("--address", default="0.0.0.0")
    p.add_argument("--port", type=int, default=int(env.get("HTTP_PORT", "3000")))
    p.add_argument("--pod", default=env.get("POD_NAME", ""))
    p.add_argument("--namespace", default=env.get("NAMESPACE", ""))
    p.add_argument("--service", default=env.get("SERVICE_NAME", ""))
    p.add_argument("--ingress", default=env.get("INGRESS_NAME", ""))
    p.add_argument("--tls-port", type=int, default=None)
    p.add_argument("--tls-cert", default=env.get("TLS_SERVER_CERT", ""))
    p.add_argument("--tls-key", default=None)
    p.add_argument("--tls-client-ca", default=env.get("TLS_CLIENT_CACERTS", ""))
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--tcp-port", type=int, default=None)
    p.add_argument("--udp-port", type=int, default=None)
    p.add_argument("--grpc-port", type=int, default=None)
    p.add_argument("--h2c-port", type=int, default=None)
    args = p.parse_args(argv)

    def env_port(name: str) -> int:
        try:
            return int(env.get(name) or 0) or (3000 if name == "TCP_PORT" else 8443)
        except ValueError:
            p.error(f"non-integer value in {name}: {env.get(name)!r}")
            raise

    if args.udp_port is None and env.get("UDP_ECHO_SERVER"):
        try:
            args.udp_port = int(env.get("UDP_PORT") or 8080)
        except ValueError:
            p.error(f"non-integer value in UDP_PORT: {env.get('UDP_PORT')!r}")
    if args.grpc_port is None and env.get("GRPC_ECHO_SERVER"):
        args.grpc_port = args.port  # echo-basic's gRPC server listens on HTTP_PORT
    if args.tcp_port is None and env.get("TCP_ECHO_SERVER"):
        args.tcp_port = env_port("TCP_PORT")
    modes = [f for f, v in (("--udp-port", args.udp_port), ("--tcp-port", args.tcp_port),
                            ("--grpc-port", args.grpc_port)) if v is not None]
    if len(modes) > 1:
        p.error(f"{' and '.join(modes)} are different modes: choose one")
    if args.h2c_port is None and env.get("H2C_PORT"):
        try:
            args.h2c_port = int(env["H2C_PORT"])
        except ValueError:
            p.error(f"non-integer value in H2C_PORT: {env.get('H2C_PORT')!r}")
    tcp = args.tcp_port is not None
    # HTTP mode keeps echo-basic's HTTP names; TCP mode uses tcpserver's, gRPC mode its
    # gRPC server's (HTTPS_PORT, TLS_SERVER_PRIV_KEY)
    if args.tls_port is None:
        args.tls_port = env_port("TLS_PORT" if tcp else "HTTPS_PORT")
    if args.tls_key is None:
        args.tls_key = env.get("TLS_SERVER_PRIV_KEY" if tcp or args.grpc_port is not None
                               else "TLS_SERVER_PRIVKEY", "")
    import uvloop

    try:
        if args.udp_port is not None:
            uvloop.run(serve_udp(args))
        elif args.grpc_port is not None:
            try:
                from kgw_l7 import protoc
                from kgw_l7.echo import grpcecho as grpc_echo
            except ImportError as exc:
                from kgw_l7.protoc import MISSING

                print(f"kgw echo: {MISSING} ({exc})", file=sys.stderr)
                return 1
            try:
                uvloop.run(grpc_echo.serve(args))
            except protoc.ProtoError as exc:
                print(f"kgw echo: {exc}", file=sys.stderr)
                return 1
        else:
            uvloop.run(serve_tcp(args) if tcp else serve(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"kgw echo: {exc}", file=sys.stderr)
        return 1
    return 0
