"""The compiled pair relay (kgw_l4._pairrelay through kgw_l4.pairrelay.PairCopier) on
loopback: bytes both ways, half-close each way, a reset from either end, the hand-over
of a long stream (sockets back, idle, no byte lost or repeated), the shutdown drain.
The splice after a hand-over needs the kernel: vm_tests/test_tlspass.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
from contextlib import ExitStack

import pytest

from kgw_l4 import pairrelay
from kgw_l4.pairrelay import FINISHED, HANDOVER, RESET, Ended, PairCopier

RelayCls = pairrelay.native()
pytestmark = pytest.mark.skipif(RelayCls is None, reason="kgw_l4._pairrelay not built "
                                "(scripts/build_ext.py) or KGW_NO_EXTENSIONS set")


def connected(stack: ExitStack) -> tuple[socket.socket, socket.socket, socket.socket,
                                          socket.socket]:
    """(client, the gateway's client side, the gateway's backend side, backend)."""
    front = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
    back = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
    client = stack.enter_context(socket.create_connection(front.getsockname()))
    a, _ = front.accept()
    b = socket.create_connection(back.getsockname())
    backend = stack.enter_context(back.accept()[0])
    for s in (client, backend):
        s.setblocking(False)
    return client, a, b, backend


async def recv_until_eof(s: socket.socket, timeout: float = 5.0) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    async with asyncio.timeout(timeout):
        while True:
            d = await loop.sock_recv(s, 65536)
            if not d:
                return bytes(out)
            out += d


async def recv_exactly(s: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    async with asyncio.timeout(timeout):
        while len(out) < n:
            d = await loop.sock_recv(s, n - len(out))
            assert d, f"EOF after {len(out)} of {n} bytes"
            out += d
    return bytes(out)


class Ends:
    def __init__(self) -> None:
        self.got: list[Ended] = []
        self.event = asyncio.Event()

    def __call__(self, end: Ended) -> None:
        self.got.append(end)
        self.event.set()

    async def wait(self, timeout: float = 5.0) -> Ended:
        async with asyncio.timeout(timeout):
            await self.event.wait()
        return self.got[0]


def reset(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


async def test_bytes_both_ways_then_client_half_closes_first():
    loop = asyncio.get_running_loop()
    copier = PairCopier(RelayCls, loop, handover=0)
    with ExitStack() as stack:
        client, a, b, backend = connected(stack)
        ends = Ends()
        assert copier.add(a, b, ends)
        assert a.fileno() == -1 and b.fileno() == -1  # the relay's now
        await loop.sock_sendall(client, b"hello backend")
        assert await recv_exactly(backend, 13) == b"hello backend"
        await loop.sock_sendall(backend, b"hello client")
        assert await recv_exactly(client, 12) == b"hello client"
        client.shutdown(socket.SHUT_WR)
        assert await recv_until_eof(backend) == b""  # the FIN came through
        # the other direction still flows after the half-close
        payload = os.urandom(300_000)
        await loop.sock_sendall(backend, payload)
        backend.shutdown(socket.SHUT_WR)
        assert await recv_until_eof(client) == payload
        end = await ends.wait()
        assert (end.kind, end.a_to_b, end.b_to_a) == (FINISHED, 13, 12 + len(payload))
    assert len(copier) == 0
    await copier.close()


async def test_backend_half_closes_first_and_the_client_keeps_sending():
    loop = asyncio.get_running_loop()
    copier = PairCopier(RelayCls, loop, handover=0)
    with ExitStack() as stack:
        client, a, b, backend = connected(stack)
        ends = Ends()
        assert copier.add(a, b, ends)
        await loop.sock_sendall(backend, b"greeting")
        backend.shutdown(socket.SHUT_WR)
        assert await recv_until_eof(client) == b"greeting"
        payload = os.urandom(500_000)
        await loop.sock_sendall(client, payload)
        client.shutdown(socket.SHUT_WR)
        assert await recv_until_eof(backend) == payload
        end = await ends.wait()
        assert (end.kind, end.a_to_b, end.b_to_a) == (FINISHED, len(payload), 8)
    await copier.close()


async def test_a_destination_that_does_not_read_holds_the_source_back_and_loses_nothing():
    """The backend reads nothing for a while: the relay keeps what it could not write,
    stops reading the client (whose send then blocks: TCP's backpressure, not a growing
    buffer here), and once the backend reads, every byte arrives in order."""
    loop = asyncio.get_running_loop()
    copier = PairCopier(RelayCls, loop, handover=0)
    n = 32 << 20
    payload = os.urandom(n)
    with ExitStack() as stack:
        client, a, b, backend = connected(stack)
        ends = Ends()
        assert copier.add(a, b, ends)
        sending = asyncio.create_task(loop.sock_sendall(client, payload))
        await asyncio.sleep(0.5)
        assert not sending.done()  # held back: the backend has not read
        ((about, _, up, down),) = copier.pairs()
        assert about is None and 0 < up < n and down == 0
        got = await recv_exactly(backend, n, 30)
        await sending
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        client.shutdown(socket.SHUT_WR)
        backend.shutdown(socket.SHUT_WR)
        end = await ends.wait()
        assert (end.kind, end.a_to_b, end.b_to_a) == (FINISHED, n, 0)
    await copier.close()


@pytest.mark.parametrize("who", ["client", "backend"])
async def test_a_reset_from_either_end_resets_the_other(who):
    loop = asyncio.get_running_loop()
    copier = PairCopier(RelayCls, loop, handover=0)
    with ExitStack() as stack:
        client, a, b, backend = connected(stack)
        ends = Ends()
        assert copier.add(a, b, ends)
        await loop.sock_sendall(client, b"x")
        assert await recv_exactly(backend, 1) == b"x"
        gone, other = (client, backend) if who == "client" else (backend, client)
        reset(gone)
        end = await ends.wait()
        assert end.kind == RESET
        with pytest.raises(ConnectionResetError):
            await recv_until_eof(other)
    await copier.close()


async def test_a_long_stream_is_handed_back_idle_with_no_byte_lost_or_repeated():
    """Both directions stream 4 MB at once; past the hand-over size the relay gives the
    sockets back, and the test copies the rest itself: both ends see exactly what was
    sent (sha256)."""
    loop = asyncio.get_running_loop()
    copier = PairCopier(RelayCls, loop, handover=256 * 1024)
    n = 4 << 20
    up, down = os.urandom(n), os.urandom(n)
    with ExitStack() as stack:
        client, a, b, backend = connected(stack)
        ends = Ends()
        assert copier.add(a, b, ends)
        tasks = [asyncio.create_task(loop.sock_sendall(client, up)),
                 asyncio.create_task(loop.sock_sendall(backend, down))]
        at_backend = asyncio.create_task(recv_exactly(backend, n, 20))
        at_client = asyncio.create_task(recv_exactly(client, n, 20))
        end = await ends.wait()
        assert end.kind == HANDOVER and end.a is not None and end.b is not None
        assert end.a_to_b + end.b_to_a >= 256 * 1024
        ga, gb = stack.enter_context(end.a), stack.enter_context(end.b)
        ga.setblocking(False)
        gb.setblocking(False)

        async def pump(src: socket.socket, dst: socket.socket, left: int) -> None:
            while left:
                d = await loop.sock_recv(src, min(left, 65536))
                assert d
                left -= len(d)
                await loop.sock_sendall(dst, d)

        await asyncio.gather(pump(ga, gb, n - end.a_to_b), pump(gb, ga, n - end.b_to_a),
                             *tasks)
        assert hashlib.sha256(await at_backend).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(await at_client).digest() == hashlib.sha256(down).digest()
    await copier.close()


async def test_close_lets_open_pairs_finish_then_resets_the_rest():
    loop = asyncio.get_running_loop()
    copier = PairCopier(RelayCls, loop, handover=0)
    with ExitStack() as stack:
        quick = connected(stack)
        stuck = connected(stack)
        quick_ends, stuck_ends = Ends(), Ends()
        assert copier.add(quick[1], quick[2], quick_ends)
        assert copier.add(stuck[1], stuck[2], stuck_ends)
        closing = asyncio.create_task(copier.close(timeout=0.5))
        await asyncio.sleep(0.05)
        # closing: no new pairs; the open ones still work and may finish
        extra = connected(stack)
        assert not copier.add(extra[1], extra[2], Ends())
        await loop.sock_sendall(quick[0], b"last words")
        quick[0].shutdown(socket.SHUT_WR)
        quick[3].shutdown(socket.SHUT_WR)
        assert await recv_until_eof(quick[3]) == b"last words"
        assert (await quick_ends.wait()).kind == FINISHED
        async with asyncio.timeout(3):
            await closing
        assert (await stuck_ends.wait(0.1)).kind == RESET  # past the drain's time
        with pytest.raises(ConnectionResetError):
            await recv_until_eof(stuck[0])


async def test_full_relay_takes_nothing():
    loop = asyncio.get_running_loop()
    copier = PairCopier(RelayCls, loop, handover=0, capacity=1)
    with ExitStack() as stack:
        one, two = connected(stack), connected(stack)
        assert copier.add(one[1], one[2], Ends())
        assert not copier.add(two[1], two[2], Ends())
        assert two[1].fileno() >= 0 and two[2].fileno() >= 0  # still the caller's
        two[1].close()
        two[2].close()
    await copier.close(timeout=0.1)
