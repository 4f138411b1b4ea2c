"""kgw's policies from a cluster: `kgw agent` reads a TrafficPolicy through the kube
source, serves it, and writes its PolicyAncestorStatus through the status subresource;
an edit the translator finds Invalid (a rule the CRD does not hold) is reported so, while
the previous version keeps applying."""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually, free_port, http_get, kgw_cmd, running
from tests.kube import objects as o
from tests.kube.fake_apiserver import FakeAPIServer
from tests.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.slow

POLICY: dict[str, Any] = {
    "apiVersion": "gateway.kgw.dev/v1alpha1", "kind": "TrafficPolicy",
    "metadata": {"name": "limits", "namespace": "test"},
    "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                             "name": "web"}],
             "requestLimits": {"maxRequestHeaders": 5}}}


def headers_status(port: int, extra: int) -> int:
    """Status of a request with Host and ``extra`` more header fields."""
    fields = b"".join(b"x-h%d: v\r\n" % i for i in range(extra))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n%s\r\n"
                  % fields)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return int(out.split(b" ", 2)[1])


def accepted(fake: FakeAPIServer) -> tuple[str, str] | None:
    pol = fake.get("gateway.kgw.dev/v1alpha1", "TrafficPolicy", "test", "limits") or {}
    ancestors = (pol.get("status") or {}).get("ancestors") or []
    if not ancestors:
        return None
    cond = ancestors[0]["conditions"][0]
    return cond["status"], cond["reason"]


def test_agent_serves_a_policy_and_writes_its_status(fake: FakeAPIServer,
                                                     tmp_path: Path) -> None:
    gw_port, backend_port = free_port(), free_port()
    admin = f"127.0.0.1:{free_port()}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(fake.kubeconfig())
    for obj in o.basic(gw_port, backend_port):
        fake.create(obj)
    fake.create(o.http_route("a.example.com"))
    fake.create(POLICY)
    cmd = kgw_cmd("agent", "--kubeconfig", str(kubeconfig), "--admin-address", admin,
                  "--metrics-address", f"127.0.0.1:{free_port()}", "--identity", "node-1",
                  "--lease-namespace", "kgw-system", "--workers", "1", "--access-log", "off",
                  "--l4-mode", "userspace", "--node-address", "127.0.0.1", "--drain-timeout",
                  "1")
    with running(kgw_cmd("echo", "--port", str(backend_port), "--quiet")), running(cmd):
        eventually(lambda: http_get(f"http://{admin}/readyz")[0] == 200, timeout=30)
        eventually(lambda: headers_status(gw_port, 3) == 200)  # (Host, Connection and 3)
        assert headers_status(gw_port, 4) == 431
        assert eventually(lambda: accepted(fake)) == ("True", "Accepted")
        pol = fake.get("gateway.kgw.dev/v1alpha1", "TrafficPolicy", "test", "limits")
        (anc,) = pol["status"]["ancestors"]
        assert anc["ancestorRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                      "name": "gw", "namespace": "test"}
        assert anc["controllerName"] == "kgw.dev/gateway-controller"

        # Two refs to one route, one with sectionName and one without: the CRD takes it,
        # kgw's rule does not.
        bad = copy.deepcopy(pol)
        bad["spec"]["targetRefs"].append({"group": "gateway.networking.k8s.io",
                                          "kind": "HTTPRoute", "name": "web",
                                          "sectionName": "x"})
        bad["spec"]["requestLimits"]["maxRequestHeaders"] = 50
        del bad["status"]
        fake.update(bad)
        assert eventually(lambda: accepted(fake) == ("False", "Invalid") and accepted(fake))
        assert headers_status(gw_port, 4) == 431  # the previous version: still 5


def redis_condition(fake: FakeAPIServer) -> dict | None:
    """The ResolvedRefs condition of the Redis policy's ancestor, as written to the API."""
    pol = fake.get("gateway.kgw.dev/v1alpha1", "TrafficPolicy", "test", "global") or {}
    for anc in (pol.get("status") or {}).get("ancestors") or []:
        for cond in anc["conditions"]:
            if cond["type"] == "ResolvedRefs":
                return cond
    return None


def policy_accepted(fake: FakeAPIServer) -> bool:
    pol = fake.get("gateway.kgw.dev/v1alpha1", "TrafficPolicy", "test", "global") or {}
    return any(c["type"] == "Accepted" and c["status"] == "True"
               for anc in (pol.get("status") or {}).get("ancestors") or []
               for c in anc["conditions"])


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")
def test_agent_writes_what_serving_finds_broken_into_the_policy_status(
        fake: FakeAPIServer, tmp_path: Path) -> None:
    """A global rate limit whose Redis refuses: the status subresource gets the policy's
    ResolvedRefs=False (Accepted stays True) naming the address; Redis started, it goes."""
    gw_port, backend_port, redis_port = free_port(), free_port(), free_port()
    address = f"127.0.0.1:{redis_port}"
    admin = f"127.0.0.1:{free_port()}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(fake.kubeconfig())
    for obj in o.basic(gw_port, backend_port):
        fake.create(obj)
    fake.create(o.http_route("a.example.com"))
    fake.create({**POLICY, "metadata": {"name": "global", "namespace": "test"},
                 "spec": {"targetRefs": POLICY["spec"]["targetRefs"],
                          "rateLimit": {"global": {
                              "tokenBucket": {"maxTokens": 1000, "tokensPerFill": 1000,
                                              "fillInterval": "1s"},
                              "redis": {"address": address}, "failureMode": "Open"}}}})
    cmd = kgw_cmd("agent", "--kubeconfig", str(kubeconfig), "--admin-address", admin,
                  "--metrics-address", f"127.0.0.1:{free_port()}", "--identity", "node-1",
                  "--lease-namespace", "kgw-system", "--workers", "1", "--access-log", "off",
                  "--l4-mode", "userspace", "--node-address", "127.0.0.1", "--drain-timeout",
                  "1")
    redis = RedisServer(tmp_path / "redis", port=redis_port)
    with running(kgw_cmd("echo", "--port", str(backend_port), "--quiet")), running(cmd):
        eventually(lambda: http_get(f"http://{admin}/readyz")[0] == 200, timeout=30)

        def failing() -> dict | None:
            assert headers_status(gw_port, 0) == 200  # (failing open)
            cond = redis_condition(fake)
            return cond if cond is not None and cond["status"] == "False" else None

        cond = eventually(failing, timeout=30)
        assert cond["reason"] == "Unreachable"
        assert f"spec.rateLimit.global.redis.address {address}: refused" in cond["message"]
        assert policy_accepted(fake)
        redis.start()
        try:
            eventually(lambda: headers_status(gw_port, 0) == 200 and
                       redis_condition(fake) is None, timeout=30)
            assert policy_accepted(fake)
        finally:
            redis.stop()
