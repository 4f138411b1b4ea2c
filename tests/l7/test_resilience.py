"""What a hung or misbehaving backend, a client that goes away, and a worker short of file
descriptors can do to the L7 plane, and what it guarantees instead (issue 24): every
test runs real worker processes against backends on loopback sockets."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
from typing import Any

import pytest

from kgw_l7.config import (
    Backend, Endpoint, L7Config, Listener, PathMatch, Retry, Route, RouteMatch, Rule,
    VirtualHost,
)

from .conftest import PlaneRunner, eventually, free_port, raw, request

pytestmark = pytest.mark.slow

SMALL = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class ScriptedServer:
    """A backend whose answer depends on the path: ``/ok`` answers, ``/hang`` never does,
    ``/stall`` sends a head and part of the body, then nothing. Keeps count of the
    connections it holds and of those its peer (the proxy) closed."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.closed_by_peer = 0
        self.open = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        data = b""
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
                while b"\r\n\r\n" in data:
                    head, data = data.split(b"\r\n\r\n", 1)
                    path = head.split(b" ")[1]
                    if b"/stall" in path:
                        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
                    elif b"/hang" not in path:
                        c.sendall(SMALL)
        except OSError:
            pass
        with self.lock:
            self.closed_by_peer += 1
            self.open -= 1
        c.close()

    def close(self) -> None:
        self.sock.close()


def rule(name: str, *endpoints: tuple[str, int], **kw: Any) -> Rule:
    return Rule(name=f"infra/{name}/0", route=f"infra/{name}", gateway="infra/gw",
                backends=(Backend(name=f"infra/{name}:80",
                                  endpoints=tuple(Endpoint(a, p) for a, p in endpoints)),), **kw)


def config(port: int, *routes: tuple[str, Rule], generation: int = 1) -> L7Config:
    vh = VirtualHost("*", tuple(Route(RouteMatch(path=PathMatch("PathPrefix", prefix)), r)
                                for prefix, r in routes))
    return L7Config((Listener("main", "127.0.0.1", port, virtual_hosts=(vh,)),), generation)


def worker_fds(runner: PlaneRunner) -> int:
    [pid] = runner.plane.worker_pids()
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def hung():
    server = ScriptedServer()
    yield server
    server.close()


def test_client_fin_abandons_the_try_and_frees_both_sockets(hung, tmp_path):
    """A client that sends a request and closes its side while the backend hangs: the
    backend connection is closed at once, nothing is held (nginx's default)."""
    port = free_port()
    log = tmp_path / "access.log"
    runner = PlaneRunner(workers=1, access_log=str(log))
    try:
        runner.apply(config(port, ("/", rule("hung", ("127.0.0.1", hung.port)))))
        before = worker_fds(runner)
        n = 200
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
                s.shutdown(socket.SHUT_WR)
        eventually(lambda: hung.accepted == n and hung.closed_by_peer == n, timeout=10)
        eventually(lambda: worker_fds(runner) <= before, timeout=5)
        assert 'code="499"' in runner.metrics()  # (which also flushes the access log)
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert sum(line["response_code"] == 499 for line in lines) == n
    finally:
        runner.close()


def test_ignore_client_abort_serves_half_closed_clients(echoes):
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off", ignore_client_abort=True)
    try:
        runner.apply(config(port, ("/", rule("echo", ("127.0.0.1", echoes["v1"].port)))))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /slow?delay=300ms HTTP/1.1\r\nHost: x\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        assert out.startswith(b"HTTP/1.1 200")
    finally:
        runner.close()


def test_default_response_timeout(hung, tmp_path):
    """A backend that sends nothing for the default response timeout: 504 before the
    response (on a fresh and on a pooled connection), the client connection cut in the
    middle of one; a route's own timeout replaces the default."""
    port = free_port()
    log = tmp_path / "access.log"
    runner = PlaneRunner(workers=1, access_log=str(log), response_timeout=0.5)
    backend = ("127.0.0.1", hung.port)
    try:
        runner.apply(config(port, ("/own", rule("own", backend, backend_timeout=2.0)),
                            ("/", rule("hung", backend))))
        t0 = time.monotonic()
        r = request(port, "/hang")
        assert r.status == 504 and r.body == b"upstream request timeout\n"
        assert 0.4 < time.monotonic() - t0 < 3
        # The same on the fast path: a pooled connection to the endpoint, then a hang.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert request(port, "/ok", conn=conn).status == 200
        t0 = time.monotonic()
        assert request(port, "/hang", conn=conn).status == 504
        assert time.monotonic() - t0 < 3
        conn.close()
        # Mid-response: the head and 4 bytes of 100, then silence; the client is cut off.
        t0 = time.monotonic()
        out = raw(port, b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"part")
        assert time.monotonic() - t0 < 3
        # A route with its own backend timeout (2 s) is not cut at 0.5 s.
        t0 = time.monotonic()
        assert request(port, "/own/hang").status == 504
        assert time.monotonic() - t0 > 1.8
        eventually(lambda: hung.open == 0, timeout=5)
        runner.metrics()  # (flushes the access log)
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        timed_out = [line for line in lines if line["response_flags"] == "UT"]
        assert len(timed_out) == 4, lines
        assert "default response timeout" in timed_out[0]["response_code_details"]
    finally:
        runner.close()


