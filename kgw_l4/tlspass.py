"""TLS ports: read the SNI of each connection's ClientHello without consuming it, pick
the SNIRoute and its backend (weighted Maglev, as for L4 frontends); a passthrough route
connects and splices (kgw_l4.splice) — or, with no sockmap, copies in userspace; a
terminated route's connection goes to kgw_l4.tlsterm. One port may hold both.

The hello stays in the client socket: spliced, the kernel forwards it first; copied,
it is simply the first bytes read. A port whose connections start with a PROXY
protocol header (TrafficPolicy ``proxyProtocol``) has it taken out of the socket first
(kgw_l7.proxyaccept), leaving the hello; the header's client is then the connection's
(flow log, kgw-inspect, the PROXY header a route's backends may ask for:
``backendProxyProtocol``, written before the first byte of the client's).

Counters (/metrics, kgw-inspect) per port and SNIRoute: connections given a backend,
drops by reason (``bad_client_hello``, ``no_route``, ``no_backend``,
``backend_unreachable``, ``bad_proxy_header``; terminated: ``bad_certificate``,
``tls_handshake``,
``backend_tls``) under the route they matched ("" when none), and, when copied here
(always for a terminated route), bytes each way and the connections open. A spliced
connection's bytes are the kernel's (not counted per route).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import dataclasses
import logging
import socket
import struct
import time
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from kgw_l7.proxyaccept import read_header
from kgw_l7.proxyproto import ProxyProtocolError

from .acceptor import Acceptor
from .config import BackendGroup, Frontend, L4Config, SNIRoute, TLSPassthrough
from .metrics import BackendStats, FrontendStats, Tally, endpoint_groups
from .sni import MAX_HELLO, NEED_MORE, HelloError, match_route, parse_sni
from .splice import Splicer
from .tlsterm import Terminator
from .userspace import Conn, backend_stats, connect, copy, picker, send_proxy_header

if TYPE_CHECKING:
    from .flowlog import FlowLog

log = logging.getLogger("kgw.l4.tls")

HELLO_TIMEOUT = 5.0


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(sock.fileno(), ready)
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
        #: (port, route name, gateway, listener) -> counters; route "" for connections that
        #: matched none
        self._tallies: dict[tuple[tuple[str, int], str, str, str], Tally] = {}
        self._backends: dict[tuple[str, int], Tally] = {}
        self._groups: dict[str, set[str]] = {}
        self.conns: set[Conn] = set()
        self.terminator = Terminator()
        #: Flow events (kgw_l4.flowlog), when the access log is on.
        self.flow_log: FlowLog | None = None
        #: a route's backends -> its Maglev picker, built on first use (a table costs
        #: milliseconds: once per config, not per connection)
        self._pickers: dict[tuple[BackendGroup, ...], Any] = {}
        #: (port, route name, gateway, listener) of terminated routes (bytes counted here)
        self._terminated: set[tuple[tuple[str, int], str, str, str]] = set()
        #: (port, reason) of refused PROXY headers already logged at warning level (a
        #: few reasons per port: the log says it once, the counter counts each)
        self._proxy_logged: set[tuple[tuple[str, int], str]] = set()

    async def apply(self, config: L4Config,
                    taken: AbstractSet[tuple[str, int]] = frozenset()) -> None:
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
        keep = {(key, r.name, r.gateway, r.listener) for key, t in wanted.items() for r in t.routes}
        keep |= {(key, "", "", "") for key in wanted}
        self._tallies = {k: self._tallies.get(k) or Tally() for k in keep}
        self._terminated = {(key, r.name, r.gateway, r.listener) for key, t in wanted.items()
                            for r in t.routes if r.terminate is not None}
        self.terminator.apply(config)
        used = {r.backends for t in wanted.values() for r in t.routes}
        self._pickers = {k: v for k, v in self._pickers.items() if k in used}
        routes = [r for t in wanted.values() for r in t.routes]
        self._groups = endpoint_groups(routes)
        self._backends = {(ep.address, ep.port): self._backends.get((ep.address, ep.port))
                          or Tally() for r in routes for g in r.backends for ep in g.endpoints}

    def _tally(self, key: tuple[str, int], route: SNIRoute | None) -> Tally:
        k = (key, route.name, route.gateway, route.listener) if route else (key, "", "", "")
        t = self._tallies.get(k)
        return t if t is not None else Tally()  # (a port or route removed meanwhile)

    async def serve(self, key: tuple[str, int], c: socket.socket) -> None:
        cfg = self._cfg.get(key)
        flog = self.flow_log
        try:
            peer: tuple[str, int] | None = c.getpeername()[:2]
        except OSError:  # (reset already)
            peer = None
        port_name = cfg.name if cfg else f"{key[0]}:{key[1]}"
        local: tuple[str, int] | None = None
        if cfg is not None and cfg.proxy_protocol:
            try:
                header = await asyncio.wait_for(
                    read_header(c, cfg.proxy_protocol == "optional"), HELLO_TIMEOUT)
            except (TimeoutError, ProxyProtocolError, OSError) as e:
                self._proxy_refused(key, e)
                if flog is not None:
                    flog.refused(port_name, "", peer, "DPE")
                _reset(c)
                return
            if header is not None and header.source is not None:
                peer, local = header.source, header.destination
        try:
            sni = await asyncio.wait_for(peek_sni(c), HELLO_TIMEOUT)
        except (TimeoutError, HelloError, OSError) as e:
            log.info("tls passthrough %s: dropping connection: %s", key, e)
            self._tally(key, None).drop("bad_client_hello")
            if flog is not None:
                flog.refused(port_name, "", peer, "DPE")
            _reset(c)
            return
        route = match_route(cfg.routes, sni) if cfg else None
        tally = self._tally(key, route)
        listener = f"{route.gateway}/{route.listener}" if route is not None else port_name
        be = None
        if route is not None:
            pick = self._pickers.get(route.backends)
            if pick is None:
                pick = self._pickers[route.backends] = _route_picker(route.backends, route.name)
            be = pick.choose(c.getpeername()[:2], c.getsockname()[:2])
        if be is None:
            log.info("tls passthrough %s: no route for SNI %r", key, sni)
            tally.drop("no_route" if route is None else "no_backend")
            if flog is not None:
                flog.refused(listener, route.name if route else "", peer,
                             "NR" if route is None else "UH")
            _reset(c)
            return
        assert route is not None  # be was picked from it
        be_tally = self._backends.get(be)
        try:
            client = peer or c.getpeername()[:2]
            local = local or c.getsockname()[:2]
        except OSError:  # (reset meanwhile)
            _reset(c)
            return
        if route.terminate is not None:
            fe = f"{key[0]}:{key[1]}/TLS"
            await self.terminator.serve(c, sni, route, be, tally, be_tally, fe, self.conns,
                                        flog, listener, client, local)
            return
        try:
            b = await connect(be)
            if route.backend_proxy_protocol:
                try:
                    send_proxy_header(b, client, local)
                except OSError:
                    b.close()
                    raise
        except (TimeoutError, OSError) as e:
            log.info("backend %s:%d unreachable: %s", be[0], be[1], e)
            tally.drop("backend_unreachable")
            if flog is not None:
                flog.refused(listener, route.name, peer, "UF", be)
            _reset(c)
            return
        tally.flows += 1
        if be_tally is not None:
            be_tally.flows += 1
        flow = flog.opened(listener, route.name, client, be) if flog is not None else None
        if self.splicer is not None:
            on_close = (functools.partial(flog.closed, flow)
                        if flog is not None and flow is not None else None)
            try:
                await self.splicer.splice(c, b, on_close=on_close)
                return
            except OSError as e:
                log.warning("splice failed (%s): copying in userspace", e)
        conn = Conn(f"{key[0]}:{key[1]}/TLS", client, be, tally, be_tally)
        tally.active += 1
        self.conns.add(conn)
        try:
            await copy(c, b, conn)
        finally:
            tally.active -= 1
            self.conns.discard(conn)
            if flog is not None and flow is not None:
                flog.closed(flow, conn.bytes[0], conn.bytes[1])

    def _proxy_refused(self, key: tuple[str, int], e: BaseException) -> None:
        """A connection closed for its PROXY header: counted (``bad_proxy_header``, under
        no route), logged at warning once per port and reason, then at debug."""
        self._tally(key, None).drop("bad_proxy_header")
        if isinstance(e, TimeoutError):
            reason, why = "timeout", f"no complete PROXY protocol header within {HELLO_TIMEOUT:g}s"
        else:
            why = str(e) or type(e).__name__
            reason = "missing" if why.startswith("no PROXY") else type(e).__name__
        if (key, reason) in self._proxy_logged or len(self._proxy_logged) > 1024:
            log.debug("tls port %s:%d: connection closed: %s", key[0], key[1], why)
            return
        self._proxy_logged.add((key, reason))
        log.warning("tls port %s:%d: connection closed: %s (said once per port and reason; "
                    "each is counted as bad_proxy_header)", key[0], key[1], why)

    def stats(self) -> tuple[list[FrontendStats], list[BackendStats]]:
        """Per port and route; bytes and connections open only when copied here (no
        splicer, or a terminated route), since a spliced connection's bytes are the
        kernel's. (A backend's bytes, shared by both kinds of route, likewise.)"""
        copied = self.splicer is None
        fes = []
        for k, t in self._tallies.items():
            key, route, gw, listener = k
            here = copied or k in self._terminated
            fes.append(FrontendStats(f"{key[0]}:{key[1]}/TLS", gw, listener, route,
                                     bytes=(t.bytes[0], t.bytes[1]) if here else None,
                                     flows=t.flows, active=t.active if here else None,
                                     drops=dict(t.drops)))
        bes = [dataclasses.replace(backend_stats(ep, t, self._groups), bytes=None) if not copied
               else backend_stats(ep, t, self._groups) for ep, t in self._backends.items()]
        return fes, bes

    def flows(self) -> list[dict]:
        now = time.monotonic()
        return [c.row(now) for c in list(self.conns)]

    async def close(self) -> None:
        self.close_listeners()


def _reset(c: socket.socket) -> None:
    with contextlib.suppress(OSError):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
