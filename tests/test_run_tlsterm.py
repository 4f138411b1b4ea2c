"""TLS listeners in Terminate mode, as a user runs them: ``kgw run -c DIR`` and no other
flag, in a private host (tests/netns.py), against ``kgw echo``'s TCP mode (the
conformance suite's line protocol: welcome, PING, IS_TLS).

One Gateway port holds a Terminate listener (kgw's certificate, the decrypted stream to
the echo's plain TCP port; a second route re-encrypted to the echo's TLS port by a
BackendTLSPolicy) and a Passthrough listener (the echo's own TLS, spliced); another
Terminate listener has a Secret that is no certificate: it is not programmed, says why,
and the rest serves.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.helpers import condition, eventually, find, http_get
from tests.netns import Host, kgw_argv
from tests.translate.tlsgen import self_signed

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
PORT = 8443
TCP, TLS = 9300, 9301  # the echo's plain and TLS line-protocol ports

GATEWAY_CERT = self_signed("gateway", ("term.example.com", "reenc.example.com"))
BACKEND_CERT = self_signed("backend", ("pass.example.com", "backend.internal"))


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def config() -> str:
    cert, key = GATEWAY_CERT
    ca = "\n".join("    " + line for line in BACKEND_CERT[0].splitlines())
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: kgw}}
spec: {{controllerName: kgw.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: test}}
spec:
  gatewayClassName: kgw
  listeners:
  - {{name: terminate, protocol: TLS, port: {PORT}, hostname: "*.example.com",
     tls: {{mode: Terminate, certificateRefs: [{{name: gateway-cert}}]}}}}
  - {{name: passthrough, protocol: TLS, port: {PORT}, hostname: pass.example.com, tls: {{mode: Passthrough}}}}
  - {{name: broken, protocol: TLS, port: 9443, tls: {{mode: Terminate, certificateRefs: [{{name: not-a-cert}}]}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: gateway-cert, namespace: test}}
type: kubernetes.io/tls
data: {{tls.crt: {_b64(cert)}, tls.key: {_b64(key)}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: not-a-cert, namespace: test}}
type: kubernetes.io/tls
data: {{tls.crt: {_b64("not PEM")}, tls.key: {_b64("not PEM")}}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: test}}
spec: {{ports: [{{name: plain, port: 3000}}, {{name: tls, port: 8443}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: test, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: plain, port: {TCP}}}, {{name: tls, port: {TLS}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: backend-ca, namespace: test}}
data:
  ca.crt: |
{ca}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: echo-tls, namespace: test}}
spec:
  targetRefs: [{{group: "", kind: Service, name: echo, sectionName: tls}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: backend-ca}}]
    hostname: backend.internal
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: term, namespace: test}}
spec:
  parentRefs: [{{name: gw, sectionName: terminate}}]
  hostnames: [term.example.com]
  rules: [{{backendRefs: [{{name: echo, port: 3000}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: reenc, namespace: test}}
spec:
  parentRefs: [{{name: gw, sectionName: terminate}}]
  hostnames: [reenc.example.com]
  rules: [{{backendRefs: [{{name: echo, port: 8443}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: pass, namespace: test}}
spec:
  parentRefs: [{{name: gw, sectionName: passthrough}}]
  hostnames: [pass.example.com]
  rules: [{{backendRefs: [{{name: echo, port: 8443}}]}}]
"""  # noqa: E501 (data)


def exchange(sni: str, trusted: str) -> tuple[bytes, bytes, bytes]:
    """(welcome, PONG line, IS_TLS answer) over TLS to the Gateway port, the server's
    certificate verified against ``trusted`` for ``sni``."""
    ctx = ssl.create_default_context(cadata=trusted)
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            f = s.makefile("rwb")
            welcome = f.readline()
            f.write(b"PING\n")
            f.flush()
            pong = f.readline()
            f.write(b"IS_TLS\n")
            f.flush()
            return welcome, pong, f.readline()


def test_terminate_and_mixed_with_kgw_run(host: Host, tmp_path: Path) -> None:
    bc, bk = tmp_path / "backend.crt", tmp_path / "backend.key"
    bc.write_text(BACKEND_CERT[0])
    bk.write_text(BACKEND_CERT[1])
    host.popen(kgw_argv("echo", "--address", "127.0.0.1", "--tcp-port", str(TCP), "--tls-port",
                        str(TLS),
                        "--tls-cert", str(bc), "--tls-key", str(bk), "--pod", "echo-x",
                        "--namespace", "test"),
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gw.yaml").write_text(config())
    log = (tmp_path / "kgw.log").open("w")
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL, stderr=log)
    # /readyz stays not ready while a configured listener (the broken one) is not served
    eventually(lambda: host.call(http_get, f"{ADMIN}/status")[0] == 200, timeout=30)

    # Terminated: kgw's certificate; the echo sees plain TCP.
    welcome, pong, is_tls = eventually(lambda: host.call(exchange, "term.example.com",
                                                         GATEWAY_CERT[0]),
                                       timeout=20)
    assert (welcome, pong, is_tls) == (b"Gateway API Test TCP Server\n", b"PONG\n", b"false\n")
    # Re-encrypted: kgw's certificate to the client, TLS (checked against the policy's CA
    # and hostname) to the echo.
    assert host.call(exchange, "reenc.example.com", GATEWAY_CERT[0])[2] == b"true\n"
    # Passthrough on the same port: the echo's own certificate, its own TLS.
    assert host.call(exchange, "pass.example.com", BACKEND_CERT[0])[2] == b"true\n"
    # kgw's certificate is not the backend's: a client trusting only the backend refuses it
    with pytest.raises(ssl.SSLCertVerificationError):
        host.call(exchange, "term.example.com", BACKEND_CERT[0])

    status = json.loads(host.call(http_get, f"{ADMIN}/status")[1])
    gw = find(status, "Gateway", "gw", "test")
    assert gw is not None
    listeners = {lis["name"]: lis for lis in gw["status"]["listeners"]}
    term = listeners["terminate"]
    assert [k["kind"] for k in term["supportedKinds"]] == ["TLSRoute"]
    assert condition(term["conditions"], "Programmed")["status"] == "True"
    assert term["attachedRoutes"] == 2
    broken = listeners["broken"]
    refs = condition(broken["conditions"], "ResolvedRefs")
    assert (refs["status"], refs["reason"]) == ("False", "InvalidCertificateRef")
    assert "test/not-a-cert" in refs["message"]
    assert condition(broken["conditions"], "Programmed")["status"] == "False"
    # what the admin API shows of the L4 config carries the serving key as a fingerprint only
    key_body = GATEWAY_CERT[1].splitlines()[1]
    for page in ("/l4", "/config_dump"):
        code, body = host.call(http_get, f"{ADMIN}{page}")
        assert code == 200 and b"[redacted:" in body and key_body.encode() not in body, page
    policy = find(status, "BackendTLSPolicy", "echo-tls", "test")
    assert policy is not None
    assert condition(policy["status"]["ancestors"][0]["conditions"], "Accepted")["status"] == "True"
