"""What external authorization adds to a request: the proxy's per-request work without
sockets (``bench.l7.hotpath``'s in-memory transports), the bench's /plain route asking an
HTTP ext-auth service (Envoy's ext_authz HTTP protocol) before it forwards.

The service's side costs nothing here: its answer is a constant fed to the proxy's pooled
connection to it, so the time is kgw's own (build and write the check request, parse the
answer, decide, apply its header, then the request's task path).

Modes: ``none`` (no check: the fast path, the baseline), ``task`` (no check, but a request
timeout on the rule, which takes the same task path a checked request takes: what leaving
the fast path costs by itself), ``http`` (the check; its answer allows and sets a header).

Usage: ``.venv/bin/python -m bench.l7.extauth [--requests 2000] [--repeat 10]
[--mode none|task|http]`` (default: the three); prints the best microseconds per request
of ``--repeat`` batches. For instruction counts (the machine's load does not change them):
``valgrind --tool=callgrind`` two runs of one mode with different ``--requests`` and
``--repeat 1``, and take the difference per request.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

import kgw_l7  # noqa: E402
from bench.l7.hotpath import RESPONSES, MemoryTransport  # noqa: E402
from bench.l7.run import bench_config  # noqa: E402
from kgw_l7.channel import WorkerOptions  # noqa: E402
from kgw_l7.config import Backend, Endpoint, ExtAuth, L7Config  # noqa: E402
from kgw_l7.context import ListenerState, WorkerContext  # noqa: E402
from kgw_l7.proxy import DownstreamConn  # noqa: E402
from kgw_l7.upstream import UpstreamConn  # noqa: E402

AUTH_PORT = 10
#: The service's answer: allowed, one header for the backend (what oauth2-proxy sends).
ALLOW = (b"HTTP/1.1 200 OK\r\nX-Auth-Request-User: alice\r\nContent-Length: 0\r\n"
         b"Date: Fri, 27 Nov 2026 10:20:21 GMT\r\n\r\n")


def with_rules(config: L7Config, **fields: object) -> L7Config:
    listeners = []
    for lst in config.listeners:
        vhs = []
        for vh in lst.virtual_hosts:
            routes = tuple(dataclasses.replace(r, rule=dataclasses.replace(r.rule, **fields))
                           for r in vh.routes)
            vhs.append(dataclasses.replace(vh, routes=routes))
        listeners.append(dataclasses.replace(lst, virtual_hosts=tuple(vhs)))
    return dataclasses.replace(config, listeners=tuple(listeners))


def configured(mode: str) -> L7Config:
    config = bench_config(8080, 9)
    if mode == "task":
        return with_rules(config, request_timeout=30.0)
    if mode == "http":
        svc = Backend("bench/authz:80", endpoints=(Endpoint("127.0.0.1", AUTH_PORT),))
        plain = config.listeners[0].virtual_hosts[0].routes[1].rule
        return with_rules(config, filters=dataclasses.replace(
            plain.filters, ext_auth=ExtAuth("HTTP", svc, allowed_response_headers=(
                "x-auth-request-user",))))
    return config


async def drive(requests: int, conn: DownstreamConn, client: MemoryTransport,
                up: UpstreamConn, backend: MemoryTransport, auth_up: UpstreamConn | None,
                auth: MemoryTransport | None, data: bytes, response: bytes) -> None:
    """``requests`` requests, one at a time: each answered by the service (when there is
    one) and the backend as soon as kgw has written to them."""
    sleep = asyncio.sleep
    for _ in range(requests):
        n = len(client.out)
        conn.data_received(data)
        if auth is not None:
            while not auth.out:
                await sleep(0)
            auth.out.clear()
            auth_up.data_received(ALLOW)  # type: ignore[union-attr]
        while not backend.out:
            await sleep(0)
        backend.out.clear()
        up.data_received(response)
        while len(client.out) == n:
            await sleep(0)


def run(mode: str, requests: int, repeat: int) -> float:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    ctx = WorkerContext(loop, WorkerOptions(access_log="off"))
    config = configured(mode)
    listener = ListenerState("bench", config.listeners[0], ctx.cache.build(config)["bench"],
                             None)
    conn = DownstreamConn(ctx, listener)
    client = MemoryTransport()
    conn.connection_made(client)  # type: ignore[arg-type]
    up = UpstreamConn(("127.0.0.1", 9, None))
    backend = MemoryTransport()
    up.connection_made(backend)  # type: ignore[arg-type]
    ctx.pool.release(up, ctx.now)
    auth_up = auth = None
    if mode == "http":
        auth_up = UpstreamConn(("127.0.0.1", AUTH_PORT, None))
        auth = MemoryTransport()
        auth_up.connection_made(auth)  # type: ignore[arg-type]
        ctx.pool.release(auth_up, ctx.now)
    response = RESPONSES["echo"]
    data = b"GET /plain HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer t0k3n\r\n\r\n"
    loop.run_until_complete(drive(1, conn, client, up, backend, auth_up, auth, data, response))
    assert client.out[-1].startswith(b"HTTP/1.1 200 OK\r\n"), client.out[-1][:200]
    best = float("inf")
    for _ in range(repeat):
        client.out.clear()
        t0 = time.perf_counter()
        loop.run_until_complete(drive(requests, conn, client, up, backend, auth_up, auth,
                                      data, response))
        best = min(best, (time.perf_counter() - t0) / requests)
        assert len(client.out) == requests
        assert all(o.startswith(b"HTTP/1.1 200 OK\r\n") for o in client.out)
    ctx.close()
    loop.close()
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--mode", choices=("none", "task", "http"), action="append")
    args = p.parse_args(argv)
    print(f"kgw_l7 {'compiled' if kgw_l7.extension_in_use('exchange') else 'interpreted'}")
    for mode in args.mode or ("none", "task", "http"):
        best = run(mode, args.requests, args.repeat)
        print(f"{mode:6}  {best * 1e6:8.2f} us/request", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
