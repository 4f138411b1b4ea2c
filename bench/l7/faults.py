"""Fault figures for the L7 plane through `kgw run` (issue 24), on loopback, bounded in time.

    .venv/bin/python -m bench.l7.faults abandoned [--requests 10000] [--nofile 20000]
    .venv/bin/python -m bench.l7.faults weights [--requests 2000]

``abandoned``: a backend that accepts connections and never answers; each of N clients
sends a request and closes its side (FIN), as a client that gives up does. Prints the L7
worker's open file descriptors before and after (its RLIMIT_NOFILE is ``--nofile``),
/readyz, and whether a new request still gets an answer (504 after --response-timeout 2).

``weights``: backends weighted 3:1, the heavier with two endpoints of which one is dead;
every request misses the connection pool (the backend closes each connection). Prints
each destination's share (expected 37.5% / 37.5% dead (502) / 25%).
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from tests.helpers import free_port, kgw_cmd, running

GATEWAY = """\
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
"""

SERVICE = """\
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: bench}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: bench, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{endpoints}]
"""

ROUTE = """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: bench}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{refs}]}}]
"""


def service(name: str, port: int, addresses: list[str]) -> str:
    eps = ", ".join(f"{{addresses: [{a}], conditions: {{ready: true}}}}" for a in addresses)
    return SERVICE.format(name=name, port=port, endpoints=eps)


class HungBackend:
    """Accepts every connection and never answers; notices when the peer closes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.open = 0
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        while not self.stop:
            for key, _ in sel.select(0.2):
                if key.fileobj is self.sock:
                    try:
                        c, _ = self.sock.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ)
                    self.open += 1
                    continue
                c = key.fileobj
                try:
                    data = c.recv(65536)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(c)
                    c.close()  # type: ignore[union-attr]
                    self.open -= 1


def worker_pid(kgw_pid: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(kgw_pid), "-f", "kgw_l7 worker"],
                         capture_output=True, text=True).stdout.split()
    return int(out[0])


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_ready(admin: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://{admin}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("kgw did not become ready")


def readyz(admin: str) -> str:
    try:
        with urllib.request.urlopen(f"http://{admin}/readyz", timeout=5) as r:
            return r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.read().decode().strip()


def abandoned(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the backend holds many
    backend = HungBackend()
    port, admin = free_port(), f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as d:
        Path(d, "gw.yaml").write_text(GATEWAY.format(port=port)
                                      + service("hung", backend.port, ["127.0.0.1"])
                                      + ROUTE.format(refs="{name: hung, port: 80}"))
        cmd = ["prlimit", f"--nofile={args.nofile}:{args.nofile}",
               *kgw_cmd("run", "-c", d, "--admin-address", admin, "--workers", "1",
                        "--access-log", "off", "--l4-mode", "userspace",
                        "--response-timeout", "2", "--drain-delay", "0")]
        with running(cmd, stderr=subprocess.DEVNULL) as kgw:
            wait_ready(admin)
            worker = worker_pid(kgw.pid)
            before = fds(worker)
            t0 = time.monotonic()
            errors = 0
            for _ in range(args.requests):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                        s.sendall(b"GET /hang HTTP/1.1\r\nHost: hung.example.com\r\n\r\n")
                        s.shutdown(socket.SHUT_WR)
                except OSError:
                    errors += 1
            took = time.monotonic() - t0
            time.sleep(1)
            print(f"{args.requests} abandoned requests in {took:.1f}s ({errors} connect errors)")
            print(f"worker descriptors: {before} before, {fds(worker)} after "
                  f"(RLIMIT_NOFILE {args.nofile}); backend connections still open: {backend.open}")
            print(f"/readyz: {readyz(admin)}")
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                c.request("GET", "/new", headers={"Host": "hung.example.com"})
                print(f"a new request: {c.getresponse().status}")
            except OSError as exc:
                print(f"a new request: {exc!r}")
            finally:
                c.close()
    backend.stop = True


def weights(args: argparse.Namespace) -> None:
    port, admin = free_port(), f"127.0.0.1:{free_port()}"
    a_port, b_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        # A Service's endpoints share its port: the dead one is another address.
        Path(d, "gw.yaml").write_text(
            GATEWAY.format(port=port)
            + service("heavy", a_port, ["127.0.0.1", "127.0.0.2"])
            + service("light", b_port, ["127.0.0.1"])
            + ROUTE.format(refs="{name: heavy, port: 80, weight: 3}, "
                                "{name: light, port: 80, weight: 1}"))
        echo_a = kgw_cmd("echo", "--address", "127.0.0.1", "--port", str(a_port), "--pod", "heavy")
        echo_b = kgw_cmd("echo", "--address", "127.0.0.1", "--port", str(b_port), "--pod", "light")
        cmd = kgw_cmd("run", "-c", d, "--admin-address", admin, "--workers", "1",
                      "--access-log", "off", "--l4-mode", "userspace", "--drain-delay", "0")
        with running(echo_a, stdout=subprocess.DEVNULL), \
                running(echo_b, stdout=subprocess.DEVNULL), \
                running(cmd, stderr=subprocess.DEVNULL):
            wait_ready(admin)
            time.sleep(0.5)
            counts: dict[str, int] = {}
            for _ in range(args.requests):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/", headers={"Host": "w.example.com",
                                               "X-Echo-Set-Header": "Connection:close"})
                r = c.getresponse()
                body = r.read()
                key = "502 (dead endpoint)" if r.status == 502 else \
                    ("heavy" if b'"pod": "heavy"' in body else "light")
                counts[key] = counts.get(key, 0) + 1
                c.close()
            for key, n in sorted(counts.items()):
                print(f"{key:20} {n:6} {100 * n / args.requests:5.1f}%")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("abandoned")
    a.add_argument("--requests", type=int, default=10000)
    a.add_argument("--nofile", type=int, default=20000)
    w = sub.add_parser("weights")
    w.add_argument("--requests", type=int, default=2000)
    args = p.parse_args(argv)
    {"abandoned": abandoned, "weights": weights}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
