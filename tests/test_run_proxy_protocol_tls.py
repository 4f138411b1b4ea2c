"""The PROXY protocol in front of TLS through `kgw run` with every default: the header
comes before the ClientHello, kgw reads it off the socket first and the TLS handshake
follows on the bytes after it. On an HTTPS listener (kgw_l7.proxyaccept) the header's
client is the request's (X-Forwarded-For, the access log); a connection without a valid
header, where one is required, is closed before any TLS is spoken."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from kgw_l7.proxyproto import encode_v1, encode_v2
from tests.helpers import condition, eventually, find, http_get
from tests.netns import Host, kgw_argv
from tests.translate.tlsgen import self_signed

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
HTTPS = 8443
ECHO = 9300
CERT = self_signed("gateway", ("app.example.com",))


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def config() -> str:
    cert, key = CERT
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: kgw}}
spec: {{controllerName: kgw.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: demo}}
spec:
  gatewayClassName: kgw
  listeners:
  - {{name: https, protocol: HTTPS, port: {HTTPS},
     tls: {{mode: Terminate, certificateRefs: [{{name: cert}}]}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: cert, namespace: demo}}
type: kubernetes.io/tls
data: {{tls.crt: {_b64(cert)}, tls.key: {_b64(key)}}}
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: lb, namespace: demo}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  proxyProtocol: {{}}
---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: demo}}
spec:
  ports: [{{name: http, port: 80, targetPort: {ECHO}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: app-1, namespace: demo, labels: {{kubernetes.io/service-name: app}}}}
addressType: IPv4
ports: [{{name: http, port: {ECHO}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: demo}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [app.example.com]
  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]
"""


REQUEST = b"GET /x HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n"


def tls_exchange(port: int, prefix: bytes, sni: str = "app.example.com",
                 request: bytes = REQUEST) -> bytes:
    """``prefix`` in clear, then TLS (the gateway's certificate verified) and
    ``request``: the answer. Raises OSError (ssl.SSLError, a reset, EOF) when the
    gateway closes the connection instead."""
    ctx = ssl.create_default_context(cadata=CERT[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(prefix)
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            s.sendall(request)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out


def refused(port: int, prefix: bytes) -> bool:
    try:
        tls_exchange(port, prefix)
    except OSError:
        return True
    return False


def forwarded_for(answer: bytes) -> str:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:200]
    return json.loads(body)["headers"]["X-Forwarded-For"][0]  # type: ignore[no-any-return]


def test_proxy_protocol_before_tls_on_an_https_listener(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.yaml").write_text(config())
    host.popen(kgw_argv("echo", "--address", "127.0.0.1", "--port", str(ECHO), "--pod", "app",
                        "--quiet"), stdout=subprocess.DEVNULL)
    access = tmp_path / "stdout.log"
    with access.open("w") as out:
        host.popen(kgw_argv("run", "-c", str(conf)), stdout=out, stderr=subprocess.STDOUT)
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
    v1 = encode_v1(("192.0.2.7", 40000), ("127.0.0.1", HTTPS))
    eventually(lambda: not host.call(refused, HTTPS, v1), timeout=15)

    status = json.loads(host.call(http_get, f"{ADMIN}/status")[1])
    pol = find(status, "TrafficPolicy", "lb", "demo")
    accepted = condition(pol["status"]["ancestors"][0]["conditions"], "Accepted")
    assert (accepted["status"], accepted["message"]) == ("True", "the policy applies"), pol

    v2 = encode_v2(("2001:db8::7", 40001), ("2001:db8::1", HTTPS))
    assert forwarded_for(host.call(tls_exchange, HTTPS, v1)) == "192.0.2.7"
    assert forwarded_for(host.call(tls_exchange, HTTPS, v2)) == "2001:db8::7"
    # the header sent byte by byte (the ClientHello must still follow it unread)
    assert forwarded_for(host.call(tls_exchange_slowly, HTTPS, v1)) == "192.0.2.7"
    # LOCAL (the balancer's own health check): the connection's own address stands
    local = encode_v2(None, None)
    assert forwarded_for(host.call(tls_exchange, HTTPS, local)) == "127.0.0.1"
    # required: no header, or a malformed one: closed before the handshake
    assert host.call(refused, HTTPS, b"")
    assert host.call(refused, HTTPS, b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 8443\r\n")

    def logged() -> list[dict]:
        return [json.loads(x) for x in access.read_text().splitlines() if x.startswith("{")]

    def addresses() -> set[str]:
        return {x.get("downstream_remote_address", "") for x in logged() if "path" in x}

    eventually(lambda: {"192.0.2.7:40000", "[2001:db8::7]:40001"} <= addresses())
    details = eventually(lambda: [str(x.get("response_code_details")) for x in logged()
                                  if "PROXY protocol" in str(x.get("response_code_details"))])
    assert any("no PROXY protocol header" in d for d in details), details
    assert any("port 99999" in d for d in details), details


def tls_exchange_slowly(port: int, prefix: bytes) -> bytes:
    """tls_exchange with ``prefix`` sent a byte at a time."""
    import time

    ctx = ssl.create_default_context(cadata=CERT[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(prefix)):
            raw.sendall(prefix[i:i + 1])
            time.sleep(0.005)
        with ctx.wrap_socket(raw, server_hostname="app.example.com") as s:
            s.sendall(REQUEST)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out
