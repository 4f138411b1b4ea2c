"""The TLS passthrough accept path (kgw_l4.tlspass, kgw_l4.acceptor) on loopback: the
batched accept callback, the task-free route-connect-splice path against the in-memory
splice maps, and the bounds on every wait (a slow ClientHello, a backend that never
answers the SYN)."""

from __future__ import annotations

import asyncio
import socket
from contextlib import ExitStack

import pytest

from kgw_l4 import abi, acceptor, pairrelay, tlspass
from kgw_l4.acceptor import Acceptor
from kgw_l4.config import BackendGroup, Endpoint, L4Config, SNIRoute, TLSPassthrough
from kgw_l4.splice import Splicer, sock_cookie
from tests.l4.test_splice_maps import FakeLoader, entries
from tests.l4.test_userspace import free_port
from tests.l4.tlshelp import client_hello


async def until(check, timeout: float = 5.0) -> None:
    """Poll ``check()`` (sync) on the running loop until true; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


class Recorder(Acceptor):
    """Records which loop turn accepted each connection."""

    def __init__(self) -> None:
        super().__init__()
        self.turn = 0
        self.turns: list[int] = []
        self.socks: list[socket.socket] = []

    def accepted(self, key, conn, peer) -> None:
        self.turns.append(self.turn)
        self.socks.append(conn)


async def test_accepts_are_batched_and_a_burst_leaves_the_loop_turns_to_others(monkeypatch):
    monkeypatch.setattr(acceptor, "ACCEPT_BATCH", 2)
    port = free_port()
    rec = Recorder()
    assert rec.listen({("127.0.0.1", port): "p"}) == {}
    loop = asyncio.get_running_loop()
    ticking = True

    def tick() -> None:  # another callback of the loop: runs between accept batches
        rec.turn += 1
        if ticking:
            loop.call_soon(tick)

    with ExitStack() as stack:
        for _ in range(7):  # queued in the backlog before the loop looks
            stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        loop.call_soon(tick)
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(rec.turns) == 7:
                break
        ticking = False
        assert len(rec.turns) == 7
        per_turn = [rec.turns.count(t) for t in set(rec.turns)]
        assert max(per_turn) <= 2 and len(per_turn) >= 4, rec.turns
        for s in rec.socks:
            s.close()
    rec.close_listeners()


def _config(port: int, backend_port: int) -> L4Config:
    grp = (BackendGroup("g", 1, (Endpoint("127.0.0.1", backend_port),)),)
    return L4Config(tls_passthrough=(TLSPassthrough("tls", "127.0.0.1", port, (
        SNIRoute("a", ("a.example.com",), grp, "ns/gw", "tls"),)),))


async def test_a_hello_already_queued_is_routed_connected_and_spliced_without_a_task():
    ld = FakeLoader()
    sp = Splicer(ld)
    proxy = tlspass.TLSPassthroughProxy(sp, pair_relay=False)
    port = free_port()
    with ExitStack() as stack:
        backend = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        await proxy.apply(_config(port, backend.getsockname()[1]))
        assert proxy.errors == {}
        hello = client_hello("a.example.com")
        client = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        client.sendall(hello)
        backend.settimeout(5)
        far, _ = await asyncio.to_thread(backend.accept)
        stack.enter_context(far)

        await until(lambda: len(entries(ld, "kgw_sockhash")) == 2)
        assert not proxy._tasks  # routed, connected and spliced from callbacks
        (conn,) = {id(c): c for c in sp._conns.values()}.values()
        assert set(entries(ld, "kgw_sockhash")) == {abi.u64(sock_cookie(conn.a)),
                                                     abi.u64(sock_cookie(conn.b))}
        # the hello was peeked, not read: it is still queued for the verdict
        assert conn.a.recv(len(hello) + 10, socket.MSG_PEEK) == hello
        assert conn.base_received == {conn.a.fileno(): 0, conn.b.fileno(): 0}
        fes, _ = proxy.stats()
        (fe,) = [f for f in fes if f.route == "a"]
        assert (fe.flows, fe.active) == (1, 1)
        assert fe.bytes is not None  # (the splice maps' count: nothing redirected yet here)
        await proxy.close()
        await sp.close()
    ld.close()


@pytest.mark.skipif(pairrelay.native() is None, reason="kgw_l4._pairrelay not built")
async def test_a_hello_already_queued_is_copied_by_the_pair_relay_without_a_task():
    """With the pair relay the connection is copied by it (nothing in the sockhash): the
    peeked hello reaches the backend first, then bytes flow both ways; the flow log is
    told the bytes when it ends."""
    ld = FakeLoader()
    sp = Splicer(ld)
    proxy = tlspass.TLSPassthroughProxy(sp)
    closed: list[tuple[int, int]] = []

    class FlowLog:
        def opened(self, *args):
            return "flow"

        def closed(self, flow, up, down):
            closed.append((up, down))

        def refused(self, *args):
            raise AssertionError(args)

    proxy.flow_log = FlowLog()  # type: ignore[assignment]
    port = free_port()
    with ExitStack() as stack:
        backend = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        await proxy.apply(_config(port, backend.getsockname()[1]))
        hello = client_hello("a.example.com")
        client = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        client.sendall(hello)
        backend.settimeout(5)
        far, _ = await asyncio.to_thread(backend.accept)
        stack.enter_context(far)
        far.settimeout(5)
        client.settimeout(5)
        got = b""
        while len(got) < len(hello) + 5:
            if len(got) == len(hello):
                client.sendall(b"after")
            got += await asyncio.to_thread(far.recv, 65536)
        assert got == hello + b"after"
        assert not proxy._tasks and entries(ld, "kgw_sockhash") == {}
        assert proxy.copier is not None and len(proxy.copier) == 1
        (row,) = proxy.relayed()  # (kgw-inspect's view, in the admin API's config dump)
        assert (row["route"], row["backend"], row["bytes_to_backend"], row["bytes_to_client"]) \
            == ("a", "127.0.0.1:%d" % backend.getsockname()[1], len(hello) + 5, 0)
        # /metrics while it is open: the relay's bytes so far, per route and per endpoint
        fes, bes = proxy.stats()
        (fe,) = [f for f in fes if f.route == "a"]
        assert (fe.bytes, fe.active, fe.flows) == ((len(hello) + 5, 0), 1, 1)
        assert [b.bytes for b in bes] == [(len(hello) + 5, 0)]
        far.sendall(b"server flight")
        far.shutdown(socket.SHUT_WR)
        assert await asyncio.to_thread(client.recv, 100) == b"server flight"
        client.shutdown(socket.SHUT_WR)
        assert await asyncio.to_thread(far.recv, 100) == b""
        await until(lambda: closed == [(len(hello) + 5, 13)])
        assert proxy.relayed() == []
        fes, bes = proxy.stats()
        (fe,) = [f for f in fes if f.route == "a"]
        assert (fe.bytes, fe.active, fe.flows) == ((len(hello) + 5, 13), 0, 1)
        assert [b.bytes for b in bes] == [(len(hello) + 5, 13)]
        await proxy.close()
        await sp.close()
    ld.close()


async def test_a_slow_client_hello_does_not_hold_up_the_next_connections(monkeypatch):
    ld = FakeLoader()
    sp = Splicer(ld)
    proxy = tlspass.TLSPassthroughProxy(sp, pair_relay=False)
    port = free_port()
    with ExitStack() as stack:
        backend = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        backend.setblocking(False)
        await proxy.apply(_config(port, backend.getsockname()[1]))
        hello = client_hello("a.example.com")
        slow = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        slow.sendall(hello[:7])  # a first segment, the rest later
        await asyncio.sleep(0.1)
        fast = [stack.enter_context(socket.create_connection(("127.0.0.1", port)))
                for _ in range(3)]
        for s in fast:
            s.sendall(hello)

        def spliced(n: int) -> bool:
            return len({id(c) for c in sp._conns.values()}) == n
        await until(lambda: spliced(3))
        assert len(proxy._tasks) == 1  # the slow one waits in its own task
        slow.sendall(hello[7:])
        await until(lambda: spliced(4))
        fes, _ = proxy.stats()
        assert [f.flows for f in fes if f.route == "a"] == [4]
        await proxy.close()
        await sp.close()
    ld.close()


async def test_a_client_that_never_sends_its_hello_is_dropped_after_the_timeout(monkeypatch):
    monkeypatch.setattr(tlspass, "HELLO_TIMEOUT", 0.3)
    proxy = tlspass.TLSPassthroughProxy(None)
    port = free_port()
    await proxy.apply(_config(port, free_port()))
    with socket.create_connection(("127.0.0.1", port)) as silent:
        silent.sendall(b"\x16\x03")  # not even a record header: wait for more
        silent.settimeout(5)
        # reset by the proxy once HELLO_TIMEOUT has passed
        try:
            got = await asyncio.to_thread(silent.recv, 10)
        except ConnectionResetError:
            got = b""
        assert got == b""
    fes, _ = proxy.stats()
    (fe,) = [f for f in fes if f.route == ""]
    assert fe.drops == {"bad_client_hello": 1}
    await proxy.close()


async def test_a_backend_that_never_answers_the_syn_is_given_up(monkeypatch):
    monkeypatch.setattr(tlspass, "CONNECT_TIMEOUT", 0.3)
    monkeypatch.setattr(tlspass, "SWEEP_INTERVAL", 0.05)
    ld = FakeLoader()
    sp = Splicer(ld)
    proxy = tlspass.TLSPassthroughProxy(sp)
    port = free_port()
    with ExitStack() as stack:
        # A backend whose accept queue is full: the kernel drops further SYNs, so the
        # connect stays in progress.
        full = stack.enter_context(socket.socket())
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(full.getsockname())
            stack.enter_context(s)
        await asyncio.sleep(0.1)
        await proxy.apply(_config(port, full.getsockname()[1]))
        client = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        client.sendall(client_hello("a.example.com"))

        def dropped() -> bool:
            fes, _ = proxy.stats()
            return [f.drops for f in fes if f.route == "a"] == [{"backend_unreachable": 1}]
        await until(dropped)
        assert not proxy._pending and proxy._sweep is None
        assert entries(ld, "kgw_sockhash") == {}
        await proxy.close()
        await sp.close()
    ld.close()
