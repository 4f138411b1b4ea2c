"""UDP in the userspace L4 plane on loopback: weights, stickiness, drain, idle expiry,
reply integrity, the flow limit and bad input. Real sockets, short timeouts."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from kgw_l4.config import BackendGroup, Endpoint, Frontend, L4Config
from kgw_l4.plane import UserspacePlane
from kgw_l4.udp import UdpProxy
from tests.helpers import free_tcp_and_udp_port


class _Echo(asyncio.DatagramProtocol):
    """A UDP backend answering ``<tag>:<payload>``, recording which clients it saw."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.peers: set[tuple[str, int]] = set()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.peers.add(addr[:2])
        self.transport.sendto(self.tag + b":" + data, addr)


async def udp_echo(tag: bytes) -> tuple[_Echo, int]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(lambda: _Echo(tag), local_addr=("127.0.0.1", 0))
    return proto, proto.transport.get_extra_info("sockname")[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ufe(port: int, groups, name: str = "udp") -> Frontend:
    return Frontend(name, "127.0.0.1", port, "UDP", tuple(
        BackendGroup(n, w, tuple(Endpoint("127.0.0.1", p) for p in ports))
        for n, w, ports in groups))


class Client:
    """A client socket (one flow) with a bounded receive."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(("127.0.0.1", port))

    async def ask(self, data: bytes, timeout: float = 2.0) -> bytes:
        loop = asyncio.get_running_loop()
        self.sock.send(data)
        return await asyncio.wait_for(loop.sock_recv(self.sock, 70000), timeout)

    def close(self) -> None:
        self.sock.close()


async def test_weights_across_many_clients_and_stickiness():
    a, pa = await udp_echo(b"a")
    b, pb = await udp_echo(b"b")
    proxy = UdpProxy()
    port = free_udp_port()
    await proxy.apply(L4Config((ufe(port, [("a", 1, [pa]), ("b", 3, [pb])]),)))
    assert proxy.errors == {}
    clients = [Client(port) for _ in range(200)]
    try:
        first = [(await c.ask(b"hi")).split(b":")[0] for c in clients]
        share_a = first.count(b"a") / len(first)
        assert abs(share_a - 0.25) < 0.1, share_a
        # every client keeps its backend for later datagrams
        again = [(await c.ask(b"again")).split(b":")[0] for c in clients[:50]]
        assert again == first[:50]
        assert proxy.stats()["udp"].flows == 200
    finally:
        for c in clients:
            c.close()
        await proxy.close()
        a.transport.close()
        b.transport.close()


async def test_reply_integrity_and_source_address():
    a, pa = await udp_echo(b"a")
    proxy = UdpProxy()
    port = free_udp_port()
    await proxy.apply(L4Config((ufe(port, [("a", 1, [pa])]),)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        for size in (0, 1, 1400, 9000, 60000):
            payload = os.urandom(size)
            await loop.sock_sendto(sock, payload, ("127.0.0.1", port))
            data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 70000), 2)
            assert data == b"a:" + payload
            assert addr == ("127.0.0.1", port)  # replies come from the frontend address
        assert len(a.peers) == 1  # one flow, one upstream socket
    finally:
        sock.close()
        await proxy.close()
        a.transport.close()


async def test_drain_keeps_flows_and_removal_repicks():
    a, pa = await udp_echo(b"a")
    b, pb = await udp_echo(b"b")
    proxy = UdpProxy()
    port = free_udp_port()
    await proxy.apply(L4Config((ufe(port, [("a", 1, [pa]), ("b", 1, [pb])]),)))
    clients = [Client(port) for _ in range(60)]
    try:
        first = [(await c.ask(b"x")).split(b":")[0] for c in clients]
        assert b"a" in first and b"b" in first
        # a drains: its flows carry on, new clients all go to b
        await proxy.apply(L4Config((ufe(port, [("a", 0, [pa]), ("b", 1, [pb])]),)))
        assert [(await c.ask(b"y")).split(b":")[0] for c in clients] == first
        fresh = [Client(port) for _ in range(30)]
        assert {(await c.ask(b"z")).split(b":")[0] for c in fresh} == {b"b"}
        for c in fresh:
            c.close()
        # a is gone: its clients move, b's clients stay
        await proxy.apply(L4Config((ufe(port, [("b", 1, [pb])]),)))
        assert {(await c.ask(b"w")).split(b":")[0] for c in clients} == {b"b"}
        # all weights 0: served but reported, existing flows still answered, new ones dropped
        await proxy.apply(L4Config((ufe(port, [("b", 0, [pb])]),)))
        assert "weight > 0" in proxy.errors["udp"]
        assert (await clients[0].ask(b"v")).startswith(b"b:")
        lone = Client(port)
        with pytest.raises(asyncio.TimeoutError):
            await lone.ask(b"nobody", timeout=0.3)
        lone.close()
        assert proxy.stats()["udp"].no_backend_drops == 1
    finally:
        for c in clients:
            c.close()
        await proxy.close()
        a.transport.close()
        b.transport.close()


async def test_idle_flows_expire():
    a, pa = await udp_echo(b"a")
    proxy = UdpProxy(idle_timeout=0.2)
    port = free_udp_port()
    await proxy.apply(L4Config((ufe(port, [("a", 1, [pa])]),)))
    c = Client(port)
    try:
        assert await c.ask(b"1") == b"a:1"
        assert proxy.stats()["udp"].flows == 1
        for _ in range(50):
            await asyncio.sleep(0.05)
            if proxy.stats()["udp"].flows == 0:
                break
        st = proxy.stats()["udp"]
        assert (st.flows, st.flows_expired) == (0, 1)
        assert await c.ask(b"2") == b"a:2"  # a new flow, a new upstream socket
        assert proxy.stats()["udp"].flows_opened == 2
        assert len(a.peers) == 2
    finally:
        c.close()
        await proxy.close()
        a.transport.close()


async def test_flow_limit_is_counted():
    a, pa = await udp_echo(b"a")
    proxy = UdpProxy(max_flows=3)
    port = free_udp_port()
    await proxy.apply(L4Config((ufe(port, [("a", 1, [pa])]),)))
    clients = [Client(port) for _ in range(4)]
    try:
        for c in clients[:3]:
            assert await c.ask(b"ok") == b"a:ok"
        with pytest.raises(asyncio.TimeoutError):
            await clients[3].ask(b"over", timeout=0.3)
        st = proxy.stats()["udp"]
        assert (st.flows, st.flow_limit_hits) == (3, 1)
        assert await clients[0].ask(b"still") == b"a:still"
    finally:
        for c in clients:
            c.close()
        await proxy.close()
        a.transport.close()


async def test_bad_input_port_clash_and_port_in_use():
    a, pa = await udp_echo(b"a")
    port = free_tcp_and_udp_port()  # "tcp" below listens on the same number
    plane = UserspacePlane()
    try:
        with pytest.raises(ValueError):
            UdpProxy(idle_timeout=0)
        await plane.apply(L4Config((
            ufe(port, [("a", 1, [pa])], "one"), ufe(port, [("a", 1, [pa])], "two"),
            ufe(free_udp_port(), [], "empty"),
            ufe(pa, [("a", 1, [pa])], "taken"),  # the backend holds that UDP port
            # TCP on the same port number is no clash
            Frontend("tcp", "127.0.0.1", port, "TCP",
                     (BackendGroup("a", 1, (Endpoint("127.0.0.1", 1),)),)),
        )))
        errs = plane.errors()
        assert "port clash" in errs["two"]
        assert errs["empty"] == "no backends"
        assert "cannot listen" in errs["taken"] and "/udp" in errs["taken"]
        assert "one" not in errs and "tcp" not in errs
        c = Client(port)
        assert await c.ask(b"via plane") == b"a:via plane"
        c.close()
        assert plane.config_dump()["udp"]["one"]["flows"] == 1
        # the frontend goes away: its socket is closed and the port is free again
        await plane.apply(L4Config())
        assert plane.errors() == {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))
    finally:
        await plane.close()
        a.transport.close()
