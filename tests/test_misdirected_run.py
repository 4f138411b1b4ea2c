"""421 Misdirected Request with ``kgw run -c DIR`` and no other flag, in a private host:
two HTTPS listeners on one port serving the same certificate; a request whose Host
belongs to the other listener than the one its connection's SNI chose is answered 421
(what an HTTP/2 client coalescing connections must get to open a new one)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import condition, eventually, find, http_get
from tests.netns import Host, kgw_argv
from tests.translate.tlsgen import self_signed, tls_secret

pytestmark = pytest.mark.slow


def listener(name: str, hostname: str) -> dict:
    return {"name": name, "port": 8443, "protocol": "HTTPS", "hostname": hostname,
            "tls": {"certificateRefs": [{"name": "shared-cert"}]}}


def route(name: str, section: str, port: int) -> list[dict]:
    return [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
         "metadata": {"name": name, "namespace": "default"},
         "spec": {"parentRefs": [{"name": "gw", "sectionName": section}],
                  "rules": [{"backendRefs": [{"name": name, "port": 80}]}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{name}-1", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": name}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]},
    ]


def tls_get(sni: str, host: str) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", 8443), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            out = b""
            while chunk := s.recv(65536):
                out += chunk
    return int(out.split(b" ", 2)[1]), out.split(b"\r\n\r\n", 1)[1]


def test_misdirected_request_with_kgw_run(host: Host, tmp_path: Path) -> None:
    cert, key = self_signed("a.example.com", ("a.example.com", "b.example.com"))
    objs = [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
         "metadata": {"name": "kgw"}, "spec": {"controllerName": "kgw.dev/gateway-controller"}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"gatewayClassName": "kgw", "listeners": [listener("a", "a.example.com"),
                                                           listener("b", "b.example.com")]}},
        tls_secret("shared-cert", "default", cert, key),
        *route("app-a", "a", 9101), *route("app-b", "b", 9102),
    ]
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "all.yaml").write_text(yaml.safe_dump_all(objs))
    for name, port in (("app-a", 9101), ("app-b", 9102)):
        host.popen(kgw_argv("echo", "--port", str(port), "--pod", f"{name}-x", "--namespace",
                            "default"),
                   stdout=subprocess.DEVNULL)
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, "http://127.0.0.1:9095/readyz")[0] == 200, timeout=30)

    status, body = eventually(lambda: host.call(tls_get, "a.example.com", "a.example.com"),
                              timeout=15)
    assert status == 200 and json.loads(body)["pod"] == "app-a-x"
    status, body = host.call(tls_get, "b.example.com", "b.example.com")
    assert status == 200 and json.loads(body)["pod"] == "app-b-x"
    assert host.call(tls_get, "a.example.com", "b.example.com")[0] == 421
    assert host.call(tls_get, "b.example.com", "a.example.com")[0] == 421

    # and status warns about it: the certificate is valid for both listeners' names
    code, body = host.call(http_get, "http://127.0.0.1:9095/status")
    gw = find(json.loads(body), "Gateway", "gw", "default")
    for lis in gw["status"]["listeners"]:
        cond = condition(lis["conditions"], "OverlappingTLSConfig")
        assert cond and (cond["status"], cond["reason"]) == ("True", "OverlappingCertificates"), lis
