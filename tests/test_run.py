"""`kgw run` end to end: edit files under a running gateway, watch config and status move."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

from controller.cli import main
from kgw_cli.env import Environment, ExitStatus
from tests.helpers import (admin_json, condition, eventually, find, free_port, http_get, kgw_cmd,
                           running)

pytestmark = pytest.mark.slow

GATEWAY = """\
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
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners: [{{name: http, protocol: HTTP, port: {port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: test}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-1, namespace: test, labels: {{kubernetes.io/service-name: svc}}}}
addressType: IPv4
ports: [{{name: http, port: {backend_port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"""

ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: test}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{host}]
  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]
"""


def vhosts(admin: str) -> set[str]:
    dump = admin_json(admin, "/config_dump")
    return {vh["hostname"] for lst in dump["l7"]["listeners"] for vh in lst["virtual_hosts"]}


def route_accepted(admin: str) -> bool:
    item = find(admin_json(admin, "/status"), "HTTPRoute", "web", "test")
    assert item is not None
    parent = item["status"]["parents"][0]
    return condition(parent["conditions"], "Accepted")["status"] == "True"


def test_edits_under_a_running_gateway(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    (tmp_path / "gw.yaml").write_text(GATEWAY.format(port=port, backend_port=free_port()))
    (tmp_path / "route.yaml").write_text(ROUTE.format(host="a.example.com"))
    cmd = kgw_cmd("run", "-c", str(tmp_path), "--admin-address", admin, "--workers", "1",
                  "--access-log", "off", "--l4-mode", "userspace")
    with running(cmd) as proc:
        eventually(lambda: http_get(f"http://{admin}/readyz")[0] == 200)
        assert http_get(f"http://{admin}/healthz")[0] == 200
        eventually(lambda: route_accepted(admin))
        gw = find(admin_json(admin, "/status"), "Gateway", "gw", "test")
        assert condition(gw["status"]["conditions"], "Programmed")["status"] == "True"
        assert gw["status"]["listeners"][0]["attachedRoutes"] == 1
        assert vhosts(admin) == {"a.example.com"}

        # a change to a route is live without a restart
        (tmp_path / "route.yaml").write_text(ROUTE.format(host="b.example.com"))
        eventually(lambda: vhosts(admin) == {"b.example.com"})

        # a broken edit is reported; the previous version keeps serving
        (tmp_path / "route.yaml").write_text(
            ROUTE.format(host="b.example.com").replace("port: 80", "port: 0"))
        problems = eventually(lambda: admin_json(admin, "/problems")["problems"])
        assert "route.yaml" in problems[0]["text"] and "HTTPRoute test/web" in problems[0]["text"]
        assert vhosts(admin) == {"b.example.com"}

        # a fix is picked up, and the problem goes away
        (tmp_path / "route.yaml").write_text(ROUTE.format(host="c.example.com"))
        eventually(lambda: vhosts(admin) == {"c.example.com"})
        assert admin_json(admin, "/problems")["problems"] == []

        # a new file with an unknown kind does not disturb anything
        (tmp_path / "junk.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
        eventually(lambda: admin_json(admin, "/problems")["problems"])
        assert vhosts(admin) == {"c.example.com"}

        # the CLI reads the same status
        out = io.StringIO()
        assert main(["status", "--admin-address", admin, "-o", "table"],
                    Environment(stdout=out)) == 0
        text = out.getvalue()
        assert ("HTTPRoute" in text and "parent test/gw" in text
                and "kind: unknown kind 'Pod'" in text)

        metrics = http_get(f"http://{admin}/metrics")[1].decode()
        assert "kgw_config_generation" in metrics and "kgw_config_publish_seconds_count" in metrics

        # deleting the route removes its status and its virtual host
        (tmp_path / "route.yaml").unlink()
        eventually(lambda: find(admin_json(admin, "/status"), "HTTPRoute", "web", "test") is None)
        assert vhosts(admin) == set()
        assert proc.poll() is None


def test_status_without_a_gateway_is_a_clear_error() -> None:
    err = io.StringIO()
    code = main(["status", "--admin-address", f"127.0.0.1:{free_port()}"],
                Environment(stdout=io.StringIO(), stderr=err))
    assert code == ExitStatus.UNAVAILABLE
    assert "cannot read the admin API" in err.getvalue()


def test_validate_and_translate(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(GATEWAY.format(port=8080, backend_port=9000))
    (tmp_path / "route.yaml").write_text(ROUTE.format(host="a.example.com"))
    out = io.StringIO()
    assert main(["validate", "-c", str(tmp_path), "-o", "json"],
                Environment(stdout=out)) == ExitStatus.SUCCESS
    report = json.loads(out.getvalue())
    assert report["problems"] == [] and report["unhealthy"] == []

    out = io.StringIO()
    assert main(["translate", "-c", str(tmp_path)], Environment(stdout=out)) == ExitStatus.SUCCESS
    config = json.loads(out.getvalue())
    (listener,) = config["l7"]["listeners"]
    assert listener["port"] == 8080 and listener["address"] == "127.0.0.1"
    backend = listener["virtual_hosts"][0]["routes"][0]["rule"]["backends"][0]
    assert backend["endpoints"] == [{"address": "127.0.0.1", "port": 9000}]

    # a route to a missing Service: validate says so, and exits non-zero
    (tmp_path / "route.yaml").write_text(
        ROUTE.format(host="a.example.com").replace("name: svc", "name: nope"))
    (tmp_path / "bad.yaml").write_text(textwrap.dedent("""\
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: bad, namespace: test}
        spec: {rules: [{matches: [{path: {type: Exact, value: relative}}]}]}
        """))
    out = io.StringIO()
    assert main(["validate", "-c", str(tmp_path), "-o", "table"],
                Environment(stdout=out)) == ExitStatus.INVALID
    text = out.getvalue()
    assert "bad.yaml:1: HTTPRoute test/bad: spec.rules[0].matches[0].path" in text
    assert "ResolvedRefs=False(BackendNotFound)" in text
