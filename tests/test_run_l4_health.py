"""``kgw run -c DIR --l4-mode userspace`` (what ``auto`` is without root or bcc; the only
flag: in this loopback-only host ``auto`` picks tc, which cannot reach backends on
loopback addresses, and the kernel mode has its own test in vm_tests/test_l4_health.py),
a TCPRoute with two backends and a TrafficPolicy ``healthCheck`` (TCP) on it (issue 20,
the L4 plane): kill one backend's server and, once interval x threshold has passed, every
new connection goes to the other; restart it and it gets connections again. The policy
is Accepted, and the admin API and ``kgw-inspect frontends`` show each endpoint's health."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"

CONFIG = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: l4, namespace: demo}
spec:
  gatewayClassName: kgw
  listeners: [{name: db, protocol: TCP, port: 5000, allowedRoutes: {kinds: [{kind: TCPRoute}]}}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec: {ports: [{name: p, port: 7000, targetPort: 9300}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: demo, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: p, port: 9300}]
endpoints:
- {addresses: [127.0.0.2], conditions: {ready: true}}
- {addresses: [127.0.0.3], conditions: {ready: true}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: raw, namespace: demo}
spec:
  parentRefs: [{name: l4}]
  rules: [{backendRefs: [{name: db, port: 7000}]}]
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: probe, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: TCPRoute, name: raw}]
  healthCheck:
    active: {type: TCP, interval: 200ms, timeout: 200ms, unhealthyThreshold: 2}
"""

#: A TCP server that says its address to every connection and closes it.
SERVER = ("import socket, sys\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind((sys.argv[1], 9300)); s.listen(128)\n"
          "while True:\n"
          "    c, _ = s.accept(); c.sendall(sys.argv[1].encode() + b'\\n'); c.close()\n")


def whom() -> str:
    with socket.create_connection(("127.0.0.1", 5000), timeout=5) as s:
        return s.makefile("rb").readline().decode().strip()


def inspect_frontends(host: Host) -> list[dict]:
    exe = Path(sys.executable).with_name("kgw-inspect")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "kgw_l4.inspect"]
    r = host.run(*argv, "-o", "json", "frontends", check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def health(host: Host) -> dict[str, str]:
    """Each endpoint's health from the admin API's /l4 page (what kgw-inspect reads)."""
    code, body = host.call(http_get, f"{ADMIN}/l4")
    return {e["endpoint"]: e["health"] for e in json.loads(body)["health"]}


def test_a_dead_l4_backend_gets_no_new_connections(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.yaml").write_text(CONFIG)
    servers = {a: host.popen([sys.executable, "-c", SERVER, a]) for a in ("127.0.0.2", "127.0.0.3")}
    log = (tmp_path / "kgw.log").open("w")
    kgw = host.popen(kgw_argv("run", "-c", str(conf), "--l4-mode", "userspace"),
                     stdout=subprocess.DEVNULL, stderr=log)
    try:
        eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
        eventually(lambda: {host.call(whom) for _ in range(20)} == {"127.0.0.2", "127.0.0.3"},
                   timeout=15)
        code, body = host.call(http_get, f"{ADMIN}/status")
        [policy] = [i for i in json.loads(body)["items"] if i["kind"] == "TrafficPolicy"]
        [ancestor] = policy["status"]["ancestors"]
        assert ancestor["conditions"][0]["reason"] == "Accepted", policy
        assert eventually(lambda: set(health(host).values()) == {"healthy"}, timeout=5)

        servers["127.0.0.3"].kill()
        servers["127.0.0.3"].wait(5)
        killed = time.monotonic()
        # interval x threshold = 0.4 s after the first failed probe (at most one interval
        # away): 1 s on, every new connection goes to the live backend
        eventually(lambda: health(host)["127.0.0.3:9300"] == "unhealthy", timeout=5)
        assert time.monotonic() - killed < 1.5
        time.sleep(max(0.0, killed + 1.0 - time.monotonic()))
        got = [host.call(whom) for _ in range(60)]
        assert set(got) == {"127.0.0.2"}, got
        [fe] = inspect_frontends(host)
        got = {b["endpoint"]: b["health"] for b in fe["backends"]}
        assert got == {"127.0.0.2:9300": "healthy", "127.0.0.3:9300": "unhealthy"}, fe
        assert all(b["health_since"] for b in fe["backends"]), fe

        servers["127.0.0.3"] = host.popen([sys.executable, "-c", SERVER, "127.0.0.3"])
        eventually(lambda: health(host)["127.0.0.3:9300"] == "healthy", timeout=5)
        eventually(lambda: "127.0.0.3" in {host.call(whom) for _ in range(20)}, timeout=5)
        code, metrics = host.call(http_get, f"{ADMIN}/metrics")
        assert b'kgw_l4_endpoint_healthy{backend="demo/db:7000",endpoint="127.0.0.3:9300"} 1' \
            in metrics, metrics[-2000:]
    finally:
        kgw.terminate()
        kgw.wait(20)
        log.close()
        for p in servers.values():
            p.kill()
