"""TLS ports: read the SNI of each connection's ClientHello without consuming it, pick
the SNIRoute and its backend (weighted Maglev, as for L4 frontends); a passthrough route
connects and splices (kgw_l4.splice) — or, with no sockmap, copies in userspace; a
terminated route's connection goes to kgw_l4.tlsterm. One port may hold both.

The hello stays in the client socket: spliced, the kernel forwards it first; copied,
it is simply the first bytes read. A port whose connections start with a PROXY
protocol header (TrafficPolicy ``proxyProtocol``) has it taken out of the socket first
(kgw_l7.proxyaccept, in a task), leaving the hello; the header's client is then the
connection's (flow log, kgw-inspect, the PROXY header a route's backends may ask for:
``backendProxyProtocol``, written before the first byte of the client's).

The per-connection path is short because it runs for every connection (issue 21,
bench/results/l4.md "TLS passthrough"): the listener has TCP_DEFER_ACCEPT (the client
speaks first), so a connection is accepted with its ClientHello already queued, and the
accept callback peeks it, routes it (a per-port cache of SNI -> route), and starts the
backend connect, all without a task; the connect's completion splices from a writer
callback. Only a hello that is not complete yet (or not there: the deferral expired)
takes a task, which waits for it at most HELLO_TIMEOUT; a connect in progress is given
up after CONNECT_TIMEOUT by a sweep. A terminated route, and the userspace copy, run
as tasks as before.

Counters (/metrics, kgw-inspect) per port and SNIRoute: connections given a backend,
drops by reason (``bad_client_hello``, ``no_route``, ``no_backend``,
``backend_unreachable``, ``bad_proxy_header``; terminated: ``bad_certificate``,
``tls_handshake``,
``backend_tls``) under the route they matched ("" when none), bytes each way and the
connections open, however a connection is carried: a spliced one's bytes are read from
the splice maps, a relayed one's from the pair relay, at scrape time for the open ones.

Health (a TrafficPolicy ``healthCheck`` on the TLSRoute or its listener, probed once per
node by kgw_l4.health): the endpoints failing their check lose their slots in the route's
Maglev picker as in every L4 mode (``maglev.without_down``: only theirs move; every
endpoint down keeps them all, logged). Passthrough and terminated routes alike: the
backend is chosen here for both. The pickers are rebuilt in a thread when the verdicts
change (``set_health``), not on the connection path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import select
import socket
import struct
import time
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from kgw_l7.proxyaccept import read_header
from kgw_l7.proxyproto import ProxyProtocolError

from .acceptor import KEEPALIVE_IDLE, Acceptor
from .config import BackendGroup, Frontend, L4Config, SNIRoute, TLSPassthrough
from .metrics import BackendStats, FrontendStats, Tally, endpoint_groups, live_view
from .pairrelay import FINISHED, HANDOVER, Ended, PairCopier, native
from .sni import MAX_HELLO, NEED_MORE, HelloError, match_route, parse_sni
from .splice import Splicer, tune
from .tlsterm import Terminator
from .userspace import (
    CONNECT_TIMEOUT, Conn, backend_stats, connect_backend, copy, picker, send_proxy_header,
)

if TYPE_CHECKING:
    from .flowlog import FlowLog

log = logging.getLogger("kgw.l4.tls")

HELLO_TIMEOUT = 5.0
#: TCP_DEFER_ACCEPT of a TLS listener, seconds: the kernel accepts a connection once
#: its first data (the ClientHello) arrived, or after this long without (then the
#: hello wait, HELLO_TIMEOUT, applies as usual)
DEFER_ACCEPT = 1
#: SNIs remembered per port with the route they matched; the cache starts over when full
ROUTE_CACHE_MAX = 4096
#: connects in progress are checked against their deadline this often
SWEEP_INTERVAL = 0.25


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


def peek_hello(sock: socket.socket) -> str | None | object:
    """The SNI of the ClientHello queued on sock (peeked, not read), NEED_MORE while it
    is incomplete or nothing is queued yet. Does not block."""
    try:
        data = sock.recv(MAX_HELLO, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return NEED_MORE
    if not data:
        raise HelloError("connection closed before the ClientHello")
    res = parse_sni(data)
    if res is NEED_MORE and len(data) >= MAX_HELLO:
        raise HelloError("ClientHello larger than one record")
    return res


async def peek_sni(sock: socket.socket) -> str | None:
    """SNI of the ClientHello waiting in sock (peeked, not read)."""
    while True:
        res = peek_hello(sock)
        if res is not NEED_MORE:
            return res  # type: ignore[return-value]
        await _readable(sock)


def _route_picker(groups: tuple[BackendGroup, ...], name: str,
                  down: AbstractSet[tuple[str, str, int]] = frozenset()):
    return picker(Frontend(name, "0.0.0.0", 1, "TCP", groups), down)


@dataclasses.dataclass(slots=True, eq=False)
class _Pending:
    """A passthrough connection whose backend connect is in progress."""
    key: tuple[str, int]
    c: socket.socket
    peer: tuple[str, int]
    b: socket.socket
    be: tuple[str, int]
    route: SNIRoute
    tally: Tally
    listener: str
    deadline: float
    #: The address the client connected to, as its PROXY header named it (else None).
    local: tuple[str, int] | None = None


class TLSPassthroughProxy(Acceptor):
    """``pair_relay``: with a splicer, copy each connection in the compiled pair relay
    until it is a long stream (kgw_l4.pairrelay), when built; False: splice from the
    start."""

    def __init__(self, splicer: Splicer | None, *, pair_relay: bool = True,
                 keepalive: int = KEEPALIVE_IDLE) -> None:
        super().__init__(keepalive=keepalive)
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
        #: (port, reason) of refused PROXY headers already logged at warning level (a
        #: few reasons per port: the log says it once, the counter counts each)
        self._proxy_logged: set[tuple[tuple[str, int], str]] = set()
        #: port -> SNI -> the route it matched (None: none); emptied by apply
        self._route_cache: dict[tuple[str, int], dict[str | None, SNIRoute | None]] = {}
        #: backend socket fd -> its connect in progress; the sweep's timer while any
        self._pending: dict[int, _Pending] = {}
        self._sweep: asyncio.TimerHandle | None = None
        #: the connects in progress, EPOLLOUT one-shot: one epoll_ctl per connect (the
        #: event loop's add_writer/remove_writer made four); a socket leaves the set
        #: when it is closed
        self._connecting: select.epoll | None = None
        #: endpoints failing their health check (kgw_l4.health): (group, address, port)
        self.down: frozenset[tuple[str, str, int]] = frozenset()
        #: the compiled copy of short connections (kgw_l4.pairrelay; with a splicer, when
        #: built), made on first use; None: every connection is spliced from the start
        self._relay_cls = native() if splicer is not None and pair_relay else None
        self.copier: PairCopier | None = None

    async def set_health(self, down: frozenset[tuple[str, str, int]]) -> None:
        """New connections avoid the endpoints ``down`` from now on: the pickers in use are
        rebuilt in a thread (a table costs milliseconds) and swapped in; one made meanwhile
        for a new config with other verdicts is rebuilt on its first use."""
        self.down = down
        todo = {r.backends: r.name for t in self._cfg.values() for r in t.routes}
        new = await asyncio.to_thread(
            lambda: {k: _route_picker(k, name, down) for k, name in todo.items()})
        if self.down != down:
            return  # (newer verdicts came meanwhile: their own call swaps theirs in)
        was = {k for k, p in self._pickers.items() if p.panic}
        used = {r.backends for t in self._cfg.values() for r in t.routes}
        self._pickers = {k: p for k, p in new.items() if k in used}
        for k, p in new.items():
            if p.panic and k not in was:
                log.warning("tls route %s: every endpoint fails its health check: all are "
                            "kept (panic)", todo[k])

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
        self._route_cache = {}
        self.errors = errors
        keep = {(key, r.name, r.gateway, r.listener) for key, t in wanted.items() for r in t.routes}
        keep |= {(key, "", "", "") for key in wanted}
        self._tallies = {k: self._tallies.get(k) or Tally() for k in keep}
        self.terminator.apply(config)
        used = {r.backends for t in wanted.values() for r in t.routes}
        self._pickers = {k: v for k, v in self._pickers.items() if k in used}
        routes = [r for t in wanted.values() for r in t.routes]
        self._groups = endpoint_groups(routes)
        self._backends = {(ep.address, ep.port): self._backends.get((ep.address, ep.port))
                          or Tally() for r in routes for g in r.backends for ep in g.endpoints}

    def listening(self, ls: socket.socket) -> None:
        ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT)
        if self.splicer is not None:
            tune(ls)  # accepted sockets inherit the splice send buffer

    def _tally(self, key: tuple[str, int], route: SNIRoute | None) -> Tally:
        k = (key, route.name, route.gateway, route.listener) if route else (key, "", "", "")
        t = self._tallies.get(k)
        return t if t is not None else Tally()  # (a port or route removed meanwhile)

    def _match(self, key: tuple[str, int], sni: str | None) -> SNIRoute | None:
        cache = self._route_cache.get(key)
        if cache is None:
            cache = self._route_cache[key] = {}
        try:
            return cache[sni]
        except KeyError:
            pass
        cfg = self._cfg.get(key)
        route = match_route(cfg.routes, sni) if cfg else None
        if len(cache) >= ROUTE_CACHE_MAX:
            cache.clear()
        cache[sni] = route
        return route

    def accepted(self, key: tuple[str, int], c: socket.socket, peer: tuple[str, int]) -> None:
        cfg = self._cfg.get(key)
        if cfg is not None and cfg.proxy_protocol:
            self.spawn(self._proxied(key, c, peer, cfg.proxy_protocol == "optional"))
            return
        try:
            sni = peek_hello(c)
        except (HelloError, OSError) as e:
            self._bad_hello(key, c, peer, e)
            return
        if sni is NEED_MORE:
            self.spawn(self.serve(key, c, peer))
        else:
            self._dispatch(key, c, peer, sni)  # type: ignore[arg-type]

    async def serve(self, key: tuple[str, int], c: socket.socket,
                    peer: tuple[str, int] | None = None) -> None:
        """A connection whose ClientHello is not all there yet: wait for it (at most
        HELLO_TIMEOUT), then as ``accepted``."""
        if peer is None:
            try:
                peer = c.getpeername()[:2]
            except OSError:  # (reset already)
                peer = ("", 0)
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                sni = await peek_sni(c)
        except (TimeoutError, HelloError, OSError) as e:
            self._bad_hello(key, c, peer, e)
            return
        self._dispatch(key, c, peer, sni)

    async def _proxied(self, key: tuple[str, int], c: socket.socket, peer: tuple[str, int],
                       optional: bool) -> None:
        """A port whose connections start with a PROXY header: it is taken off the socket
        (the hello stays), then the hello is waited for as in ``serve``. (The socket's
        blocking mode is left as accepted: both reads follow a readiness.)"""
        local = None
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                header = await read_header(c, optional)
        except (TimeoutError, ProxyProtocolError, OSError) as e:
            self._proxy_refused(key, e)
            if self.flow_log is not None:
                self.flow_log.refused(self._port_name(key), "", peer or None, "DPE")
            _reset(c)
            return
        if header is not None and header.source is not None:
            peer, local = header.source, header.destination
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                sni = await peek_sni(c)
        except (TimeoutError, HelloError, OSError) as e:
            self._bad_hello(key, c, peer, e)
            return
        self._dispatch(key, c, peer, sni, local)

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

    def _port_name(self, key: tuple[str, int]) -> str:
        cfg = self._cfg.get(key)
        return cfg.name if cfg else f"{key[0]}:{key[1]}"

    def _bad_hello(self, key: tuple[str, int], c: socket.socket, peer: tuple[str, int],
                   e: Exception) -> None:
        log.info("tls passthrough %s: dropping connection: %s", key, e or "no ClientHello")
        self._tally(key, None).drop("bad_client_hello")
        if self.flow_log is not None:
            self.flow_log.refused(self._port_name(key), "", peer or None, "DPE")
        _reset(c)

    def _dispatch(self, key: tuple[str, int], c: socket.socket, peer: tuple[str, int],
                  sni: str | None, dest: tuple[str, int] | None = None) -> None:
        """Route a connection by its SNI and start what serves it. ``dest``: the address
        the client connected to, as its PROXY header named it (None: the socket's)."""
        flog = self.flow_log
        route = self._match(key, sni)
        tally = self._tally(key, route)
        listener = (f"{route.gateway}/{route.listener}" if route is not None
                    else self._port_name(key))
        be = None
        if route is not None:
            pick = self._pickers.get(route.backends)
            if pick is None:
                pick = self._pickers[route.backends] = _route_picker(route.backends, route.name,
                                                                     self.down)
            local = key
            if key[0] == "0.0.0.0" and len(pick.endpoints) > 1:  # (the flow hash needs it)
                try:
                    local = c.getsockname()[:2]
                except OSError:
                    pass
            be = pick.choose(peer, local)
        if be is None:
            log.info("tls passthrough %s: no route for SNI %r", key, sni)
            tally.drop("no_route" if route is None else "no_backend")
            if flog is not None:
                flog.refused(listener, route.name if route else "", peer,
                             "NR" if route is None else "UH")
            _reset(c)
            return
        assert route is not None  # be was picked from it
        if route.terminate is not None or self.splicer is None:
            c.setblocking(False)
            self.spawn(self._serve_task(key, c, peer, sni, route, be, tally, listener, dest))
            return
        b = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            if self._relay_cls is None:  # (else tuned if it is ever spliced)
                tune(b)
            err = b.connect_ex(be)
        except OSError as e:
            err = e.errno or errno.EIO
        p = _Pending(key, c, peer, b, be, route, tally, listener, 0.0, dest)
        if err == errno.EINPROGRESS:
            assert self._loop is not None
            p.deadline = self._loop.time() + CONNECT_TIMEOUT
            if self._connecting is None:
                self._connecting = select.epoll()
                self._loop.add_reader(self._connecting.fileno(), self._connects_ready)
            self._connecting.register(b.fileno(), select.EPOLLOUT | select.EPOLLONESHOT)
            self._pending[b.fileno()] = p
            if self._sweep is None:
                self._sweep = self._loop.call_later(SWEEP_INTERVAL, self._sweep_connects)
        elif err:
            self._unreachable(p, os_error(err))
        else:
            self._spliced(p)

    def _connects_ready(self) -> None:
        assert self._connecting is not None
        for fd, _ in self._connecting.poll(0):
            p = self._pending.pop(fd, None)
            if p is not None:
                self._connect_done(p)

    def _connect_done(self, p: _Pending) -> None:
        try:
            err = p.b.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as e:
            err = e.errno or errno.EIO
        if err:
            self._unreachable(p, os_error(err))
        else:
            self._spliced(p)

    def _sweep_connects(self) -> None:
        """Give up the connects past their deadline; again later while any remain."""
        assert self._loop is not None
        now = self._loop.time()
        for fd, p in [(fd, p) for fd, p in self._pending.items() if p.deadline <= now]:
            del self._pending[fd]
            self._unreachable(p, TimeoutError("connect timed out"))
        self._sweep = (self._loop.call_later(SWEEP_INTERVAL, self._sweep_connects)
                       if self._pending else None)

    def _unreachable(self, p: _Pending, e: Exception) -> None:
        log.info("backend %s:%d unreachable: %s", p.be[0], p.be[1], e)
        p.b.close()
        p.tally.drop("backend_unreachable")
        if self.flow_log is not None:
            self.flow_log.refused(p.listener, p.route.name, p.peer, "UF", p.be)
        _reset(p.c)

    def _spliced(self, p: _Pending) -> None:
        """The backend is connected: count the connection and splice it (or, if the
        splice fails, copy it in userspace)."""
        if p.route.backend_proxy_protocol:
            try:
                send_proxy_header(p.b, p.peer, p.local or p.c.getsockname()[:2])
            except OSError as e:
                self._unreachable(p, e)
                return
        p.tally.flows += 1
        be_tally = self._backends.get(p.be)
        if be_tally is not None:
            be_tally.flows += 1
        flog = self.flow_log
        flow = flog.opened(p.listener, p.route.name, p.peer, p.be) if flog is not None else None
        if self._relay_cls is not None:
            if self.copier is None:
                assert self._loop is not None
                self.copier = PairCopier(self._relay_cls, self._loop)
            if self.copier.add(p.c, p.b, functools.partial(self._relay_ended, p, be_tally, flow),
                               p):
                p.tally.active += 1
                return
            tune(p.b)  # (the relay is full)
        on_close = (functools.partial(flog.closed, flow)
                    if flog is not None and flow is not None else None)
        assert self.splicer is not None
        try:
            self.splicer.splice_now(p.c, p.b, p.tally, be_tally, on_close=on_close,
                                    untouched=True, tuned=True)
            return
        except OSError as e:
            log.warning("splice failed (%s): copying in userspace", e)
        p.c.setblocking(False)
        self.spawn(self._copy(p.key, p.c, p.b, p.be, p.tally, be_tally, flow, p.peer))

    def _relay_ended(self, p: _Pending, be_tally: Tally | None, flow: Any, end: Ended) -> None:
        """A connection the pair relay copied has ended, or has become a long stream
        (HANDOVER: its sockets are back, both directions idle) and is spliced now; the
        flow log is told the bytes of both parts, the counters the relay's (the splice
        adds its own)."""
        flog = self.flow_log
        for t in (p.tally, be_tally):
            if t is not None:
                t.bytes[0] += end.a_to_b
                t.bytes[1] += end.b_to_a
        p.tally.active -= 1
        if end.kind != HANDOVER:
            if end.kind != FINISHED:
                log.debug("tls passthrough %s: connection reset", p.key)
            if flog is not None and flow is not None:
                flog.closed(flow, end.a_to_b, end.b_to_a)
            return
        assert end.a is not None and end.b is not None and self.splicer is not None
        on_close = None
        if flog is not None and flow is not None:
            def on_close(up: int, down: int) -> None:
                flog.closed(flow, end.a_to_b + up, end.b_to_a + down)
        try:  # (bytes were read and written: the splice asks the sockets what they took)
            tune(end.b)
            self.splicer.splice_now(end.a, end.b, p.tally, be_tally, on_close=on_close,
                                    tuned=True)
            return
        except OSError as e:
            log.warning("splice failed (%s): copying in userspace", e)
        end.a.setblocking(False)
        self.spawn(self._copy(p.key, end.a, end.b, p.be, p.tally, be_tally, flow, p.peer))

    async def _serve_task(self, key: tuple[str, int], c: socket.socket, peer: tuple[str, int],
                          sni: str | None, route: SNIRoute, be: tuple[str, int], tally: Tally,
                          listener: str, local: tuple[str, int] | None = None) -> None:
        """A terminated route, or passthrough without a splicer (copied here). ``peer``
        and ``local``: the connection's ends as a PROXY header named them, if it had one."""
        flog = self.flow_log
        be_tally = self._backends.get(be)
        try:
            local = local or c.getsockname()[:2]
        except OSError:  # (reset meanwhile)
            _reset(c)
            return
        if route.terminate is not None:
            fe = f"{key[0]}:{key[1]}/TLS"
            await self.terminator.serve(c, sni, route, be, tally, be_tally, fe, self.conns,
                                        flog, listener, peer, local)
            return
        try:
            b = await connect_backend(be, (peer, local) if route.backend_proxy_protocol
                                      else None)
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
        flow = flog.opened(listener, route.name, peer, be) if flog is not None else None
        await self._copy(key, c, b, be, tally, be_tally, flow, peer)

    async def _copy(self, key: tuple[str, int], c: socket.socket, b: socket.socket,
                    be: tuple[str, int], tally: Tally, be_tally: Tally | None,
                    flow: Any, client: tuple[str, int] | None = None) -> None:
        flog = self.flow_log
        conn = Conn(f"{key[0]}:{key[1]}/TLS", client or c.getpeername(), be, tally, be_tally)
        tally.active += 1
        self.conns.add(conn)
        try:
            await copy(c, b, conn)
        finally:
            tally.active -= 1
            self.conns.discard(conn)
            if flog is not None and flow is not None:
                flog.closed(flow, conn.bytes[0], conn.bytes[1])

    def stats(self) -> tuple[list[FrontendStats], list[BackendStats]]:
        """Per port and route, and per backend endpoint: the closed connections' bytes
        plus, read now, the open ones' so far, however each is carried (copied here, by
        the pair relay, or spliced: the splice maps count what the kernel redirected)."""
        open_bytes: list[tuple[Tally | None, Tally | None, int, int]] = []
        if self.copier is not None:
            open_bytes += [(p.tally, self._backends.get(p.be), up, down)
                           for p, _, up, down in self.copier.pairs()]
        if self.splicer is not None:
            open_bytes += self.splicer.open_bytes()
        plus = live_view(open_bytes)
        fes = []
        for (key, route, gw, listener), t in self._tallies.items():
            t = plus(t)
            fes.append(FrontendStats(f"{key[0]}:{key[1]}/TLS", gw, listener, route,
                                     bytes=(t.bytes[0], t.bytes[1]), flows=t.flows,
                                     active=t.active, drops=dict(t.drops)))
        bes = [backend_stats(ep, plus(t), self._groups) for ep, t in self._backends.items()]
        return fes, bes

    def flows(self) -> list[dict]:
        now = time.monotonic()
        return [c.row(now) for c in list(self.conns)]

    def relayed(self) -> list[dict]:
        """The passthrough connections the pair relay copies now (not spliced yet), for
        inspect: listener, route, client, backend, age and bytes each way."""
        if self.copier is None:
            return []
        return [{"listener": p.listener, "route": p.route.name, "client": "%s:%d" % p.peer[:2],
                 "backend": "%s:%d" % p.be, "age_s": round(age, 1), "bytes_to_backend": up,
                 "bytes_to_client": down} for p, age, up, down in self.copier.pairs()]

    async def close(self) -> None:
        self.close_listeners()
        if self.copier is not None:
            await self.copier.close()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for p in self._pending.values():
            p.b.close()
            p.c.close()
        self._pending.clear()
        if self._connecting is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._connecting.fileno())
            self._connecting.close()
            self._connecting = None


def os_error(err: int) -> OSError:
    return OSError(err, errno.errorcode.get(err, str(err)))


def _reset(c: socket.socket) -> None:
    with contextlib.suppress(OSError):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
