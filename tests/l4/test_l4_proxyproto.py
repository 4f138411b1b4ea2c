"""The PROXY protocol in the L4 plane (userspace mode), on loopback: a TLS port takes a
client's header before the ClientHello (passthrough and terminated routes), a TCP
frontend before forwarding its bytes, and a route or TCP frontend that asks for it
starts its backend connections with a v2 header naming the client, ahead of the
client's first byte. The kernel NAT modes refuse a TCP frontend that asks for either
(they forward packets: nothing can go ahead of them or be taken off)."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from kgw_l4.config import (
    BackendGroup, Endpoint, Frontend, L4Config, SNIRoute, Termination, TLSPassthrough,
)
from kgw_l4.plane import open_plane, without_proxied_frontends
from kgw_l7.proxyproto import (
    ProxyHeader, ProxyProtocolError, encode_v1, encode_v2, parse,
)
from tests.l4.test_tlsterm import serving
from tests.l4.test_userspace import free_port

CLIENT = ("192.0.2.7", 40000)


def client_hello(sni: str) -> bytes:
    """A real ClientHello for ``sni`` (what a TLS client sends first)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


class Recorder:
    """A TCP backend that records what each connection sends first: its PROXY header
    (parsed) and the bytes after it, once ``want`` of them arrived."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.seen: asyncio.Queue[tuple[ProxyHeader | None, bytes]] = asyncio.Queue(8)

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = b""
        header = None
        plain = False  # the connection does not start with a header
        while True:
            chunk = await r.read(65536)
            if not chunk:
                break
            data += chunk
            if not plain and header is None:
                try:
                    header = parse(data)
                except ProxyProtocolError:
                    plain = True
            if len(data) - (header.size if header else 0) >= self.want and (header or plain):
                break
        await self.seen.put((header, data[header.size:] if header else data))
        w.close()

    async def start(self) -> tuple[asyncio.Server, int]:
        srv = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return srv, srv.sockets[0].getsockname()[1]


def group(port: int) -> tuple[BackendGroup, ...]:
    return (BackendGroup("g", 1, (Endpoint("127.0.0.1", port),)),)


async def send(port: int, data: bytes) -> bytes:
    """Send ``data``; what comes back until the gateway closes (b"" on a reset)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(data)
        await w.drain()
        return await asyncio.wait_for(r.read(), 5)
    except ConnectionError:
        return b""
    finally:
        w.close()


async def test_passthrough_takes_the_header_and_sends_v2_to_its_backend():
    hello = client_hello("app.example.com")
    rec = Recorder(len(hello))
    srv, bport = await rec.start()
    port = free_port()
    route = SNIRoute("ns/app", ("app.example.com",), group(bport), "ns/gw", "tls",
                     backend_proxy_protocol=2)
    plane = await open_plane("userspace")
    await plane.apply(L4Config(tls_passthrough=(TLSPassthrough(
        "t", "127.0.0.1", port, (route,), proxy_protocol="required"),)))
    try:
        assert plane.errors() == {}
        for header in (encode_v1(CLIENT, ("127.0.0.1", port)),
                       encode_v2(CLIENT, ("127.0.0.1", port))):
            task = asyncio.ensure_future(send(port, header + hello))
            got, rest = await asyncio.wait_for(rec.seen.get(), 5)
            await task
            assert got is not None and got.version == 2
            assert got.source == CLIENT and got.destination == ("127.0.0.1", port)
            assert rest == hello  # the hello follows the backend's header, untouched
        # required: a connection without the header is reset, counted
        assert await send(port, hello) == b""
        drops = [f.drops for f in plane.stats().frontends if f.route == ""]
        assert drops == [{"bad_proxy_header": 1}]
    finally:
        await plane.close()
        srv.close()


async def test_optional_serves_connections_without_a_header():
    hello = client_hello("app.example.com")
    rec = Recorder(len(hello))
    srv, bport = await rec.start()
    port = free_port()
    route = SNIRoute("ns/app", ("app.example.com",), group(bport), "ns/gw", "tls")
    plane = await open_plane("userspace")
    await plane.apply(L4Config(tls_passthrough=(TLSPassthrough(
        "t", "127.0.0.1", port, (route,), proxy_protocol="optional"),)))
    try:
        for prefix in (b"", encode_v1(CLIENT, ("127.0.0.1", port))):
            task = asyncio.ensure_future(send(port, prefix + hello))
            got, rest = await asyncio.wait_for(rec.seen.get(), 5)
            await task
            assert (got, rest) == (None, hello)  # no header to this backend
        # a malformed header is refused even where the header is optional
        assert await send(port, b"PROXY TCP5 x\r\n" + hello) == b""
    finally:
        await plane.close()
        srv.close()


