"""The proxy's own per-request work, without sockets: a steadier measure than CPU/request.

One keep-alive request of the L7 bench (bench/l7/run.py's config and wrk's request) goes
through ``DownstreamConn`` -> ``Exchange`` -> a pooled ``UpstreamConn`` and back, with
in-memory transports: no kernel time, no event loop, no scheduling, so two builds can be
compared within a few percent where the end-to-end CPU per request moves by 20% between
runs on a shared machine. Responses: the echo server's (no hop-by-hop field) and nginx's
(Server, Date and ``Connection: keep-alive``).

Usage: ``.venv/bin/python -m bench.l7.hotpath [--requests 5000] [--repeat 30]
[--access-log PATH [--access-log-format json|text...]]`` (default: no access log); prints
the best microseconds per request of ``--repeat`` batches for each route and response.
Pin it (``taskset -c 1``) for steadier figures. It measures whichever kgw_l7 is
imported: compiled when the build is fresh (shown), else interpreted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

import kgw_l7  # noqa: E402
from bench.l7.run import bench_config  # noqa: E402
from kgw_l7.channel import WorkerOptions  # noqa: E402
from kgw_l7.context import ListenerState, WorkerContext  # noqa: E402
from kgw_l7.proxy import DownstreamConn  # noqa: E402
from kgw_l7.upstream import UpstreamConn  # noqa: E402

BODY = (b'{"path": "/hdr", "host": "127.0.0.1:8080", "method": "GET", "proto": "HTTP/1.1", '
        b'"headers": {"X-Bench": ["yes"], "X-Request-Id": ["f558408e-a240-4df2-817f-'
        b'00000003bb77"], "X-Forwarded-For": ["127.0.0.1"], "X-Forwarded-Proto": ["http"], '
        b'"X-Added": ["1"]}, "namespace": "", "pod": "bench-echo"}')
RESPONSES = {
    "echo": b"HTTP/1.1 200 OK\r\nx-content-type-options: nosniff\r\ncontent-type: "
            b"application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "nginx": b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 10:20:21 "
             b"GMT\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
             b"Connection: keep-alive\r\n\r\n%s" % (len(BODY), BODY),
}


class MemoryTransport:
    """What the protocols use of a transport; writes are kept for the checks."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--access-log", default="off", metavar="PATH",
                   help="write the access log there (default off)")
    p.add_argument("--access-log-format", default="json")
    args = p.parse_args(argv)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    ctx = WorkerContext(loop, WorkerOptions(access_log=args.access_log,
                                            access_log_format=args.access_log_format))
    config = bench_config(8080, 9)
    listener = ListenerState("bench", config.listeners[0],
                             ctx.cache.build(config)["bench"], None)
    print(f"kgw_l7 {'compiled' if kgw_l7.extension_in_use('exchange') else 'interpreted'}")
    for kind, response in RESPONSES.items():
        conn = DownstreamConn(ctx, listener)
        client = MemoryTransport()
        conn.connection_made(client)  # type: ignore[arg-type]
        up = UpstreamConn(("127.0.0.1", 9, None))
        backend = MemoryTransport()
        up.connection_made(backend)  # type: ignore[arg-type]
        ctx.pool.release(up, ctx.now)
        for route in ("plain", "hdr"):
            request = (b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-Bench: yes\r\n\r\n"
                       % route.encode())
            conn.data_received(request)
            up.data_received(response)
            # Each request went upstream on the pooled connection and the response back.
            assert backend.out and backend.out[-1].startswith(request.split(b"\r\n")[0])
            assert client.out and client.out[-1].startswith(b"HTTP/1.1 200 OK\r\n")
            assert client.out[-1].endswith(BODY)
            best = float("inf")
            for _ in range(args.repeat):
                client.out.clear()
                backend.out.clear()
                t0 = time.perf_counter()
                for _ in range(args.requests):
                    conn.data_received(request)
                    up.data_received(response)
                best = min(best, (time.perf_counter() - t0) / args.requests)
            assert len(client.out) == args.requests
            print(f"{kind:5} response  /{route:5}  {best * 1e6:.2f} us/request", flush=True)
    ctx.close()  # (the access log's last lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
