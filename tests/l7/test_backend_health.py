"""Backend resilience end to end (issue 20): real worker processes and real backends on
loopback -- outlier ejection of a killed backend with a bounded error count and its
return, active health checks taking an endpoint out within interval x threshold, the
panic threshold, circuit breaker overflow, least request against a slow endpoint, and
consistent hashing."""

from __future__ import annotations

import collections
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from kgw_l7.config import (
    Backend, CircuitBreaker, Endpoint, HashOn, HealthCheck, L7Config, Listener, LoadBalancer,
    OutlierDetection, PathMatch, Route, RouteMatch, Rule, VirtualHost,
)

from .conftest import ROOT, PlaneRunner, eventually, free_port, request, wait_port

pytestmark = pytest.mark.slow


class Named(http.server.ThreadingHTTPServer):
    """A backend that answers its name; ``/healthz`` answers ``health`` (a status),
    every other path waits ``delay`` seconds first. Counts the requests it served."""

    daemon_threads = True

    def __init__(self, name: str, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.delay = delay
        self.health = 200
        self.served = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Named

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        srv = self.server
        if self.path == "/healthz":
            status, body = srv.health, b"health"
        else:
            if srv.delay:
                time.sleep(srv.delay)
            with srv.lock:
                srv.served += 1
            status, body = 200, srv.name.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def config(port: int, *endpoints: tuple[str, int], generation: int = 1, **backend: Any
           ) -> L7Config:
    b = Backend("infra/svc:80", endpoints=tuple(Endpoint(a, p) for a, p in endpoints),
                **backend)
    r = Rule("infra/r/0", "infra/r", "infra/gw", backends=(b,))
    vh = VirtualHost("*", (Route(RouteMatch(PathMatch("PathPrefix", "/")), r),))
    return L7Config((Listener("main", "127.0.0.1", port, virtual_hosts=(vh,)),), generation)


def get(port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        r = request(port, path, headers=headers, timeout=10)
    except (OSError, http.client.HTTPException):
        return 0, b""
    return r.status, r.body


class EchoProcess:
    """``kgw echo`` on a given port (restartable on the same port), answering its pod
    name in JSON."""

    def __init__(self, pod: str, port: int) -> None:
        self.pod = pod
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kgw_l7.echo", "--address", "127.0.0.1", "--port",
             str(self.port), "--pod", self.pod], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        wait_port("127.0.0.1", self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


def pod_of(body: bytes) -> str | None:
    try:
        return json.loads(body)["pod"]
    except (ValueError, KeyError):
        return None


def test_killed_backend_is_ejected_with_bounded_errors_and_returns():
    """Four clients keep sending while one of two backends is killed. Bound: while it is
    ejected (2 s), the errors are at most the failures needed to eject it (3) plus the
    requests in flight when it died (one per client, 4): 7. Restarted, it is used again
    once its ejection ran out."""
    a, b = EchoProcess("a", free_port()), EchoProcess("b", free_port())
    a.start()
    b.start()
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off")
    od = OutlierDetection(consecutive_5xx=0, consecutive_local_failures=3,
                          base_ejection_time=2.0, max_ejection_percent=50)
    try:
        runner.apply(config(port, ("127.0.0.1", a.port), ("127.0.0.1", b.port),
                            outlier_detection=od))
        assert {pod_of(get(port)[1]) for _ in range(6)} == {"a", "b"}
        results: list[tuple[float, int, str | None]] = []
        stop = threading.Event()
        lock = threading.Lock()

        def client() -> None:
            while not stop.is_set():
                status, body = get(port)
                with lock:
                    results.append((time.monotonic(), status, pod_of(body)))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        b.kill()
        killed_at = time.monotonic()
        time.sleep(0.8)
        b.start()
        try:
            eventually(lambda: any(r[2] == "b" and r[0] > killed_at for r in results),
                       timeout=10)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        # (an ejection that runs out before the restart is done -- a loaded machine --
        # starts another episode with the same bound)
        metrics = runner.metrics()
        ejections = int(float(next(
            line.rsplit(" ", 1)[1] for line in metrics.splitlines()
            if line.startswith('kgw_l7_outlier_ejections_total{backend="infra/svc:80"}'))))
        errors = [r for r in results if r[1] != 200]
        assert ejections >= 1 and len(errors) <= 7 * ejections, (ejections, errors)
        first_ejection_ends = killed_at + 1.9
        assert all(r[2] == "a" for r in results
                   if killed_at + 0.5 <= r[0] < first_ejection_ends and r[1] == 200)
    finally:
        runner.close()
        a.kill()
        b.kill()


def test_failing_active_check_takes_the_endpoint_out_within_interval_x_threshold():
    good, bad = Named("good"), Named("bad")
    port = free_port()
    runner = PlaneRunner(workers=2, access_log="off")
    hc = HealthCheck(path="/healthz", interval=0.2, timeout=0.5, unhealthy_threshold=2,
                     healthy_threshold=1)
    try:
        runner.apply(config(port, good.endpoint, bad.endpoint, health_check=hc,
                            load_balancer=LoadBalancer(panic_threshold=0)))
        assert {get(port)[1] for _ in range(8)} == {b"good", b"bad"}
        bad.health = 500
        t0 = time.monotonic()
        # interval x threshold (0.4 s) plus the first check's spread (one interval) and
        # the push to the workers: within 1 s no request reaches it.
        time.sleep(1.0)
        served = bad.served
        answers = [get(port)[1] for _ in range(30)]
        assert set(answers) == {b"good"} and bad.served == served
        assert time.monotonic() - t0 < 3
        assert 'kgw_l7_endpoint_healthy{backend="infra/svc:80",endpoint="127.0.0.1:%d"} 0' \
            % bad.port in runner.metrics()
        view = runner.plane.endpoint_health()
        assert {v["endpoint"]: v["healthy"] for v in view} == {
            f"127.0.0.1:{good.port}": True, f"127.0.0.1:{bad.port}": False}
        state = runner.call(runner.plane.endpoint_state())
        assert state["active"] == view and len(state["workers"]) == 2
        for w in state["workers"]:  # every worker holds the verdict
            got = {e["address"]: e["active_ok"] for e in w["backends"]["infra/svc:80"]}
            assert got == {f"127.0.0.1:{good.port}": True, f"127.0.0.1:{bad.port}": False}
        bad.health = 200
        eventually(lambda: b"bad" in {get(port)[1] for _ in range(6)}, timeout=5)
    finally:
        runner.close()
        good.stop()
        bad.stop()


def test_a_restarted_worker_gets_the_verdicts():
    good, bad = Named("good"), Named("bad")
    bad.health = 503
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off", restart_delay=0.05)
    hc = HealthCheck(path="/healthz", interval=0.1, timeout=0.5, unhealthy_threshold=1)
    try:
        runner.apply(config(port, good.endpoint, bad.endpoint, health_check=hc,
                            load_balancer=LoadBalancer(panic_threshold=0)))
        eventually(lambda: runner.plane.checker.unhealthy(), timeout=5)
        [pid] = runner.plane.worker_pids()
        os.kill(pid, 9)
        eventually(lambda: runner.plane.worker_pids() and runner.plane.worker_pids() != [pid],
                   timeout=10)
        eventually(lambda: get(port)[0] == 200, timeout=10)
        assert {get(port)[1] for _ in range(10)} == {b"good"}
    finally:
        runner.close()
        good.stop()
        bad.stop()


def test_panic_threshold_routes_to_all_when_most_fail():
    servers = [Named(f"s{i}") for i in range(3)]
    for s in servers[1:]:
        s.health = 500
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off")
    hc = HealthCheck(path="/healthz", interval=0.1, timeout=0.5, unhealthy_threshold=1)
    try:
        eps = [s.endpoint for s in servers]
        runner.apply(config(port, *eps, health_check=hc,
                            load_balancer=LoadBalancer(panic_threshold=50)))
        eventually(lambda: len(runner.plane.checker.unhealthy()) == 2, timeout=5)
        time.sleep(0.2)  # (pushed)
        # 1 of 3 healthy (33% < 50%): panic, every endpoint serves
        assert {get(port)[1] for _ in range(12)} == {b"s0", b"s1", b"s2"}
        runner.apply(config(port, *eps, generation=2, health_check=hc,
                            load_balancer=LoadBalancer(panic_threshold=30)))
        # 33% >= 30%: no panic, only the healthy one
        assert {get(port)[1] for _ in range(12)} == {b"s0"}
    finally:
        runner.close()
        for s in servers:
            s.stop()


def test_circuit_breaker_overflow_is_503_at_once_never_queued(tmp_path):
    slow = Named("slow", delay=1.5)
    port = free_port()
    log = tmp_path / "access.log"
    runner = PlaneRunner(workers=1, access_log=str(log))
    try:
        runner.apply(config(port, slow.endpoint,
                            circuit_breaker=CircuitBreaker(max_requests=2)))
        held = []
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(s)
        time.sleep(0.3)
        t0 = time.monotonic()
        statuses = [get(port)[0] for _ in range(20)]
        assert statuses == [503] * 20
        assert time.monotonic() - t0 < 1.2  # answered at once, not after the slow ones
        for s in held:
            assert s.recv(100).startswith(b"HTTP/1.1 200")
            s.close()
        assert get(port)[0] == 200
        metrics = runner.metrics()  # (flushes the access log)
        assert 'reason="max_requests"' in metrics
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        over = [line for line in lines if line["response_code"] == 503]
        assert len(over) == 20 and {line["response_flags"] for line in over} == {"UO"}
        assert "max_requests" in over[0]["response_code_details"]
    finally:
        runner.close()
        slow.stop()


def _share_of_slow(algorithm: str) -> float:
    fast, slow = Named("fast"), Named("slow", delay=0.05)
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off")
    try:
        runner.apply(config(port, fast.endpoint, slow.endpoint,
                            load_balancer=LoadBalancer(algorithm)))  # type: ignore[arg-type]

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for _ in range(40):
                request(port, "/", conn=conn)
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return slow.served / (slow.served + fast.served)
    finally:
        runner.close()
        fast.stop()
        slow.stop()


def test_least_request_sends_fewer_requests_to_the_slow_endpoint():
    rr = _share_of_slow("RoundRobin")
    lr = _share_of_slow("LeastRequest")
    assert 0.4 < rr < 0.6, rr
    assert lr < rr - 0.1, (lr, rr)


def test_consistent_hash_keeps_a_key_on_one_endpoint_and_falls_back_without_it():
    servers = [Named(f"s{i}") for i in range(4)]
    port = free_port()
    runner = PlaneRunner(workers=2, access_log="off")
    try:
        runner.apply(config(port, *(s.endpoint for s in servers),
                            load_balancer=LoadBalancer(
                                "ConsistentHash", hash_on=HashOn(header="x-user"))))
        for user in ("alice", "bob", "carol"):
            got = collections.Counter(get(port, headers={"x-user": user})[1] for _ in range(20))
            assert len(got) == 1, (user, got)
        # without the header: round robin over every endpoint
        assert len({get(port)[1] for _ in range(24)}) == 4
    finally:
        runner.close()
        for s in servers:
            s.stop()

