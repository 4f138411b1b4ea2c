"""The order a held direction's bytes reach the destination in, with the verdict program's
decisions played by the test (no kernel program): real loopback sockets, the in-memory
splice maps, and a "kernel worker" that writes redirected bytes into the destination when
the test says. vm_tests/test_splice.py runs the same relay against the real program.

The interleaving here is the one that reordered streams under load: the agent publishes
that it has taken every held byte, and before it checks whether more were held the
verdict redirects a piece (still queued for the kernel worker) and holds the next one."""

from __future__ import annotations

import asyncio
import socket
from contextlib import ExitStack

import pytest

from kgw_l4 import abi
from kgw_l4.splice import Splicer, sock_cookie
from tests.l4.test_splice_maps import FakeLoader

PIECE = 64 * 1024


def connected(stack: ExitStack) -> tuple[socket.socket, ...]:
    """(client, the gateway's client side, the gateway's backend side, backend)."""
    front = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
    back = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
    client = stack.enter_context(socket.create_connection(front.getsockname()))
    a, _ = front.accept()
    b = socket.create_connection(back.getsockname())
    backend = stack.enter_context(back.accept()[0])
    return client, a, b, backend


class Verdict:
    """sockmap.c's bookkeeping for the client -> backend direction: a redirected piece is
    counted in kgw_splice_peer.redirected and handed to the worker; a held piece is
    counted in .passed and sent by the client, so that it lands in the gateway socket's
    receive queue for the agent to read."""

    def __init__(self, ld: FakeLoader, client: socket.socket, a: socket.socket,
                 b: socket.socket) -> None:
        self.peers = ld.maps.get("kgw_splice_peer")
        self.client, self.b = client, b
        self.ka, self.kb = sock_cookie(a), sock_cookie(b)
        self.redirected = self.passed = 0

    def _publish(self) -> None:
        self.peers.update(abi.u64(self.ka), bytes(abi.SplicePeer(
            peer=self.kb, redirected=self.redirected, passed=self.passed)))

    def redirect(self, piece: bytes, delay: float | None = None) -> None:
        """The worker writes it into the destination now, or ``delay`` seconds later."""
        self.redirected += len(piece)
        self._publish()
        if delay is None:
            self.b.sendall(piece)
        else:
            asyncio.get_running_loop().call_later(delay, self.b.sendall, piece)

    def hold(self, piece: bytes) -> None:
        self.passed += len(piece)
        self._publish()
        self.client.sendall(piece)


async def read_exactly(sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    out = bytearray()
    async with asyncio.timeout(timeout):
        while len(out) < n:
            d = await loop.sock_recv(sock, n - len(out))
            assert d, "backend connection closed early"
            out += d
    return bytes(out)


async def test_bytes_held_after_a_redirect_wait_for_it_whatever_the_release_check_saw():
    """Pieces 0..3 of the stream: 0 redirected, 1 held (the agent copies it), then right
    after the agent publishes that it took piece 1, 2 is redirected (the worker writes it
    0.2 s later) and 3 held. The release check sees 3 and the relay goes on copying: it
    must not write 3 before the worker has written 2. (Before the fix it did: the backend
    got 0, 1, 3, 2.)"""
    ld = FakeLoader()
    sp = Splicer(ld)
    pieces = [bytes([i]) * PIECE for i in range(4)]
    try:
        with ExitStack() as stack:
            client, a, b, backend = connected(stack)
            await sp.splice(a, b)
            v = Verdict(ld, client, a, b)
            hold_map = ld.maps.get("kgw_splice_hold")
            publish = hold_map.update

            def published(key: bytes, value: bytes, flags: int = 0) -> None:
                publish(key, value, flags)
                if key == abi.u64(v.ka) and abi.u64_of(value) == v.passed == PIECE:
                    # nothing owed now: the verdict's next skbs go to the kernel again
                    v.redirect(pieces[2], delay=0.2)
                    v.hold(pieces[3])  # the peer's backlog is long again
            hold_map.update = published  # type: ignore[method-assign]

            v.redirect(pieces[0])
            v.hold(pieces[1])
            ld.on_record(bytes(abi.SpliceEvent(cookie=v.ka, kind=abi.SPLICE_EVT_HOLD)))
            got = await read_exactly(backend, 4 * PIECE)
            order = [got[i] for i in range(0, len(got), PIECE)]
            assert order == [0, 1, 2, 3]
            assert got == b"".join(pieces)
            way = sp._conns[a.fileno()].ways[a.fileno()]
            await asyncio.wait_for(way.relay, 5)  # caught up: the direction is the kernel's
            assert abi.u64_of(hold_map.lookup(abi.u64(v.ka))) == 2 * PIECE == v.passed
            await sp.close()
    finally:
        ld.close()


@pytest.mark.parametrize("event_first", [False, True], ids=["eof-first", "event-first"])
async def test_bytes_held_before_the_peer_was_spliced_reach_it_before_the_fin(event_first):
    """A backend that speaks and closes at once: its greeting and FIN can reach the
    verdict while the client socket is not in the sockhash yet (the two are inserted one
    after the other), and the verdict holds them (bpf/sockmap.c). The agent then hears of
    the EOF and of the hold in either order; either way it must copy the greeting to the
    client and then pass the FIN on. (With the EOF first it used to wait for the client
    socket to acknowledge the held bytes, which only copying them can bring about: the
    client timed out.)"""
    ld = FakeLoader()
    sp = Splicer(ld)
    greeting = b"10.201.2.11\n"
    try:
        with ExitStack() as stack:
            client, a, b, backend = connected(stack)
            await sp.splice(a, b)
            ka, kb = sock_cookie(a), sock_cookie(b)
            ld.maps.get("kgw_splice_peer").update(abi.u64(kb), bytes(abi.SplicePeer(
                peer=ka, passed=len(greeting))))
            if event_first:
                ld.on_record(bytes(abi.SpliceEvent(cookie=kb, kind=abi.SPLICE_EVT_HOLD)))
            backend.sendall(greeting)
            backend.shutdown(socket.SHUT_WR)
            assert await read_exactly(client, len(greeting)) == greeting
            eof = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(client, 1), 5)
            assert eof == b"", "the FIN did not follow"
            await sp.close()
    finally:
        ld.close()
