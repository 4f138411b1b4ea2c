"""The admin server answers what it can and refuses the rest cleanly."""

from __future__ import annotations

import asyncio

from controller.admin import AdminServer, json_response


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
        resp = await _exchange(port, b"GET /ok?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 200 OK") and resp.endswith(b'"a": 1\n}\n')
        assert (await _exchange(port, b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await _exchange(port, b"POST /ok HTTP/1.1\r\nContent-Length: 0\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await _exchange(port, b"GET /broken HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 500")
        assert (await _exchange(port, b"\x00\x01garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
        huge = b"GET /ok HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
        assert (await _exchange(port, huge)).startswith(b"HTTP/1.1 400")
        head = await _exchange(port, b"HEAD /ok HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    finally:
        await server.close()
