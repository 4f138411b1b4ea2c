"""kgw_l7.redisconn, the global limit's pipelined Redis connection: against a real
redis-server (coalescing, order, error replies, the bound, retiring) and against a
loopback socket that answers what the test writes (a reply to no command, garbage)."""

from __future__ import annotations

import asyncio

import pytest

from kgw_l7 import redisconn
from kgw_l7.redisconn import Busy, ReplyError, connect
from tests.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


async def test_one_iteration_one_write_replies_in_order(redis):
    conn = await connect("127.0.0.1", redis.port)
    try:
        futs = [conn.send(b"INCRBY", f"k{i % 3}", i) for i in range(100)]
        assert conn.writes == 0  # written at the end of the iteration, not per command
        got = await asyncio.wait_for(asyncio.gather(*futs), 5)
        assert conn.writes == 1
        expected, totals = [], [0, 0, 0]
        for i in range(100):
            totals[i % 3] += i
            expected.append(totals[i % 3])
        assert got == expected
    finally:
        conn.close()


async def test_batches_are_bounded(redis):
    conn = await connect("127.0.0.1", redis.port)
    try:
        n = redisconn.MAX_BATCH * 2 + 5
        futs = [conn.send(b"PING") for _ in range(n)]
        assert conn.writes == 2  # full batches go at once, the rest at the iteration's end
        assert await asyncio.wait_for(asyncio.gather(*futs), 5) == [b"PONG"] * n
        assert conn.writes == 3
    finally:
        conn.close()


async def test_error_reply_goes_to_its_command_only(redis):
    conn = await connect("127.0.0.1", redis.port)
    try:
        futs = [conn.send(b"SET", "s", "x"), conn.send(b"INCR", "s"), conn.send(b"GET", "s")]
        got = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 5)
        assert got[0] == b"OK" and got[2] == b"x"
        assert isinstance(got[1], ReplyError) and "not an integer" in str(got[1])
    finally:
        conn.close()


async def test_pending_commands_are_bounded(redis, monkeypatch):
    monkeypatch.setattr(redisconn, "MAX_PENDING", 4)
    conn = await connect("127.0.0.1", redis.port)
    try:
        futs = [conn.send(b"PING") for _ in range(4)]
        with pytest.raises(Busy):
            conn.send(b"PING")
        await asyncio.wait_for(asyncio.gather(*futs), 5)
        assert await asyncio.wait_for(conn.send(b"PING"), 5) == b"PONG"  # room again
    finally:
        conn.close()


async def test_a_given_up_command_keeps_its_place(redis):
    """A waiter that gave up (a timeout, a cancelled request) still owns its reply: the
    next commands get theirs, not its."""
    conn = await connect("127.0.0.1", redis.port)
    try:
        first = conn.send(b"ECHO", "first")
        first.cancel()
        second = conn.send(b"ECHO", "second")
        assert await asyncio.wait_for(second, 5) == b"second"
        assert await asyncio.wait_for(conn.send(b"ECHO", "third"), 5) == b"third"
    finally:
        conn.close()


async def test_retired_closes_when_drained(redis):
    conn = await connect("127.0.0.1", redis.port)
    waiting = conn.send(b"PING")
    conn.retire()
    assert conn.broken is None  # one waiter left: still open for its reply
    assert await asyncio.wait_for(waiting, 5) == b"PONG"
    assert conn.broken is not None
    with pytest.raises(ConnectionError):
        conn.send(b"PING")


async def test_server_gone_fails_every_waiter(redis):
    conn = await connect("127.0.0.1", redis.port)
    futs = [conn.send(b"BLPOP", "never", 0) for _ in range(3)]  # held until the server goes
    await asyncio.sleep(0.1)
    redis.stop()
    got = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 5)
    assert all(isinstance(e, ConnectionError) and "closed" in str(e) for e in got)
    assert conn.broken is not None


@pytest.mark.parametrize("answer", [b"+OK\r\n+EXTRA\r\n", b"?garbage\r\n"],
                         ids=["reply-to-no-command", "not-resp"])
async def test_a_bad_server_breaks_the_connection(answer):
    async def serve(reader, writer):
        await reader.read(1024)
        writer.write(answer)
        await writer.drain()
        await reader.read(1024)  # until the client aborts
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await connect("127.0.0.1", port)
        fut = conn.send(b"PING")
        try:
            await asyncio.wait_for(fut, 5)
        except ConnectionError:  # garbage: the one waiter fails
            pass
        for _ in range(50):
            if conn.broken is not None:
                break
            await asyncio.sleep(0.02)
        assert isinstance(conn.broken, ConnectionError)
        assert "reply to no command" in str(conn.broken) or "protocol error" in str(conn.broken)
    finally:
        server.close()
