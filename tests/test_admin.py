"""The admin server answers what it can and refuses the rest cleanly."""

from __future__ import annotations

import asyncio

import pytest

from controller.admin import AdminServer, host_allowed, json_response


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


async def test_routes_errors_and_limits() -> None:
    async def ok():
        return json_response({"a": 1})

    async def broken():
        raise RuntimeError("boom")

    server = AdminServer({"/ok": ok, "/broken": broken})
    _, port = await server.start("127.0.0.1", 0)
    try:
        resp = await _exchange(port, b"GET /ok?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 200 OK") and resp.endswith(b'"a": 1\n}\n')
        assert (await _exchange(port, b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")).startswith(
            b"HTTP/1.1 404")
        assert (await _exchange(
            port, b"POST /ok HTTP/1.1\r\nContent-Length: 0\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await _exchange(port, b"GET /broken HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 500")
        assert (await _exchange(port, b"\x00\x01garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
        huge = b"GET /ok HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
        assert (await _exchange(port, huge)).startswith(b"HTTP/1.1 400")
        head = await _exchange(port, b"HEAD /ok HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    finally:
        await server.close()


@pytest.mark.parametrize("host,local,ok", [
    (None, "127.0.0.1", True),                      # HTTP/1.0: no Host, not a browser
    (b"127.0.0.1:9095", "127.0.0.1", True),         # kgw status, kgw-inspect, tests
    (b"localhost:9095", "127.0.0.1", True),
    (b"LOCALHOST", "127.0.0.1", True),
    (b"127.0.0.2", "127.0.0.1", True),              # any loopback literal
    (b"[::1]:9095", "::1", True),
    (b"10.0.0.7:9096", "10.0.0.7", True),           # kubelet probe / Prometheus on the node IP
    (b"10.0.0.7:9096", "::ffff:10.0.0.7", True),     # the same through a dual-stack socket
    (b"10.0.0.8:9096", "10.0.0.7", False),          # another address
    (b"evil.example:9095", "127.0.0.1", False),     # DNS rebinding: a name that resolves to us
    (b"localhost.evil.example", "127.0.0.1", False),
    (b"", "127.0.0.1", False),                      # two Host fields
    (b"\xff", "127.0.0.1", False),
])
def test_host_allowed(host, local, ok) -> None:
    assert host_allowed(host, local) is ok


async def test_a_foreign_host_is_refused() -> None:
    async def ok():
        return json_response({"secret": "config"})

    server = AdminServer({"/config_dump": ok})
    _, port = await server.start("127.0.0.1", 0)
    try:
        resp = await _exchange(
            port, b"GET /config_dump HTTP/1.1\r\nHost: rebind.example:%d\r\n\r\n" % port)
        assert resp.startswith(b"HTTP/1.1 421") and b"config" not in resp.split(b"\r\n\r\n", 1)[1]
        resp = await _exchange(port,
                               b"GET /config_dump HTTP/1.1\r\nHost: a\r\nHost: 127.0.0.1\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 421")
        resp = await _exchange(port,
                               b"GET /config_dump HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % port)
        assert resp.startswith(b"HTTP/1.1 200")
    finally:
        await server.close()


def test_own_non_loopback_address_is_accepted(host) -> None:
    """The agent's public address (/metrics, probes): kubelet and Prometheus send the node
    IP they connected to as Host. A private host whose only non-loopback address is
    10.9.0.1 (on lo), the server bound to every address."""
    host.run("ip", "addr", "add", "10.9.0.1/32", "dev", "lo")
    host.run("ip", "addr", "add", "10.9.0.2/32", "dev", "lo")

    async def scenario() -> list[bytes]:
        async def ok():
            return json_response({"a": 1})

        server = AdminServer({"/metrics": ok})
        _, port = await server.start("0.0.0.0", 0)

        async def get(addr: str, hostname: str) -> bytes:
            reader, writer = await asyncio.open_connection(addr, port)
            writer.write(f"GET /metrics HTTP/1.1\r\nHost: {hostname}\r\n\r\n".encode())
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data[:12]

        try:
            return [await get("10.9.0.1", f"10.9.0.1:{port}"),   # the node IP it connected to
                    await get("10.9.0.2", f"10.9.0.1:{port}"),   # another address of the node
                    await get("10.9.0.1", f"node-1.example:{port}")]  # a name
        finally:
            await server.close()

    assert host.call(asyncio.run, scenario()) == [b"HTTP/1.1 200", b"HTTP/1.1 421", b"HTTP/1.1 421"]
