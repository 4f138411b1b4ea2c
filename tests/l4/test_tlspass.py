"""TLS passthrough in the userspace plane, on loopback, with real TLS."""

from __future__ import annotations

import asyncio
import ssl

from kgw_l4.config import BackendGroup, Endpoint, L4Config, SNIRoute, TLSPassthrough
from kgw_l4.plane import open_plane
from tests.l4.test_userspace import free_port
from tests.l4.tlshelp import make_cert


async def tls_server(tmp_path, name: str):
    cert, key = make_cert(tmp_path, name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    async def handle(r, w):
        w.write(name.encode() + b"\n")
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return srv, srv.sockets[0].getsockname()[1]


async def hello(port: int, sni: str) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni)
    line = (await r.readline()).decode().strip()
    w.write(b"ping\n")
    assert await r.readline() == b"ping\n"
    w.close()
    return line


async def test_sni_routes_to_the_right_backend(tmp_path):
    sa, pa = await tls_server(tmp_path, "a.example.com")
    sb, pb = await tls_server(tmp_path, "b.example.com")
    port = free_port()

    def grp(p):
        return (BackendGroup("g", 1, (Endpoint("127.0.0.1", p),)),)

    cfg = L4Config(tls_passthrough=(TLSPassthrough("tls", "127.0.0.1", port, (
        SNIRoute("a", ("a.example.com",), grp(pa)),
        SNIRoute("b", ("*.example.com",), grp(pb)),)),))
    plane = await open_plane("userspace")
    await plane.apply(cfg)
    assert plane.errors() == {}
    assert await hello(port, "a.example.com") == "a.example.com"
    assert await hello(port, "zzz.example.com") == "b.example.com"
    # no route for this name: the connection is reset, the listener keeps serving
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="other.org")
        raise AssertionError("expected the handshake to fail")
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    assert await hello(port, "a.example.com") == "a.example.com"
    await plane.close()
    sa.close()
    sb.close()


async def test_tls_listener_errors(tmp_path):
    port, other = free_port(), free_port()
    plane = await open_plane("userspace")
    await plane.apply(L4Config(tls_passthrough=(
        TLSPassthrough("none", "127.0.0.1", other, ()),
        TLSPassthrough("one", "127.0.0.1", port, (SNIRoute("r", ("*",)),)),
        TLSPassthrough("dup", "127.0.0.1", port, (SNIRoute("r", ("*",)),)),
    )))
    errs = plane.errors()
    assert errs["none"] == "no routes"
    assert "port clash" in errs["dup"]
    assert "one" not in errs
    await plane.close()
