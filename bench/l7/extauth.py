"""What external authorization adds to a request: the proxy's per-request work without
sockets (``bench.l7.hotpath``'s in-memory transports), the bench's /plain route asking an
HTTP ext-auth service (Envoy's ext_authz HTTP protocol) before it forwards.

The service's side costs nothing here: its answer is a constant fed to the proxy's pooled
connection to it, so the time is kgw's own (build and write the check request, parse the
answer, decide, apply its header, then the request's task path).

Modes: ``none`` (no check: the fast path, the baseline), ``task`` (no check, but a request
timeout on the rule, which takes the same task path a checked request takes: what leaving
the fast path costs by itself), ``http`` (the check; its answer allows and sets a header),
``grpc`` (the same as ``Authorization/Check`` on an HTTP/2 connection to the service: a
``CheckRequest`` built and sent, the ``CheckResponse`` parsed; its frames are precomputed).

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
from typing import Any

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
from kgw_l7.upstream_h2 import H2Conn  # noqa: E402

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
    if mode in ("http", "grpc"):
        svc = Backend("bench/authz:80", endpoints=(Endpoint("127.0.0.1", AUTH_PORT),),
                      protocol="h2c" if mode == "grpc" else "http")
        plain = config.listeners[0].virtual_hosts[0].routes[1].rule
        return with_rules(config, filters=dataclasses.replace(
            plain.filters, ext_auth=ExtAuth(
                "GRPC" if mode == "grpc" else "HTTP", svc,
                allowed_response_headers=("x-auth-request-user",) if mode == "http" else ())))
    return config


class GrpcAnswers:
    """The service's side of ``Authorization/Check`` on the proxy's HTTP/2 connection:
    precomputed frames (HEADERS, the CheckResponse in DATA, trailers) for a stream id."""

    def __init__(self) -> None:
        import hpack
        from envoy.service.auth.v3 import external_auth_pb2 as pb

        resp = pb.CheckResponse()
        resp.status.code = 0
        h = resp.ok_response.headers.add()
        h.header.key, h.header.value = "x-auth-request-user", "alice"
        data = resp.SerializeToString()
        self.message = b"\x00" + len(data).to_bytes(4, "big") + data
        head = [(b":status", b"200"), (b"content-type", b"application/grpc")]
        trailers = [(b"grpc-status", b"0")]
        enc = hpack.Encoder()
        self.first = (enc.encode(head), enc.encode(trailers))
        self.steady = (enc.encode(head), enc.encode(trailers))
        assert (enc.encode(head), enc.encode(trailers)) == self.steady
        self.used = False

    def frames(self, sid: int, window: int) -> bytes:
        """The answer on stream ``sid``, after a WINDOW_UPDATE giving the connection back
        ``window`` bytes (what the check request took of it: a real service does that)."""
        from hyperframe.frame import DataFrame, HeadersFrame, WindowUpdateFrame

        head, trailers = self.steady if self.used else self.first
        self.used = True
        update = WindowUpdateFrame(0, window).serialize() if window else b""
        return (update + HeadersFrame(sid, head, flags=["END_HEADERS"]).serialize()
                + DataFrame(sid, self.message).serialize()
                + HeadersFrame(sid, trailers, flags=["END_HEADERS", "END_STREAM"]).serialize())


async def drive(requests: int, conn: DownstreamConn, client: MemoryTransport,
                up: UpstreamConn, backend: MemoryTransport, auth_up: Any,
                auth: MemoryTransport | None, data: bytes, response: bytes,
                answers: list[bytes] | None) -> None:
    """``requests`` requests, one at a time: each answered by the service (when there is
    one: ``answers`` are its gRPC frames, one per request) and the backend as soon as kgw
    has written to them."""
    sleep = asyncio.sleep
    for i in range(requests):
        n = len(client.out)
        conn.data_received(data)
        if auth is not None:
            while not auth.out:
                await sleep(0)
            auth.out.clear()
            auth_up.data_received(answers[i] if answers is not None else ALLOW)
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
    auth_up: Any = None
    auth = None
    grpc = None
    if mode == "http":
        auth_up = UpstreamConn(("127.0.0.1", AUTH_PORT, None))
        auth = MemoryTransport()
        auth_up.connection_made(auth)  # type: ignore[arg-type]
        ctx.pool.release(auth_up, ctx.now)
    elif mode == "grpc":
        from hyperframe.frame import SettingsFrame

        key = ("127.0.0.1", AUTH_PORT, None)
        auth_up = H2Conn(key, ctx.pool)
        auth = MemoryTransport()
        auth_up.connection_made(auth)
        ctx.pool._h2[key] = [auth_up]  # (the pool's HTTP/2 connection to the service)
        auth_up.data_received(SettingsFrame(0).serialize())  # the service's preface
        auth.out.clear()  # (the proxy's preface and SETTINGS ack: not a check request)
        grpc = GrpcAnswers()

    window = [0]

    def answers(n: int) -> list[bytes] | None:
        if grpc is None:
            return None
        last = auth_up.h2.highest_outbound_stream_id
        first = last + 2 if last else 1
        return [grpc.frames(first + 2 * i, window[0]) for i in range(n)]

    response = RESPONSES["echo"]
    data = b"GET /plain HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer t0k3n\r\n\r\n"
    loop.run_until_complete(drive(1, conn, client, up, backend, auth_up, auth, data, response,
                                  answers(1)))
    assert client.out[-1].startswith(b"HTTP/1.1 200 OK\r\n"), client.out[-1][:200]
    if grpc is not None:
        # every check request is the same size: its DATA payload is what each answer's
        # WINDOW_UPDATE gives back (5 bytes of gRPC framing and the CheckRequest)
        window[0] = auth_up.h2.outbound_flow_control_window
        window[0] = 65535 - window[0]
    best = float("inf")
    for _ in range(repeat):
        client.out.clear()
        frames = answers(requests)
        t0 = time.perf_counter()
        loop.run_until_complete(drive(requests, conn, client, up, backend, auth_up, auth,
                                      data, response, frames))
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
    p.add_argument("--mode", choices=("none", "task", "http", "grpc"), action="append")
    args = p.parse_args(argv)
    print(f"kgw_l7 {'compiled' if kgw_l7.extension_in_use('exchange') else 'interpreted'}")
    for mode in args.mode or ("none", "task", "http", "grpc"):
        best = run(mode, args.requests, args.repeat)
        print(f"{mode:6}  {best * 1e6:8.2f} us/request", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
