"""`kgw run` with every default serves TrafficPolicy sections: request limits on a route
(413 for a declared or a streamed chunked body, 431 for too many header fields), a
request header timeout on the Gateway, and the policies' status, live and offline."""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from controller.cli import main
from kgw_cli.env import Environment, ExitStatus
from tests.helpers import ROOT, condition, eventually, find, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
POLICIES = """\
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: search-limits, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: search}]
  requestLimits: {maxRequestBodySize: 1Ki, maxRequestHeaders: 12}
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: slowloris, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: demo}]
  requestHeaderTimeout: 1s
"""


def exchange(raw: bytes, timeout: float = 10.0) -> bytes:
    """Send ``raw`` to the Gateway; everything it answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", 8080), timeout=timeout) as s:
        s.sendall(raw)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and b"connection: close" not in out.lower():
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return out


def status_line(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def post(body: bytes, extra: bytes = b"") -> int:
    return status_line(exchange(
        b"POST /search HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: %d\r\n%s"
        b"Connection: close\r\n\r\n%s" % (len(body), extra, body)))


def chunked(total: int) -> int:
    """A chunked body of ``total`` bytes, sent in 256-byte chunks as the proxy reads."""
    with socket.create_connection(("127.0.0.1", 8080), timeout=10) as s:
        s.sendall(b"POST /search HTTP/1.1\r\nHost: shop.example.com\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        try:
            for _ in range(total // 256):
                s.sendall(b"100\r\n" + b"x" * 256 + b"\r\n")
                time.sleep(0.01)
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-body: the answer is already there
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return status_line(out)


def slow_head() -> tuple[int, float]:
    """Half a request head, then silence: how the Gateway answers, and after how long."""
    with socket.create_connection(("127.0.0.1", 8080), timeout=15) as s:
        start = time.monotonic()
        s.sendall(b"GET /search HTTP/1.1\r\nHost: shop.example.com\r\n")
        out = s.recv(65536)
        return status_line(out), time.monotonic() - start


def test_request_limits_and_header_timeout_with_defaults(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "examples", conf)
    (conf / "policies.yaml").write_text(POLICIES)
    for name, port in (("store-v1", 9101), ("store-v2", 9102), ("search", 9103)):
        host.popen(kgw_argv("echo", "--port", str(port), "--pod", f"{name}-x", "--namespace",
                            "demo"), stdout=subprocess.DEVNULL)
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
    eventually(lambda: host.call(post, b"x" * 100) == 200)

    assert host.call(post, b"x" * 1024) == 200
    assert host.call(post, b"x" * 1025) == 413
    assert host.call(chunked, 512) == 200
    assert host.call(chunked, 8192) == 413
    # Host, Content-Length, Connection and 9 more: 12 fields pass, 13 do not.
    assert host.call(post, b"", b"".join(b"x-h%d: v\r\n" % i for i in range(9))) == 200
    assert host.call(post, b"", b"".join(b"x-h%d: v\r\n" % i for i in range(10))) == 431
    # Another route of the same Gateway has no request limits.
    assert status_line(host.call(exchange, b"POST /store HTTP/1.1\r\nHost: shop.example.com\r\n"
                                           b"Content-Length: 2048\r\nConnection: close\r\n\r\n"
                                 + b"x" * 2048)) == 200
    code, waited = host.call(slow_head)
    assert code == 408 and waited < 5.0, (code, waited)  # the worker's default is 10 s

    def status() -> dict:
        code, body = host.call(http_get, f"{ADMIN}/status")
        assert code == 200
        return json.loads(body)

    for name in ("search-limits", "slowloris"):
        item = eventually(lambda n=name: find(status(), "TrafficPolicy", n, "demo"))
        (anc,) = item["status"]["ancestors"]
        assert anc["ancestorRef"]["name"] == "demo"
        cond = condition(anc["conditions"], "Accepted")
        assert (cond["status"], cond["reason"]) == ("True", "Accepted"), cond

    # kgw validate says the same offline, and names the field of a broken one.
    (conf / "bad.yaml").write_text(POLICIES.replace("search-limits", "bad").replace(
        "maxRequestHeaders: 12", "maxRequestHeaders: 0"))
    out = io.StringIO()
    assert main(["validate", "-c", str(conf), "-o", "table"],
                Environment(stdout=out)) == ExitStatus.INVALID
    text = out.getvalue()
    assert re.search(r"TrafficPolicy +demo +search-limits .*Accepted=True", text), text
    assert "spec.requestLimits.maxRequestHeaders" in text, text