async def test_terminated_route_sees_the_header_s_client(tmp_path):
    rec = Recorder(len(b"ping\n"))
    srv, bport = await rec.start()
    cert, ca = serving(tmp_path, "term.example.com")
    port = free_port()
    route = SNIRoute("ns/term", ("term.example.com",), group(bport), "ns/gw", "tls",
                     terminate=Termination((cert,)), backend_proxy_protocol=2)
    plane = await open_plane("userspace")
    await plane.apply(L4Config(tls_passthrough=(TLSPassthrough(
        "t", "127.0.0.1", port, (route,), proxy_protocol="required"),)))
    try:
        def talk() -> None:
            ctx = ssl.create_default_context(cadata=ca)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(encode_v2(("2001:db8::7", 40001), ("2001:db8::1", 443)))
                with ctx.wrap_socket(raw, server_hostname="term.example.com") as s:
                    s.sendall(b"ping\n")
                    s.recv(1)
        task = asyncio.ensure_future(asyncio.to_thread(talk))
        got, rest = await asyncio.wait_for(rec.seen.get(), 10)
        assert got is not None and got.source == ("2001:db8::7", 40001)
        assert got.destination == ("2001:db8::1", 443)
        assert rest == b"ping\n"  # decrypted, after the header
        await asyncio.wait_for(task, 5)
    finally:
        await plane.close()
        srv.close()


async def test_a_tcp_frontend_sends_v2_in_userspace_mode():
    rec = Recorder(len(b"hello"))
    srv, bport = await rec.start()
    port = free_port()
    fe = Frontend("ns/gw/tcp", "127.0.0.1", port, "TCP", group(bport), backend_proxy_protocol=2)
    plane = await open_plane("userspace")
    await plane.apply(L4Config(frontends=(fe,)))
    try:
        assert plane.errors() == {}
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hello")
        await w.drain()
        got, rest = await asyncio.wait_for(rec.seen.get(), 5)
        assert got is not None and got.version == 2
        assert got.source == w.get_extra_info("sockname")[:2]
        assert got.destination == ("127.0.0.1", port)
        assert rest == b"hello"
        w.close()
    finally:
        await plane.close()
        srv.close()


async def test_a_tcp_frontend_takes_the_client_s_header():
    rec = Recorder(len(b"hello"))
    srv, bport = await rec.start()
    port = free_port()
    fe = Frontend("ns/gw/tcp", "127.0.0.1", port, "TCP", group(bport), backend_proxy_protocol=2,
                  proxy_protocol="required")
    plane = await open_plane("userspace")
    await plane.apply(L4Config(frontends=(fe,)))
    try:
        assert plane.errors() == {}
        v1 = encode_v1(CLIENT, ("198.51.100.1", 9000))
        for split in (False, True):  # the header and bytes in one write, or in two
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(v1[:7] if split else v1 + b"hello")
            await w.drain()
            if split:
                await asyncio.sleep(0.05)
                w.write(v1[7:] + b"hello")
            got, rest = await asyncio.wait_for(rec.seen.get(), 5)
            assert got is not None and got.source == CLIENT
            assert got.destination == ("198.51.100.1", 9000)
            assert rest == b"hello"  # the client's header is not forwarded, its bytes are
            w.close()
        assert await send(port, b"hello") == b""  # required: no header, no connection
        [st] = plane.stats().frontends
        assert st.drops == {"bad_proxy_header": 1}
    finally:
        await plane.close()
        srv.close()


def test_the_kernel_modes_leave_out_a_frontend_that_asks_for_a_header():
    asks = Frontend("ns/gw/pp", "0.0.0.0", 9000, "TCP", backend_proxy_protocol=2)
    takes = Frontend("ns/gw/in", "0.0.0.0", 9002, "TCP", proxy_protocol="optional")
    plain = Frontend("ns/gw/plain", "0.0.0.0", 9001, "TCP")
    config, refused = without_proxied_frontends(L4Config(frontends=(asks, takes, plain)), "tc")
    assert config.frontends == (plain,)
    assert sorted(refused) == ["ns/gw/in", "ns/gw/pp"]
    assert refused["ns/gw/pp"].startswith("backendProxyProtocol: the tc mode forwards "
                                          "packets in the kernel")
    assert refused["ns/gw/in"].startswith("proxyProtocol: the tc mode forwards packets in "
                                          "the kernel and cannot take a PROXY header off")
    assert without_proxied_frontends(L4Config(frontends=(plain,)), "tc")[1] == {}