def test_connections_per_endpoint_are_bounded(hung):
    """Past the per-endpoint limit a try gets 503 at once instead of one more socket."""
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off", max_upstream_connections=3,
                         response_timeout=3.0)
    try:
        runner.apply(config(port, ("/", rule("hung", ("127.0.0.1", hung.port)))))
        held = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(s)
        eventually(lambda: hung.open == 3, timeout=5)
        t0 = time.monotonic()
        r = request(port, "/hang")
        assert r.status == 503 and r.body == b"upstream overflow\n"
        assert time.monotonic() - t0 < 1
        assert hung.accepted == 3
        text = runner.metrics()
        assert ('kgw_l7_upstream_overflow_total{backend="infra/hung:80",'
                'reason="endpoint_limit"} 1.0') in text
        for s in held:
            s.close()
        eventually(lambda: hung.open == 0, timeout=5)
    finally:
        runner.close()


def test_out_of_file_descriptors_is_refused_counted_and_reported(hung, capfd):
    """A worker whose RLIMIT_NOFILE is nearly used up refuses new connections (instead of
    failing in accept, unseen), logs it, counts it, and reports it (health -> /readyz);
    it recovers when connections close."""
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off", header_timeout=1.0)  # sweeps: 0.25 s
    try:
        runner.apply(config(port, ("/", rule("hung", ("127.0.0.1", hung.port)))))
        [pid] = runner.plane.worker_pids()
        base = worker_fds(runner)
        limit = base + 60
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={limit}:{limit}"], check=True)
        time.sleep(0.5)  # the worker reads its limit again on its next sweep
        held = []
        for _ in range(40):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
                held.append(s)
            except OSError:
                pass
        time.sleep(0.3)
        refused = [s for s in held if raw_closed(s)]
        assert refused, "no connection was refused"
        assert len(held) - len(refused) >= 10  # served up to the limit
        assert worker_fds(runner) < limit
        health = runner.call(runner.plane.health())
        assert any("out of file descriptors" in p for p in health), health
        text = runner.metrics()
        assert 'kgw_l7_rejected_connections_total{reason="descriptors"}' in text
        for s in held:
            s.close()
        eventually(lambda: runner.call(runner.plane.health()) == [], timeout=10)
        assert request(port, "/ok").status == 200
    finally:
        runner.close()
    err = capfd.readouterr().err
    assert err.count("out of file descriptors") >= 1
    assert err.count("out of file descriptors") < 5  # rate-limited


def raw_closed(s: socket.socket) -> bool:
    """Has the proxy closed this connection (without an answer)?"""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_502_body_does_not_name_the_backend(tmp_path):
    port, dead = free_port(), free_port()
    log = tmp_path / "access.log"
    runner = PlaneRunner(workers=1, access_log=str(log))
    try:
        runner.apply(config(port, ("/", rule("dead", ("127.0.0.1", dead)))))
        r = request(port, "/")
        assert r.status == 502 and r.body == b"upstream connect error\n"
        assert b"127.0.0.1" not in r.body and str(dead).encode() not in r.body
        runner.metrics()  # (flushes the access log)
        [line] = [json.loads(x) for x in log.read_text().splitlines()]
        assert f"127.0.0.1:{dead}" in line["response_code_details"]
        assert line["upstream_host"] == f"127.0.0.1:{dead}"
    finally:
        runner.close()


def test_retry_prefers_an_endpoint_not_tried(echoes):
    """With one of two endpoints dead and one retry, no request fails, under concurrency
    (a retry never picks the endpoint that has just failed)."""
    port, dead = free_port(), free_port()
    runner = PlaneRunner(workers=1, access_log="off")
    live = ("127.0.0.1", echoes["v1"].port)
    try:
        runner.apply(config(port, ("/", rule("retry", ("127.0.0.1", dead), live,
                                             retry=Retry(attempts=1)))))
        failures: list[int] = []

        def client() -> None:
            for _ in range(40):
                r = request(port, "/", headers={"X-Echo-Set-Header": "Connection:close"})
                if r.status != 200:
                    failures.append(r.status)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert failures == []
    finally:
        runner.close()
