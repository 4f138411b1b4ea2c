"""HTTP/2 from clients: kgw vs nginx (``http2``), both TLS with ALPN h2, one worker each,
in front of the same HTTP/1.1 ``kgw echo``.

``h2load -c16 -m10`` (16 connections, 10 concurrent streams each) drives the ``/hdr``
route of bench/l7 (header match, a request header added) for a fixed time per proxy;
both proxies forward the same request fields as in bench/l7 (``NGINX_FORWARDED``). We
report requests/s, p50/p99 latency (from h2load's per-request log) and the proxy
worker's CPU time per request (/proc/PID/stat). Pinned as bench/l7 pins: the proxy on
the last CPU, h2load and the backend on the others.

Usage: ``.venv/bin/python -m bench.h2.run [--duration 5] [--rounds 3]
[--out bench/results/h2.md]``. Needs ``h2load`` (nghttp2-client) and ``nginx``
(``scripts/setup.sh bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.report import load_note, save  # noqa: E402
from bench.l7 import run as l7  # noqa: E402
from kgw_l7.config import Certificate, L7Config, Listener  # noqa: E402

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream echo {{ server 127.0.0.1:{echo}; keepalive 128; }}
  map $http_x_request_id $bench_request_id {{
    default $http_x_request_id; "" $pid-$connection-$connection_requests;
  }}
  server {{
    listen 127.0.0.1:{port} ssl http2 reuseport;
    ssl_certificate {tmp}/tls.crt; ssl_certificate_key {tmp}/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    http2_max_concurrent_streams 100; keepalive_requests 100000000;
    location /hdr {{
      if ($http_x_bench != "yes") {{ return 404; }}
      proxy_pass http://echo; proxy_http_version 1.1; {forwarded}
      proxy_set_header X-Added "1";
    }}
  }}
}}
"""


@dataclass
class Result:
    proxy: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us_per_req: float


def self_signed() -> tuple[str, str]:
    from tests.l7.conftest import self_signed as make
    return make(["bench.example.com"])


class Kgw:
    """kgw's L7 plane, one worker, the bench/l7 routes on an HTTPS listener."""

    name = "kgw"

    def __init__(self, port: int, echo_port: int, cert: tuple[str, str]) -> None:
        from kgw_l7.plane import L7Plane

        base = l7.bench_config(port, echo_port).listeners[0]
        config = L7Config((Listener("bench", "127.0.0.1", port, "HTTPS",
                                    (Certificate(("*",), *cert),), base.virtual_hosts),), 1)
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


def start_nginx(port: int, echo: int, tmp: Path) -> l7.External:
    conf = tmp / "nginx-h2.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, echo=echo,
                                     forwarded=l7.NGINX_FORWARDED))
    return l7.External("nginx", ["nginx", "-c", str(conf), "-p", str(tmp)], port,
                       l7._only_child)


