"""The global rate limit against a real redis-server: two limiters (as two nodes) share
one bucket, one round trip per check, Redis killed -> the failure mode, back -> the
limit again; an address that does not resolve fails the same way and says why."""

from __future__ import annotations

import asyncio
import time

import pytest

from kgw_l7 import globallimit
from kgw_l7.globallimit import GlobalLimiter, parse_address
from kgw_l7.problems import MAX_PROBLEMS, PROBLEMS, Problems, merge
from tests.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


def check(lim: GlobalLimiter, address: str, descriptor: str = "all", *, max_tokens: int = 10,
          per: int = 10, interval: float = 1.0, timeout: float = 2.0, fail_open: bool = True):
    return lim.check(address, "ns/policy/route", descriptor, max_tokens, per, interval, timeout,
                     fail_open)


def test_parse_address():
    assert parse_address("redis.kgw-system:6380") == ("redis.kgw-system", 6380)
    assert parse_address("redis") == ("redis", 6379)
    assert parse_address("[::1]:7000") == ("::1", 7000)
    for bad in ("redis:0", "redis:x", ":6379", "redis:70000"):
        with pytest.raises(ValueError, match="redis address"):
            parse_address(bad)


async def test_two_limiters_share_one_bucket_one_round_trip_each(redis):
    a, b = GlobalLimiter(), GlobalLimiter()
    try:
        # The first call on an empty script cache pays a second round trip (EVAL).
        assert (await check(a, redis.address, "warm-up")).allowed
        assert a.round_trips == 2
        a.round_trips = 0
        got = await asyncio.gather(*(check(x, redis.address, interval=60, timeout=5)
                                     for _ in range(15) for x in (a, b)))
        assert sum(d.allowed for d in got) == 10, (a.errors, b.errors)  # one bucket, not two
        refused = [d for d in got if not d.allowed]
        assert all(d.source == "redis" and 0 < d.reset <= 60 for d in refused)
        assert a.round_trips + b.round_trips == 30  # one EVALSHA per check
        assert a.decisions[("ns/policy/route", "limited")] + \
            b.decisions[("ns/policy/route", "limited")] == 20
        # Descriptors are separate buckets.
        assert (await check(a, redis.address, "client-2", interval=60)).allowed
    finally:
        await a.close()
        await b.close()


async def test_refill_over_time(redis):
    lim = GlobalLimiter()
    try:
        first = [await check(lim, redis.address, max_tokens=5, per=5, interval=0.5)
                 for _ in range(8)]
        assert [d.allowed for d in first] == [True] * 5 + [False] * 3
        await asyncio.sleep(0.6)
        again = [await check(lim, redis.address, max_tokens=5, per=5, interval=0.5)
                 for _ in range(6)]
        assert sum(d.allowed for d in again) == 5
    finally:
        await lim.close()


@pytest.mark.parametrize("fail_open", [True, False], ids=["open", "closed"])
async def test_redis_killed_then_back(redis, fail_open, monkeypatch):
    monkeypatch.setattr(globallimit, "BACKOFF", 0.2)
    lim = GlobalLimiter()
    try:
        assert (await check(lim, redis.address, fail_open=fail_open)).source == "redis"
        redis.stop()
        started = time.monotonic()
        down = [await check(lim, redis.address, fail_open=fail_open) for _ in range(20)]
        assert time.monotonic() - started < 2  # bounded: refused at once, then backoff
        outcome = "fail_open" if fail_open else "fail_closed"
        assert {d.source for d in down} == {outcome}
        assert all(d.allowed is fail_open for d in down)
        # The open connection saw the server go; the next try after the backoff finds
        # nothing listening.
        assert lim.health() == {redis.address: "closed"}
        await asyncio.sleep(0.25)
        assert (await check(lim, redis.address, fail_open=fail_open)).source == outcome
        assert lim.health() == {redis.address: "refused"}
        assert lim.errors[(redis.address, "refused")] >= 1
        # what the policy's status shows (kgw_l7.problems)
        assert PROBLEMS.view()[("redis", redis.address)].startswith("refused (")
        redis.start()  # same port, empty: no script cached, a full bucket
        await asyncio.sleep(0.25)
        back = await check(lim, redis.address, fail_open=fail_open)
        assert (back.source, back.allowed) == ("redis", True)
        assert lim.health() == {redis.address: ""}
        assert ("redis", redis.address) not in PROBLEMS.view()
    finally:
        await lim.close()


