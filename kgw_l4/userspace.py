"""The userspace L4 proxy: the fallback when BPF cannot be used.

One asyncio listener per frontend; each connection picks its backend from the same
weighted Maglev table the kernel uses (keyed by the client's 5-tuple), connects and
copies bytes both ways with backpressure (drain) and half-close (EOF is forwarded
as a shutdown of the write side, the other direction keeps flowing).

Each frontend and backend endpoint keeps a ``metrics.Tally`` (bytes each way, flows,
flows open, drops by reason), and each connection a ``Conn`` (kgw-inspect's flows): the
same families /metrics reports for the kernel plane.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kgw_l7.proxyproto import MAX_HEADER, ProxyHeader, ProxyProtocolError, encode_v2, parse

from . import maglev, relay
from .acceptor import KEEPALIVE_IDLE, set_keepalive
from .config import Frontend, L4Config
from .metrics import BackendStats, FrontendStats, Tally, endpoint_groups

if TYPE_CHECKING:
    from .flowlog import FlowLog

log = logging.getLogger("kgw.l4.userspace")

CHUNK = 256 * 1024
CONNECT_TIMEOUT = 5.0
TABLE_SIZE = 4099  # prime; a per-listener table needs no kernel-sized ring


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def connect(addr: tuple[str, int], timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A non-blocking connect to an address literal. Not loop.sock_connect(): it resolves
    the address first, and on uvloop (the loop `kgw run` uses) that made the connect cost
    more than the rest of a splice's setup (bench/results/l4.md). Used by every
    userspace L4 path: the proxy here, splice and TLS passthrough."""
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        err = s.connect_ex(addr)
        if err == errno.EINPROGRESS:
            fut = loop.create_future()
            loop.add_writer(s.fileno(), _set_done, fut)
            try:
                async with asyncio.timeout(timeout):
                    await fut
            finally:
                loop.remove_writer(s.fileno())
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        s.close()
        raise
    return s


def send_proxy_header(b: socket.socket, client: tuple[str, int],
                      destination: tuple[str, int]) -> None:
    """Start backend connection ``b`` with a PROXY protocol v2 header naming ``client``
    and the address it connected to (TrafficPolicy ``backendProxyProtocol``), before any
    byte of the client's is forwarded. The connection is new, its send buffer empty: the
    header (at most 52 bytes) goes out whole in one send."""
    header = encode_v2(client, destination)
    if b.send(header) != len(header):
        raise OSError(errno.EAGAIN, "the PROXY protocol header did not fit in the new "
                                    "connection's send buffer")


#: How long a connection may take to send its PROXY protocol header.
PROXY_HEADER_TIMEOUT = 5.0


async def connect_backend(be: tuple[str, int],
                          proxy_from: tuple[tuple[str, int], tuple[str, int]] | None = None,
                          ) -> socket.socket:
    """``connect(be)``, then, when ``proxy_from`` (client, local) is given, the PROXY v2
    header naming them (the route asked for ``backendProxyProtocol``); the socket is
    closed if the header cannot be written. Raises OSError/TimeoutError as ``connect``."""
    b = await connect(be)
    if proxy_from is not None:
        try:
            send_proxy_header(b, *proxy_from)
        except OSError:
            b.close()
            raise
    return b


async def side_header(client: relay.Side, optional: bool) -> ProxyHeader | None:
    """The PROXY protocol header at the start of the accepted, not yet linked ``client``;
    the bytes after it stay in ``client.early`` (forwarded first when linked). None:
    ``optional`` and the connection does not start with one. Raises ProxyProtocolError
    naming what is wrong; the caller bounds the wait. At most ``MAX_HEADER`` bytes are
    looked at."""
    t = client.transport
    assert t is not None
    t.resume_reading()
    try:
        while True:
            data = b"".join(client.early)
            try:
                header = parse(data[:MAX_HEADER])
            except ProxyProtocolError:
                if optional and not (data.startswith(b"PROXY ") or data.startswith(b"\r\n\r\n")):
                    return None
                raise
            if header is not None:
                client.early[:] = [data[header.size:]] if len(data) > header.size else []
                return header
            if client.eof or client.lost.done():
                raise ProxyProtocolError("connection closed before the PROXY protocol header "
                                         "was complete")
            await client.arrived()  # the relay side keeps what it reads until linked
    finally:
        if not client.lost.done() and not t.is_closing():
            t.pause_reading()


