"""The admin HTTP server: health, readiness, status, config dump and metrics.

Small and dependency-light on purpose: it must keep answering while the data planes
are busy or broken, so it runs on the supervisor's event loop with httptools parsing
requests, one response per connection, bounded request sizes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import httptools

log = logging.getLogger("kgw.admin")

#: A handler returns (status, content type, body).
Response = tuple[int, str, bytes]
Handler = Callable[[], Awaitable[Response]]

MAX_REQUEST_BYTES = 16 * 1024
READ_TIMEOUT = 10.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}


def json_response(value: Any, status: int = 200) -> Response:
    return status, "application/json", (json.dumps(value, indent=2, sort_keys=False) + "\n").encode()


def text_response(text: str, status: int = 200) -> Response:
    return status, "text/plain; charset=utf-8", text.encode()


@dataclass
class _Request:
    url: bytes = b""
    complete: bool = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.complete = True


class AdminServer:
    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body, method = await asyncio.wait_for(self._handle(reader), READ_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError):
            writer.close()
            return
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        try:
            writer.write(head.encode() + (b"" if method == b"HEAD" else body))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bytes]:
        req = _Request()
        parser = httptools.HttpRequestParser(req)
        total = 0
        while not req.complete:
            data = await reader.read(4096)
            if not data:
                raise ConnectionError("closed before a full request")
            total += len(data)
            if total > MAX_REQUEST_BYTES:
                return (*text_response("request too large\n", 400), b"")
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                return (*text_response(f"bad request: {exc}\n", 400), b"")
        method = parser.get_method()
        path = httptools.parse_url(req.url).path.decode("latin-1")
        handler = self.routes.get(path.rstrip("/") or "/")
        if handler is None:
            return (*text_response(f"not found; try: {', '.join(sorted(self.routes))}\n", 404), method)
        if method not in (b"GET", b"HEAD"):
            return (*text_response("only GET\n", 405), method)
        try:
            return (*(await handler()), method)
        except Exception as exc:  # an admin page must never take the gateway down
            log.exception("admin handler %s failed", path)
            return (*text_response(f"internal error: {exc!r}\n", 500), method)
