"""A Gateway's own access log settings (TrafficPolicy ``accessLog``) through ``kgw run``
with every default: one listener writes text lines in its own format, another none, a
third the command line's JSON, all to the one stdout sink; an edit takes effect live."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
CONF = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: kgw
  listeners:
  - {name: texty, protocol: HTTP, port: 8081}
  - {name: quiet, protocol: HTTP, port: 8082}
  - {name: plain, protocol: HTTP, port: 8083}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: app}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-a, namespace: app, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: http, port: 9101}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
"""
POLICY = """\
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: texty-log, namespace: app}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: texty}}]
  accessLog: {{format: "text:TEXTY %RESPONSE_CODE% %REQ(:PATH)%"}}
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: quiet-log, namespace: app}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: quiet}}]
  accessLog: {{disabled: {quiet}}}
"""


def get(port: int, path: str) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def test_each_listener_logs_as_its_policy_says(host: Host, tmp_path: Path) -> None:
    host.popen(kgw_argv("echo", "--port", "9101"), stdout=subprocess.DEVNULL)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gw.yaml").write_text(CONF + POLICY.format(quiet="true"))
    out = tmp_path / "stdout"
    proc = host.popen(kgw_argv("run", "-c", str(conf)), stdout=out.open("w"),
                      stderr=(tmp_path / "stderr").open("w"))
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
    for port in (8081, 8082, 8083):
        eventually(lambda port=port: host.call(get, port, "/warm") == 200)
    for port in (8081, 8082, 8083):
        assert host.call(get, port, f"/first-{port}") == 200
    # the quiet listener's policy edited: it logs again, in the command line's JSON
    (conf / "gw.yaml").write_text(CONF + POLICY.format(quiet="false"))

    def quiet_logs() -> bool:
        host.call(get, 8082, "/probe")
        time.sleep(1.2)  # (the worker's timer writes the batch)
        return "/probe" in out.read_text()
    eventually(quiet_logs, timeout=30)
    proc.terminate()
    proc.wait(timeout=30)

    lines = out.read_text().splitlines()
    texty = [x for x in lines if x.startswith("TEXTY ")]
    assert "TEXTY 200 /first-8081" in texty
    as_json = [json.loads(x) for x in lines if x.startswith("{")]
    paths = {x["path"] for x in as_json if x.get("path")}
    assert "/first-8083" in paths  # (no policy: the default JSON)
    assert "/first-8082" not in paths and not any("/first-8082" in x for x in lines)
    assert "/probe" in paths
    assert not any(x.get("path") == "/first-8081" for x in as_json)
