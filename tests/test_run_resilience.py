"""``kgw run -c DIR`` with no optional flag, configured by a TrafficPolicy (issue 20):
active HTTP health checks take a dead backend out, so no request fails once the
verdict is in; least request serves both endpoints; status and the admin API say so."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
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
metadata: {name: gw, namespace: demo}
spec:
  gatewayClassName: kgw
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: demo}
spec:
  ports: [{name: http, port: 80, targetPort: 9201}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-1
  namespace: demo
  labels: {kubernetes.io/service-name: app}
addressType: IPv4
ports: [{name: http, port: 9201, protocol: TCP}]
endpoints:
- addresses: [127.0.0.2]
  conditions: {ready: true}
- addresses: [127.0.0.3]
  conditions: {ready: true}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: demo}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: app, port: 80}]
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: resilient, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: app}]
  loadBalancer: {type: LeastRequest}
  healthCheck:
    active:
      type: HTTP
      interval: 200ms
      timeout: 200ms
      unhealthyThreshold: 2
      http: {path: /health}
"""


def pod() -> str:
    with urllib.request.urlopen("http://127.0.0.1:8080/", timeout=5) as resp:
        return json.loads(resp.read())["pod"]


def test_active_checks_take_a_dead_backend_out(host: Host, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    echoes = {name: host.popen(kgw_argv("echo", "--address", addr, "--port", "9201", "--pod",
                                        name, "--namespace", "demo"),
                               stdout=subprocess.DEVNULL)
              for name, addr in (("app-a", "127.0.0.2"), ("app-b", "127.0.0.3"))}
    kgw = host.popen(kgw_argv("run", "-c", str(tmp_path)), stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
        eventually(lambda: {host.call(pod) for _ in range(10)} == {"app-a", "app-b"},
                   timeout=15)
        code, body = host.call(http_get, f"{ADMIN}/status")
        [policy] = [i for i in json.loads(body)["items"] if i["kind"] == "TrafficPolicy"]
        [ancestor] = policy["status"]["ancestors"]
        assert ancestor["conditions"][0]["reason"] == "Accepted", policy
        echoes["app-b"].kill()
        echoes["app-b"].wait(5)
        # interval x threshold = 0.4 s, plus the first check's spread (one interval) and
        # the push to the workers: from 1.5 s on, no request may fail
        time.sleep(1.5)
        got = [host.call(pod) for _ in range(50)]
        assert set(got) == {"app-a"}
        code, body = host.call(http_get, f"{ADMIN}/endpoint_health")
        active = {v["endpoint"]: v["healthy"] for v in json.loads(body)["active"]}
        assert active == {"127.0.0.2:9201": True, "127.0.0.3:9201": False}
        code, metrics = host.call(http_get, f"{ADMIN}/metrics")
        assert b'kgw_l7_endpoint_healthy{backend="demo/app:80",endpoint="127.0.0.3:9201"} 0' \
            in metrics
        out = host.run(*kgw_argv("status", "-o", "table"), check=False)
        assert "127.0.0.3:9201: fails its HTTP health check" in out.stdout, out
    finally:
        kgw.terminate()
        kgw.wait(20)
        for p in echoes.values():
            p.kill()
