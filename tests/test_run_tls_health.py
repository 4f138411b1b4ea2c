"""``kgw run -c DIR`` with no other flag (in a private host, tests/netns.py), a TLS
Passthrough listener, a TLSRoute with two real TLS backends and a TrafficPolicy
``healthCheck`` (TCP) on the route (issue 20, TLS routes): kill one backend's server and,
once interval x threshold has passed, every new connection reaches the other; restart it
and it gets connections again. The policy is Accepted, and ``kgw status`` shows each
endpoint's health (up / down, since)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv
from tests.translate.tlsgen import self_signed

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
PORT = 8443

CONFIG = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: demo}
spec:
  gatewayClassName: kgw
  listeners: [{name: tls, protocol: TLS, port: 8443, tls: {mode: Passthrough}}]
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: demo}
spec: {ports: [{name: tls, port: 443, targetPort: 9443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: demo, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: tls, port: 9443}]
endpoints:
- {addresses: [127.0.0.2], conditions: {ready: true}}
- {addresses: [127.0.0.3], conditions: {ready: true}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: app, namespace: demo}
spec:
  parentRefs: [{name: edge}]
  hostnames: [app.example.com]
  rules: [{backendRefs: [{name: app, port: 443}]}]
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: probe, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: TLSRoute, name: app}]
  healthCheck:
    active: {type: TCP, interval: 200ms, timeout: 200ms, unhealthyThreshold: 2}
"""

#: A TLS server that says its address to every connection and closes it.
SERVER = ("import socket, ssl, sys\n"
          "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], "
          "sys.argv[3])\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind((sys.argv[1], 9443)); s.listen(128)\n"
          "while True:\n"
          "    c, _ = s.accept(); c.settimeout(5)\n"
          "    try:\n"
          "        t = ctx.wrap_socket(c, server_side=True); t.sendall(sys.argv[1].encode() + "
          "b'\\n'); t.close()\n"
          "    except OSError:\n"
          "        c.close()\n")


def whom() -> str:
    """The backend that answers a new TLS connection for app.example.com (its own
    certificate: passed through)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="app.example.com") as s:
            return s.makefile("rb").readline().decode().strip()


def health(host: Host) -> dict[str, str]:
    """Each endpoint's health from ``kgw status -o json`` (what a user runs)."""
    r = host.run(*kgw_argv("status", "-o", "json"), check=False)
    assert r.returncode == 0, r.stderr
    return {e["endpoint"]: e["health"] for e in json.loads(r.stdout)["l4_health"]}


def test_a_dead_tls_backend_gets_no_new_connections(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.yaml").write_text(CONFIG)
    cert, key = self_signed("app", ("app.example.com",))
    (tmp_path / "app.crt").write_text(cert)
    (tmp_path / "app.key").write_text(key)

    def serve(addr: str) -> subprocess.Popen:
        return host.popen([sys.executable, "-c", SERVER, addr, str(tmp_path / "app.crt"),
                           str(tmp_path / "app.key")])

    servers = {a: serve(a) for a in ("127.0.0.2", "127.0.0.3")}
    log = (tmp_path / "kgw.log").open("w")
    kgw = host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL, stderr=log)
    try:
        eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
        eventually(lambda: {host.call(whom) for _ in range(20)} == {"127.0.0.2", "127.0.0.3"},
                   timeout=15)
        code, body = host.call(http_get, f"{ADMIN}/status")
        [policy] = [i for i in json.loads(body)["items"] if i["kind"] == "TrafficPolicy"]
        [ancestor] = policy["status"]["ancestors"]
        assert ancestor["conditions"][0]["reason"] == "Accepted", policy
        eventually(lambda: health(host) == {"127.0.0.2:9443": "up", "127.0.0.3:9443": "up"},
                   timeout=5)

        servers["127.0.0.3"].kill()
        servers["127.0.0.3"].wait(5)
        killed = time.monotonic()
        # interval x threshold = 0.4 s after the first failed probe (at most one interval
        # away): 1 s on, every new connection goes to the live backend
        eventually(lambda: health(host)["127.0.0.3:9443"] == "down", timeout=5)
        assert time.monotonic() - killed < 3.0  # (two `kgw status` runs fit in it)
        time.sleep(max(0.0, killed + 1.0 - time.monotonic()))
        got = [host.call(whom) for _ in range(60)]
        assert set(got) == {"127.0.0.2"}, got

        r = host.run(*kgw_argv("status", "-o", "table"), check=False)
        assert r.returncode == 0, r.stderr
        assert "L4 backend endpoints (active health checks):" in r.stdout, r.stdout
        [down] = [line for line in r.stdout.splitlines() if "127.0.0.3:9443" in line]
        assert "demo/edge/tls" in down and "demo/app" in down and " down " in down, down
        assert "20" in down.split(" down ")[1], down  # since: an ISO 8601 time

        servers["127.0.0.3"] = serve("127.0.0.3")
        eventually(lambda: health(host)["127.0.0.3:9443"] == "up", timeout=5)
        eventually(lambda: "127.0.0.3" in {host.call(whom) for _ in range(20)}, timeout=5)
    finally:
        kgw.terminate()
        kgw.wait(20)
        log.close()
        for p in servers.values():
            p.kill()
