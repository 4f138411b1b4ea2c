"""TLS passthrough: read the SNI of each connection's ClientHello without consuming
it, pick the SNIRoute and its backend (weighted Maglev, as for L4 frontends), connect,
and splice (kgw_l4.splice) — or, with no sockmap, copy in userspace.

The hello stays in the client socket: spliced, the kernel forwards it first; copied,
it is simply the first bytes read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

from .acceptor import Acceptor
from .config import BackendGroup, Frontend, L4Config, TLSPassthrough
from .sni import MAX_HELLO, NEED_MORE, HelloError, match_route, parse_sni
from .splice import Splicer
from .userspace import connect, picker, splice_streams

log = logging.getLogger("kgw.l4.tls")

HELLO_TIMEOUT = 5.0


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        loop.remove_reader(sock.fileno())


async def peek_sni(sock: socket.socket) -> str | None:
    """SNI of the ClientHello waiting in sock (peeked, not read)."""
    while True:
        await _readable(sock)
        data = sock.recv(MAX_HELLO, socket.MSG_PEEK)
        if not data:
            raise HelloError("connection closed before the ClientHello")
        res = parse_sni(data)
        if res is not NEED_MORE:
            return res  # type: ignore[return-value]
        if len(data) >= MAX_HELLO:
            raise HelloError("ClientHello larger than one record")


def _route_picker(groups: tuple[BackendGroup, ...], name: str):
    return picker(Frontend(name, "0.0.0.0", 1, "TCP", groups))


class TLSPassthroughProxy(Acceptor):
    def __init__(self, splicer: Splicer | None) -> None:
        super().__init__()
        self.splicer = splicer
        self._cfg: dict[tuple[str, int], TLSPassthrough] = {}
        self.errors: dict[str, str] = {}

    async def apply(self, config: L4Config, taken: set[tuple[str, int]] = frozenset()) -> None:
        errors: dict[str, str] = {}
        wanted: dict[tuple[str, int], TLSPassthrough] = {}
        for t in config.tls_passthrough:
            key = (t.address, t.port)
            if key in wanted or key in taken:
                errors[t.name] = f"port clash: {t.address}:{t.port} is already in use by kgw"
                continue
            if not t.routes:
                errors[t.name] = "no routes"
                continue
            wanted[key] = t
        errors.update(self.listen({key: t.name for key, t in wanted.items()}))
        self._cfg.update(wanted)
        self.errors = errors

    async def serve(self, key: tuple[str, int], c: socket.socket) -> None:
        cfg = self._cfg.get(key)
        try:
            sni = await asyncio.wait_for(peek_sni(c), HELLO_TIMEOUT)
        except (HelloError, asyncio.TimeoutError, OSError) as e:
            log.info("tls passthrough %s: dropping connection: %s", key, e)
            _reset(c)
            return
        route = match_route(cfg.routes, sni) if cfg else None
        be = None
        if route is not None:
            be = _route_picker(route.backends, route.name).choose(c.getpeername()[:2], c.getsockname()[:2])
        if be is None:
            log.info("tls passthrough %s: no route for SNI %r", key, sni)
            _reset(c)
            return
        try:
            b = await connect(be)
        except (OSError, asyncio.TimeoutError) as e:
            log.info("backend %s:%d unreachable: %s", be[0], be[1], e)
            _reset(c)
            return
        if self.splicer is not None:
            try:
                await self.splicer.splice(c, b)
                return
            except OSError as e:
                log.warning("splice failed (%s): copying in userspace", e)
        cr, cw = await asyncio.open_connection(sock=c)
        br, bw = await asyncio.open_connection(sock=b)
        await splice_streams(cr, cw, br, bw)

    async def close(self) -> None:
        self.close_listeners()


def _reset(c: socket.socket) -> None:
    with contextlib.suppress(OSError):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