_proxy_logged: set[tuple[str, str]] = set()


def proxy_refused(tally: Tally, name: str, e: BaseException) -> None:
    """A connection closed for its PROXY header: counted (``bad_proxy_header``), logged at
    warning once per frontend and reason, then at debug (the counter counts each)."""
    tally.drop("bad_proxy_header")
    if isinstance(e, TimeoutError):
        reason, why = "timeout", "no complete PROXY protocol header in time"
    else:
        why = str(e) or type(e).__name__
        reason = "missing" if why.startswith("no PROXY") else type(e).__name__
    if (name, reason) in _proxy_logged or len(_proxy_logged) > 1024:
        log.debug("frontend %s: connection closed: %s", name, why)
        return
    _proxy_logged.add((name, reason))
    log.warning("frontend %s: connection closed: %s (said once per frontend and reason; "
                "each is counted as bad_proxy_header)", name, why)


async def copy(client: relay.Side | socket.socket, b: socket.socket,
               conn: Conn | None = None) -> None:
    """Relay the accepted ``client`` (its side, or its socket) and the connected backend
    socket ``b`` both ways (kgw_l4.relay) until both ends are done; ``conn`` counts the
    bytes. Owns both."""
    loop = asyncio.get_running_loop()
    backend = relay.Side()
    try:
        if isinstance(client, socket.socket):
            c, client = client, relay.Side()
            await loop.connect_accepted_socket(lambda: client, sock=c)
        await loop.create_connection(lambda: backend, sock=b)
    except BaseException:
        b.close()
        if isinstance(client, relay.Side):
            client.abort()
        raise
    if conn is not None:
        client.count, backend.count = conn.to_backend, conn.to_client
    relay.link(client, backend)
    await relay.run(client, backend)


@dataclass(frozen=True, slots=True)
class _Pick:
    endpoints: tuple[tuple[str, int], ...]
    table: tuple[int, ...]
    #: every endpoint with weight fails its health check: all are kept
    panic: bool = False

    def choose(self, peer: tuple[str, int], local: tuple[str, int],
               proto: int = socket.IPPROTO_TCP) -> tuple[str, int] | None:
        if not self.table:
            return None
        if len(self.endpoints) == 1:
            return self.endpoints[0]  # (a table of one endpoint has no empty slot)
        idx = self.table[maglev.flow_slot(peer[0], peer[1], local[0], local[1],
                                          proto, len(self.table))]
        return None if idx < 0 else self.endpoints[idx]


def picker(fe: Frontend, down: Collection[tuple[str, str, int]] = frozenset()) -> _Pick:
    """The frontend's Maglev table; endpoints ``down`` (group, address, port: failing
    their health check, kgw_l4.health) lose their slots as in the kernel plane
    (``maglev.without_down``: only theirs move; all down keeps all). Only a group with a
    health check takes verdicts (one of the same name through another listener may have
    none)."""
    eps: dict[tuple[str, int], int] = {}
    groups = [(g.weight, len(g.endpoints)) for g in fe.backends]
    for g, w in zip(fe.backends, maglev.group_weights(groups)):
        for ep in g.endpoints:
            eps[(ep.address, ep.port)] = eps.get((ep.address, ep.port), 0) + w
    order = tuple(sorted(eps))
    if not any(eps.values()):
        return _Pick(order, ())
    gone = {(ep.address, ep.port) for g in fe.backends if g.health_check is not None
            for ep in g.endpoints if (g.name, ep.address, ep.port) in down} if down else set()
    table, panic = maglev.without_down(
        [maglev.WeightedEndpoint(f"{a}:{p}", eps[(a, p)]) for a, p in order],
        [i for i, ep in enumerate(order) if ep in gone], TABLE_SIZE)
    return _Pick(order, tuple(table), panic)


