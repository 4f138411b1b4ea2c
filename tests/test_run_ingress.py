"""An Ingress served by ``kgw run -c DIR`` with every flag at its default, in a private
host (tests/netns.py): ports 80 and 443 of the node, the default IngressClass, status
with the node address, HTTPS by SNI with the Ingress's Secret, and a path that is not
absolute reported while the rest serves."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.ingress.world import self_signed
from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow


def objects() -> list[dict[str, Any]]:
    cert, key = self_signed(["shop.example.com"])
    return [
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": "kgw", "annotations": {
             "ingressclass.kubernetes.io/is-default-class": "true"}},
         "spec": {"controller": "kgw.dev/ingress-controller"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app", "namespace": "shop"},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 3000}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "app-1", "namespace": "shop",
                      "labels": {"kubernetes.io/service-name": "app"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": 3000}],
         "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "shop-tls", "namespace": "shop"},
         "data": {"tls.crt": base64.b64encode(cert).decode(),
                  "tls.key": base64.b64encode(key).decode()}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "shop", "namespace": "shop"},
         "spec": {"tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
                  "rules": [{"host": "shop.example.com", "http": {"paths": [
                      {"path": "/api", "pathType": "Prefix",
                       "backend": {"service": {"name": "app", "port": {"name": "http"}}}},
                      {"path": "relative", "pathType": "Prefix",
                       "backend": {"service": {"name": "app", "port": {"number": 80}}}}]}}]}},
    ]


def get(port: int, host: str, path: str, tls: bool = False) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                    server_hostname=host)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, (json.loads(body) if resp.status == 200 else {})
    finally:
        conn.close()


def test_ingress_served_with_every_default(host: Host, tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump_all(objects()))
    host.popen(kgw_argv("echo", "--port", "3000", "--pod", "app-x", "--namespace", "shop",
                        "--service", "app"), stdout=subprocess.DEVNULL)
    host.popen(kgw_argv("run", "-c", str(tmp_path)), stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, "http://127.0.0.1:9095/readyz")[0] == 200, timeout=30)

    code, echoed = eventually(lambda: host.call(get, 80, "shop.example.com", "/api/x"),
                              timeout=10)
    assert code == 200 and echoed["service"] == "app" and echoed["path"] == "/api/x"
    code, echoed = host.call(get, 443, "shop.example.com", "/api/y", tls=True)
    assert code == 200 and echoed["path"] == "/api/y"
    assert host.call(get, 80, "shop.example.com", "/other")[0] == 404

    def admin(path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:9095{path}", timeout=5) as r:
            return json.loads(r.read())
    items = host.call(admin, "/status")["items"]
    ing = next(i for i in items if i["kind"] == "Ingress")
    assert ing["status"]["loadBalancer"]["ingress"][0]["ip"]
    problems = json.dumps(host.call(admin, "/problems"))
    assert "path 'relative' is not absolute" in problems, problems
