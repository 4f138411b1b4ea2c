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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass

from .config import L4Config
from .userspace import select_frontends

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

    __slots__ = ("frontend", "client", "backend", "sock", "last", "closed")

    def __init__(self, frontend: "UdpFrontend", client: Key, backend: Key) -> None:
        self.frontend = frontend
        self.client = client
        self.backend = backend
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
        self.last = time.monotonic()

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        try:
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            self.frontend.send_errors += 1  # buffer full: UDP may drop, and does
        except OSError:  # ECONNREFUSED from an earlier ICMP port unreachable, and the like
            self.frontend.send_errors += 1

    def _readable(self) -> None:
        for _ in range(READ_BURST):
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP errors surface here; the flow stays until idle
                self.frontend.send_errors += 1
                return
            self.last = time.monotonic()
            self.frontend.reply(data, self.client)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.frontend.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class UdpFrontend(asyncio.DatagramProtocol):
    """The listening socket of one UDP frontend and its flows."""

    def __init__(self, name: str, key: Key, pick, *, idle_timeout: float, max_flows: int) -> None:
        self.name = name
        self.key = key
        self.pick = pick
        self.idle_timeout = idle_timeout
        self.max_flows = max_flows
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.lost: asyncio.Future[None] = self.loop.create_future()  # the socket is closed
        self.local: Key = key
        self.flows: dict[Key, _Flow] = {}
        self.flows_opened = self.flows_expired = self.flow_limit_hits = 0
        self.no_backend_drops = self.oversize_drops = self.send_errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) > MAX_DATAGRAM:
            self.oversize_drops += 1
            return
        client: Key = addr[:2]
        flow = self.flows.get(client)
        if flow is None:
            if len(self.flows) >= self.max_flows:
                self.flow_limit_hits += 1
                return
            backend = self.pick.choose(client, self.local, socket.IPPROTO_UDP)
            if backend is None:
                self.no_backend_drops += 1
                return
            try:
                flow = _Flow(self, client, backend)
            except OSError as e:
                log.info("frontend %s: cannot open a flow to %s:%d: %s", self.name, *backend, e)
                self.send_errors += 1
                return
            self.flows[client] = flow
            self.flows_opened += 1
        flow.send(data)

    def reply(self, data: bytes, client: Key) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, client)

    def error_received(self, exc: Exception) -> None:
        self.send_errors += 1  # an ICMP error for a reply to a client: nothing to do

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.close_flows()
        if not self.lost.done():
            self.lost.set_result(None)

    def update(self, name: str, pick) -> None:
        """A new backend table: flows whose backend is gone are closed, others stay."""
        self.name = name
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
        return UdpStats(len(self.flows), self.flows_opened, self.flows_expired, self.flow_limit_hits,
                        self.no_backend_drops, self.oversize_drops, self.send_errors)


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

    async def apply(self, config: L4Config) -> None:
        wanted, picks, errors = select_frontends(config, "UDP", keep_drained=True)
        await self._drop_all([k for k in self.frontends if k not in wanted])
        loop = asyncio.get_running_loop()
        for key, fe in wanted.items():
            cur = self.frontends.get(key)
            if cur is not None:
                cur.update(fe.name, picks[key])
                continue
            proto = UdpFrontend(fe.name, key, picks[key], idle_timeout=self.idle_timeout,
                                max_flows=self.max_flows)
            family = socket.AF_INET6 if ":" in fe.address else socket.AF_INET
            try:
                # no SO_REUSEADDR: for UDP it would let two sockets share the port
                await loop.create_datagram_endpoint(lambda p=proto: p, local_addr=key, family=family)
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

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self._drop_all(list(self.frontends))


__all__ = ["IDLE_TIMEOUT_S", "MAX_FLOWS", "MAX_DATAGRAM", "UdpProxy", "UdpFrontend", "UdpStats"]