async def test_slow_redis_times_out(redis):
    lim = GlobalLimiter()
    try:
        redis.proc.send_signal(19)  # SIGSTOP: connected, never answers
        started = time.monotonic()
        d = await check(lim, redis.address, timeout=0.1, fail_open=False)
        assert time.monotonic() - started < 1
        assert (d.allowed, d.source) == (False, "fail_closed")
        assert lim.health() == {redis.address: "timeout"}
    finally:
        redis.proc.send_signal(18)
        await lim.close()


async def test_unresolvable_address():
    lim = GlobalLimiter()
    try:
        d = await check(lim, "redis.does-not-exist.invalid:6379", timeout=5)
        assert (d.allowed, d.source) == (True, "fail_open")
        assert lim.health() == {"redis.does-not-exist.invalid:6379": "unresolvable"}
        assert PROBLEMS.view()[("redis", "redis.does-not-exist.invalid:6379")].startswith(
            "unresolvable (")
    finally:
        await lim.close()


async def test_counts_in_metrics(redis):
    from kgw_l7 import metrics

    lim = GlobalLimiter()
    try:
        for _ in range(3):
            await check(lim, redis.address, max_tokens=2, per=2, interval=60)
        await check(lim, "127.0.0.1:1", fail_open=False)  # nothing listens on port 1
    finally:
        await lim.close()
    base = {"active_connections": 0, "generation": 1}
    text = metrics.render([{**base, **lim.snapshot()}, {**base, **lim.snapshot()}]).decode()
    assert ('kgw_l7_global_ratelimit_decisions_total{limit="ns/policy/route",outcome="allowed"} '
            '4.0') in text
    assert 'outcome="limited"} 2.0' in text and 'outcome="fail_closed"} 2.0' in text
    assert ('kgw_l7_global_ratelimit_redis_errors_total{address="127.0.0.1:1",reason="refused"}'
            ' 2.0') in text
    assert "kgw_l7_global_ratelimit_redis_round_trips_total 10.0" in text  # 2 x (3 + 1 + EVAL)


def test_problems_are_bounded_deduplicated_and_cleared():
    p = Problems()
    p.fail("redis", "a:1", "refused")
    p.fail("redis", "a:1", "timeout " + "x" * 1000)  # the latest message, cut
    assert list(p.view()) == [("redis", "a:1")]
    assert len(p.view()[("redis", "a:1")]) == 300
    for i in range(MAX_PROBLEMS + 5):
        p.fail("jwks", f"https://{i}", "HTTP 500")
    assert len(p.view()) == MAX_PROBLEMS and p.dropped == 6
    p.ok("redis", "a:1")
    assert ("redis", "a:1") not in p.view()
    merged = merge([{("redis", "b:1"): "refused"}, {("redis", "b:1"): "closed",
                                                    ("jwks", "u"): "x"}])
    assert merged == {("redis", "b:1"): "refused", ("jwks", "u"): "x"}


