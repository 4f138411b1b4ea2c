"""The proxy's own per-request work, without sockets: a steadier measure than CPU/request.

One keep-alive request of the L7 bench (bench/l7/run.py's config and wrk's request) goes
through ``DownstreamConn`` -> ``Exchange`` -> a pooled ``UpstreamConn`` and back, with
in-memory transports: no kernel time, no event loop, no scheduling, so two builds can be
compared within a few percent where the end-to-end CPU per request moves by 20% between
runs on a shared machine. Responses: the echo server's (no hop-by-hop field) and nginx's
(Server, Date and ``Connection: keep-alive``).

``--h2``: the same requests from an HTTP/2 client instead (``kgw_l7.downstream_h2``: one
stream per request on one ``H2Conn``, the request HEADERS from the HPACK dynamic table
as a client sends them after its first request), to the HTTP/1.1 backend, echo's
response.

``--h2c``: the same requests to an HTTP/2 backend instead (``kgw_l7.upstream_h2``: a
stream per request on one ``H2Conn``), answered with the echo's response as HTTP/2
frames (HEADERS from the HPACK dynamic table, DATA with END_STREAM), made for each
request's stream id before the batch is timed.

Usage: ``.venv/bin/python -m bench.l7.hotpath [--requests 5000] [--repeat 30] [--h2|--h2c]
[--access-log PATH [--access-log-format json|text...]] [--tracing-sample RATIO]
[--policy none|local|local-ip|request-limits]`` (default: no
access log, no tracing; ``--tracing-sample``: tracing on, new traces sampled at RATIO, the
request path only: the finished traces are queued, never exported, and the queue emptied
between batches -- the export thread's cost is ``bench/l7/tracing_export.py``'s;
``--policy``: a TrafficPolicy section on every rule, with limits the bench never reaches --
``local`` a route-wide local rate limit, ``local-ip`` one keyed by client address,
``request-limits`` a body size and a header count; bench/results/ratelimit.md); prints
the best microseconds per request of ``--repeat`` batches for each route and response.
Pin it (``taskset -c 1``) for steadier figures. It measures whichever kgw_l7 is
imported: compiled when the build is fresh (shown), else interpreted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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
from kgw_l7.config import (L7Config, LocalRateLimit, RateLimit, RequestLimits,  # noqa: E402
                           RulePolicy)
from kgw_l7.context import ListenerState, WorkerContext  # noqa: E402
from kgw_l7.proxy import DownstreamConn  # noqa: E402
from kgw_l7.upstream import UpstreamConn  # noqa: E402
from kgw_l7.upstream_h2 import H2Conn  # noqa: E402

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


#: Never reached by the bench: a burst of 10^9 refilled at 10^6 per second.
_NEVER = LocalRateLimit(max_tokens=10**9, tokens_per_fill=10**6, fill_interval=1.0,
                        scope="bench")
POLICIES: dict[str, RulePolicy | None] = {
    "none": None,
    "local": RulePolicy(rate_limit=RateLimit(local=_NEVER)),
    "local-ip": RulePolicy(rate_limit=RateLimit(local=dataclasses.replace(_NEVER,
                                                                          key="client_ip"))),
    "request-limits": RulePolicy(request_limits=RequestLimits(max_body_size=1 << 20,
                                                              max_headers=100)),
}


def with_policy(config: L7Config, policy: RulePolicy | None) -> L7Config:
    """``config`` with ``policy`` on every rule."""
    if policy is None:
        return config
    return dataclasses.replace(config, listeners=tuple(
        dataclasses.replace(lis, virtual_hosts=tuple(
            dataclasses.replace(vh, routes=tuple(
                dataclasses.replace(r, rule=dataclasses.replace(r.rule, policy=policy))
                for r in vh.routes))
            for vh in lis.virtual_hosts))
        for lis in config.listeners))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--h2c", action="store_true", help="an HTTP/2 backend (h2c)")
    p.add_argument("--h2", action="store_true", help="an HTTP/2 client (h2c prior knowledge)")
    p.add_argument("--access-log", default="off", metavar="PATH",
                   help="write the access log there (default off)")
    p.add_argument("--access-log-format", default="json")
    p.add_argument("--tracing-sample", type=float, default=None, metavar="RATIO",
                   help="tracing on, this share of new traces sampled (default off)")
    p.add_argument("--policy", choices=sorted(POLICIES), default="none",
                   help="a policy section on every rule, never triggered (default none)")
    args = p.parse_args(argv)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    ctx = WorkerContext(loop, WorkerOptions(access_log=args.access_log,
                                            access_log_format=args.access_log_format))
    tracer = None
    if args.tracing_sample is not None:
        from kgw_l7.tracing import Tracer
        # (not started: no export thread; a queue that never fills)
        tracer = Tracer("http://127.0.0.1:9/v1/traces", "parentbased_traceidratio",
                        args.tracing_sample, 1.0, max_queue=1 << 40)
    config = with_policy(bench_config(8080, 9, "h2c" if args.h2c else "http"),
                         POLICIES[args.policy])
    listener = ListenerState("bench", config.listeners[0],
                             ctx.cache.build(config)["bench"], None)
    listener.tracer = tracer
    print(f"kgw_l7 {'compiled' if kgw_l7.extension_in_use('exchange') else 'interpreted'}")
    if args.h2c:
        return h2c(ctx, listener, args)
    if args.h2:
        return h2(ctx, listener, args)
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
                if tracer is not None:
                    tracer._queue.clear()
                t0 = time.perf_counter()
                for _ in range(args.requests):
                    conn.data_received(request)
                    up.data_received(response)
                best = min(best, (time.perf_counter() - t0) / args.requests)
            assert len(client.out) == args.requests
            print(f"{kind:5} response  /{route:5}  {best * 1e6:.2f} us/request", flush=True)
    ctx.close()  # (the access log's last lines)
    return 0


def h2c(ctx: WorkerContext, listener: ListenerState, args: argparse.Namespace) -> int:
    import hpack
    from hyperframe.frame import DataFrame, HeadersFrame, SettingsFrame

    conn = DownstreamConn(ctx, listener)
    client = MemoryTransport()
    conn.connection_made(client)  # type: ignore[arg-type]
    key = ("127.0.0.1", 9, None)
    up = H2Conn(key, ctx.pool)
    backend = MemoryTransport()
    up.connection_made(backend)
    ctx.pool._h2[key] = [up]  # (the pool's HTTP/2 connection to the endpoint)
    up.data_received(SettingsFrame(0).serialize())  # the backend's preface
    headers = [(b":status", b"200"), (b"x-content-type-options", b"nosniff"),
               (b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    enc = hpack.Encoder()
    blocks = [enc.encode(headers), enc.encode(headers)]  # then indexed only
    assert enc.encode(headers) == blocks[1]

    def response(sid: int) -> bytes:
        block = blocks[0] if sid == 1 else blocks[1]
        h = HeadersFrame(sid, block, flags=["END_HEADERS"])
        return h.serialize() + DataFrame(sid, BODY, flags=["END_STREAM"]).serialize()

    for route in ("plain", "hdr"):
        request = (b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-Bench: yes\r\n\r\n"
                   % route.encode())
        conn.data_received(request)
        up.data_received(response(up.h2.highest_outbound_stream_id))
        assert client.out and client.out[-1].startswith(b"HTTP/1.1 200 OK\r\n")
        assert client.out[-1].endswith(BODY), client.out[-1]
        best = float("inf")
        for _ in range(args.repeat):
            client.out.clear()
            backend.out.clear()
            first = up.h2.highest_outbound_stream_id + 2
            frames = [response(first + 2 * i) for i in range(args.requests)]
            t0 = time.perf_counter()
            for i in range(args.requests):
                conn.data_received(request)
                up.data_received(frames[i])
            best = min(best, (time.perf_counter() - t0) / args.requests)
        assert len(client.out) == args.requests and client.out[-1].endswith(BODY)
        assert up.taken == 0 and not up.streams
        print(f"h2c   response  /{route:5}  {best * 1e6:.2f} us/request", flush=True)
    return 0


def h2(ctx: WorkerContext, listener: ListenerState, args: argparse.Namespace) -> int:
    import hpack
    from hyperframe.frame import HeadersFrame, SettingsFrame, WindowUpdateFrame

    from kgw_l7.downstream_h2 import PREFACE
    from kgw_l7.downstream_h2 import H2Conn as ClientConn

    conn = ClientConn(ctx, listener)
    client = MemoryTransport()
    conn.connection_made(client)  # type: ignore[arg-type]
    # (as h2load opens its connection window: the responses never wait for it)
    conn.data_received(PREFACE + SettingsFrame(0).serialize()
                       + WindowUpdateFrame(0, window_increment=2**31 - 1 - 65535).serialize())
    up = UpstreamConn(("127.0.0.1", 9, None))
    backend = MemoryTransport()
    up.connection_made(backend)  # type: ignore[arg-type]
    ctx.pool.release(up, ctx.now)
    enc = hpack.Encoder()
    response = RESPONSES["echo"]
    sid = 1
    for route in ("plain", "hdr"):
        fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/" + route.encode()),
                  (b":authority", b"127.0.0.1:8080"), (b"x-bench", b"yes")]
        first = enc.encode(fields)
        block = enc.encode(fields)  # (a client's later requests: indexed, its dynamic table)

        def request(sid: int, block: bytes = block) -> bytes:
            return HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize()

        conn.data_received(request(sid, first))
        sid += 2
        up.data_received(response)
        assert backend.out and backend.out[-1].startswith(b"GET /" + route.encode()), \
            (backend.out, client.out)
        assert client.out and BODY in client.out[-1], client.out[-1]
        best = float("inf")
        for _ in range(args.repeat):
            client.out.clear()
            backend.out.clear()
            frames = [request(sid + 2 * i) for i in range(args.requests)]
            sid += 2 * args.requests
            t0 = time.perf_counter()
            for i in range(args.requests):
                conn.data_received(frames[i])
                up.data_received(response)
            best = min(best, (time.perf_counter() - t0) / args.requests)
        assert len(backend.out) == args.requests and BODY in client.out[-1], client.out[-3:]
        assert not conn.streams
        print(f"h2    client    /{route:5}  {best * 1e6:.2f} us/request", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
