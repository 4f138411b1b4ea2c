"""What the global rate limit adds to a request: the wait for its Redis check
(``kgw_l7.globallimit.GlobalLimiter.check``), which a request spends before it is
forwarded, and the round trips it makes.

A real redis-server on loopback (its own, on a free port); one worker's limiter on uvloop
runs ``--requests`` checks, ``--concurrency`` at a time (as that many requests in flight
on one worker), on a limit high enough never to refuse. Round trips are counted twice:
by the limiter, and by Redis itself (``INFO commandstats``: EVALSHA and EVAL calls), so
"one per request" does not rest on the client's word. Checks per write: how many checks
the limiter's connection coalesced into one write (``kgw_l7.redisconn``).

Usage: ``.venv/bin/python -m bench.l7.globallimit [--requests 20000] [--concurrency 1,16]``;
prints, per concurrency, the check's latency percentiles (µs) and the round trips per
request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kgw_l7.globallimit import GlobalLimiter  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def redis_calls(port: int) -> tuple[int, float]:
    """EVALSHA + EVAL calls Redis has served, and the server CPU (µs) they took
    (INFO commandstats)."""
    import redis

    with redis.Redis(port=port) as r:
        stats = r.info("commandstats")
    cmds = [stats.get(f"cmdstat_{c}", {}) for c in ("evalsha", "eval")]
    return sum(c.get("calls", 0) for c in cmds), sum(c.get("usec", 0) for c in cmds)


async def run(address: str, port: int, requests: int, concurrency: int) -> dict:
    lim = GlobalLimiter()
    limit = dict(max_tokens=10**9, tokens_per_fill=10**9, fill_interval=1.0, timeout=1.0,
                 fail_open=False)
    await lim.check(address, "bench", "warm-up", **limit)  # connection and script cache
    lim.round_trips = 0
    writes = lim.writes()
    before = redis_calls(port)
    lat: list[float] = []
    left = requests

    async def client(i: int) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            d = await lim.check(address, "bench", f"client-{i}", **limit)
            lat.append(time.perf_counter() - t0)
            assert d.allowed and d.source == "redis", d

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    after = redis_calls(port)
    writes = lim.writes() - writes
    server_calls, server_us = after[0] - before[0], after[1] - before[1]
    await lim.close()
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6

    return {"concurrency": concurrency, "requests": len(lat), "p50_us": pct(0.50),
            "p90_us": pct(0.90), "p99_us": pct(0.99), "max_us": lat[-1] * 1e6,
            "checks_per_s": len(lat) / wall,
            "client_round_trips_per_req": lim.round_trips / len(lat),
            "redis_calls_per_req": server_calls / len(lat),
            "checks_per_write": len(lat) / max(1, writes),
            "redis_cpu_us_per_call": server_us / max(1, server_calls)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--concurrency", default="1,16")
    args = p.parse_args(argv)
    import uvloop

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            for c in (int(x) for x in args.concurrency.split(",")):
                r = uvloop.run(run(server.address, server.port, args.requests, c))
                print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in r.items()), flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