class Conn:
    """One proxied TCP connection: its ends, and the bytes it moved each way, added to
    its frontend's and backend's tallies as they go (kgw-inspect's flows in userspace
    mode, and /metrics)."""

    __slots__ = ("frontend", "client", "backend", "started", "bytes", "fe", "be")

    def __init__(self, frontend: str, client: tuple[str, int], backend: tuple[str, int],
                 fe: Tally, be: Tally | None) -> None:
        self.frontend = frontend
        self.client = client
        self.backend = backend
        self.started = time.monotonic()
        self.bytes = [0, 0]
        self.fe = fe
        self.be = be

    def to_backend(self, n: int) -> None:
        self.bytes[0] += n
        self.fe.bytes[0] += n
        if self.be is not None:
            self.be.bytes[0] += n

    def to_client(self, n: int) -> None:
        self.bytes[1] += n
        self.fe.bytes[1] += n
        if self.be is not None:
            self.be.bytes[1] += n

    def row(self, now: float) -> dict:
        return {"proto": "TCP", "frontend": self.frontend, "client": "%s:%d" % self.client[:2],
                "backend": "%s:%d" % self.backend[:2], "age_s": round(now - self.started, 1),
                "bytes_to_backend": self.bytes[0], "bytes_to_client": self.bytes[1]}


def kept_tally(cur: tuple[Frontend, Tally] | None, fe: Frontend) -> Tally:
    """A frontend's counters carry on while it keeps its labels (a new route, say, starts
    new series at 0)."""
    if cur is not None and (cur[0].gateway, cur[0].listener,
                            cur[0].route) == (fe.gateway, fe.listener, fe.route):
        return cur[1]
    return Tally()


def frontend_stats(fe: Frontend, protocol: str, t: Tally, packets: bool = False) -> FrontendStats:
    return FrontendStats(f"{fe.address}:{fe.port}/{protocol}", fe.gateway, fe.listener, fe.route,
                         bytes=(t.bytes[0], t.bytes[1]),
                         packets=(t.packets[0], t.packets[1]) if packets else None,
                         flows=t.flows, active=t.active, drops=dict(t.drops))


def backend_stats(ep: tuple[str, int], t: Tally, groups: dict[str, set[str]],
                  packets: bool = False) -> BackendStats:
    name = f"{ep[0]}:{ep[1]}"
    return BackendStats(name, ",".join(sorted(groups.get(name, ()))),
                        bytes=(t.bytes[0], t.bytes[1]),
                        packets=(t.packets[0], t.packets[1]) if packets else None, flows=t.flows)


def select_frontends(config: L4Config, protocol: str = "TCP", *, unsupported: str | None = None,
                     keep_drained: bool = False,
                     down: Collection[tuple[str, str, int]] = frozenset()) -> tuple[
        dict[tuple[str, int], Frontend], dict[tuple[str, int], _Pick], dict[str, str]]:
    """The ``protocol`` frontends a userspace proxy can serve, their pickers, and why the
    others cannot be served (port clash, no backends, all weights 0).

    Frontends of another protocol are reported with ``unsupported`` as the reason, or
    skipped silently when it is None (another part of the plane serves them).
    ``keep_drained``: a frontend whose groups all have weight 0 is still served (UDP:
    existing flows ride its socket) but reported; otherwise it is not served (TCP:
    established connections do not need the listener).
    """
    errors: dict[str, str] = {}
    wanted: dict[tuple[str, int], Frontend] = {}
    picks: dict[tuple[str, int], _Pick] = {}
    new = "flows are dropped" if keep_drained else "connections are refused"
    for fe in config.frontends:
        if fe.protocol != protocol:
            if unsupported is not None:
                errors[fe.name] = f"{fe.protocol} frontends {unsupported}"
            continue
        key = (fe.address, fe.port)
        if key in wanted:
            errors[fe.name] = (f"port clash: {fe.address}:{fe.port}/{protocol.lower()} is already "
                               f"used by frontend {wanted[key].name!r}")
            continue
        p = picker(fe, down)
        if not p.endpoints:
            errors[fe.name] = "no backends"
            continue
        if not p.table:
            errors[fe.name] = f"no backend with weight > 0: new {new}"
            if not keep_drained:
                continue
        wanted[key] = fe
        picks[key] = p
    return wanted, picks, errors


