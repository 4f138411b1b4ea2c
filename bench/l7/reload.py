"""Route change on disk -> traffic on the new route, through `kgw run`, at N HTTPRoutes.

    .venv/bin/python -m bench.l7.reload [--routes 10000] [--changes 10] [--workers 1]

Writes N HTTPRoutes (own hostname each, files of 100) whose backend is one `kgw echo`,
starts `kgw run` on them, then repeatedly edits one route file to add a rule that
redirects a new path, and measures the time from the write to the first redirect on
that path (a keep-alive client polling every 1 ms; before the change the path is served
by the route's "/" rule with 200). Everything runs on loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.helpers import free_port, kgw_cmd, running

PER_FILE = 100


def route(i: int, extra_path: str | None, port: int) -> str:
    rules = [
        "  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: echo, port: "
        "80}]"]
    if extra_path:  # the new rule answers with a redirect: observable on the wire
        rules.insert(0, f"  - matches: [{{path: {{type: Exact, value: {extra_path}}}}}]\n"
                        "    filters: "
                        "[{type: RequestRedirect, "
                        "requestRedirect: {hostname: moved.example.com}}]")
    return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
            f"metadata: {{name: r{i}, namespace: bench}}\nspec:\n  parentRefs: [{{name: gw}}]\n"
            f"  hostnames: [h{i}.example.com]\n  rules:\n" + "\n".join(rules) + "\n")


def write_files(d: Path, n: int, gw_port: int, echo_port: int, extra: dict[int, str]) -> None:
    for f in range(0, n, PER_FILE):
        (d / f"routes-{f // PER_FILE:04d}.yaml").write_text("---\n".join(
            route(i, extra.get(i), gw_port) for i in range(f, min(n, f + PER_FILE))))


def base(d: Path, gw_port: int, echo_port: int) -> None:
    (d / "gateway.yaml").write_text(f"""\
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
  listeners: [{{name: http, protocol: HTTP, port: {gw_port}}}]
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
""")


def status_of(conn: http.client.HTTPConnection, host: str, path: str) -> int:
    conn.request("GET", path, headers={"Host": host})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, default=10000)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    gw_port, echo_port, admin_port = free_port(), free_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    with tempfile.TemporaryDirectory(prefix="kgw-reload-") as tmp:
        d = Path(tmp)
        base(d, gw_port, echo_port)
        extra: dict[int, str] = {}
        write_files(d, args.routes, gw_port, echo_port, extra)
        echo = kgw_cmd("echo", "--address", "127.0.0.1", "--port", str(echo_port), "--pod",
                       "echo-1-1", "--quiet")
        run = kgw_cmd("run", "-c", str(d), "--admin-address", admin, "--workers", str(args.workers),
                      "--access-log", "off", "--l4-mode", "userspace", "--log-level", "warning")
        with running(echo, stdout=subprocess.DEVNULL), running(run):
            started = time.monotonic()
            while True:
                try:
                    with urllib.request.urlopen(f"http://{admin}/readyz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() - started > 300:
                    raise SystemExit("kgw did not become ready")
                time.sleep(0.1)
            ready = time.monotonic() - started
            conn = http.client.HTTPConnection("127.0.0.1", gw_port, timeout=5)
            assert status_of(conn, "h0.example.com", "/") == 200
            latencies = []
            for k in range(args.changes):
                i = (k * 7919) % args.routes
                path = f"/new-{k}"
                extra[i] = path
                f = i - i % PER_FILE
                target = d / f"routes-{f // PER_FILE:04d}.yaml"
                text = "---\n".join(route(j, extra.get(j), gw_port)
                                    for j in range(f, min(args.routes, f + PER_FILE)))
                host = f"h{i}.example.com"
                assert status_of(conn, host, path) == 200  # before: the "/" rule serves it
                t0 = time.perf_counter()
                target.write_text(text)
                while status_of(conn, host, path) != 302:
                    if time.perf_counter() - t0 > 30:
                        raise SystemExit("change not live in 30 s")
                    time.sleep(0.001)
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.2)
    print(
        f"# {' '.join([os.path.basename(sys.executable), '-m', 'bench.l7.reload'] + sys.argv[1:])}")
    print(f"routes={args.routes} workers={args.workers}: ready after {ready:.1f} s; "
          "change on disk -> traffic on the new rule: median "
          f"{statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} changes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
