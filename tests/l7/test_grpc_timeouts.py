"""The default response timeout and gRPC calls (a 1-worker plane, ``response_timeout``
0.5 s, an h2c backend that is a real grpcio server, tests/grpcsvc.py).

The default response timeout is a progress timeout: once the request is complete the
backend must send something every ``response_timeout``. A gRPC call is bounded by its
deadline (grpc-timeout) instead: a server stream silent for three times the timeout
lives on. The same backend silent in the middle of a response to a request that is not a
gRPC call (HTTP/1.1 here) has its client cut when the timeout passes -- an HTTP/2
backend stream's ``abort`` reports no loss, so the exchange ends the client side itself."""

from __future__ import annotations

import socket
import time

import pytest

from kgw_l7.config import (
    Backend, Endpoint, L7Config, Listener, PathMatch, Route, RouteMatch, Rule, VirtualHost,
)
from tests.grpcsvc import SERVICE, GrpcTestClient, GrpcTestServer

from .conftest import PlaneRunner, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup():
    server = GrpcTestServer("s").start()
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off", response_timeout=0.5)
    rule = Rule(name="infra/g/0", route="infra/g", gateway="infra/gw", backends=(
        Backend(name="infra/s:80", endpoints=(Endpoint("127.0.0.1", server.port),),
                protocol="h2c"),))
    # The same backend with a route timeout of 1 s, on a second listener.
    timed_port = free_port()
    timed = Rule(name="infra/t/0", route="infra/t", gateway="infra/gw",
                 backends=rule.backends, request_timeout=1.0)
    runner.apply(L7Config((
        Listener("main", "127.0.0.1", port, virtual_hosts=(
            VirtualHost("*", (Route(RouteMatch(path=PathMatch("PathPrefix", "/")), rule),)),)),
        Listener("timed", "127.0.0.1", timed_port, virtual_hosts=(
            VirtualHost("*", (Route(RouteMatch(path=PathMatch("PathPrefix", "/")), timed),)),)),
    ), 1))
    yield server, port, timed_port
    runner.close()
    server.stop(0)


def test_a_silent_grpc_stream_outlives_the_default_response_timeout(setup) -> None:
    server, port, _ = setup
    with GrpcTestClient(f"127.0.0.1:{port}") as c:
        t0 = time.monotonic()
        r = c.server_stream(count=2, interval_ms=1500, timeout=20)
        assert r.ok and [m.index for m in r.replies] == [0, 1], r
        assert time.monotonic() - t0 > 1.4


def test_a_backend_silent_mid_response_to_a_non_grpc_request_is_cut(setup) -> None:
    server, port, _ = setup
    with GrpcTestClient(f"127.0.0.1:{port}") as c:
        msg = c.call(count=2, interval_ms=3000).SerializeToString()
    body = b"\x00" + len(msg).to_bytes(4, "big") + msg
    head = (b"POST /%s/ServerStream HTTP/1.1\r\nHost: x\r\ncontent-type: application/grpc\r\n"
            b"te: trailers\r\ncontent-length: %d\r\n\r\n" % (SERVICE.encode(), len(body)))
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    # the head and the first message came; then silence, and the connection was cut
    assert out.startswith(b"HTTP/1.1 200") and b"grpc-status" not in out, out
    assert time.monotonic() - t0 < 2.5
    server.wait_calls(lambda rec: rec.method.endswith("/ServerStream")
                      and rec.outcome == "cancelled")


def test_a_deadline_passing_mid_response_ends_the_call_with_deadline_exceeded(setup) -> None:
    """Over HTTP/2 the call's end is trailers with grpc-status 4 (a gRPC client reads a
    reset as CANCELLED/INTERNAL), after the messages already relayed; the backend's
    stream is cancelled. A raw HTTP/2 client, as grpcio would enforce the deadline on its
    own side and hide what kgw sent. The deadline is the route's timeout (a grpc-timeout
    would reach the grpcio backend too, which would end the call itself)."""
    from .h2client import H2Client

    server, _, port = setup
    with GrpcTestClient(f"127.0.0.1:{port}") as c:
        msg = c.call(count=3, interval_ms=700).SerializeToString()
    body = b"\x00" + len(msg).to_bytes(4, "big") + msg
    client = H2Client(port)
    try:
        t0 = time.monotonic()
        r = client.request("POST", f"/{SERVICE}/ServerStream", "x", {
            "content-type": "application/grpc", "te": "trailers"},
            body)
    finally:
        client.close()
    assert r.status == 200 and r.reset is None and r.ended, vars(r)
    assert len(r.body) > 5, r.body  # (the first message, sent at once)
    assert ("grpc-status", "4") in r.trailers, r.trailers
    assert ("grpc-message", "Deadline Exceeded") in r.trailers
    assert 0.9 < time.monotonic() - t0 < 1.9
    server.wait_calls(lambda rec: rec.method.endswith("/ServerStream")
                      and rec.outcome == "cancelled", n=2)
