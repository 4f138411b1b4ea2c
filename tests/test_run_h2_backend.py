"""`kgw run -c DIR` with every default, HTTP/1.1 clients, backends whose Service port says
``appProtocol: kubernetes.io/h2c``: kgw speaks HTTP/2 to them (tests/l7/h2backend.py, a
real ``h2`` server per process). Multiplexing, flow control with bounded memory, trailers,
GOAWAY under load, a backend killed mid-response, retries."""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
#: backend -> (port, h2backend arguments)
BACKENDS = {"h2": (9201, []), "goaway": (9202, ["--goaway-after", "50"]), "victim": (9203, [])}

CONF = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: kgw
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners: [{name: http, protocol: HTTP, port: 8080}]
"""
SERVICE = """\
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: app}}
spec: {{ports: [{{name: grpc, port: 80, appProtocol: kubernetes.io/h2c}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-a, namespace: app, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: grpc, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: app}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{name}.example.com]
  rules:
  - backendRefs: [{{name: {name}, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /retry}}}}]
    retry: {{codes: [503], attempts: 2}}
    backendRefs: [{{name: {name}, port: 80}}]
"""


class Resp:
    def __init__(self, r: http.client.HTTPResponse, body: bytes) -> None:
        self.status = r.status
        self.headers = {k.lower(): v for k, v in r.getheaders()}
        self.body = body


def get(host: str, path: str, method: str = "GET", body: bytes | None = None,
        timeout: float = 10) -> Resp:
    c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=timeout)
    try:
        c.request(method, path, body=body, headers={"Host": host})
        r = c.getresponse()
        return Resp(r, r.read())
    finally:
        c.close()


def workers(kgw_pid: int) -> list[int]:
    """The L7 worker processes under ``kgw run``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if b"kgw_l7\x00worker" in cmd and _descends(int(d), kgw_pid):
                out.append(int(d))
    return out


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_http2_backends_behind_kgw_run(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.yaml").write_text(CONF + "".join(
        SERVICE.format(name=name, port=port) for name, (port, _) in BACKENDS.items()))
    procs = {name: host.popen([sys.executable, "-m", "tests.l7.h2backend", "--port", str(port),
                               *args]) for name, (port, args) in BACKENDS.items()}
    kgw = host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
    r = eventually(lambda: (r := host.call(get, "h2.example.com", "/echo?x=1")).status == 200 and r)

    # one request: HTTP/2 with :authority from Host, the proxy's fields, no Host field
    assert r.body == b"ok" and r.headers["x-req-authority"] == "h2.example.com"
    assert r.headers["x-req-x-forwarded-for"] == "127.0.0.1" and "x-req-host" not in r.headers

    # trailers reach an HTTP/1.1 client in the last chunk, exactly
    def trailers() -> bytes:
        with socket.create_connection(("127.0.0.1", 8080), timeout=5) as s:
            s.sendall(b"GET /trailers HTTP/1.1\r\nHost: h2.example.com\r\nTE: trailers\r\n\r\n")
            data = b""
            while not data.endswith(b"\r\n0\r\ngrpc-status: 0\r\ngrpc-message: all good\r\n\r\n"):
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
            return data
    assert host.call(trailers).split(b"\r\n\r\n", 1)[1] == (
        b"2\r\nhi\r\n0\r\ngrpc-status: 0\r\ngrpc-message: all good\r\n\r\n")

    # many concurrent requests: multiplexed, one connection per worker at most
    def many(name: str, n: int, threads: int) -> list[Resp]:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda i: get(f"{name}.example.com", f"/echo?i={i}"), range(n)))
    rs = host.call(many, "h2", 200, 32)
    assert [x.status for x in rs] == [200] * 200
    nworkers = len(workers(kgw.pid))
    assert nworkers >= 1
    assert len({x.headers["x-conn"] for x in rs}) <= nworkers
    assert int(max(x.headers["x-conns"] for x in rs)) <= nworkers  # every connection it accepted

    # large bodies both ways, a slow backend reading and a slow client: the workers'
    # peak memory does not grow with the body (it would by 32 MiB if buffered)
    before = {p: peak_rss_kib(p) for p in workers(kgw.pid)}
    body = os.urandom(32 * 1024 * 1024)
    up = host.call(get, "h2.example.com", "/slow-upload", "POST", body, 120)
    assert up.status == 200 and up.headers["x-body-len"] == str(len(body))
    assert up.headers["x-body-sha"] == hashlib.sha256(body).hexdigest()

    def slow_download() -> int:
        c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=60)
        c.request("GET", "/big?n=%d" % (32 * 1024 * 1024), headers={"Host": "h2.example.com"})
        r = c.getresponse()
        got = 0
        while chunk := r.read(512 * 1024):
            got += len(chunk)
            time.sleep(0.005)
        c.close()
        return got
    assert host.call(slow_download) == 32 * 1024 * 1024
    growth = {p: peak_rss_kib(p) - before[p] for p in before}
    assert max(growth.values()) < 16 * 1024, growth

    # the backend says GOAWAY after every 50th stream of a connection, under load: the
    # streams it took finish, the others are retried on a new connection; none fails
    rs = host.call(many, "goaway", 300, 20)
    assert [x.status for x in rs] == [200] * 300
    assert len({x.headers["x-conn"] for x in rs}) > 1

    # a reset before the response: 503 as for HTTP/1.1; a retry policy tries again
    assert host.call(get, "h2.example.com", "/cut-before-head").status == 503
    r = host.call(get, "h2.example.com", "/retry/flaky")
    assert r.status == 200

    # a backend killed mid-response: the client is cut off (its response cannot
    # complete); the next request to it (connection refused) is answered 502, as for an
    # HTTP/1.1 backend
    def killed_mid_response() -> int:
        """The bytes of the body the client got (the connection ends early)."""
        c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=20)
        c.request("GET", "/big?n=%d" % (64 * 1024 * 1024), headers={"Host": "victim.example.com"})
        r = c.getresponse()
        assert r.status == 200 and r.getheader("content-length") == str(64 * 1024 * 1024)
        got = len(r.read(1024 * 1024))
        procs["victim"].send_signal(signal.SIGKILL)
        try:
            while chunk := r.read(1024 * 1024):
                got += len(chunk)
        except (http.client.IncompleteRead, ConnectionError):
            pass
        finally:
            c.close()
        return got
    assert host.call(killed_mid_response) < 64 * 1024 * 1024
    assert host.call(get, "victim.example.com", "/echo").status == 502
    assert kgw.poll() is None
