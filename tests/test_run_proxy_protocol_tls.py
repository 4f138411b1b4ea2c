"""The PROXY protocol in front of TLS through `kgw run` with every default: the header
comes before the ClientHello, kgw reads it off the socket first and the TLS handshake
follows on the bytes after it. On an HTTPS listener (kgw_l7.proxyaccept) the header's
client is the request's (X-Forwarded-For, the access log); on a TLS port (the L4 plane,
passthrough and terminate) it is the flow's (flow log, and the v2 header a backend gets
with ``backendProxyProtocol``); a connection without a valid header, where one is
required, is closed before any TLS is spoken."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from kgw_l7.proxyproto import encode_v1, encode_v2, parse
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
    def details() -> str:
        return " | ".join(str(x.get("response_code_details")) for x in logged()
                          if "PROXY protocol" in str(x.get("response_code_details")))

    # (each worker writes its own lines: wait for both)
    eventually(lambda: "no PROXY protocol header" in details() and "port 99999" in details())


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


# -- TLS ports (the L4 plane) and TCP frontends ------------------------------------------

TLS_PORT = 8444
TCP_PORT = 9000
PASS_BE, TERM_BE, TCP_BE = 9301, 9302, 9303
BACKEND_CERT = self_signed("backend", ("pass.example.com",))


def l4_config() -> str:
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
  - {{name: pass, protocol: TLS, port: {TLS_PORT}, hostname: pass.example.com,
     tls: {{mode: Passthrough}}}}
  - {{name: term, protocol: TLS, port: {TLS_PORT}, hostname: app.example.com,
     tls: {{mode: Terminate, certificateRefs: [{{name: cert}}]}}}}
  - {{name: tcp, protocol: TCP, port: {TCP_PORT}}}
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
  targetRefs:
  - {{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: pass}}
  - {{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: term}}
  - {{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: tcp}}
  proxyProtocol: {{}}
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: to-backends, namespace: demo}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  backendProxyProtocol: {{version: V2}}
---
apiVersion: v1
kind: Service
metadata: {{name: be, namespace: demo}}
spec:
  ports: [{{name: pass, port: 1}}, {{name: term, port: 2}}, {{name: tcp, port: 3}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: be-1, namespace: demo, labels: {{kubernetes.io/service-name: be}}}}
addressType: IPv4
ports: [{{name: pass, port: {PASS_BE}}}, {{name: term, port: {TERM_BE}}}, {{name: tcp, port: {TCP_BE}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: pass, namespace: demo}}
spec:
  parentRefs: [{{name: gw, sectionName: pass}}]
  hostnames: [pass.example.com]
  rules: [{{backendRefs: [{{name: be, port: 1}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: term, namespace: demo}}
spec:
  parentRefs: [{{name: gw, sectionName: term}}]
  hostnames: [app.example.com]
  rules: [{{backendRefs: [{{name: be, port: 2}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: tcp, namespace: demo}}
spec:
  parentRefs: [{{name: gw, sectionName: tcp}}]
  rules: [{{backendRefs: [{{name: be, port: 3}}]}}]
"""  # noqa: E501 (data)


