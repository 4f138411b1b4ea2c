"""kgw_l4.relay on real sockets (socket pairs: the relay holds one end of each, the test
the other), on asyncio's loop and on uvloop (the one `kgw run` uses): bytes both ways and
counted, what a side read before the pair was linked, half-close passed on through plain
TCP, an EOF through TLS ending the pair, flow control against a reader that stops, and
cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from kgw_l4 import relay
from tests.l4.tlshelp import make_cert

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def on(loop: str, main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(main, 30))


async def side(sock: socket.socket, count: list[int] | None = None,
               ssl_ctx: ssl.SSLContext | None = None) -> relay.Side:
    s = relay.Side((lambda n: count.append(n)) if count is not None else None)
    loop = asyncio.get_running_loop()
    if ssl_ctx is None:
        await loop.connect_accepted_socket(lambda: s, sock=sock)
    else:
        await loop.connect_accepted_socket(lambda: s, sock=sock, ssl=ssl_ctx,
                                           ssl_handshake_timeout=10)
    return s


async def peer(sock: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(sock=sock)


@pytest.mark.parametrize("loop", LOOPS)
def test_both_ways_counted_and_half_close_passed_on(loop):
    async def main():
        c_relay, c_test = socket.socketpair()
        b_relay, b_test = socket.socketpair()
        up: list[int] = []
        down: list[int] = []
        c, b = await side(c_relay, up), await side(b_relay, down)
        relay.link(c, b)
        done = asyncio.ensure_future(relay.run(c, b))
        cr, cw = await peer(c_test)
        br, bw = await peer(b_test)
        cw.write(b"x" * 100_000)
        cw.write_eof()  # the client is done sending; the backend still answers
        assert await br.read() == b"x" * 100_000  # EOF reached the backend
        bw.write(b"answer after the client's EOF")
        bw.close()
        assert await cr.read() == b"answer after the client's EOF"
        await done
        assert sum(up) == 100_000 and sum(down) == len(b"answer after the client's EOF")
        cw.close()
    on(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_what_arrives_before_the_link_is_kept_and_counted(loop):
    async def main():
        c_relay, c_test = socket.socketpair()
        b_relay, b_test = socket.socketpair()
        up: list[int] = []
        c_test.sendall(b"early bytes")
        c = await side(c_relay, up)
        await asyncio.sleep(0.05)  # paused until linked: nothing may be lost meanwhile
        b = await side(b_relay, [])
        relay.link(c, b)
        done = asyncio.ensure_future(relay.run(c, b))
        br, bw = await peer(b_test)
        assert await asyncio.wait_for(br.readexactly(11), 5) == b"early bytes"
        assert sum(up) == 11
        c_test.close()
        assert await asyncio.wait_for(br.read(), 5) == b""  # the client's EOF passed on
        bw.close()
        await done
    on(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_an_eof_tls_cannot_pass_on_ends_the_pair(loop, tmp_path):
    """The backend ends its stream; the client's side is TLS, which cannot half-close: the
    client sees the data and then the end, and the relay finishes."""
    cert, key = make_cert(tmp_path, "relay.example")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))

    async def main():
        c_relay, c_test = socket.socketpair()
        b_relay, b_test = socket.socketpair()
        handshake = asyncio.ensure_future(side(c_relay, [], ssl_ctx=server))
        cr, cw = await asyncio.open_connection(sock=c_test, ssl=client,
                                               server_hostname="relay.example")
        c = await handshake
        b = await side(b_relay, [])
        relay.link(c, b)
        done = asyncio.ensure_future(relay.run(c, b))
        br, bw = await peer(b_test)
        cw.write(b"hello")
        assert await br.readexactly(5) == b"hello"
        bw.write(b"bye")
        bw.write_eof()
        assert await cr.read() == b"bye"
        await done
        assert await br.read() == b""  # and the backend's side was closed too
        bw.close()
        cw.close()
    on(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reader_that_stops_pauses_the_writer(loop):
    """The backend reads nothing: the relay's buffer towards it stays bounded (the client's
    side stops reading), and everything arrives once the backend reads."""
    async def main():
        c_relay, c_test = socket.socketpair()
        b_relay, b_test = socket.socketpair()
        c, b = await side(c_relay, []), await side(b_relay, [])
        relay.link(c, b)
        done = asyncio.ensure_future(relay.run(c, b))
        cr, cw = await peer(c_test)
        br, bw = await peer(b_test)
        total = 64 * 1024 * 1024
        chunk = b"y" * (1024 * 1024)

        async def send():
            for _ in range(total // len(chunk)):
                cw.write(chunk)
                await cw.drain()
            cw.write_eof()

        sender = asyncio.ensure_future(send())
        await asyncio.sleep(0.5)
        assert b.transport is not None
        held = b.transport.get_write_buffer_size()
        assert held < 8 * 1024 * 1024, held  # bounded, not the 64 MiB sent
        assert not sender.done()  # the client is held back
        got = 0
        while data := await br.read(1 << 20):
            got += len(data)
        assert got == total
        await sender
        bw.close()
        await done
        cw.close()
    on(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_cancelled_relay_aborts_both_sides(loop):
    async def main():
        c_relay, c_test = socket.socketpair()
        b_relay, b_test = socket.socketpair()
        c, b = await side(c_relay), await side(b_relay)
        relay.link(c, b)
        task = asyncio.ensure_future(relay.run(c, b))
        cr, cw = await peer(c_test)
        br, bw = await peer(b_test)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(cr.read(), 5) == b""
        assert await asyncio.wait_for(br.read(), 5) == b""
        cw.close()
        bw.close()
    on(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_peer_that_resets_mid_stream_ends_the_pair_quietly(loop, caplog):
    """The backend resets while the client is still sending: what arrives for it is
    dropped (no write to its closed transport, which uvloop refuses with an error), and
    the pair ends."""
    async def main():
        c_relay, c_test = socket.socketpair()
        b_relay = socket.create_server(("127.0.0.1", 0))
        b_test = socket.create_connection(b_relay.getsockname())
        b_accepted, _ = b_relay.accept()
        b_relay.close()
        c, b = await side(c_relay, []), await side(b_accepted, [])
        relay.link(c, b)
        done = asyncio.ensure_future(relay.run(c, b))
        cr, cw = await peer(c_test)

        async def send():
            with contextlib.suppress(ConnectionError):
                for _ in range(2000):
                    cw.write(b"z" * 65536)
                    await cw.drain()

        sender = asyncio.ensure_future(send())
        await asyncio.to_thread(b_test.recv, 65536)
        b_test.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        b_test.close()  # a reset
        await asyncio.wait_for(done, 10)
        sender.cancel()
        cw.close()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        on(loop, main())
    assert not [r for r in caplog.records if "Fatal error" in r.getMessage()], caplog.text


@pytest.mark.parametrize("loop", LOOPS)
def test_nothing_is_done_to_a_peer_transport_already_closed(loop):
    """Between a transport's close (an error, an abort) and its connection_lost callback,
    the other side may still read, fill or drain: what it reads is dropped and nothing is
    asked of the closed transport (uvloop raises RuntimeError on one; asyncio would write
    into the void)."""
    async def main():
        c_relay, c_test = socket.socketpair()
        b_relay, b_test = socket.socketpair()
        up: list[int] = []
        c, b = await side(c_relay, up), await side(b_relay, [])
        relay.link(c, b)
        done = asyncio.ensure_future(relay.run(c, b))
        assert b.transport is not None
        b.transport.abort()  # closed now; its connection_lost comes on a later loop turn
        c.data_received(b"for a closed peer")
        c.pause_writing()
        c.resume_writing()
        assert c.eof_received() is False  # nowhere to pass the EOF: the pair ends
        assert up == []
        await asyncio.wait_for(done, 5)
        c_test.close()
        b_test.close()
    on(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_an_unlinked_side_wakes_its_reader_on_each_arrival_and_at_the_end(loop):
    async def main():
        c_relay, c_test = socket.socketpair()
        c = await side(c_relay)
        assert c.transport is not None
        c.transport.resume_reading()  # a reader of what comes first (a PROXY header)
        for part in (b"PROXY ", b"TCP4 "):
            waiting = asyncio.ensure_future(c.arrived())
            await asyncio.sleep(0.02)
            assert not waiting.done()  # nothing new: no busy wait, no early return
            c_test.sendall(part)
            await asyncio.wait_for(waiting, 5)
        assert b"".join(c.early) == b"PROXY TCP4 "
        waiting = asyncio.ensure_future(c.arrived())
        c_test.close()
        await asyncio.wait_for(waiting, 5)
        assert c.eof or c.lost.done()
        await asyncio.wait_for(c.arrived(), 5)  # at the end it returns at once
    on(loop, main())