def run_h2load(port: int, duration: int, pid: int, proxy: str, rnd: int,
               tmp: Path, base: list[str] | None = None) -> Result:
    """``base``: the h2load command without -D and --log-file (default: /hdr over TLS)."""
    if base is None:
        base = ["h2load", "-c16", "-m10", "-t1", "-H", "X-Bench: yes",
                f"https://127.0.0.1:{port}/hdr"]
    if l7.PROXY_CPUS:
        os.sched_setaffinity(pid, l7.PROXY_CPUS)
    subprocess.run(base + ["-D", "1"], capture_output=True, timeout=60, check=True,
                   preexec_fn=l7._pin_load)  # warm-up, not measured
    log = tmp / f"h2load-{proxy}-{rnd}.log"
    before = l7.cpu_seconds(pid)
    out = subprocess.run(base + ["-D", str(duration), "--log-file", str(log)],
                         capture_output=True, text=True, timeout=duration + 60, check=True,
                         preexec_fn=l7._pin_load).stdout
    after = l7.cpu_seconds(pid)
    durations = []
    errors = 0
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            if parts[1] != "200":
                errors += 1
            durations.append(int(parts[2]) / 1000.0)  # µs -> ms
    durations.sort()
    n = max(len(durations), 1)
    for line in out.splitlines():
        if line.startswith("requests:"):  # "... N succeeded, N failed, N errored, N timeout"
            words = line.replace(",", "").split()
            errors += sum(int(words[i - 1]) for i, w in enumerate(words)
                          if w in ("errored", "timeout"))
    cpu = (after[0] - before[0] + after[1] - before[1]) / n * 1e6
    return Result(proxy, rnd, n / duration, durations[n // 2], durations[int(n * 0.99)],
                  n, errors, cpu)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench/results/h2.md"))
    args = p.parse_args(argv)
    for tool in ("h2load", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (scripts/setup.sh bench)", file=sys.stderr)
            return 2
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        l7.PROXY_CPUS, l7.LOAD_CPUS = {cpus[-1]}, set(cpus[:-1])
    cert = self_signed()
    results: list[Result] = []
    echo_port = l7.free_port()
    with tempfile.TemporaryDirectory(prefix="kgw-bench-h2-") as d:
        tmp = Path(d)
        (tmp / "tls.crt").write_text(cert[0])
        (tmp / "tls.key").write_text(cert[1])
        echo = l7.start_backend("echo", echo_port, tmp)
        try:
            l7.wait_port(echo_port)
            starters = [("kgw", lambda port: Kgw(port, echo_port, cert)),
                        ("nginx", lambda port: start_nginx(port, echo_port, tmp))]
            for rnd in range(1, args.rounds + 1):
                k = (rnd - 1) % len(starters)
                for name, start in starters[k:] + starters[:k]:
                    port = l7.free_port()
                    proxy = start(port)
                    try:
                        r = run_h2load(port, args.duration, proxy.pid, name, rnd, tmp)
                        results.append(r)
                        print(f"{rnd} {name:6} {r.rps:8.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                              f"p99 {r.p99_ms:6.2f} ms  cpu {r.cpu_us_per_req:6.1f} us/req  "
                              f"errors {r.errors}", flush=True)
                    finally:
                        proxy.stop()
        finally:
            echo.terminate()
            echo.wait(5)
    write_report(Path(args.out), results, args)
    return 0



def result_tables(results: list[Result]) -> list[str]:
    """The per-round table, the medians and the kgw/nginx ratios (markdown lines), shared by
    the HTTP/2 and the gRPC reports."""
    lines = ["| round | proxy | req/s | p50 ms | p99 ms | CPU µs/req | errors |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.round} | {r.proxy} | {r.rps:.0f} | {r.p50_ms:.2f} | "
                     f"{r.p99_ms:.2f} | {r.cpu_us_per_req:.1f} | {r.errors} |")
    med = {}
    for name in ("kgw", "nginx"):
        rs = [r for r in results if r.proxy == name]
        if rs:
            med[name] = (statistics.median(r.cpu_us_per_req for r in rs),
                         statistics.median(r.p99_ms for r in rs),
                         statistics.median(r.rps for r in rs))
    lines += ["", "Medians over the rounds:", "",
              "| proxy | req/s | p99 ms | CPU µs/req |", "|---|---:|---:|---:|"]
    for name, (cpu, p99, rps) in med.items():
        lines.append(f"| {name} | {rps:.0f} | {p99:.2f} | {cpu:.1f} |")
    if "kgw" in med and "nginx" in med and med["nginx"][0] > 0:
        lines += ["", f"kgw / nginx CPU per request: {med['kgw'][0] / med['nginx'][0]:.2f}; "
                  f"p99 ratio: {med['kgw'][1] / max(med['nginx'][1], 1e-9):.2f}."]
    return lines

def write_report(path: Path, results: list[Result], args: argparse.Namespace) -> None:
    import kgw_l7

    lines = [
        "# HTTP/2 from clients: kgw vs nginx",
        "",
        f"Command: `.venv/bin/python -m bench.h2.run --duration {args.duration} --rounds "
        f"{args.rounds}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, loopback; kgw_l7 compiled: "
        f"{'yes' if kgw_l7.build_is_fresh() else 'no'}).",
        "",
        "Setup: `h2load -c16 -m10 -t1 -H 'X-Bench: yes' https://.../hdr` (TLS, ALPN h2) to "
        "each proxy with one worker (nginx 1.22 `listen ... ssl http2`), which forwards in "
        "HTTP/1.1 with keep-alive to one `kgw echo`; both set the same request fields as "
        "bench/l7. CPU is the proxy worker's utime+stime over the measured run divided by "
        "the requests; p50/p99 from h2load's per-request log. "
        + (f"The proxy is pinned to CPU {sorted(l7.PROXY_CPUS)}, h2load and the backend to "
           f"{sorted(l7.LOAD_CPUS)}. " if l7.PROXY_CPUS else "")
        + load_note() + " The CPU ratio is the comparison.",
        "",
    ]
    lines += result_tables(results)
    save(path, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