async def repick(picks: dict, frontends: dict[tuple[str, int], tuple[Frontend, Tally]],
                 down: Collection[tuple[str, str, int]]) -> None:
    """Rebuild the pickers of the frontends served (``picks`` in place) for ``down``: in a
    thread (a table costs tens of ms of CPU), then swapped in on the loop for the
    frontends still served with the same configuration."""
    todo = {key: fe for key, (fe, _) in frontends.items() if key in picks}
    new = await asyncio.to_thread(lambda: {key: picker(fe, down) for key, fe in todo.items()})
    for key, p in new.items():
        cur = frontends.get(key)
        if key not in picks or cur is None or cur[0] != todo[key]:
            continue  # (an apply meanwhile built it with the same ``down``)
        was = picks[key]
        picks[key] = p
        moved = sum(a != b for a, b in zip(was.table, p.table)) \
            if was.endpoints == p.endpoints else len(p.table)
        if moved:
            fe = todo[key]
            n = sum(1 for g in fe.backends if g.health_check is not None for ep in g.endpoints
                    if (g.name, ep.address, ep.port) in down)
            log.info("frontend %s: health verdicts moved %d of %d Maglev slots (%d endpoints "
                     "down)", fe.name, moved, len(p.table), n)
        if p.panic and not was.panic:
            log.warning("frontend %s: every endpoint fails its health check: all are kept "
                        "(panic)", todo[key].name)


