"""gRPC unary calls: kgw (a GRPCRoute-shaped rule to an h2c backend) vs nginx
(``grpc_pass``), both h2c with prior knowledge from the client, one worker each, in front
of the same ``kgw echo --grpc-port`` (grpcio, the conformance suite's GrpcEcho service).

``h2load -c16 -m10`` POSTs the same gRPC request (``GrpcEcho/Echo``, an empty
``EchoRequest`` in its 5-byte frame, ``content-type: application/grpc``, ``te:
trailers``) for a fixed time per proxy; one grpcio call through each proxy first checks
that it answers OK. Figures as bench/h2/run.py: requests/s, p50/p99 latency, the proxy
worker's CPU time per request (the comparison: nginx's rate is bounded by the grpcio
backend, kgw's by its own worker).

Usage: ``.venv/bin/python -m bench.h2.grpc [--duration 5] [--rounds 3]
[--out bench/results/h2-grpc.md]``. Needs ``h2load`` and ``nginx`` (``scripts/setup.sh
bench``) and grpcio (``make setup``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.report import load_note, save  # noqa: E402
from bench.h2.run import Result, result_tables, run_h2load  # noqa: E402
from bench.l7 import run as l7  # noqa: E402
from kgw_l7.config import (  # noqa: E402
    Backend, Endpoint, L7Config, Listener, PathMatch, Route, RouteMatch, Rule, VirtualHost,
)

METHOD = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo"
#: An empty EchoRequest: uncompressed, length 0.
BODY = b"\x00\x00\x00\x00\x00"

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx-grpc.pid;
error_log {tmp}/error-grpc.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream grpcecho {{ server 127.0.0.1:{backend}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} http2 reuseport;
    http2_max_concurrent_streams 100; keepalive_requests 100000000;
    location /gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/ {{
      grpc_pass grpc://grpcecho;
    }}
  }}
}}
"""


class Kgw:
    """kgw's L7 plane, one worker: an HTTP listener, a method-prefix rule to the h2c
    backend (what a GRPCRoute with a service match compiles to)."""

    def __init__(self, port: int, backend: int) -> None:
        from kgw_l7.plane import L7Plane

        rule = Rule(name="bench/grpc/0", route="bench/grpc", gateway="bench/gw", backends=(
            Backend(name="bench/grpcecho:80", endpoints=(Endpoint("127.0.0.1", backend),),
                    protocol="h2c"),))
        match = RouteMatch(path=PathMatch(
            "PathPrefix", "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"))
        config = L7Config((Listener("bench", "127.0.0.1", port, virtual_hosts=(
            VirtualHost("*", (Route(match, rule),)),)),), 1)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.plane = L7Plane(workers=1, access_log="off")
        self._call(self.plane.start())
        self._call(self.plane.apply(config))
        self.pid = self.plane.worker_pids()[0]
        self.port = port

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def stop(self) -> None:
        self._call(self.plane.close(1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)


def start_nginx(port: int, backend: int, tmp: Path) -> l7.External:
    conf = tmp / "nginx-grpc.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, backend=backend))
    return l7.External("nginx", ["nginx", "-c", str(conf), "-p", str(tmp)], port,
                       l7._only_child)


def check_call(port: int) -> None:
    """One call through the proxy with grpcio: it must answer OK."""
    import grpc

    from kgw_l7.echo.grpcecho import load

    pb, services = load()
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)]) as ch:
        reply = services.GrpcEchoStub(ch).Echo(pb.EchoRequest(), timeout=10)
    assert reply.assertions.fully_qualified_method == METHOD, reply


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench/results/h2-grpc.md"))
    args = p.parse_args(argv)
    for tool in ("h2load", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (scripts/setup.sh bench)", file=sys.stderr)
            return 2
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        l7.PROXY_CPUS, l7.LOAD_CPUS = {cpus[-1]}, set(cpus[:-1])
    results: list[Result] = []
    backend_port, http_port = l7.free_port(), l7.free_port()
    with tempfile.TemporaryDirectory(prefix="kgw-bench-grpc-") as d:
        tmp = Path(d)
        body = tmp / "call.bin"
        body.write_bytes(BODY)
        backend = subprocess.Popen(
            [sys.executable, "-m", "kgw_l7.echo", "--address", "127.0.0.1",
             "--port", str(http_port), "--grpc-port", str(backend_port), "--pod", "bench-grpc",
             "--quiet"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
            preexec_fn=l7._pin_load)
        try:
            l7.wait_port(backend_port)
            starters = [("kgw", lambda port: Kgw(port, backend_port)),
                        ("nginx", lambda port: start_nginx(port, backend_port, tmp))]
            for rnd in range(1, args.rounds + 1):
                k = (rnd - 1) % len(starters)
                for name, start in starters[k:] + starters[:k]:
                    port = l7.free_port()
                    proxy = start(port)
                    try:
                        check_call(port)
                        base = ["h2load", "-c16", "-m10", "-t1", "-d", str(body),
                                "-H", "content-type: application/grpc", "-H", "te: trailers",
                                f"http://127.0.0.1:{port}{METHOD}"]
                        r = run_h2load(port, args.duration, proxy.pid, name, rnd, tmp, base)
                        results.append(r)
                        print(f"{rnd} {name:6} {r.rps:8.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                              f"p99 {r.p99_ms:6.2f} ms  cpu {r.cpu_us_per_req:6.1f} us/req  "
                              f"errors {r.errors}", flush=True)
                    finally:
                        proxy.stop()
        finally:
            backend.terminate()
            backend.wait(5)
    write_report(Path(args.out), results, args)
    return 0


def write_report(path: Path, results: list[Result], args: argparse.Namespace) -> None:
    import kgw_l7

    lines = [
        "# gRPC unary calls: kgw vs nginx `grpc_pass`",
        "",
        f"Command: `.venv/bin/python -m bench.h2.grpc --duration {args.duration} --rounds "
        f"{args.rounds}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, loopback; kgw_l7 compiled: "
        f"{'yes' if kgw_l7.build_is_fresh() else 'no'}).",
        "",
        "Setup: `h2load -c16 -m10 -t1 -d call.bin -H 'content-type: application/grpc' -H "
        f"'te: trailers' http://...{METHOD}` (h2c prior knowledge; an empty EchoRequest) to "
        "each proxy with one worker (nginx 1.22 `listen ... http2` + `grpc_pass` with "
        "keepalive; kgw an HTTP listener and a rule to an h2c backend), in front of one "
        "`kgw echo --grpc-port` (grpcio). The proxy worker's CPU per request (utime+stime "
        "over the run / requests) is the comparison: nginx's req/s is bounded by the grpcio "
        "backend, kgw's by its own worker (HTTP/2 on libnghttp2's sessions on both sides "
        "in the compiled build, the h2 library otherwise). "
        + (f"The proxy is pinned to CPU {sorted(l7.PROXY_CPUS)}, h2load and the backend to "
           f"{sorted(l7.LOAD_CPUS)}. " if l7.PROXY_CPUS else "")
        + load_note() + " The CPU ratio is the comparison.",
        "",
    ]
    lines += result_tables(results)
    save(path, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