def redis_calls(port: int) -> dict[str, int]:
    """EVALSHA / EVAL calls Redis served (INFO commandstats)."""
    import redis as redis_client

    with redis_client.Redis(port=port) as r:
        stats = r.info("commandstats")
    return {c: stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval")}


async def test_concurrent_checks_one_write_each_its_own_reply(redis):
    """Checks of one loop iteration go out as one write; each is still one EVALSHA, and
    each gets its own bucket's answer (max_tokens differs per check: so does remaining)."""
    lim = GlobalLimiter()
    try:
        assert (await check(lim, redis.address, "warm-up")).source == "redis"
        writes, before = lim.writes(), redis_calls(redis.port)
        lim.round_trips = 0
        got = await asyncio.gather(*(check(lim, redis.address, f"d{i}", max_tokens=10 + i)
                                     for i in range(60)))
        assert [d.remaining for d in got] == [9 + i for i in range(60)]
        assert lim.writes() - writes == 1
        assert lim.round_trips == 60
        after = redis_calls(redis.port)
        assert after["evalsha"] - before["evalsha"] == 60 and after["eval"] == before["eval"]
    finally:
        await lim.close()


async def test_one_checks_timeout_fails_no_other_before_its_deadline(redis):
    """Redis stalls with a short- and a long-deadline check in one write: the short one is
    decided by its failure mode at its deadline; the long one gets Redis's answer when it
    comes, before its own deadline. Then the limiter moves to a fresh connection."""
    lim = GlobalLimiter()
    try:
        assert (await check(lim, redis.address, "warm-up")).source == "redis"
        redis.proc.send_signal(19)  # SIGSTOP
        loop = asyncio.get_running_loop()
        started = loop.time()
        short = asyncio.ensure_future(check(lim, redis.address, "a", timeout=0.1,
                                            fail_open=False))
        long = asyncio.ensure_future(check(lim, redis.address, "b", max_tokens=7,
                                           timeout=3.0, fail_open=False))
        d = await short
        assert (d.allowed, d.source) == (False, "fail_closed")
        assert 0.08 < loop.time() - started < 1.5
        assert not long.done()
        loop.call_later(0.2, redis.proc.send_signal, 18)  # SIGCONT
        d = await long
        assert (d.allowed, d.source, d.remaining) == (True, "redis", 6)  # its own reply
        assert lim.errors == {(redis.address, "timeout"): 1}
        await asyncio.sleep(globallimit.BACKOFF)
        assert (await check(lim, redis.address, "c")).source == "redis"  # a new connection
    finally:
        redis.proc.send_signal(18)
        await lim.close()


async def test_noscript_inside_a_batch(redis):
    """Redis lost its scripts (SCRIPT FLUSH) under a batch of checks: each gets NOSCRIPT,
    sends the script itself (EVAL, coalesced again) and is answered; nothing fails."""
    import redis as redis_client

    lim = GlobalLimiter()
    try:
        assert (await check(lim, redis.address, "warm-up")).source == "redis"
        with redis_client.Redis(port=redis.port) as r:
            r.script_flush()
        before = redis_calls(redis.port)
        lim.round_trips = 0
        writes = lim.writes()
        got = await asyncio.gather(*(check(lim, redis.address, f"d{i}", max_tokens=5 + i)
                                     for i in range(20)))
        assert [(d.source, d.remaining) for d in got] == [("redis", 4 + i) for i in range(20)]
        assert lim.round_trips == 40 and not lim.errors
        assert lim.writes() - writes == 2  # the EVALSHAs, then the EVALs
        after = redis_calls(redis.port)
        assert after["eval"] - before["eval"] == 20
        assert (await check(lim, redis.address, "again")).source == "redis"
        assert redis_calls(redis.port)["evalsha"] - after["evalsha"] == 1  # cached again
    finally:
        await lim.close()


async def test_too_many_waiting_is_busy_not_down(redis, monkeypatch):
    """Past the connection's bound the check is decided by the failure mode (counted as
    busy) without the backoff: Redis itself is fine."""
    from kgw_l7 import redisconn

    lim = GlobalLimiter()
    try:
        assert (await check(lim, redis.address, "warm-up")).source == "redis"
        monkeypatch.setattr(redisconn, "MAX_PENDING", 5)
        got = await asyncio.gather(*(check(lim, redis.address, f"d{i}", fail_open=False)
                                     for i in range(8)))
        assert [d.source for d in got] == ["redis"] * 5 + ["fail_closed"] * 3
        assert lim.errors == {(redis.address, "busy"): 3}
        assert lim.health() == {redis.address: ""}
        assert (await check(lim, redis.address, "after")).source == "redis"
    finally:
        await lim.close()


async def test_a_reply_not_the_scripts_is_an_error_not_an_exception():
    """Something that speaks RESP but is not our script's Redis (a proxy answering +OK):
    decided by the failure mode, counted as an error; nothing raises into the request."""
    async def serve(reader, writer):
        while await reader.read(4096):
            writer.write(b"+OK\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    address = "127.0.0.1:%d" % server.sockets[0].getsockname()[1]
    lim = GlobalLimiter()
    try:
        d = await check(lim, address, fail_open=False)
        assert (d.allowed, d.source) == (False, "fail_closed")
        assert lim.errors == {(address, "error"): 1}
    finally:
        await lim.close()
        server.close()
