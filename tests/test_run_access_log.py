"""The access log of a real ``kgw run``: the default line (stdout, JSON) with every
optional flag at its default, lines kept through SIGTERM, and the faults a log file
meets (a path that cannot be written, a full disk) while kgw keeps serving."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, free_port, http_get, kgw_cmd, running
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

BACKENDS = (("store-v1", 9101), ("store-v2", 9102), ("search", 9103))


def exchange(port: int, data: bytes, until: bytes = b"\r\n\r\n") -> tuple[bytes, tuple[str, int]]:
    """Send ``data`` on a new connection, read until ``until`` (or the close); returns
    what was read and the client's own address."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        got = b""
        while until not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got, s.getsockname()


def websocket(port: int) -> tuple[int, int, tuple[str, int]]:
    """A WebSocket through kgw: the handshake, one masked frame echoed back, then close.
    Returns the bytes sent and received after the heads, and the client's address."""
    key = base64.b64encode(os.urandom(16))
    req = (b"GET /search HTTP/1.1\r\nHost: shop.example.com\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key +
           b"\r\n\r\n")
    payload = b"x" * 1000
    mask = b"\x01\x02\x03\x04"
    frame = b"\x82\xfe" + len(payload).to_bytes(2, "big") + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(req)
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
        assert got.startswith(b"HTTP/1.1 101"), got
        s.sendall(frame)
        while len(got) < 1000 + got.index(b"\r\n\r\n") + 4:
            chunk = s.recv(65536)
            assert chunk
            got += chunk
        addr = s.getsockname()
    return len(frame), len(got) - got.index(b"\r\n\r\n") - 4, addr


