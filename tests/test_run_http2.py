"""HTTP/2 from clients with ``kgw run -c <dir>`` and no other flag (what a new user gets):
the README's examples plus an HTTPS Gateway, reached with curl over TLS (ALPN h2), with
prior knowledge on the HTTP listener, and with ``Upgrade: h2c``. In a private host
(tests/netns.py), like tests/test_run_defaults.py."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, eventually, http_get
from tests.l7.conftest import self_signed
from tests.netns import Host, kgw_argv

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")]

TLS = """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tls, namespace: demo}}
spec:
  gatewayClassName: kgw
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: https, protocol: HTTPS, port: 8443, tls: {{certificateRefs: [{{name: shop}}]}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: shop, namespace: demo}}
type: kubernetes.io/tls
data: {{tls.crt: {crt}, tls.key: {key}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: search-tls, namespace: demo}}
spec:
  parentRefs: [{{name: tls}}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{{path: {{type: Exact, value: /search}}}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {{type: ReplaceFullPath, replaceFullPath: /api/v1/search}}
    backendRefs: [{{name: search, port: 80}}]
"""


def test_curl_http2_against_kgw_run_defaults(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "examples", conf)
    crt, key = self_signed(["shop.example.com"])
    (conf / "tls.yaml").write_text(TLS.format(crt=base64.b64encode(crt.encode()).decode(),
                                              key=base64.b64encode(key.encode()).decode()))
    host.popen(kgw_argv("echo", "--port", "9103", "--pod", "search-x", "--namespace", "demo"),
               stdout=subprocess.DEVNULL)
    kgw = host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, "http://127.0.0.1:9095/readyz")[0] == 200, timeout=30)

    def curl(*args: str) -> tuple[str, dict]:
        r = host.run("curl", "-sS", "-w", "\n%{http_version}", *args, check=False, timeout=15)
        assert r.returncode == 0, r.stderr
        body, _, version = r.stdout.rpartition("\n")
        return version, json.loads(body)

    checks = {
        "tls": ("-k", "--http2", "--resolve", "shop.example.com:8443:127.0.0.1",
                "https://shop.example.com:8443/search"),
        "prior-knowledge": ("--http2-prior-knowledge", "-H", "Host: shop.example.com",
                            "http://127.0.0.1:8080/search"),
        "h2c": ("--http2", "-H", "Host: shop.example.com", "http://127.0.0.1:8080/search"),
    }
    for name, args in checks.items():
        version, echoed = eventually(lambda: curl(*args), timeout=10)  # noqa: B023
        assert version == "2", name
        assert echoed["path"] == "/api/v1/search" and echoed["pod"] == "search-x", name
    metrics = host.call(http_get, "http://127.0.0.1:9095/metrics")[1]
    text = metrics.decode() if isinstance(metrics, bytes) else metrics
    served = [float(line.split()[1]) for line in text.splitlines()
              if line.startswith("kgw_l7_http2_connections_total ")]
    assert served and served[0] >= 3, text
    kgw.terminate()
    out, _ = kgw.communicate(timeout=20)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]
    assert sum(1 for line in lines if line["path"] == "/search" and line["protocol"] == "HTTP/2"
               and line["response_code"] == 200) == 3, out[-2000:]
