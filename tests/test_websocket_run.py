"""WebSocket through a Service port with ``appProtocol: kubernetes.io/ws``, with
``kgw run -c DIR`` and no other flag, in a private host: the Upgrade reaches the echo
backend and text and binary frames come back (upstream's HTTPRouteBackendProtocolWebSocket
exchange); a plain request on the same route is still answered."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

CONFIG = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: kgw
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: ws, namespace: default}
spec: {ports: [{name: ws, port: 8082, targetPort: 9101, appProtocol: kubernetes.io/ws}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ws-1, namespace: default, labels: {kubernetes.io/service-name: ws}}
addressType: IPv4
ports: [{name: ws, port: 9101, protocol: TCP, appProtocol: kubernetes.io/ws}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: ws, port: 8082}]}]
"""


def exchange() -> list[tuple[int, bytes]]:
    import websocket

    ws = websocket.create_connection("ws://127.0.0.1:8080/ws", timeout=5, origin="http://gateway")
    try:
        ws.send("Websocket Support!")
        text = ws.recv_data()
        ws.send_binary(bytes([1, 2, 3, 4, 5, 6, 7]))
        binary = ws.recv_data()
        return [text, binary]
    finally:
        ws.close()


def plain() -> str:
    with urllib.request.urlopen("http://127.0.0.1:8080/plain", timeout=5) as resp:
        return json.loads(resp.read())["pod"]


def test_websocket_through_ws_app_protocol_with_kgw_run(host: Host, tmp_path: Path) -> None:
    import websocket

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "all.yaml").write_text(CONFIG)
    host.popen(kgw_argv("echo", "--port", "9101", "--pod", "ws-x", "--namespace", "default"),
               stdout=subprocess.DEVNULL)
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, "http://127.0.0.1:9095/readyz")[0] == 200, timeout=30)

    text, binary = eventually(lambda: host.call(exchange), timeout=15)
    assert text == (websocket.ABNF.OPCODE_TEXT, b"Websocket Support!")
    assert binary == (websocket.ABNF.OPCODE_BINARY, bytes([1, 2, 3, 4, 5, 6, 7]))
    assert host.call(plain) == "ws-x"


WSS_CONFIG = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: kgw
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: wss, namespace: default}
spec: {ports: [{name: wss, port: 443, targetPort: 9443, appProtocol: kubernetes.io/wss}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: wss-1, namespace: default, labels: {kubernetes.io/service-name: wss}}
addressType: IPv4
ports: [{name: wss, port: 9443, protocol: TCP, appProtocol: kubernetes.io/wss}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: backend-ca, namespace: default}
data:
  ca.crt: |
%s
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: wss, namespace: default}
spec:
  targetRefs: [{group: "", kind: Service, name: wss}]
  validation:
    caCertificateRefs: [{group: "", kind: ConfigMap, name: backend-ca}]
    hostname: backend.test
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: wss, port: 443}]}]
"""


def test_websocket_through_wss_app_protocol_with_kgw_run(host: Host, tmp_path: Path) -> None:
    """``kubernetes.io/wss`` with a BackendTLSPolicy: the Upgrade goes to the backend over
    TLS (checked against the policy's CA and hostname) and the frames come back."""
    import websocket

    from tests.translate.tlsgen import self_signed

    cert, key = self_signed("backend.test", ("backend.test",))
    (tmp_path / "tls.crt").write_text(cert)
    (tmp_path / "tls.key").write_text(key)
    conf = tmp_path / "conf"
    conf.mkdir()
    indented = "\n".join("    " + line for line in cert.strip().splitlines())
    (conf / "all.yaml").write_text(WSS_CONFIG % indented)
    host.popen(kgw_argv("echo", "--port", "9101", "--tls-port", "9443", "--tls-cert",
                        str(tmp_path / "tls.crt"),
                        "--tls-key", str(tmp_path / "tls.key"), "--pod", "wss-x", "--namespace",
                        "default"),
               stdout=subprocess.DEVNULL)
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, "http://127.0.0.1:9095/readyz")[0] == 200, timeout=30)

    text, binary = eventually(lambda: host.call(exchange), timeout=15)
    assert text == (websocket.ABNF.OPCODE_TEXT, b"Websocket Support!")
    assert binary == (websocket.ABNF.OPCODE_BINARY, bytes([1, 2, 3, 4, 5, 6, 7]))
    assert host.call(plain) == "wss-x"
