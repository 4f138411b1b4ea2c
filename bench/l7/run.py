"""L7 proxy benchmark: kgw vs nginx vs haproxy in front of the same ``kgw echo``.

Each proxy runs with one worker, as a keep-alive reverse proxy on loopback, with two
routes: ``/plain`` (a prefix route) and ``/hdr`` (requires ``X-Bench: yes`` and adds a
request header). All three forward the same request fields (Host as sent, X-Request-Id,
X-Forwarded-For, X-Forwarded-Proto: ``NGINX_FORWARDED`` and ``HAPROXY_CONF``), so the
backend gets the same request from each. ``wrk`` drives each (proxy, route) for a fixed
time; we report requests/s, p50/p99 latency, and the proxy process's CPU time per request
read from /proc/PID/stat (utime + stime of the worker process only).

Usage: ``.venv/bin/python -m bench.l7.run [--duration 5] [--connections 16]
[--backend echo|nginx] [--out bench/results/l7.md]``. The backend is ``kgw echo`` by
default; ``--backend nginx`` puts a static nginx server there instead, which answers the
way many production backends do (Server, Date and ``Connection: keep-alive`` fields) and
costs less than the echo server per request. Needs ``wrk``, ``nginx`` and ``haproxy``
(``scripts/setup.sh bench``); a missing peer is skipped and reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
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

from bench.report import save  # noqa: E402
from kgw_l7.config import (  # noqa: E402
    Backend, BackendProtocol, Endpoint, Filters, HeaderMatch, HeaderModifier, L7Config, Listener,
    PathMatch, Route, RouteMatch, Rule, VirtualHost,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of one process in seconds, from /proc/PID/stat."""
    data = Path(f"/proc/{pid}/stat").read_text()
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


@dataclass
class Result:
    proxy: str
    route: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us_per_req: float
    user_us_per_req: float
    sys_us_per_req: float
    round: int = 1


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]


#: With --pin: the proxy under test gets a core of its own, wrk and the echo backend share
#: the others, so every proxy sees the same neighbours in every run.
PROXY_CPUS: set[int] | None = None
LOAD_CPUS: set[int] | None = None


def _pin_load() -> None:
    if LOAD_CPUS:
        os.sched_setaffinity(0, LOAD_CPUS)


def run_wrk(port: int, route: str, duration: int, connections: int, pid: int,
            proxy: str) -> Result:
    url = f"http://127.0.0.1:{port}/{route}"
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
           "-H", "X-Bench: yes", url]
    if PROXY_CPUS:
        os.sched_setaffinity(pid, PROXY_CPUS)
    # warm-up (pools filled, caches hot), not measured
    subprocess.run(["wrk", "-t1", f"-c{connections}", "-d1s", "-H", "X-Bench: yes", url],
                   capture_output=True, timeout=30, check=True, preexec_fn=_pin_load)
    before = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30,
                         check=True, preexec_fn=_pin_load).stdout
    after = cpu_seconds(pid)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    n = max(total, 1)
    user = (after[0] - before[0]) / n * 1e6
    system = (after[1] - before[1]) / n * 1e6
    return Result(proxy, route, rps, p50, p99, total, errors, user + system, user, system)


# -- the proxies ------------------------------------------------------------------------------

def bench_config(port: int, echo_port: int, protocol: BackendProtocol = "http") -> L7Config:
    """kgw's side of the two routes: /hdr (header match, a request header added), then
    /plain (a prefix), both to the backend at ``echo_port`` (spoken to in ``protocol``)."""
    ep = (Endpoint("127.0.0.1", echo_port),)
    plain = Rule("bench/plain/0", "bench/plain", "bench/gw",
                 backends=(Backend("bench/echo:80", endpoints=ep, protocol=protocol),))
    hdr = Rule("bench/hdr/0", "bench/hdr", "bench/gw",
               backends=(Backend("bench/echo:80", endpoints=ep, protocol=protocol),),
               filters=Filters(request_headers=HeaderModifier(add=(("X-Added", "1"),))))
    routes = (
        Route(RouteMatch(path=PathMatch("PathPrefix", "/hdr"),
                         headers=(HeaderMatch("X-Bench", "yes"),)), hdr),
        Route(RouteMatch(path=PathMatch("PathPrefix", "/plain")), plain),
    )
    return L7Config((Listener("bench", "127.0.0.1", port,
                              virtual_hosts=(VirtualHost("*", routes),)),), 1)