def test_default_access_log_line(host: Host) -> None:
    """``kgw run -c examples/`` and nothing else: one JSON line per request on stdout,
    escaped whatever the client sent, refused requests and tunnels included, none lost
    when kgw is stopped right after the last request."""
    for name, port in BACKENDS:
        host.popen(kgw_argv("echo", "--port", str(port), "--pod", f"{name}-x", "--namespace",
                            "demo"), stdout=subprocess.DEVNULL)
    kgw = host.popen(kgw_argv("run", "-c", "examples/"), stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, "http://127.0.0.1:9095/readyz")[0] == 200, timeout=30)
    eventually(lambda: host.call(exchange, 8080, b"GET /search HTTP/1.1\r\nHost: "
                                 b"shop.example.com\r\n\r\n")[0].startswith(b"HTTP/1.1 200"))
    hostile = (b'GET /search?q=%22a%5Cb HTTP/1.1\r\nHost: shop.example.com\r\n'
               b'User-Agent: evil"agent\\\xff\xc3\xa9\r\nAuthorization: Bearer s3cret\r\n'
               b"X-Request-Id: rid-e2e-1\r\n\r\n")
    got, client = host.call(exchange, 8080, hostile)
    assert got.startswith(b"HTTP/1.1 200"), got
    dup, dup_client = host.call(exchange, 8080, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert dup.startswith(b"HTTP/1.1 400"), dup
    sent, received, ws_client = host.call(websocket, 8080)
    # The last request, and kgw stopped at once: before the 1 s timer wrote anything.
    last, _ = host.call(exchange, 8080, b"GET /search?last HTTP/1.1\r\nHost: shop.example.com"
                        b"\r\nConnection: close\r\n\r\n", b"\x00")
    assert last.startswith(b"HTTP/1.1 200")
    kgw.send_signal(signal.SIGTERM)
    out, _ = kgw.communicate(timeout=30)
    assert b"s3cret" not in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]
    by_id = {line["request_id"]: line for line in lines}
    line = by_id["rid-e2e-1"]
    assert line["path"] == "/search?q=%22a%5Cb"
    assert line["user_agent"] == 'evil"agent\\\xff\xc3\xa9'  # (bytes as Latin-1)
    assert line["downstream_remote_address"] == f"{client[0]}:{client[1]}"
    assert (line["method"], line["protocol"], line["response_code"]) == ("GET", "HTTP/1.1", 200)
    assert line["route_name"].startswith("demo/search") and line[
        "upstream_host"] == "127.0.0.1:9103"
    assert line["listener"] and line["response_flags"] == "-" and line["bytes_sent"] > 0
    refused = [x for x in lines if x["response_code"] == 400]
    assert len(refused) == 1 and refused[0]["response_flags"] == "DPE", lines
    assert refused[0]["downstream_remote_address"] == f"{dup_client[0]}:{dup_client[1]}"
    assert refused[0]["method"] is None and refused[0]["listener"] == line["listener"]
    tunnel = [x for x in lines if x["response_code"] == 101]
    assert len(tunnel) == 1, lines
    assert tunnel[0]["downstream_remote_address"] == f"{ws_client[0]}:{ws_client[1]}"
    # Logged when the tunnel closed: the bytes each way (after the heads, as for any
    # request its body), not 0.
    assert tunnel[0]["bytes_received"] == sent and tunnel[0]["bytes_sent"] == received
    assert "/search?last" in [x["path"] for x in lines]  # (workers' lines: in any order)


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
"""


def serving(tmp_path: Path, *flags: str) -> tuple[list[str], int, str]:
    """A Gateway without routes: kgw answers 404 itself (no backend needed)."""
    port, admin = free_port(), f"127.0.0.1:{free_port()}"
    (tmp_path / "gw.yaml").write_text(GATEWAY.format(port=port))
    cmd = kgw_cmd("run", "-c", str(tmp_path), "--admin-address", admin, "--workers", "1",
                  "--l4-mode", "userspace", "--drain-delay", "0", *flags)
    return cmd, port, admin


def get(port: int, path: bytes = b"/") -> bytes:
    got, _ = exchange(port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return got


def metric(admin: str, name: str) -> float:
    text = http_get(f"http://{admin}/metrics")[1].decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_no_line_lost_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    log = tmp_path / "access.log"
    cmd, port, admin = serving(tmp_path / "cfg", "--access-log", str(log))
    with running(cmd) as proc:
        eventually(lambda: http_get(f"http://{admin}/readyz")[0] == 200, timeout=30)
        eventually(lambda: get(port).startswith(b"HTTP/1.1 404"))
        time.sleep(1.5)  # (the first line is written by the timer)
        before = log.read_text().count("\n")
        for i in range(300):
            assert get(port, b"/n%d" % i).startswith(b"HTTP/1.1 404")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    paths = [json.loads(x)["path"] for x in log.read_text().splitlines()[before:]]
    assert paths == [f"/n{i}" for i in range(300)]


def test_unwritable_access_log_path_is_said_once_and_serving_goes_on(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    target = tmp_path / "no-such-dir" / "access.log"
    cmd, port, admin = serving(tmp_path / "cfg", "--access-log", str(target))
    with running(cmd, stderr=subprocess.PIPE, text=True) as proc:
        eventually(lambda: http_get(f"http://{admin}/readyz")[0] == 200, timeout=30)
        for _ in range(3):
            eventually(lambda: get(port).startswith(b"HTTP/1.1 404"))
            time.sleep(1.2)  # one batch per timer tick: three failed writes
        assert eventually(lambda: metric(admin, "kgw_access_log_write_errors_total") >= 2)
        dropped = metric(admin, 'kgw_access_log_dropped_total{reason="write_error"}')
        assert dropped >= 2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    said = [line for line in err.splitlines() if "access log: cannot write" in line]
    assert len(said) == 1 and str(target) in said[0] and "No such file" in said[0], err[-2000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (root)")
def test_full_disk_is_said_once_and_serving_goes_on(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mnt)], check=True)
    try:
        cmd, port, admin = serving(tmp_path / "cfg", "--access-log", str(mnt / "access.log"))
        with running(cmd, stderr=subprocess.PIPE, text=True) as proc:
            eventually(lambda: http_get(f"http://{admin}/readyz")[0] == 200, timeout=30)
            long_path = b"/" + b"p" * 2000
            for _ in range(3):
                for _ in range(40):  # ~90 KB of lines a batch: more than the disk holds
                    assert get(port, long_path).startswith(b"HTTP/1.1 404")
                time.sleep(1.2)
            assert eventually(lambda: metric(admin, "kgw_access_log_write_errors_total") >= 1)
            assert metric(admin, 'kgw_access_log_dropped_total{reason="write_error"}') >= 1
            assert get(port).startswith(b"HTTP/1.1 404")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        said = [line for line in err.splitlines() if "access log: cannot write" in line]
        assert len(said) == 1 and "No space left" in said[0], err[-2000:]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
