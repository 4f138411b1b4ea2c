"""The PROXY protocol through `kgw run` with every default: a TrafficPolicy
``proxyProtocol`` on a listener makes the header's client address the connection's
(X-Forwarded-For to the backend, the access log); a connection without a valid header is
closed where the header is required and served where it is optional; on an HTTPS
listener the policy is reported, not silently ignored."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from kgw_l7.proxyproto import encode_v1, encode_v2
from tests.helpers import condition, eventually, find, http_get
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
metadata: {name: gw, namespace: demo}
spec:
  gatewayClassName: kgw
  listeners:
  - {name: required, protocol: HTTP, port: 8080}
  - {name: optional, protocol: HTTP, port: 8081}
  - {name: plain, protocol: HTTP, port: 8082}
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: lb-required, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw,
                sectionName: required}]
  proxyProtocol: {}
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: lb-optional, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw,
                sectionName: optional}]
  proxyProtocol: {allowRequestsWithoutProxyProtocol: true}
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: demo}
spec:
  ports: [{name: http, port: 80, targetPort: 9300}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: demo, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: http, port: 9300}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: demo}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: app, port: 80}]}]
"""

REQUEST = b"GET /x HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n"


def exchange(port: int, prefix: bytes, request: bytes = REQUEST) -> bytes:
    """What the gateway answers to ``prefix`` + ``request`` (b"" when it closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(prefix + request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def forwarded_for(answer: bytes) -> str:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:200]
    return json.loads(body)["headers"]["X-Forwarded-For"][0]  # type: ignore[no-any-return]


def test_proxy_protocol_through_kgw_run(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.yaml").write_text(CONF)
    host.popen(kgw_argv("echo", "--address", "127.0.0.1", "--port", "9300", "--pod", "app",
                        "--quiet"), stdout=subprocess.DEVNULL)
    access = tmp_path / "stdout.log"
    with access.open("w") as out:
        host.popen(kgw_argv("run", "-c", str(conf)), stdout=out, stderr=subprocess.STDOUT)
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
    eventually(lambda: host.call(exchange, 8082, b"").startswith(b"HTTP/1.1 200"), timeout=15)

    status = json.loads(host.call(http_get, f"{ADMIN}/status")[1])
    for name in ("lb-required", "lb-optional"):
        pol = find(status, "TrafficPolicy", name, "demo")
        accepted = condition(pol["status"]["ancestors"][0]["conditions"], "Accepted")
        assert accepted["status"] == "True", pol["status"]

    v1 = encode_v1(("192.0.2.7", 40000), ("127.0.0.1", 8080))
    v2 = encode_v2(("2001:db8::7", 40001), ("2001:db8::1", 8080))
    assert forwarded_for(host.call(exchange, 8080, v1)) == "192.0.2.7"
    assert forwarded_for(host.call(exchange, 8080, v2)) == "2001:db8::7"
    # a client's own X-Forwarded-For is kept in front, the header's address appended
    spoof = REQUEST.replace(b"\r\n\r\n", b"\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n")
    assert forwarded_for(host.call(exchange, 8080, v1, spoof)) == "10.9.9.9, 192.0.2.7"
    # required: no header, or a malformed one, and the connection is closed unanswered
    assert host.call(exchange, 8080, b"") == b""
    assert host.call(exchange, 8080, b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 8080\r\n") == b""
    # optional: served either way; a malformed header is still refused
    assert forwarded_for(host.call(exchange, 8081, v1)) == "192.0.2.7"
    assert forwarded_for(host.call(exchange, 8081, b"")) == "127.0.0.1"
    assert host.call(exchange, 8081, b"PROXY TCP5 x\r\n") == b""
    # a listener without the policy takes the header for a (bad) request
    assert host.call(exchange, 8082, v1).startswith(b"HTTP/1.1 400")

    def logged() -> list[dict]:
        lines = [json.loads(x) for x in access.read_text().splitlines() if x.startswith("{")]
        return [x for x in lines if "path" in x or "response_code" in x]

    def addresses() -> set[str]:
        return {x.get("downstream_remote_address", "") for x in logged()}

    got = eventually(lambda: {"192.0.2.7:40000", "[2001:db8::7]:40001"} <= addresses()
                     and addresses())
    refused = [x for x in logged() if "PROXY protocol" in str(x.get("response_code_details"))]
    assert refused, got