class Kgw:
    """kgw's L7 plane with one worker; ``interpreted`` runs the worker on the .py modules
    even where scripts/build_ext.py compiled them (KGW_NO_EXTENSIONS=1)."""

    name = "kgw"

    def __init__(self, port: int, echo_port: int, interpreted: bool = False,
                 access_log: str = "off") -> None:
        from kgw_l7.plane import L7Plane

        self.port = port
        self.config = bench_config(port, echo_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.plane = L7Plane(workers=1, access_log=access_log)  # (its default format)
        saved = os.environ.get("KGW_NO_EXTENSIONS")
        if interpreted:
            os.environ["KGW_NO_EXTENSIONS"] = "1"  # inherited by the worker it starts
        try:
            self._call(self.plane.start())
        finally:
            if saved is None:
                os.environ.pop("KGW_NO_EXTENSIONS", None)
            else:
                os.environ["KGW_NO_EXTENSIONS"] = saved
        self._call(self.plane.apply(self.config))
        self.pid = self.plane.worker_pids()[0]

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def stop(self) -> None:
        self._call(self.plane.close(1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)


#: The request fields kgw sets on every forwarded request, set the same way by the peers
#: so that the three proxies do the same work and the backend sees the same request
#: (and answers the same body): Host as the client sent it, X-Request-Id (the client's,
#: else a new one), X-Forwarded-For (appended to), X-Forwarded-Proto. kgw makes request
#: ids from a counter; the peers do too (nginx's $request_id, 16 random bytes per request,
#: cost it 1.3 µs more per request here, and haproxy's uuid() is random as well).
NGINX_FORWARDED = (
    "proxy_set_header Host $http_host; proxy_set_header X-Request-Id $bench_request_id; "
    "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; "
    "proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header Connection \"\";")

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  {access_log};
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream echo {{ server 127.0.0.1:{echo}; keepalive 128; }}
  map $http_x_request_id $bench_request_id {{
    default $http_x_request_id; "" $pid-$connection-$connection_requests;
  }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    location /plain {{
      proxy_pass http://echo; proxy_http_version 1.1; {forwarded}
    }}
    location /hdr {{
      if ($http_x_bench != "yes") {{ return 404; }}
      proxy_pass http://echo; proxy_http_version 1.1; {forwarded}
      proxy_set_header X-Added "1";
    }}
  }}
}}
"""

#: --backend nginx: a fixed JSON answer of the echo server's size, from nginx.
BACKEND_CONF = """
worker_processes 1;
daemon off;
master_process off;
pid {tmp}/backend.pid;
error_log {tmp}/backend-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path {tmp}/bbody; proxy_temp_path {tmp}/bproxy;
  fastcgi_temp_path {tmp}/bfcgi; uwsgi_temp_path {tmp}/buwsgi; scgi_temp_path {tmp}/bscgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{{"path": "$uri", "host": "$http_host", "method": "$request_method", "proto": "$server_protocol", "headers": {{"X-Bench": ["$http_x_bench"], "X-Request-Id": ["$http_x_request_id"], "X-Forwarded-For": ["$http_x_forwarded_for"], "X-Added": ["$http_x_added"]}}, "namespace": "", "pod": "bench-nginx"}}';
    }}
  }}
}}
"""  # noqa: E501 (data)

HAPROXY_CONF = """
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
{httplog}  option forwardfor
  http-request set-header X-Forwarded-Proto http
  unique-id-format %pid-%rt
  http-request set-header X-Request-Id %[unique-id] unless {{ req.hdr(x-request-id) -m found }}
  acl is_hdr path_beg /hdr
  acl is_plain path_beg /plain
  acl has_bench req.hdr(x-bench) -m str yes
  http-request add-header X-Added 1 if is_hdr has_bench
  use_backend echo if is_hdr has_bench
  use_backend echo if is_plain
  default_backend none
