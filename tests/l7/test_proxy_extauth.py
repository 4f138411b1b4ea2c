"""External authorization through the proxy (a plane with real workers, HTTP/1.1 and HTTP/2
clients) against real authorization services (tests/authservers.py: an HTTP one and a
grpcio one): allowed (the answer's headers reach the backend), denied (status, headers and
body passed through), timing out, down, answering garbage, failing open; the body sent
along; a mirror that does not see a denied request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kgw_l7.config import (
    Backend, Endpoint, ExtAuth, Filters, L7Config, Listener, Mirror, PathMatch, Route,
    RouteMatch, Rule, VirtualHost,
)
from tests.authservers import DENY_BODY, GRPCAuth, HTTPAuth
from tests.helpers import eventually

from .conftest import Echo, PlaneRunner, free_port, raw

pytestmark = pytest.mark.slow
pytest.importorskip("envoy.service.auth.v3.external_auth_pb2")


class Garbage:
    """An "authorization service" that answers with something that is not HTTP."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

        def serve() -> None:
            while True:
                try:
                    c, _ = self.sock.accept()
                except OSError:
                    return
                c.recv(65536)
                c.sendall(b"not http at all\r\n\r\n")
                c.close()

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self.sock.close()


def _svc(name: str, port: int, protocol: str = "http") -> Backend:
    return Backend(name=f"auth/{name}:80", endpoints=(Endpoint("127.0.0.1", port),),
                   protocol=protocol)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def setup(echoes: dict[str, Echo], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, Any]]:
    http_auth, grpc_auth, garbage = HTTPAuth(), GRPCAuth(), Garbage()
    dead = free_port()
    v1 = echoes["v1"]
    mirror = echoes["v2"]
    port = free_port()
    log = tmp_path_factory.mktemp("extauth") / "access.log"

    def backend() -> Backend:
        return Backend(name="infra/v1:8080", endpoints=(Endpoint("127.0.0.1", v1.port),))

    def route(path: str, ea: ExtAuth | None, **filters: Any) -> Route:
        rule = Rule(name=f"infra{path}/0", route=f"infra{path}", gateway="infra/gw",
                    backends=(backend(),), filters=Filters(ext_auth=ea, **filters))
        return Route(RouteMatch(path=PathMatch("PathPrefix", path)), rule)

    h = _svc("http", http_auth.port)
    g = _svc("grpc", grpc_auth.port, "h2c")
    routes = (
        route("/http", ExtAuth("HTTP", h, path_prefix="/check", max_body=4,
                               allowed_response_headers=("x-user",), timeout=1.0),
              mirrors=(Mirror(Backend(name="infra/v2:8080", endpoints=(
                  Endpoint("127.0.0.1", mirror.port),))),)),
        route("/grpc", ExtAuth("GRPC", g, max_body=4, timeout=1.0)),
        route("/down-http", ExtAuth("HTTP", _svc("dead", dead))),
        route("/down-grpc", ExtAuth("GRPC", _svc("dead", dead, "h2c"), status_on_error=503)),
        route("/garbage", ExtAuth("HTTP", _svc("garbage", garbage.port))),
        route("/open", ExtAuth("HTTP", _svc("dead", dead), fail_open=True)),
        route("/open", None),
    )
    runner = PlaneRunner(workers=2, access_log=str(log))
    runner.apply(L7Config(listeners=(Listener("main", "127.0.0.1", port, virtual_hosts=(
        VirtualHost("*", routes),)),), generation=1))
    try:
        yield {"port": port, "http": http_auth, "grpc": grpc_auth, "mirror": mirror,
               "log": log, "runner": runner}
    finally:
        runner.close()
        http_auth.close()
        grpc_auth.close()
        garbage.close()


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "x-user": "mallory", "x-strip-me": "1"}


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_allowed_request_reaches_the_backend_with_the_answers_headers(setup, send, kind):
    r = send(setup["port"], f"/{kind}/orders?id=7", method="POST", headers=_auth("good"),
             body=b"0123456789")
    assert r.status == 200, r.body
    doc = r.json()
    assert doc["path"] == f"/{kind}/orders?id=7" and doc["body"]["length"] == 10
    headers = doc["headers"]
    assert headers["X-User"] == ["alice"]  # the service's, not the client's
    if kind == "http":
        # allowedResponseHeaders: x-user only
        assert "X-Auth-Extra" not in headers
        method, path, seen, body = setup["http"].seen[-1]
        assert (method, path, body) == ("POST", f"/check/{kind}/orders?id=7", b"0123")
        assert seen["authorization"] == "Bearer good" and seen["content-length"] == "4"
        assert "x-user" not in seen  # not an allowed header
    else:
        assert headers["X-Auth-Extra"] == ["1"]
        assert "X-Strip-Me" not in headers  # headers_to_remove
        http = setup["grpc"].seen[-1].attributes.request.http
        assert (http.method, http.path, http.raw_body) == ("POST", "/grpc/orders?id=7",
                                                           b"0123")
        assert http.headers["authorization"] == "Bearer good"


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_denial_passes_status_headers_and_body_through(setup, send, kind):
    r = send(setup["port"], f"/{kind}/x", headers={"authorization": "Bearer wrong"})
    assert r.status == 401
    assert r.header("www-authenticate") == 'Bearer realm="test"'
    assert r.body == DENY_BODY
    r = send(setup["port"], f"/{kind}/x", headers={"authorization": "Bearer teapot"})
    assert (r.status, r.header("x-why"), r.body) == (418, "short and stout", b"teapot\n")
    r = send(setup["port"], f"/{kind}/x")  # no credentials at all
    assert r.status == 401


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_a_service_that_times_out_denies(setup, send, kind):
    r = send(setup["port"], f"/{kind}/x", headers={"authorization": "Bearer slow"},
             timeout=10)
    assert r.status == 403 and b"alice" not in r.body


