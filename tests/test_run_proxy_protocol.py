"""The PROXY protocol through `kgw run` with every default: a TrafficPolicy
``proxyProtocol`` on a listener makes the header's client address the connection's
(X-Forwarded-For to the backend, the access log); a connection without a valid header is
closed where the header is required and served where it is optional; on an HTTPS
listener the policy is reported, not silently ignored."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from kgw_l7.proxyproto import encode_v1, encode_v2, parse
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
  hostnames: [app.example.com]
  rules: [{backendRefs: [{name: app, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: pp, namespace: demo}
spec:
  ports: [{name: http, port: 80, targetPort: 9301}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: pp-1, namespace: demo, labels: {kubernetes.io/service-name: pp}}
addressType: IPv4
ports: [{name: http, port: 9301}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: pp, namespace: demo}
spec:
  parentRefs: [{name: gw}]
  hostnames: [pp.example.com]
  rules: [{backendRefs: [{name: pp, port: 80}]}]
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: to-backend, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: pp}]
  backendProxyProtocol: {version: V2}
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


def listening(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


def proxied_backend(sock: socket.socket, seen: list[tuple[object, bytes]]) -> None:
    """A backend that asks for the PROXY protocol: each connection's header (parsed) and
    the request after it are recorded; each request is answered with the header's
    source. Serves until the socket is closed."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            data = b""
            header = None
            while header is None or b"\r\n\r\n" not in data[header.size:]:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
                header = header or parse(data)  # (v2's signature holds a CRLF CRLF)
            seen.append((header, data[header.size:] if header else data))
            body = json.dumps(header.source if header else None).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n"
                         b"\r\n%s" % (len(body), body))


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
    for name in ("lb-required", "lb-optional", "to-backend"):
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

    # backendProxyProtocol: the backend's connection starts with a v2 header naming the
    # client (here, as the PROXY header to kgw named it)
    backend_sock = host.call(listening, 9301)
    seen: list[tuple[object, bytes]] = []
    threading.Thread(target=proxied_backend, args=(backend_sock, seen), daemon=True).start()
    try:
        pp = REQUEST.replace(b"app.example.com", b"pp.example.com")
        answer = host.call(exchange, 8080, v1, pp)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2]) == ["192.0.2.7", 40000]
        answer = host.call(exchange, 8082, b"", pp)  # a client without a PROXY header
        address, port = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert address == "127.0.0.1" and port > 0
        assert [h.version for h, _ in seen] == [2, 2]  # type: ignore[attr-defined]
        assert all(rest.startswith(b"GET /x HTTP/1.1\r\n") for _, rest in seen)
    finally:
        backend_sock.close()

    got = eventually(lambda: {"192.0.2.7:40000", "[2001:db8::7]:40001"} <= addresses()
                     and addresses())
    refused = [x for x in logged() if "PROXY protocol" in str(x.get("response_code_details"))]
    assert refused, got
