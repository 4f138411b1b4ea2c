"""What active health checking costs the node: one ``HealthChecker`` (as the L7 plane
runs it) checking ``--endpoints`` endpoints every ``--interval`` seconds, CPU time of
this process over wall time (issue 20: 1000 endpoints at 1 s within 5% of a core), and
how often the event loop went to sleep per check (voluntary context switches).

The endpoints are all answered by one small uvloop HTTP server in a child process
(``GET /healthz`` -> 200, keep-alive), whose CPU is not counted. ``--topology`` places
them as bench/l4/healthcheck_cost.py does: on distinct loopback addresses (127.0.x.y,
the default; the server side's kernel work is then done in the checker's context and
charged to it), or behind a veth pair in a namespace of their own (``veth``: the node
end's napi kthread counted with the checker, the backend end's not). Usage::

    .venv/bin/python -m bench.l7.healthcheck_cost [--endpoints 1000] [--interval 1]
        [--seconds 20] [--type HTTP|TCP] [--topology loopback|veth]
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

from kgw_l7.config import (  # noqa: E402
    Backend, Endpoint, HealthCheck, L7Config, Listener, PathMatch, Route, RouteMatch, Rule,
    VirtualHost,
)
from bench.l4.healthcheck_cost import (  # noqa: E402
    addresses, check_topology, placed, thread_cpu,
)
from kgw_l7.healthcheck import HealthChecker  # noqa: E402

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Answer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for _ in range(data.count(b"\r\n\r\n")):
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Answer, sock=sock)
        await server.serve_forever()
    uvloop.run(main())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoints", type=int, default=1000)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--type", default="HTTP", choices=("HTTP", "TCP"))
    p.add_argument("--timeout", type=float, default=1.0,
                   help="per check (raise it under valgrind, which slows everything)")
    p.add_argument("--topology", default="loopback", choices=("loopback", "veth"))
    args = p.parse_args(argv)
    check_topology(p, args)
    with placed(args.topology) as (sock, napi, _remote):
        port = sock.getsockname()[1]
        server = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,),
                                                              daemon=True)
        server.start()
        try:
            print(measure(args, port, napi))
        finally:
            server.kill()
            server.join(10)
    return 0


def measure(args: argparse.Namespace, port: int, napi: list[int]) -> str:
    hc = HealthCheck(type=args.type, interval=args.interval, timeout=args.timeout,
                     path="/healthz")
    backend = Backend("bench/svc:80", endpoints=tuple(
        Endpoint(a, port) for a in addresses(args.endpoints, args.topology)), health_check=hc)
    rule = Rule("bench/r/0", "bench/r", "bench/gw", backends=(backend,))
    config = L7Config((Listener("l", "127.0.0.1", 1, virtual_hosts=(
        VirtualHost("*", (Route(RouteMatch(PathMatch()), rule),)),)),))

    async def run() -> tuple[float, float, int, int, int]:
        checker = HealthChecker(lambda: None)
        checker.update(config)
        await asyncio.sleep(args.interval * 2)  # (every connection opened: steady state)
        before = checker.view()
        r0, k0, t0 = resource.getrusage(resource.RUSAGE_SELF), thread_cpu(napi), time.monotonic()
        await asyncio.sleep(args.seconds)
        r1, k1, t1 = resource.getrusage(resource.RUSAGE_SELF), thread_cpu(napi), time.monotonic()
        after = checker.view()
        await checker.close()
        checks = sum(v["checks"] for v in after) - sum(v["checks"] for v in before)
        failures = sum(v["failures"] for v in after)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime) + (k1 - k0)
        return cpu, t1 - t0, checks, failures, r1.ru_nvcsw - r0.ru_nvcsw

    cpu, wall, checks, failures, sleeps = uvloop.run(run())
    counted = " (with the node's napi kthread)" if napi else ""
    return (f"{args.type} checks ({args.topology}) of {args.endpoints} endpoints every "
            f"{args.interval:g}s: {checks} checks in {wall:.1f}s ({checks / wall:.0f}/s), "
            f"{failures} failed; CPU{counted} {cpu:.2f}s = {100 * cpu / wall:.1f}% of one "
            f"core, {1e6 * cpu / max(1, checks):.0f} us per check; "
            f"{sleeps / max(1, checks):.2f} loop sleeps (voluntary context switches) per check")


if __name__ == "__main__":
    sys.exit(main())
