"""UDP in the userspace L4 proxy: the fallback for UDPRoute frontends when BPF cannot run.

UDP has no connections, so the proxy makes flows: the first datagram from a client
(source address, port) picks a backend with the same weighted Maglev table as TCP
(keyed by the client's 5-tuple with protocol UDP) and opens a connected UDP socket to
it. Later datagrams of that client go through the same socket, so a client sticks to
its backend; the backend's replies come back from the frontend socket, so the client
sees the address it sent to. A flow idle for ``IDLE_TIMEOUT_S`` (no datagram either
way) is closed; at most ``MAX_FLOWS`` flows per frontend exist at once, and datagrams
from new clients beyond that are dropped and counted (``flow_limit_hits``).

Config changes keep each flow on its backend while that backend is still listed (a
group of weight 0 drains: its flows carry on, it gets no new ones); a flow whose
backend disappeared is closed, and the client's next datagram picks anew.

Counters (/metrics, kgw-inspect): each frontend and backend endpoint has a
``metrics.Tally`` of datagrams and bytes each way, flows and drops by reason
(``flow_limit``, ``no_backend``, ``oversize``, ``send_error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import Frontend, L4Config
from .metrics import BackendStats, FrontendStats, Tally, endpoint_groups
from .userspace import backend_stats, frontend_stats, select_frontends

if TYPE_CHECKING:
    from .flowlog import Flow, FlowLog

log = logging.getLogger("kgw.l4.udp")

#: A flow with no datagram either way for this long is closed (conntrack's UDP default
#: for a stream is longer; 60 s is what most L4 balancers use for UDP).
IDLE_TIMEOUT_S = 60.0
#: Flows per frontend; a new client beyond this has its datagrams dropped (counted).
MAX_FLOWS = 16384
#: The largest UDP payload there is (the IPv4/IPv6 length field); nothing larger is sent.
MAX_DATAGRAM = 65535
#: Replies read from one backend socket per readiness callback, so one busy backend
#: cannot starve the event loop.
READ_BURST = 64

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class UdpStats:
    """Counters of one UDP frontend, for config dumps and tests."""

    flows: int
    flows_opened: int
    flows_expired: int
    flow_limit_hits: int
    no_backend_drops: int
    oversize_drops: int
    send_errors: int


class _Flow:
    """One client's flow: a connected UDP socket to its backend, replies relayed back."""

    __slots__ = ("frontend", "client", "backend", "sock", "last", "closed", "started", "tally",
                 "bytes", "logged")

    def __init__(self, frontend: UdpFrontend, client: Key, backend: Key, tally: Tally) -> None:
        self.frontend = frontend
        self.client = client
        self.backend = backend
        self.tally = tally  # the backend endpoint's
        self.bytes = [0, 0]
        #: its open line in the flow log (kgw_l4.flowlog), if the log is on
        self.logged: Flow | None = None
        family = socket.AF_INET6 if ":" in backend[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.closed = False
        try:
            self.sock.setblocking(False)
            self.sock.connect(backend)  # UDP connect: no packet, fixes the peer
            frontend.loop.add_reader(self.sock.fileno(), self._readable)
        except BaseException:
            self.sock.close()
            raise
        self.last = self.started = time.monotonic()

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        try:
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            self.frontend.tally.drop("send_error")  # buffer full: UDP may drop, and does
            return
        except OSError:  # ECONNREFUSED from an earlier ICMP port unreachable, and the like
            self.frontend.tally.drop("send_error")
            return
        n = len(data)
        self.bytes[0] += n
        for t in (self.frontend.tally, self.tally):
            t.packets[0] += 1
            t.bytes[0] += n

    def _readable(self) -> None:
        for _ in range(READ_BURST):
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP errors surface here; the flow stays until idle
                self.frontend.tally.drop("send_error")
                return
            self.last = time.monotonic()
            if self.frontend.reply(data, self.client):
                n = len(data)
                self.bytes[1] += n
                for t in (self.frontend.tally, self.tally):
                    t.packets[1] += 1
                    t.bytes[1] += n

    def row(self, now: float, frontend: str) -> dict:
        return {"proto": "UDP", "frontend": frontend, "client": "%s:%d" % self.client[:2],
                "backend": "%s:%d" % self.backend[:2], "age_s": round(now - self.started, 1),
                "idle_s": round(now - self.last, 1), "bytes_to_backend": self.bytes[0],
                "bytes_to_client": self.bytes[1]}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.frontend.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        flog = self.frontend.flow_log
        if self.logged is not None and flog is not None:
            flog.closed(self.logged, self.bytes[0], self.bytes[1])


class UdpFrontend(asyncio.DatagramProtocol):
    """The listening socket of one UDP frontend and its flows."""

    def __init__(self, name: str, key: Key, pick, *, idle_timeout: float, max_flows: int,
                 config: Frontend | None = None) -> None:
        self.name = name
        self.config = config
        self.key = key
        self.pick = pick
        self.idle_timeout = idle_timeout
        self.max_flows = max_flows
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.lost: asyncio.Future[None] = self.loop.create_future()  # the socket is closed
        self.local: Key = key
        self.flows: dict[Key, _Flow] = {}
        self.flows_expired = 0
        #: flows, datagrams and bytes each way, drops by reason (the module docstring)
        self.tally = Tally()
        #: backend endpoint -> its counters (shared with the proxy's other frontends)
        self.backends: dict[Key, Tally] = {}
        #: Flow events (kgw_l4.flowlog), when the access log is on.
        self.flow_log: FlowLog | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) > MAX_DATAGRAM:
            self.tally.drop("oversize")
            return
        client: Key = addr[:2]
        flow = self.flows.get(client)
        if flow is None:
            if len(self.flows) >= self.max_flows:
                self.tally.drop("flow_limit")
                return
            backend = self.pick.choose(client, self.local, socket.IPPROTO_UDP)
            flog = self.flow_log
            route = self.config.route if self.config is not None else ""
            if backend is None:
                self.tally.drop("no_backend")
                if flog is not None:
                    flog.refused(self.name, route, client, "UH")
                return
            be_tally = self.backends.get(backend)
            if be_tally is None:
                be_tally = self.backends[backend] = Tally()
            try:
                flow = _Flow(self, client, backend, be_tally)
            except OSError as e:
                log.info("frontend %s: cannot open a flow to %s:%d: %s", self.name, *backend, e)
                self.tally.drop("send_error")
                if flog is not None:
                    flog.refused(self.name, route, client, "UF", backend)
                return
            if flog is not None:
                flow.logged = flog.opened(self.name, route, client, backend)
            self.flows[client] = flow
            self.tally.flows += 1
            be_tally.flows += 1
        flow.send(data)

    def reply(self, data: bytes, client: Key) -> bool:
        """Send a backend's reply to its client; False if the socket is gone."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, client)
            return True
        return False

    def error_received(self, exc: Exception) -> None:
        self.tally.drop("send_error")  # an ICMP error for a reply to a client: nothing to do

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.close_flows()
        if not self.lost.done():
            self.lost.set_result(None)

    def update(self, name: str, pick, config: Frontend | None = None) -> None:
        """A new backend table: flows whose backend is gone are closed, others stay."""
        if config is not None and self.config is not None and (
                (config.gateway, config.listener, config.route) !=
                (self.config.gateway, self.config.listener, self.config.route)):
            self.tally = Tally()  # new labels: new series, from 0
        self.name = name
        self.config = config
        self.pick = pick
        listed = set(pick.endpoints)
        for client, flow in list(self.flows.items()):
            if flow.backend not in listed:
                flow.close()
                del self.flows[client]

    def expire(self, now: float) -> int:
        n = 0
        for client, flow in list(self.flows.items()):
            if now - flow.last >= self.idle_timeout:
                flow.close()
                del self.flows[client]
                n += 1
        self.flows_expired += n
        return n

    def close_flows(self) -> None:
        for flow in self.flows.values():
            flow.close()
        self.flows.clear()

    def stats(self) -> UdpStats:
        d = self.tally.drops
        return UdpStats(len(self.flows), self.tally.flows, self.flows_expired,
                        d.get("flow_limit", 0),
                        d.get("no_backend", 0), d.get("oversize", 0), d.get("send_error", 0))

    def frontend_stats(self) -> FrontendStats:
        fe = self.config or Frontend(self.name, self.key[0], self.key[1], "UDP")
        t = self.tally
        t.active = len(self.flows)
        return frontend_stats(fe, "UDP", t, packets=True)


class UdpProxy:
    """All UDP frontends of the userspace plane: apply() a config, errors, close()."""

    def __init__(self, *, idle_timeout: float = IDLE_TIMEOUT_S, max_flows: int = MAX_FLOWS) -> None:
        if idle_timeout <= 0 or max_flows <= 0:
            raise ValueError("idle_timeout and max_flows must be positive")
        self.idle_timeout = idle_timeout
        self.max_flows = max_flows
        self.frontends: dict[Key, UdpFrontend] = {}
        self.errors: dict[str, str] = {}
        self._sweeper: asyncio.Task | None = None
        #: backend endpoint -> its counters, shared by every frontend; endpoint -> groups
        self._backends: dict[Key, Tally] = {}
        self._groups: dict[str, set[str]] = {}
        #: Flow events (kgw_l4.flowlog), when the access log is on.
        self.flow_log: FlowLog | None = None

    async def apply(self, config: L4Config) -> None:
        wanted, picks, errors = select_frontends(config, "UDP", keep_drained=True)
        self._groups = endpoint_groups(wanted.values())
        listed = {ep for p in picks.values() for ep in p.endpoints}
        for ep in [ep for ep in self._backends if ep not in listed]:
            del self._backends[ep]  # (the dict is shared: changed in place)
        await self._drop_all([k for k in self.frontends if k not in wanted])
        loop = asyncio.get_running_loop()
        for key, fe in wanted.items():
            cur = self.frontends.get(key)
            if cur is not None:
                cur.update(fe.name, picks[key], fe)
                continue
            proto = UdpFrontend(fe.name, key, picks[key], idle_timeout=self.idle_timeout,
                                max_flows=self.max_flows, config=fe)
            proto.backends = self._backends
            proto.flow_log = self.flow_log
            family = socket.AF_INET6 if ":" in fe.address else socket.AF_INET
            try:
                # no SO_REUSEADDR: for UDP it would let two sockets share the port
                # the factory is called before this returns
                await loop.create_datagram_endpoint(lambda: proto, local_addr=key,  # noqa: B023
                                                    family=family)
            except OSError as e:
                errors[fe.name] = f"cannot listen on {fe.address}:{fe.port}/udp: {e.strerror or e}"
                continue
            self.frontends[key] = proto
        self.errors = errors
        for name, err in errors.items():
            log.warning("frontend %s: %s", name, err)
        if self.frontends and self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())

    async def _drop_all(self, keys: list[Key]) -> None:
        """Close these frontends and wait until their sockets are closed, so the port is
        free when apply() returns (asyncio closes a transport's socket a tick later)."""
        waits = []
        for key in keys:
            fe = self.frontends.pop(key)
            fe.close_flows()
            if fe.transport is not None:
                fe.transport.close()
                waits.append(fe.lost)
        if waits:
            await asyncio.wait(waits, timeout=1.0)

    async def _sweep(self) -> None:
        interval = min(max(self.idle_timeout / 4, 0.01), 5.0)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for fe in list(self.frontends.values()):
                fe.expire(now)

    def stats(self) -> dict[str, UdpStats]:
        return {fe.name: fe.stats() for fe in self.frontends.values()}

    def l4_stats(self) -> tuple[list[FrontendStats], list[BackendStats],
                                dict[str, tuple[int, int]]]:
        """The frontends' and backend endpoints' counters (/metrics), and each frontend's
        flow table as (flows, capacity)."""
        fes = [fe.frontend_stats() for fe in self.frontends.values()]
        bes = [backend_stats(ep, t, self._groups, packets=True) for ep, t in self._backends.items()]
        tables = {f"udp_flows {fe.key[0]}:{fe.key[1]}": (len(fe.flows), fe.max_flows)
                  for fe in self.frontends.values()}
        return fes, bes, tables

    def flows(self) -> list[dict]:
        now = time.monotonic()
        return [flow.row(now, f"{fe.key[0]}:{fe.key[1]}/UDP")
                for fe in list(self.frontends.values()) for flow in list(fe.flows.values())]

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self._drop_all(list(self.frontends))


__all__ = ["IDLE_TIMEOUT_S", "MAX_FLOWS", "MAX_DATAGRAM", "UdpProxy", "UdpFrontend", "UdpStats"]
