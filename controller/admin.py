"""The admin HTTP server: health, readiness, status, config dump and metrics.

Small and dependency-light on purpose: it must keep answering while the data planes
are busy or broken, so it runs on the supervisor's event loop with httptools parsing
requests, one response per connection, bounded request sizes.

It answers only requests whose ``Host`` names it by address: ``localhost``, a loopback
address, or the address the connection came in on (what kubelet probes and Prometheus
send when they scrape a node address). Any other name is refused with 421: a web page in
a browser on the node could otherwise reach it through DNS rebinding (a name of the
attacker's that first resolves to the attacker, then to 127.0.0.1) and read what it
serves. A request without ``Host`` (HTTP/1.0) is not a browser's and is answered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httptools

log = logging.getLogger("kgw.admin")

#: A handler returns (status, content type, body).
Response = tuple[int, str, bytes]
Handler = Callable[[], Awaitable[Response]]

MAX_REQUEST_BYTES = 16 * 1024
READ_TIMEOUT = 10.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            421: "Misdirected Request", 500: "Internal Server Error", 503: "Service Unavailable"}


def json_response(value: Any, status: int = 200) -> Response:
    return status, "application/json", (json.dumps(value, indent=2, sort_keys=False)
                                        + "\n").encode()


def text_response(text: str, status: int = 200) -> Response:
    return status, "text/plain; charset=utf-8", text.encode()


@dataclass
class _Request:
    url: bytes = b""
    host: bytes | None = None
    complete: bool = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"host":
            self.host = value if self.host is None else b""  # two Host fields: refused below

    def on_message_complete(self) -> None:
        self.complete = True


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def host_allowed(host: bytes | None, local_address: str | None) -> bool:
    """May a request with this ``Host`` be answered on a connection to ``local_address``?"""
    if host is None:
        return True
    try:
        text = host.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return False
    if text.startswith("["):  # [v6]:port
        name = text[1:text.find("]")] if "]" in text else ""
    else:
        name = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    if name in ("localhost", "localhost."):
        return True
    ip = _ip(name)
    if ip is None:
        return False
    return ip.is_loopback or (local_address is not None and ip == _ip(local_address))


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
        sockname = writer.get_extra_info("sockname")
        local = sockname[0] if isinstance(sockname, tuple) else None
        try:
            status, ctype, body, method = await asyncio.wait_for(self._handle(reader, local),
                                                                 READ_TIMEOUT)
        except (TimeoutError, ConnectionError):
            writer.close()
            return
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n")
        try:
            writer.write(head.encode() + (b"" if method == b"HEAD" else body))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, local: str | None) -> tuple[int, str,
                                                                                      bytes, bytes]:
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
        if not host_allowed(req.host, local):
            log.warning("admin request refused: Host %r is not this server's address or localhost",
                        (req.host or b"")[:100])
            return (*text_response("the admin API answers only requests for its own address or "
                                   "localhost "
                                   "(Host header; DNS rebinding protection)\n", 421), method)
        path = httptools.parse_url(req.url).path.decode("latin-1")
        handler = self.routes.get(path.rstrip("/") or "/")
        if handler is None:
            return (*text_response(f"not found; try: {', '.join(sorted(self.routes))}\n", 404),
                    method)
        if method not in (b"GET", b"HEAD"):
            return (*text_response("only GET\n", 405), method)
        try:
            return (*(await handler()), method)
        except Exception as exc:  # an admin page must never take the gateway down
            log.exception("admin handler %s failed", path)
            return (*text_response(f"internal error: {exc!r}\n", 500), method)
