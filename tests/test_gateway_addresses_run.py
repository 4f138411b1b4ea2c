"""Gateway spec.addresses with ``kgw run -c DIR`` and no other flag, in a private host:
an address the node does not own is AddressNotUsable and nothing is bound; once the spec
names only the node's addresses (an IP, then a Hostname) they are served and reported."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import condition, eventually, find, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

BASE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec: {ports: [{name: http, port: 80, targetPort: 9101}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: default, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: http, port: 9101, protocol: TCP}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
"""

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: kgw
  addresses: {addresses}
  listeners: [{{name: http, port: 8080, protocol: HTTP}}]
"""


def gateway_status(host: Host) -> dict:
    code, body = host.call(http_get, "http://127.0.0.1:9095/status")
    assert code == 200
    gw = find(json.loads(body), "Gateway", "gw", "default")
    return (gw or {}).get("status") or {}


def reason(host: Host, type_: str) -> tuple[str, str] | None:
    c = condition(gateway_status(host).get("conditions") or [], type_)
    return (c["status"], c["reason"]) if c else None


def echoed_pod(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return json.loads(resp.read())["pod"]


def test_static_addresses_with_kgw_run(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "base.yaml").write_text(BASE)
    gw_file = conf / "gateway.yaml"
    gw_file.write_text(GATEWAY.format(addresses="[{type: IPAddress, value: 192.0.2.1}, "
                                                "{type: IPAddress, value: 127.0.0.7}]"))
    host.popen(kgw_argv("echo", "--port", "9101", "--pod", "echo-a", "--namespace", "default"),
               stdout=subprocess.DEVNULL)
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)

    eventually(lambda: reason(host, "Programmed") == ("False", "AddressNotUsable"), timeout=30)
    assert reason(host, "Accepted") == ("True", "Accepted")
    assert gateway_status(host).get("addresses") == []
    with pytest.raises(OSError):
        host.call(echoed_pod, "http://127.0.0.7:8080/")  # nothing is bound for it

    gw_file.write_text(GATEWAY.format(addresses="[{type: IPAddress, value: 127.0.0.7}]"))
    eventually(lambda: reason(host, "Programmed") == ("True", "Programmed"), timeout=15)
    assert gateway_status(host)["addresses"] == [{"type": "IPAddress", "value": "127.0.0.7"}]
    assert eventually(lambda: host.call(echoed_pod, "http://127.0.0.7:8080/"),
                      timeout=10) == "echo-a"

    gw_file.write_text(GATEWAY.format(addresses="[{type: Hostname, value: localhost}]"))
    eventually(lambda: gateway_status(host).get("addresses") == [
        {"type": "Hostname", "value": "localhost"}],
               timeout=15)
    assert reason(host, "Programmed") == ("True", "Programmed")
    assert eventually(lambda: host.call(echoed_pod, "http://127.0.0.1:8080/"),
                      timeout=10) == "echo-a"

    gw_file.write_text(GATEWAY.format(addresses="[{type: example.com/pool, value: a}]"))
    eventually(lambda: reason(host, "Accepted") == ("False", "UnsupportedAddress"), timeout=15)
