"""What the L4 plane's active health checks cost the node (issue 20: 1000 endpoints at
1 s intervals within 5% of one core): ``kgw_l4.health.L4Health``, as every L4 plane runs
it, given an L4Config whose backend groups carry a TCP check -- ``--endpoints``
endpoints spread over ``--frontends`` TCP frontends, or over as many TLS routes
(``--kind tls``: the same probes, reached through ``tls_passthrough``) -- and CPU time of
this process over wall time in the steady state (every endpoint healthy), and how often
the event loop went to sleep per check (voluntary context switches: a wake-up each).

A TCP check is a connect and a close per probe (no connection is kept), unlike the L7
plane's HTTP checks (bench/l7/healthcheck_cost.py, kept-alive). The endpoints are
distinct loopback addresses (127.0.x.y) on one port, accepted and closed by a uvloop
server in a child process whose CPU is not counted: what is measured is the prober's
side only. Usage::

    .venv/bin/python -m bench.l4.healthcheck_cost [--endpoints 1000] [--interval 1]
        [--seconds 20] [--frontends 10] [--kind tcp|tls] [--timeout 1]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from kgw_l4.config import (  # noqa: E402
    BackendGroup, Endpoint, Frontend, L4Config, SNIRoute, TLSPassthrough,
)
from kgw_l4.health import L4Health  # noqa: E402
from kgw_l7.config import HealthCheck  # noqa: E402


class _Close(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Close, sock=sock)
        await server.serve_forever()
    uvloop.run(main())


def addresses(n: int) -> list[str]:
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(n)]


def config(n: int, frontends: int, port: int, check: HealthCheck, kind: str) -> L4Config:
    """``n`` endpoints over ``frontends`` groups (one per TCP frontend or TLS route)."""
    addrs = addresses(n)
    per = -(-n // frontends)
    groups = [BackendGroup(f"bench/svc{i}:{port}", 1,
                           tuple(Endpoint(a, port) for a in addrs[i * per:(i + 1) * per]), check)
              for i in range(frontends) if addrs[i * per:(i + 1) * per]]
    if kind == "tcp":
        return L4Config(tuple(Frontend(f"bench/gw/l{i}", "0.0.0.0", 10000 + i, "TCP", (g,))
                              for i, g in enumerate(groups)))
    return L4Config(tls_passthrough=(TLSPassthrough("bench/gw/tls", "0.0.0.0", 8443, tuple(
        SNIRoute(f"bench/r{i}", (f"r{i}.example.com",), (g,)) for i, g in enumerate(groups))),))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoints", type=int, default=1000)
    p.add_argument("--frontends", type=int, default=10)
    p.add_argument("--kind", default="tcp", choices=("tcp", "tls"))
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=1.0,
                   help="per check (raise it under valgrind, which slows everything)")
    args = p.parse_args(argv)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))
    sock.listen(4096)
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,),
                                                          daemon=True)
    server.start()
    check = HealthCheck(type="TCP", interval=args.interval, timeout=args.timeout)
    cfg = config(args.endpoints, args.frontends, port, check, args.kind)
    changes = [0]

    def changed(_down: frozenset) -> None:
        changes[0] += 1

    async def run() -> tuple[float, float, float, int, int, int]:
        health = L4Health(changed)
        health.update(cfg)
        await asyncio.sleep(args.interval * 2)  # (every endpoint probed: steady state)
        before = health.view()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await asyncio.sleep(args.seconds)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        after = health.view()
        await health.close()
        checks = sum(v["checks"] for v in after) - sum(v["checks"] for v in before)
        failures = sum(v["failures"] for v in after)
        user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        return user, system, t1 - t0, checks, failures, r1.ru_nvcsw - r0.ru_nvcsw

    user, system, wall, checks, failures, sleeps = uvloop.run(run())
    cpu = user + system
    server.kill()
    print(f"L4 TCP checks ({args.kind}) of {args.endpoints} endpoints in {args.frontends} "
          f"groups every {args.interval:g}s: {checks} checks in {wall:.1f}s "
          f"({checks / wall:.0f}/s), {failures} failed, {changes[0]} verdict changes; "
          f"CPU {cpu:.2f}s (user {user:.2f}s, system {system:.2f}s) = "
          f"{100 * cpu / wall:.1f}% of one core, {1e6 * cpu / max(1, checks):.0f} us per check; "
          f"{sleeps / max(1, checks):.2f} loop sleeps (voluntary context switches) per check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
