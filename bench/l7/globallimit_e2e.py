"""The global rate limit end to end (issue #18: "≤ 1 Redis round trip per request and
p99 ≤ 1 ms higher"): the same offered load through `kgw run` to two routes, one with a
TrafficPolicy ``rateLimit.global`` (high enough never to refuse) and one without.

What runs, all on loopback and all started here: a ``redis-server`` (tests.redis_server),
a ``kgw echo`` backend, and ``kgw run`` with every flag at its default except the admin
address (a free port, so that it does not collide with another kgw on the machine). The
Gateway has two HTTPRoutes to the echo backend, ``limited.example.com`` (the global limit,
the policy's defaults: one bucket, timeout 100ms, failure mode Open) and
``plain.example.com``.

The client paces requests at a fixed rate (open loop: request i is due at t0 + i/rate),
on a bounded set of keep-alive HTTP/1.1 connections (httptools parses the responses), and
measures each request's latency from its write to its response's end (``perf_counter``:
uvloop's clock counts milliseconds). A request that found no idle connection is counted
as ``queued`` (its wait is not in the latency): non-zero means the load was not below
saturation and the figures are not the limit's cost. The two arms alternate in short
slices (``--rounds``), so the machine's load drifts over both alike.

Per arm: p50/p90/p99/max latency, kgw's CPU per request (the worker processes' utime +
stime from /proc, over the requests of that arm), Redis round trips per request (Redis's
own count: ``INFO commandstats`` EVALSHA + EVAL calls over requests), and the limit's
decisions from kgw's /metrics (a failure-mode decision means a check timed out or
failed: the figure would not be the limit's cost).

Usage: ``.venv/bin/python -m bench.l7.globallimit_e2e [--rate 500] [--seconds 5]
[--rounds 4] [--connections 32]``: prints one line per arm; bounded to
rounds x 2 x seconds plus start-up (~1 minute with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port, kgw_cmd, running  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

CONFIG = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: kgw}}
spec: {{controllerName: kgw.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: bench}}
spec:
  gatewayClassName: kgw
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners: [{{name: http, protocol: HTTP, port: {port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: bench}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: bench, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: http, port: {echo_port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: limited, namespace: bench}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [limited.example.com]
  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: plain, namespace: bench}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [plain.example.com]
  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: global, namespace: bench}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: limited}}]
  rateLimit:
    global:
      tokenBucket: {{maxTokens: 1000000000, tokensPerFill: 1000000, fillInterval: 1s}}
      redis: {{address: "127.0.0.1:{redis_port}"}}
"""

CLK_TCK = os.sysconf("SC_CLK_TCK")
ARMS = ("plain", "limited")


@dataclass
class Arm:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    queued: int = 0
    user_s: float = 0.0
    sys_s: float = 0.0
    redis_calls: int = 0
    redis_us: float = 0.0


class Client(asyncio.Protocol):
    """One keep-alive connection, one request at a time; ``on_done`` gets its status."""

    def __init__(self, on_done) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.on_done = on_done
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0
        self.arm: Arm | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.on_done(self, self.parser.get_status_code())

    def connection_lost(self, exc) -> None:
        if self.arm is not None:
            self.on_done(self, 0)

    def send(self, request: bytes, arm: Arm) -> None:
        self.arm = arm
        assert self.transport is not None
        self.sent = time.perf_counter()
        self.transport.write(request)


async def load(port: int, arm: Arm, rate: float, seconds: float, connections: int) -> None:
    """``rate`` requests/s for ``seconds`` to the arm's host."""
    loop = asyncio.get_running_loop()
    request = (b"GET /bench HTTP/1.1\r\nHost: %s.example.com\r\n\r\n" % arm.name.encode())
    idle: asyncio.Queue[Client] = asyncio.Queue()
    left = 0

    def done(c: Client, status: int) -> None:
        nonlocal left
        a, c.arm = c.arm, None
        if a is None:
            return
        if status == 200:
            a.latencies.append(time.perf_counter() - c.sent)
        else:
            a.errors += 1
        left -= 1
        if status:
            idle.put_nowait(c)

    for _ in range(connections):
        _, c = await loop.create_connection(lambda: Client(done), "127.0.0.1", port)
        idle.put_nowait(c)
    n = int(rate * seconds)
    t0 = time.perf_counter()
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle.empty():
            arm.queued += 1
        c = await asyncio.wait_for(idle.get(), 10)
        left += 1
        c.send(request, arm)
    end = loop.time() + 10
    while left > 0 and loop.time() < end:
        await asyncio.sleep(0.01)
    arm.errors += max(0, left)
    while not idle.empty():
        c = idle.get_nowait()
        if c.transport is not None:
            c.transport.close()