def listening(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


def _exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def proxied_backend(sock: socket.socket, tls: ssl.SSLContext | None) -> None:
    """A backend that asks for the PROXY protocol v2: each connection's header, then
    (``tls``: after a handshake) a line, answered with the header's source as JSON.
    Serves until the socket is closed."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        try:
            conn.settimeout(5)
            head = _exactly(conn, 16)
            header = parse(head + _exactly(conn, int.from_bytes(head[14:16], "big")))
            assert header is not None
            s = tls.wrap_socket(conn, server_side=True) if tls is not None else conn
            s.recv(4096)
            s.sendall(json.dumps(header.source).encode() + b"\n")
            s.close()
        except (OSError, ValueError) as exc:
            conn.close()
            print("backend:", exc)


def tls_line(port: int, prefix: bytes, sni: str, ca: str) -> list:
    """``prefix`` in clear, TLS for ``sni`` verified against ``ca``, a line: the answer's
    JSON (the source the backend's PROXY header named)."""
    ctx = ssl.create_default_context(cadata=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(prefix)
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            s.sendall(b"ping\n")
            return json.loads(s.makefile("rb").readline())  # type: ignore[no-any-return]


def tcp_line(port: int, prefix: bytes) -> list:
    """The answer's JSON through a TCP frontend, ``prefix`` sent first."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(prefix + b"ping\n")
        line = s.makefile("rb").readline()
        if not line:
            raise ConnectionError("closed by the gateway")
        return json.loads(line)  # type: ignore[no-any-return]


def backends(host: Host) -> list[socket.socket]:
    socks = [host.call(listening, p) for p in (PASS_BE, TERM_BE, TCP_BE)]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = BACKEND_CERT
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        Path(d, "c").write_text(cert)
        Path(d, "k").write_text(key)
        ctx.load_cert_chain(Path(d, "c"), Path(d, "k"))
    for sock, tls in zip(socks, (ctx, None, None)):
        threading.Thread(target=proxied_backend, args=(sock, tls), daemon=True).start()
    return socks


def listener_condition(status: dict, name: str, kind: str) -> dict:
    gw = find(status, "Gateway", "gw", "demo")
    lis = next(x for x in gw["status"]["listeners"] if x["name"] == name)
    return condition(lis["conditions"], kind)  # type: ignore[no-any-return]


def test_proxy_protocol_on_tls_ports(host: Host, tmp_path: Path) -> None:
    """Default `kgw run`: TLS passthrough and terminate routes take the header before the
    ClientHello and send their backends v2 naming the header's client; a TCP frontend
    asking for a backend header is served in the userspace modes and refused, saying
    why, in the kernel NAT modes."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.yaml").write_text(l4_config())
    socks = backends(host)
    access = tmp_path / "stdout.log"
    with access.open("w") as out:
        host.popen(kgw_argv("run", "-c", str(conf)), stdout=out, stderr=subprocess.STDOUT)
    try:
        # (not /readyz: in a kernel mode the TCP listener is not served, and says so there)
        eventually(lambda: host.call(http_get, f"{ADMIN}/status")[0] == 200, timeout=30)
        v1 = encode_v1(("192.0.2.7", 40000), ("127.0.0.1", TLS_PORT))
        v2 = encode_v2(("2001:db8::7", 40001), ("2001:db8::1", TLS_PORT))
        pass_ca, term_ca = BACKEND_CERT[0], CERT[0]
        got = eventually(lambda: host.call(tls_line, TLS_PORT, v1, "pass.example.com",
                                           pass_ca), timeout=15)
        assert got == ["192.0.2.7", 40000]
        assert host.call(tls_line, TLS_PORT, v2, "pass.example.com", pass_ca) == [
            "2001:db8::7", 40001]
        assert host.call(tls_line, TLS_PORT, v1, "app.example.com", term_ca) == [
            "192.0.2.7", 40000]
        # required: without the header the connection is reset before any TLS
        with pytest.raises(OSError):
            host.call(tls_line, TLS_PORT, b"", "app.example.com", term_ca)

        status = json.loads(host.call(http_get, f"{ADMIN}/status")[1])
        for name in ("lb", "to-backends"):
            pol = find(status, "TrafficPolicy", name, "demo")
            accepted = condition(pol["status"]["ancestors"][0]["conditions"], "Accepted")
            assert accepted["status"] == "True", pol["status"]
        mode = json.loads(host.call(http_get, f"{ADMIN}/config_dump")[1])["l4_mode"]
        programmed = listener_condition(status, "tcp", "Programmed")
        if mode in ("userspace", "splice"):
            assert host.call(tcp_line, TCP_PORT, v1) == ["192.0.2.7", 40000]
        else:  # the kernel forwards the packets: no header can go ahead of them, or be
            # taken off them
            assert programmed["status"] == "False", programmed
            assert "the tc mode forwards packets in the kernel and cannot take a PROXY " \
                   "header off" in programmed["message"], programmed
        assert listener_condition(status, "pass", "Programmed")["status"] == "True"

        def flows() -> list[dict]:
            return [json.loads(x) for x in access.read_text().splitlines()
                    if x.startswith("{") and "flow_" in x]

        eventually(lambda: {"192.0.2.7:40000", "[2001:db8::7]:40001"} <= {
            x.get("downstream_remote_address") for x in flows()})
        eventually(lambda: any(x.get("response_flags") == "DPE" for x in flows()))
    finally:
        for s in socks:
            s.close()


def test_a_tcp_route_sends_v2_in_userspace_mode(host: Host, tmp_path: Path) -> None:
    """The TCP frontend takes the client's PROXY header off, and its backends get a v2
    header naming that client ahead of its bytes, when the L4 plane runs in userspace
    (a mode this capability needs)."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.yaml").write_text(l4_config())
    socks = backends(host)
    host.popen(kgw_argv("run", "-c", str(conf), "--l4-mode", "userspace"),
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
        # the client's header taken off, the backend's written before the client's bytes
        v2 = encode_v2(("2001:db8::7", 40001), ("2001:db8::1", TCP_PORT))
        assert eventually(lambda: host.call(tcp_line, TCP_PORT, v2), timeout=15) == [
            "2001:db8::7", 40001]
        with pytest.raises(OSError):  # required: no header, no connection
            host.call(tcp_line, TCP_PORT, b"")
        status = json.loads(host.call(http_get, f"{ADMIN}/status")[1])
        assert listener_condition(status, "tcp", "Programmed")["status"] == "True"
    finally:
        for s in socks:
            s.close()
