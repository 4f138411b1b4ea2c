"""`kgw run` shutting down and saying when it does not serve: SIGTERM drains without losing a
request in flight (with every default, in a private host), and /readyz is not ready while
a configured listener is not served."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually, free_port, http_get, kgw_cmd, running
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

CONFIG = """\
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
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: test}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]
"""


def get(port: int, path: str, timeout: float = 15) -> tuple[int, str | None]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": "drain.example.com"})
        r = c.getresponse()
        r.read()
        return r.status, r.getheader("connection")
    finally:
        c.close()


def test_sigterm_drains_without_losing_a_request(host: Host, tmp_path: Path) -> None:
    """Every default (--drain-delay 5, --drain-timeout 20): on SIGTERM /readyz turns not
    ready at once while new requests are still served (with Connection: close) during the
    delay, then the listener closes, and the requests in flight all complete."""
    (tmp_path / "gw.yaml").write_text(CONFIG.format(port=8080, backend_port=9101))
    host.popen(kgw_argv("echo", "--port", "9101"), stdout=subprocess.DEVNULL)
    kgw = host.popen(kgw_argv("run", "-c", str(tmp_path)), stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE)
    eventually(lambda: host.call(http_get, "http://127.0.0.1:9095/readyz")[0] == 200, timeout=30)
    eventually(lambda: host.call(get, 8080, "/")[0] == 200, timeout=10)

    results: list[Any] = []

    def in_flight() -> None:
        try:
            results.append(host.call(get, 8080, "/slow?delay=6s"))
        except Exception as exc:  # lost: no response
            results.append(exc)

    threads = [threading.Thread(target=in_flight) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    kgw.send_signal(signal.SIGTERM)
    # Not ready at once, still serving, every response closing its connection.
    code, body = eventually(lambda: (r := host.call(http_get, "http://127.0.0.1:9095/readyz"))
                            and r[0] == 503 and r, timeout=2)
    assert body == b"not ready: shutting down\n"
    assert host.call(get, 8080, "/during-delay") == (200, "close")
    assert time.monotonic() - t0 < 4
    # After the delay the listener is closed; the slow requests are still in flight.
    def refused() -> bool:
        try:
            host.call(socket.create_connection, ("127.0.0.1", 8080), 1).close()
            return False
        except ConnectionRefusedError:
            return True
    eventually(refused, timeout=8)
    assert len(results) == 0
    for t in threads:
        t.join(20)
    assert results == [(200, "close")] * 5  # none lost
    assert kgw.wait(timeout=20) == 0
    err = kgw.stderr.read().decode()
    assert "still accepting for 5s" in err


def test_readyz_not_ready_while_a_listener_is_not_served(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    (tmp_path / "gw.yaml").write_text(CONFIG.format(port=port, backend_port=free_port()))
    cmd = kgw_cmd("run", "-c", str(tmp_path), "--admin-address", admin, "--workers", "1",
                  "--access-log", "off", "--l4-mode", "userspace")
    try:
        with running(cmd, stderr=subprocess.DEVNULL):
            code, body = eventually(lambda: (r := http_get(f"http://{admin}/readyz"))
                                    and b"not served" in r[1] and r, timeout=30)
            assert code == 503
            assert body.startswith(f"not ready: listener 127.0.0.1:{port} not served: "
                                   f"cannot listen on 127.0.0.1:{port}".encode()), body
    finally:
        blocker.close()


TCP_CONFIG = CONFIG.replace("protocol: HTTP", "protocol: TCP").split(
    "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute")[0] + """\
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: raw, namespace: test}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]
"""


def test_readyz_not_ready_while_a_tcp_listener_is_not_served(tmp_path: Path) -> None:
    """The L4 plane's listeners count too: a TCPRoute frontend whose port another process
    holds makes /readyz say which listener is not served."""
    port, admin_port = free_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    (tmp_path / "gw.yaml").write_text(TCP_CONFIG.format(port=port, backend_port=free_port()))
    cmd = kgw_cmd("run", "-c", str(tmp_path), "--admin-address", admin, "--workers", "1",
                  "--access-log", "off", "--l4-mode", "userspace")
    try:
        with running(cmd, stderr=subprocess.DEVNULL):
            code, body = eventually(lambda: (r := http_get(f"http://{admin}/readyz"))
                                    and b"not served" in r[1] and r, timeout=30)
            assert code == 503
            assert body.startswith(b"not ready: listener test/gw/http not served: "), body
    finally:
        blocker.close()