def workers(kgw_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(kgw_pid), "-f", "kgw_l7 worker"],
                         capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """The processes' user and system CPU seconds."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])  # utime, stime (fields 14, 15: after pid and comm)
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def redis_calls(port: int) -> tuple[int, float]:
    import redis

    with redis.Redis(port=port) as r:
        stats = r.info("commandstats")
    cmds = [stats.get(f"cmdstat_{c}", {}) for c in ("evalsha", "eval")]
    return sum(c.get("calls", 0) for c in cmds), sum(c.get("usec", 0) for c in cmds)


def decisions(admin: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for m in re.finditer(r'^kgw_l7_global_ratelimit_decisions_total\{[^}]*outcome="(\w+)"\} '
                         r'(\S+)$', text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(2))
    return out


def wait_ready(admin: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://{admin}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("kgw did not become ready")


def pct(sorted_lat: list[float], p: float) -> float:
    return sorted_lat[min(len(sorted_lat) - 1, int(p * len(sorted_lat)))] * 1e6


def report(arm: Arm, decided: dict[str, float]) -> str:
    lat = sorted(arm.latencies)
    n = len(lat) + arm.errors
    fields = {"arm": arm.name, "requests": n, "errors": arm.errors, "queued": arm.queued,
              "p50_us": pct(lat, 0.50), "p90_us": pct(lat, 0.90), "p99_us": pct(lat, 0.99),
              "max_us": lat[-1] * 1e6,
              "cpu_us_per_req": (arm.user_s + arm.sys_s) * 1e6 / max(1, n),
              "user_us_per_req": arm.user_s * 1e6 / max(1, n),
              "sys_us_per_req": arm.sys_s * 1e6 / max(1, n),
              "redis_calls_per_req": arm.redis_calls / max(1, n),
              "redis_cpu_us_per_call": arm.redis_us / max(1, arm.redis_calls)}
    if arm.name == "limited":
        fields.update({f"decided_{k}": int(v) for k, v in sorted(decided.items())})
    return " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in fields.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=500, help="requests/s offered (default 500)")
    p.add_argument("--seconds", type=float, default=5, help="seconds per slice (default 5)")
    p.add_argument("--rounds", type=int, default=4, help="slices per arm (default 4)")
    p.add_argument("--connections", type=int, default=32,
                   help="client keep-alive connections (default 32)")
    args = p.parse_args(argv)
    import uvloop

    port, admin, echo_port = free_port(), f"127.0.0.1:{free_port()}", free_port()
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis").start()
        try:
            conf = Path(tmp) / "conf"
            conf.mkdir()
            (conf / "bench.yaml").write_text(CONFIG.format(port=port, echo_port=echo_port,
                                                           redis_port=redis.port))
            echo = kgw_cmd("echo", "--address", "127.0.0.1", "--port", str(echo_port),
                           "--pod", "echo")
            kgw = kgw_cmd("run", "-c", str(conf), "--admin-address", admin)
            with running(echo, stdout=subprocess.DEVNULL), \
                    running(kgw, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
                wait_ready(admin)
                pids = workers(proc.pid)
                if not pids:
                    raise SystemExit("no kgw_l7 worker process found")
                arms = {name: Arm(name) for name in ARMS}
                for name in ARMS:  # warm-up: connections, Redis's script cache
                    uvloop.run(load(port, Arm(name), args.rate, 1, args.connections))
                start = decisions(admin)
                for _ in range(args.rounds):
                    for name in ARMS:
                        arm = arms[name]
                        cpu0, (calls0, us0) = cpu_seconds(pids), redis_calls(redis.port)
                        uvloop.run(load(port, arm, args.rate, args.seconds, args.connections))
                        calls1, us1 = redis_calls(redis.port)
                        user1, sys1 = cpu_seconds(pids)
                        arm.user_s += user1 - cpu0[0]
                        arm.sys_s += sys1 - cpu0[1]
                        arm.redis_calls += calls1 - calls0
                        arm.redis_us += us1 - us0
                end = decisions(admin)
                decided = {k: v - start.get(k, 0) for k, v in end.items()}
                print(f"rate={args.rate:.0f}/s seconds={args.seconds:.0f} rounds={args.rounds} "
                      f"connections={args.connections} workers={len(pids)} "
                      f"loadavg={os.getloadavg()[0]:.1f}")
                for name in ARMS:
                    print(report(arms[name], decided), flush=True)
        finally:
            redis.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
