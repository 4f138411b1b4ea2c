"""`kgw agent` end to end: a process against the fake API server, serving real traffic."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually, free_port, http_get, kgw_cmd, running
from tests.kube import objects as o
from tests.kube.fake_apiserver import FakeAPIServer

pytestmark = pytest.mark.slow


def get_via_gateway(port: int, host: str) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/hello", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def lease_holder(fake: FakeAPIServer) -> Any:
    lease = fake.get("coordination.k8s.io/v1", "Lease", "kgw-system", "kgw-status-writer")
    return lease and lease["spec"].get("holderIdentity")


def test_agent_serves_writes_status_and_shuts_down_cleanly(fake: FakeAPIServer,
                                                           tmp_path: Path) -> None:
    gw_port, backend_port = free_port(), free_port()
    admin, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(fake.kubeconfig())
    fake.pause()  # the API server is down when the agent starts
    cmd = kgw_cmd("agent", "--kubeconfig", str(kubeconfig), "--admin-address", admin,
                  "--metrics-address", metrics,
                  "--identity", "node-1", "--lease-namespace", "kgw-system", "--workers", "1",
                  "--access-log", "off", "--l4-mode", "userspace", "--node-address", "127.0.0.1",
                  "--drain-timeout", "1")
    with running(kgw_cmd("echo", "--port", str(backend_port), "--quiet")), running(cmd) as agent:
        code, body = eventually(lambda: (r := http_get(f"http://{admin}/readyz")) and r[0] == 503
                                and b"API server" in r[1] and r)
        assert b"not ready" in body
        for obj in o.basic(gw_port, backend_port):
            fake.create(obj)
        fake.create(o.http_route("a.example.com"))
        fake.resume()
        eventually(lambda: http_get(f"http://{admin}/readyz")[0] == 200)
        eventually(lambda: get_via_gateway(gw_port, "a.example.com")[0] == 200)
        eventually(lambda: lease_holder(fake) == "node-1")
        eventually(
            lambda: (fake.get(o.GW, "HTTPRoute", "test", "web").get("status") or {}).get("parents"))
        # The public listener serves only health and metrics.
        assert http_get(f"http://{metrics}/metrics")[0] == 200
        assert http_get(f"http://{metrics}/config_dump")[0] == 404
        assert http_get(f"http://{admin}/config_dump")[0] == 200

        # The API server goes away: traffic keeps flowing, /readyz says why.
        fake.pause()
        code, body = eventually(lambda: (r := http_get(f"http://{admin}/readyz"))
                                and b"API server" in r[1] and r)
        assert code == 200 and b"last good configuration" in body
        assert get_via_gateway(gw_port, "a.example.com")[0] == 200
        fake.resume()
        eventually(lambda: http_get(f"http://{admin}/readyz")[1] == b"ready\n")

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=20) == 0
    assert lease_holder(fake) is None  # handed back for the next agent