backend echo
  server s1 127.0.0.1:{echo}
backend none
  http-request return status 404
"""


class External:
    def __init__(self, name: str, cmd: list[str], port: int, pid_of_worker: Any,
                 stdout: Any = subprocess.DEVNULL) -> None:
        self.name = name
        self.port = port
        self.proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE)
        wait_port(port)
        self.pid = pid_of_worker(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _only_child(pid: int) -> int:
    """nginx's worker: the master's child process."""
    for _ in range(50):
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise RuntimeError("nginx worker not found")


#: --access-logs: the combined format to a file, in 64 KiB writes (nginx's buffered log).
NGINX_ACCESS_LOG = "access_log {tmp}/nginx-access.log combined buffer=64k flush=1s"
#: --access-logs: haproxy's HTTP log format, written by haproxy itself to its stdout
#: (a file here; it has no buffered file log of its own, syslog being the usual way).
HAPROXY_HTTPLOG = "  option httplog\n  log stdout format raw local0 info\n"


def start_nginx(port: int, echo: int, tmp: Path, access_logs: bool = False) -> External:
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(
        tmp=tmp, port=port, echo=echo, forwarded=NGINX_FORWARDED,
        access_log=NGINX_ACCESS_LOG.format(tmp=tmp) if access_logs else "access_log off"))
    return External("nginx", ["nginx", "-c", str(conf), "-p", str(tmp)], port, _only_child)


def start_haproxy(port: int, echo: int, tmp: Path, access_logs: bool = False) -> External:
    conf = tmp / "haproxy.cfg"
    conf.write_text(HAPROXY_CONF.format(port=port, echo=echo,
                                        httplog=HAPROXY_HTTPLOG if access_logs else ""))
    out: Any = subprocess.DEVNULL
    if access_logs:
        out = open(tmp / "haproxy-access.log", "ab")  # (closed with the process's exit)
    return External("haproxy", ["haproxy", "-db", "-f", str(conf)], port, lambda pid: pid,
                    stdout=out)


def start_backend(kind: str, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    """The backend every proxy forwards to: ``kgw echo`` or the static nginx server
    (BACKEND_CONF), on the load CPUs."""
    if kind == "nginx":
        conf = tmp / "backend.conf"
        conf.write_text(BACKEND_CONF.format(tmp=tmp, port=port))
        cmd = ["nginx", "-c", str(conf), "-p", str(tmp)]
    else:
        cmd = [sys.executable, "-m", "kgw_l7.echo", "--address", "127.0.0.1",
               "--port", str(port), "--pod", "bench-echo", "--quiet"]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, preexec_fn=_pin_load)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--backend", choices=("echo", "nginx"), default="echo",
                   help="what the proxies forward to (see the module docstring)")
    p.add_argument("--out", default=str(ROOT / "bench/results/l7.md"))
    p.add_argument("--proxies", default="kgw,kgw-interpreted,nginx,haproxy",
                   help="comma-separated subset to run")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds over every proxy, interleaved; the summary takes each "
                        "proxy's median (a shared machine drifts between runs)")
    p.add_argument("--access-logs", action="store_true",
                   help="every proxy writes an access log to a file: kgw its default "
                        "(JSON), nginx combined with buffer=64k, haproxy option httplog")
    p.add_argument("--no-pin", action="store_true",
                   help="do not give the proxy a CPU of its own (it is pinned by default "
                        "on machines with 2 or more CPUs)")
    args = p.parse_args(argv)
    global PROXY_CPUS, LOAD_CPUS
    cpus = sorted(os.sched_getaffinity(0))
    if not args.no_pin and len(cpus) >= 2:
        PROXY_CPUS, LOAD_CPUS = {cpus[-1]}, set(cpus[:-1])
    if shutil.which("wrk") is None:
        print("wrk is not installed (scripts/setup.sh bench)", file=sys.stderr)
        return 2
    echo_port = free_port()
    results: list[Result] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kgw-bench-") as d:
        tmp = Path(d)
        if args.backend == "nginx":
            if shutil.which("nginx") is None:
                print("nginx is not installed (scripts/setup.sh bench)", file=sys.stderr)
                return 2
        echo = start_backend(args.backend, echo_port, tmp)
        try:
            wait_port(echo_port)
            log = str(tmp / "kgw-access.log") if args.access_logs else "off"
            starters = [("kgw", lambda port: Kgw(port, echo_port, access_log=log)),
                        ("kgw-interpreted", lambda port: Kgw(port, echo_port, True, log))]
            for name, fn in (("nginx", start_nginx), ("haproxy", start_haproxy)):
                if shutil.which(name):
                    starters.append((name, lambda port, fn=fn: fn(port, echo_port, tmp,
                                                                  args.access_logs)))
                else:
                    skipped.append(name)
            wanted = set(args.proxies.split(","))
            starters = [s for s in starters if s[0] in wanted]
            # The backend's own warm-up (a fresh Python process is slower for its first
            # seconds): otherwise the first proxy of round 1 meets a slower backend,
            # serves fewer requests per wake-up and pays more CPU per request.
            subprocess.run(["wrk", "-t1", f"-c{args.connections}", "-d2s",
                            f"http://127.0.0.1:{echo_port}/plain"], capture_output=True,
                           timeout=30, check=True, preexec_fn=_pin_load)
            for rnd in range(1, args.rounds + 1):
                # Each round starts with the next proxy, so no proxy always runs first.
                k = (rnd - 1) % len(starters) if starters else 0
                for name, start in starters[k:] + starters[:k]:
                    port = free_port()
                    proxy = start(port)
                    try:
                        for route in ("plain", "hdr"):
                            r = run_wrk(port, route, args.duration, args.connections,
                                        proxy.pid, name)
                            r.round = rnd
                            results.append(r)
                            print(f"{rnd} {name:15} /{route:5} {r.rps:9.0f} req/s  "
                                  f"p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  "
                                  f"cpu {r.cpu_us_per_req:6.1f} us/req "
                                  f"(user {r.user_us_per_req:.1f} sys {r.sys_us_per_req:.1f})"
                                  f"  errors {r.errors}", flush=True)
                    finally:
                        proxy.stop()
        finally:
            echo.terminate()
            echo.wait(5)
    write_report(Path(args.out), results, skipped, args)
    return 0


def _compiled() -> bool:
    import kgw_l7

    return kgw_l7.build_is_fresh()


def write_report(path: Path, results: list[Result], skipped: list[str],
                 args: argparse.Namespace) -> None:
    lines = [
        "# L7 proxy benchmark",
        "",
        f"Command: `.venv/bin/python -m bench.l7.run --duration {args.duration} "
        f"--connections {args.connections} --rounds {args.rounds}"
        f"{' --backend nginx' if args.backend == 'nginx' else ''}"
        f"{' --access-logs' if args.access_logs else ''}"
        f"{' --no-pin' if args.no_pin else ''}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, loopback). kgw_l7 compiled by scripts/build_ext.py: "
        f"{'yes' if _compiled() else 'no (not built)'}; `kgw-interpreted` is the same "
        "worker on the .py modules (KGW_NO_EXTENSIONS=1).",
        "",
        "Setup: one worker per proxy, keep-alive to the client (wrk -t1) and to the backend; "
        + ("the backend is one `kgw echo` process (Python, uvloop) shared by all runs; "
           if args.backend == "echo" else
           "the backend is one nginx process answering a fixed JSON document (with the "
           "Server, Date and `Connection: keep-alive` fields nginx sends), shared by all "
           "runs; ")
        + ("access logs on everywhere, to a file: kgw's default (JSON lines, batched by "
           "a thread), nginx `access_log ... combined buffer=64k flush=1s`, haproxy "
           "`option httplog` written by haproxy to its stdout (a file). "
           if args.access_logs else "access logs off everywhere. ")
        + "`/plain` is a prefix route; `/hdr` needs the header "
        "`X-Bench: yes` and adds a request header. Every proxy forwards the same request "
        "fields: Host as the client sent it, X-Request-Id (the client's, else a new one "
        "from a counter), X-Forwarded-For and X-Forwarded-Proto. CPU is the proxy "
        "worker's utime+stime (/proc/PID/stat) over the measured run divided by the "
        "requests served. "
        + (f"The proxy is pinned to CPU {sorted(PROXY_CPUS)}, wrk and the backend to "
           f"CPUs {sorted(LOAD_CPUS)} (`--no-pin` turns this off), so each proxy has the "
           "same neighbours; requests/s is bounded by wrk and the backend on their core, "
           "CPU per request is the comparison." if PROXY_CPUS else
           "wrk, the backend and the proxy share the machine's cores, so requests/s "
           "is bounded by the backend as much as by the proxy; CPU per request is the "
           "fairer comparison.")
        + f" The proxies take turns, {args.rounds} rounds, each round starting with the next proxy"
          " (the backend is warmed up first); the summary is each one's "
          "median over the rounds.",
        "",
        "| round | proxy | route | req/s | p50 ms | p99 ms | CPU µs/req | user | sys | errors |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.round} | {r.proxy} | /{r.route} | {r.rps:.0f} | {r.p50_ms:.2f} | "
                     f"{r.p99_ms:.2f} | {r.cpu_us_per_req:.1f} | {r.user_us_per_req:.1f} | "
                     f"{r.sys_us_per_req:.1f} | {r.errors} |")
    med: dict[tuple[str, str], tuple[float, float, float, float]] = {}
    for key in dict.fromkeys((r.proxy, r.route) for r in results):
        rs = [r for r in results if (r.proxy, r.route) == key]
        med[key] = (statistics.median(r.cpu_us_per_req for r in rs),
                    statistics.median(r.user_us_per_req for r in rs),
                    statistics.median(r.sys_us_per_req for r in rs),
                    statistics.median(r.p99_ms for r in rs))
    lines += ["", "Medians:", "",
              "| proxy | route | CPU µs/req | user | sys | p99 ms |",
              "|---|---|---:|---:|---:|---:|"]
    for (proxy, route), (cpu, user, sys_, p99) in med.items():
        lines.append(f"| {proxy} | /{route} | {cpu:.1f} | {user:.1f} | {sys_:.1f} | {p99:.2f} |")
    lines.append("")
    for route in ("plain", "hdr"):
        k, n = med.get(("kgw", route)), med.get(("nginx", route))
        if k and n:
            cpu = k[0] / n[0]
            p99 = k[3] / n[3]
            per_round = [a.cpu_us_per_req / b.cpu_us_per_req for a in results for b in results
                         if a.route == b.route == route and a.round == b.round
                         and a.proxy == "kgw" and b.proxy == "nginx"]
            lines.append(
                f"- /{route}: kgw CPU/request = {cpu:.2f}x nginx, medians (target <= 1.3x: "
                f"{'met' if cpu <= 1.3 else 'NOT met'}; per round "
                f"{', '.join(f'{x:.2f}' for x in per_round)}); kgw p99 = {p99:.2f}x nginx "
                f"(target <= 1.5x: {'met' if p99 <= 1.5 else 'NOT met'}).")
    if skipped:
        lines.append(f"- Not run (not installed): {', '.join(skipped)}.")
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    save(path, "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