class UserspaceProxy:
    """TCP frontends, accepted and copied in asyncio. ``udp=True``: UDP frontends are
    left to kgw_l4.udp.UdpProxy (no error here); otherwise they are reported."""

    def __init__(self, *, udp: bool = False, keepalive: int = KEEPALIVE_IDLE) -> None:
        self.keepalive = keepalive  # (kgw_l4.acceptor.set_keepalive)
        # with udp=True, kgw_l4.udp serves the UDP frontends: nothing to report here
        self._unsupported = None if udp else "need the kernel data plane"
        self._servers: dict[tuple[str, int], asyncio.AbstractServer] = {}
        self._picks: dict[tuple[str, int], _Pick] = {}
        self._tasks: set[asyncio.Task] = set()
        self.errors: dict[str, str] = {}
        #: (address, port) -> the frontend served there, and its counters
        self._frontends: dict[tuple[str, int], tuple[Frontend, Tally]] = {}
        #: backend endpoint -> its counters; endpoint -> its backendRef groups
        self._backends: dict[tuple[str, int], Tally] = {}
        self._groups: dict[str, set[str]] = {}
        self.conns: set[Conn] = set()
        #: Flow events (kgw_l4.flowlog), when the access log is on.
        self.flow_log: FlowLog | None = None
        #: endpoints failing their health check (kgw_l4.health)
        self.down: frozenset[tuple[str, str, int]] = frozenset()

    async def set_health(self, down: frozenset[tuple[str, str, int]]) -> None:
        """New connections avoid the endpoints ``down`` from now on."""
        self.down = down
        await repick(self._picks, self._frontends, down)

    async def apply(self, config: L4Config) -> None:
        wanted, picks, errors = select_frontends(config, unsupported=self._unsupported,
                                                 down=self.down)
        self._picks.update(picks)
        self._frontends = {key: (fe, kept_tally(self._frontends.get(key), fe))
                           for key, fe in wanted.items()}
        self._groups = endpoint_groups(wanted.values())
        self._backends = {ep: self._backends.get(ep) or Tally()
                          for p in picks.values() for ep in p.endpoints}
        for key in list(self._servers):
            if key not in wanted:
                srv = self._servers.pop(key)
                srv.close()  # established connections carry on
                self._picks.pop(key, None)
        for key, fe in wanted.items():
            if key in self._servers:
                continue
            try:
                srv = await asyncio.get_running_loop().create_server(
                    functools.partial(relay.Side, on_made=functools.partial(self._accept, key)),
                    fe.address, fe.port, reuse_address=True, backlog=1024)
                for ls in srv.sockets:  # (accepted sockets inherit the options)
                    set_keepalive(ls, self.keepalive)
                self._servers[key] = srv
            except OSError as e:
                errors[fe.name] = f"cannot listen on {fe.address}:{fe.port}: {e.strerror or e}"
                self._picks.pop(key, None)
        self.errors = errors
        for name, err in errors.items():
            log.warning("frontend %s: %s", name, err)

    def _accept(self, key: tuple[str, int], client: relay.Side) -> None:
        t = asyncio.get_running_loop().create_task(self._serve(key, client))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _serve(self, key: tuple[str, int], client: relay.Side) -> None:
        """Connect the accepted ``client`` (paused until linked) to a backend and relay."""
        pick = self._picks.get(key)
        fe, tally = self._frontends.get(key) or (None, Tally())
        assert client.transport is not None
        peer = client.transport.get_extra_info("peername")
        local = client.transport.get_extra_info("sockname")
        be = pick.choose(peer[:2], local[:2]) if pick else None
        flog = self.flow_log
        name, route = (fe.name, fe.route) if fe is not None else (f"{key[0]}:{key[1]}", "")
        if fe is not None and fe.proxy_protocol:
            try:
                header = await asyncio.wait_for(
                    side_header(client, fe.proxy_protocol == "optional"), PROXY_HEADER_TIMEOUT)
            except (TimeoutError, ProxyProtocolError, OSError) as e:
                proxy_refused(tally, name, e)
                if flog is not None:
                    flog.refused(name, route, peer[:2], "DPE")
                client.abort()
                return
            if header is not None and header.source is not None:
                peer, local = header.source, header.destination or local[:2]
        if be is None:
            tally.drop("no_backend")
            if flog is not None:
                flog.refused(name, route, peer, "UH")
            client.abort()
            return
        try:
            b = await connect_backend(
                be, (peer[:2], local[:2]) if fe is not None and fe.backend_proxy_protocol
                else None)
        except (TimeoutError, OSError) as e:
            log.info("backend %s:%d unreachable: %s", be[0], be[1], e)
            tally.drop("backend_unreachable")
            if flog is not None:
                flog.refused(name, route, peer, "UF", be)
            client.abort()
            return
        be_tally = self._backends.get(be)
        conn = Conn(f"{key[0]}:{key[1]}/TCP", peer, be, tally, be_tally)
        tally.flows += 1
        tally.active += 1
        if be_tally is not None:
            be_tally.flows += 1
        self.conns.add(conn)
        flow = flog.opened(name, route, peer, be) if flog is not None else None
        try:
            await copy(client, b, conn)
        finally:
            tally.active -= 1
            self.conns.discard(conn)
            if flow is not None and flog is not None:
                flog.closed(flow, conn.bytes[0], conn.bytes[1])

    def stats(self) -> tuple[list[FrontendStats], list[BackendStats]]:
        """The counters of the frontends served now and of their backend endpoints."""
        fes = [frontend_stats(fe, "TCP", t) for fe, t in self._frontends.values()]
        bes = [backend_stats(ep, t, self._groups) for ep, t in self._backends.items()]
        return fes, bes

    def flows(self) -> list[dict]:
        now = time.monotonic()
        return [c.row(now) for c in list(self.conns)]

    async def close(self) -> None:
        for srv in self._servers.values():
            srv.close()
        self._servers.clear()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
