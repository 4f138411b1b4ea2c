"""`kgw run` with every default tells the truth about what it does and does not serve
(issue: a GRPCRoute was Accepted while every call failed -- it is now served, over HTTP/2,
tests/test_run_grpc.py --; an h2c backend was spoken to in HTTP/1.1 and answered 502
"malformed response" -- it is now spoken to in HTTP/2 --; sessionPersistence was
silently ignored -- served now: tests/test_run_session.py)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from controller.cli import main
from kgw_cli.env import Environment, ExitStatus
from tests.helpers import ROOT, condition, eventually, find, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
EXTRA = """\
apiVersion: v1
kind: Service
metadata: {name: h2, namespace: demo}
spec:
  ports: [{name: grpc, port: 80, targetPort: 9104, appProtocol: kubernetes.io/h2c}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: h2-a, namespace: demo, labels: {kubernetes.io/service-name: h2}}
addressType: IPv4
ports: [{name: grpc, port: 9104}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h2, namespace: demo}
spec:
  parentRefs: [{name: demo}]
  hostnames: [h2.example.com]
  rules: [{backendRefs: [{name: h2, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: demo}
spec:
  parentRefs: [{name: demo}]
  hostnames: [grpc.example.com]
  rules: [{backendRefs: [{name: h2, port: 80}]}]
"""


def _get(host_header: str) -> int:
    return _get_body(host_header)[0]


def _get_body(host_header: str) -> tuple[int, bytes]:
    req = urllib.request.Request("http://127.0.0.1:8080/", headers={"Host": host_header})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_status_says_what_is_not_served(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "examples", conf)
    (conf / "extra.yaml").write_text(EXTRA)
    host.popen(kgw_argv("echo", "--port", "9105", "--h2c-port", "9104", "--pod", "h2-x",
                        "--namespace", "demo"),
               stdout=subprocess.DEVNULL)
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)

    def status() -> dict:
        code, body = host.call(http_get, f"{ADMIN}/status")
        assert code == 200
        return json.loads(body)

    st = eventually(lambda: find(status(), "GRPCRoute", "grpc", "demo") and status())
    gw = find(st, "Gateway", "demo", "demo")
    kinds = [k["kind"] for k in gw["status"]["listeners"][0]["supportedKinds"]]
    assert kinds == ["HTTPRoute", "GRPCRoute"]

    def parent(kind: str, name: str, type_: str) -> dict:
        item = find(st, kind, name, "demo")
        return condition(item["status"]["parents"][0]["conditions"], type_)

    grpc = parent("GRPCRoute", "grpc", "Accepted")
    assert (grpc["status"], grpc["reason"]) == ("True", "Accepted")
    h2 = parent("HTTPRoute", "h2", "ResolvedRefs")
    assert (h2["status"], h2["reason"]) == ("True", "ResolvedRefs")
    # the h2c backend is spoken to in HTTP/2 (its h2c port refuses HTTP/1.1 with 400)
    code, body = eventually(lambda: host.call(_get_body, "h2.example.com"))
    assert code == 200, body
    assert json.loads(body)["proto"] == "HTTP/2.0"
    # and the CLI says why, offline and from the running gateway
    out = io.StringIO()
    assert main(["validate", "-c", str(conf), "-o", "table"],
                Environment(stdout=out)) == ExitStatus.SUCCESS
    assert re.search(r"GRPCRoute +demo +grpc +1 +parent demo/demo +Accepted=True "
                     r"ResolvedRefs=True", out.getvalue())
    out = io.StringIO()
    assert host.call(main, ["status", "-o", "table"], Environment(stdout=out)) == ExitStatus.SUCCESS
    text = out.getvalue()
    assert "appProtocol" not in text
    assert "not supported" not in text
