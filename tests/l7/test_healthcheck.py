"""kgw_l7.healthcheck: the threshold table, the gRPC health answer's decoding, the
targets of a config, and each probe against a real server on loopback (HTTP with
http.server, TCP, gRPC health with a grpcio server)."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from concurrent import futures

import grpc
import pytest

from kgw_l7.config import (
    Backend, Endpoint, HealthCheck, L7Config, Listener, PathMatch, Route, RouteMatch, Rule,
    VirtualHost,
)
from kgw_l7.healthcheck import (
    HealthChecker, ProbeFailed, Target, Verdict, _Probe, grpc_serving_status, targets,
)

HC = HealthCheck(unhealthy_threshold=3, healthy_threshold=2)


@pytest.mark.parametrize("results,healthy,changes", [
    ("", True, 0),
    ("F", True, 0),          # one failure of three: still healthy
    ("FF", True, 0),
    ("FFF", False, 1),       # the third failure in a row
    ("FFSF", True, 0),       # a success breaks the streak
    ("FFFS", False, 1),      # one success of the two needed
    ("FFFSS", True, 2),
    ("FFFSFSS", True, 2),
    ("FFFSFS", False, 1),
])
def test_verdict_thresholds(results, healthy, changes):
    v = Verdict()
    got = [v.record(r == "S", HC, "boom") for r in results]
    assert v.healthy == healthy and sum(got) == changes
    assert v.checks == len(results) and v.failures == results.count("F")


def test_verdict_changes_are_reported_once():
    v = Verdict()
    got = [v.record(ok, HealthCheck(unhealthy_threshold=1, healthy_threshold=1))
           for ok in (False, False, True, True)]
    assert got == [True, False, True, False]


def _msg(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


@pytest.mark.parametrize("body,expect", [
    (_msg(b"\x08\x01"), 1),          # SERVING
    (_msg(b"\x08\x02"), 2),          # NOT_SERVING
    (_msg(b""), 0),                  # the default: UNKNOWN
    (_msg(b"\x12\x01x\x08\x01"), 1),  # an unknown length-delimited field skipped
    (b"\x00\x00\x00", None),         # short
    (b"\x01" + _msg(b"\x08\x01")[1:], None),  # compressed flag
    (_msg(b"\x08"), None),           # truncated varint
    (_msg(b"\x08\x01")[:-1], None),  # shorter than its length
])
def test_grpc_serving_status(body, expect):
    assert grpc_serving_status(body) == expect


def test_targets_of_a_config():
    hc = HealthCheck(type="TCP")
    b1 = Backend("ns/a:80", endpoints=(Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)),
                 health_check=hc)
    b2 = Backend("ns/b:80", endpoints=(Endpoint("10.0.0.3", 80),))
    r = Rule("ns/r/0", "ns/r", "ns/gw", backends=(b1, b2))
    vh = VirtualHost("*", (Route(RouteMatch(PathMatch()), r),))
    cfg = L7Config((Listener("l", "0.0.0.0", 80, virtual_hosts=(vh,)),))
    assert sorted(targets(cfg)) == [("ns/a:80", "10.0.0.1", 80), ("ns/a:80", "10.0.0.2", 80)]


class _Health(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.seen.append((self.path, self.headers.get("Host")))  # type: ignore[attr-defined]
        body = b"ok"
        self.send_response(self.server.status if self.path == "/healthz" else 404)  # type: ignore[attr-defined]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    srv.seen = []  # type: ignore[attr-defined]
    srv.status = 200  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def run_probe(target: Target, times: int = 1) -> list[str]:
    async def go() -> list[str]:
        probe = _Probe(target)
        out = []
        for _ in range(times):
            try:
                async with asyncio.timeout(2):
                    await probe.run()
                out.append("ok")
            except (ProbeFailed, OSError, TimeoutError) as exc:
                out.append(str(exc) or type(exc).__name__)
                probe.close()
        probe.close()
        return out
    return asyncio.run(go())


def test_http_probe_statuses_host_and_kept_connection(http_server):
    port = http_server.server_address[1]
    t = Target("b", "127.0.0.1", port, HealthCheck(path="/healthz", host="svc.local"))
    assert run_probe(t, 3) == ["ok"] * 3
    assert http_server.seen == [("/healthz", "svc.local")] * 3
    http_server.status = 503
    assert run_probe(t) == ["status 503"]
    ranged = Target("b", "127.0.0.1", port,
                    HealthCheck(path="/healthz", expected_statuses=((500, 503),)))
    assert run_probe(ranged) == ["ok"]
    other = Target("b", "127.0.0.1", port, HealthCheck(path="/other"))
    assert run_probe(other) == ["status 404"]


def test_tcp_probe():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    port = s.getsockname()[1]
    t = Target("b", "127.0.0.1", port, HealthCheck(type="TCP"))
    assert run_probe(t) == ["ok"]
    s.close()
    assert run_probe(t) != ["ok"]


def _grpc_server(statuses: dict[str, int]) -> tuple[grpc.Server, int]:
    def check(request: bytes, context: grpc.ServicerContext) -> bytes:
        # HealthCheckRequest: field 1 (string service), or empty
        service = request[2:].decode() if request else ""
        if service not in statuses:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return b"\x08" + bytes([statuses[service]])

    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(check)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=(handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def test_grpc_probe_serving_not_serving_and_unknown():
    server, port = _grpc_server({"": 1, "kgw.Echo": 1, "down": 2})
    try:
        for service, expect in (("", "ok"), ("kgw.Echo", "ok"), ("down", "serving status 2"),
                                ("nope", "grpc-status 5")):
            t = Target("b", "127.0.0.1", port, HealthCheck(type="GRPC", grpc_service=service))
            assert run_probe(t, 2) == [expect] * 2, service
    finally:
        server.stop(0)


def test_checker_follows_the_config_and_reports_changes(http_server):
    port = http_server.server_address[1]
    hc = HealthCheck(path="/healthz", interval=0.1, timeout=0.5, unhealthy_threshold=2,
                     healthy_threshold=1)

    def cfg(*backends: Backend) -> L7Config:
        r = Rule("ns/r/0", "ns/r", "ns/gw", backends=backends)
        vh = VirtualHost("*", (Route(RouteMatch(PathMatch()), r),))
        return L7Config((Listener("l", "0.0.0.0", 80, virtual_hosts=(vh,)),))

    async def go() -> None:
        changes: list[frozenset] = []
        checker = HealthChecker(lambda: changes.append(checker.unhealthy()))
        b = Backend("ns/a:80", endpoints=(Endpoint("127.0.0.1", port),), health_check=hc)
        checker.update(cfg(b))
        await asyncio.sleep(0.35)
        assert checker.unhealthy() == frozenset() and not changes
        http_server.status = 500
        for _ in range(40):
            await asyncio.sleep(0.05)
            if changes:
                break
        assert changes == [frozenset({("ns/a:80", "127.0.0.1", port)})]
        assert checker.view()[0]["healthy"] is False
        assert 'kgw_l7_endpoint_healthy{backend="ns/a:80",endpoint="127.0.0.1:%d"} 0' % port \
            in checker.metrics()
        checker.update(cfg(Backend("ns/a:80", endpoints=(Endpoint("127.0.0.1", port),))))
        assert changes[-1] == frozenset() and checker.view() == []
        await checker.close()

    asyncio.run(go())