@pytest.mark.parametrize("path, status", [("/down-http", 403), ("/down-grpc", 503),
                                          ("/garbage", 403)])
def test_a_service_down_or_answering_garbage_denies(setup, send, path, status):
    r = send(setup["port"], path, headers={"authorization": "Bearer good"})
    assert r.status == status


def test_a_service_down_is_a_runtime_problem_of_the_plane(setup, send):
    """What the policy's status shows (controller/planestatus.py): the plane's merged
    runtime problems name the service and why (kgw_l7.problems)."""
    assert send(setup["port"], "/down-http").status == 403
    plane = setup["runner"].plane
    key = ("extauth", "auth/dead:80")
    problems = eventually(lambda: key in plane.runtime_problems() and
                          plane.runtime_problems(), timeout=10)
    assert problems[key].startswith("ext auth: auth/dead:80: "), problems


def test_fail_open_lets_the_request_through(setup, send):
    assert send(setup["port"], "/open/x").status == 200


def test_each_request_asks_whatever_came_before(setup):
    """No answer is reused: on one connection, an allowed request then a denied one."""
    port = setup["port"]
    out = raw(port, b"GET /http/a HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer good\r\n\r\n"
                    b"GET /http/a HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer bad\r\n"
                    b"Connection: close\r\n\r\n", timeout=5)
    assert out.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 401" in out, out[:300]


def test_a_denied_request_is_not_mirrored(setup, send):
    before = setup["mirror"].log().count("/http/mirrored-")
    assert send(setup["port"], "/http/mirrored-denied",
                headers={"authorization": "Bearer bad"}).status == 401
    assert send(setup["port"], "/http/mirrored-allowed",
                headers={"authorization": "Bearer good"}).status == 200
    from .conftest import eventually
    eventually(lambda: "/http/mirrored-allowed" in setup["mirror"].log(), timeout=5)
    assert "/http/mirrored-denied" not in setup["mirror"].log()
    assert setup["mirror"].log().count("/http/mirrored-") >= before
