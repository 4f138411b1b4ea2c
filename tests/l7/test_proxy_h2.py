"""HTTP/1.1 clients through the L7 plane to an h2c backend (tests/l7/h2backend.py, a real
``h2`` server in its own process): requests multiplexed on one connection, bodies both
ways within flow control, trailers, resets, GOAWAY, a backend cut off."""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import os
import socket
import subprocess
import sys
import time

import pytest

from pathlib import Path

from kgw_l7.config import (Backend, Endpoint, Filters, L7Config, Listener, Mirror, PathMatch,
                           Retry, Route, RouteMatch, Rule, UpstreamTLS, VirtualHost)
from .conftest import ROOT, PlaneRunner, free_port, request, self_signed, wait_port


class H2Backend:
    def __init__(self, goaway_after: int = 0, tls: tuple[Path, Path] | None = None) -> None:
        self.port = free_port()
        extra = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.l7.h2backend", "--port", str(self.port),
             "--goaway-after", str(goaway_after), *extra], cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        wait_port("127.0.0.1", self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def config(port: int, h2: H2Backend, goaway: H2Backend, h1_port: int,
           tls_h2: H2Backend, tls_h1_port: int, ca: str) -> L7Config:
    def be(b: H2Backend, name: str = "infra/h2:80") -> Backend:
        return Backend(name, endpoints=(Endpoint("127.0.0.1", b.port),), protocol="h2c")

    def route(prefix: str, backend: Backend, **kw) -> Route:
        return Route(RouteMatch(path=PathMatch("PathPrefix", prefix)),
                     Rule(prefix, "infra/r", "infra/gw", backends=(backend,), **kw))

    tls = UpstreamTLS("backend.example", ca_pem=ca)
    routes = (
        route("/tls-h2", Backend("infra/tls-h2:443", protocol="h2", tls=tls,
                                 endpoints=(Endpoint("127.0.0.1", tls_h2.port),))),
        route("/tls-h1", Backend("infra/tls-h1:443", protocol="h2", tls=tls,
                                 endpoints=(Endpoint("127.0.0.1", tls_h1_port),))),
        route("/goaway", be(goaway, "infra/goaway:80")),
        route("/retry", be(h2), retry=Retry(attempts=2, codes=(503,))),
        route("/mirrored", Backend("infra/h1:80", endpoints=(Endpoint("127.0.0.1", h1_port),)),
              filters=Filters(mirrors=(Mirror(be(h2, "infra/h2-mirror:80")),))),
        route("/", be(h2)),
    )
    return L7Config(listeners=(Listener("main", "127.0.0.1", port,
                                        virtual_hosts=(VirtualHost("*", routes),)),))


@pytest.fixture(scope="module")
def plane(echoes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("h2tls")
    cert, key = self_signed(["backend.example"])
    (tmp / "crt").write_text(cert)
    (tmp / "key").write_text(key)
    h2, goaway = H2Backend(), H2Backend(goaway_after=50)
    tls_h2 = H2Backend(tls=(tmp / "crt", tmp / "key"))
    tls_h1_port = free_port()  # kgw echo's TLS port: no ALPN, so HTTP/1.1
    tls_h1 = subprocess.Popen(
        [sys.executable, "-m", "kgw_l7.echo", "--address", "127.0.0.1", "--port", str(free_port()),
         "--tls-port", str(tls_h1_port), "--tls-cert", str(tmp / "crt"), "--tls-key",
         str(tmp / "key"), "--quiet"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_port("127.0.0.1", tls_h1_port)
        port = free_port()
        runner = PlaneRunner(workers=1, access_log="off")
        try:
            runner.apply(config(port, h2, goaway, echoes["v1"].port, tls_h2, tls_h1_port, cert))
            wait_port("127.0.0.1", port)
            runner.port = port  # type: ignore[attr-defined]
            yield runner
        finally:
            runner.close()
    finally:
        h2.stop()
        goaway.stop()
        tls_h2.stop()
        tls_h1.terminate()
        tls_h1.wait(5)


def test_request_goes_as_http2_with_authority_and_fields(plane):
    r = request(plane.port, "/echo?x=1", host="app.example", headers={"X-Custom": "v"})
    assert r.status == 200 and r.body == b"ok"
    assert r.header("x-req-authority") == "app.example"
    assert r.header("x-req-x-custom") == "v"
    assert r.header("x-req-x-forwarded-for") == "127.0.0.1"
    assert r.header("x-req-host") is None and r.header("x-req-connection") is None


def test_trailers_come_to_an_http11_client_in_the_last_chunk(plane):
    with socket.create_connection(("127.0.0.1", plane.port), timeout=5) as s:
        s.sendall(b"GET /trailers HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\n") or b"0\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"2\r\nhi\r\n0\r\ngrpc-status: 0\r\ngrpc-message: all good\r\n\r\n"


def test_many_concurrent_requests_share_one_connection(plane):
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        rs = list(pool.map(lambda i: request(plane.port, f"/echo?i={i}"), range(200)))
    assert all(r.status == 200 for r in rs)
    assert {r.header("x-conn") for r in rs} == {rs[0].header("x-conn")}


def test_large_bodies_both_ways(plane):
    body = os.urandom(3 * 1024 * 1024 + 17)
    r = request(plane.port, "/slow-upload", method="POST", body=body, timeout=60)
    assert r.status == 200
    assert r.header("x-body-len") == str(len(body))
    assert r.header("x-body-sha") == hashlib.sha256(body).hexdigest()
    # a slow client: the response comes through whole
    c = http.client.HTTPConnection("127.0.0.1", plane.port, timeout=30)
    c.request("GET", "/big?n=%d" % (8 * 1024 * 1024))
    resp = c.getresponse()
    got = 0
    while chunk := resp.read(256 * 1024):
        got += len(chunk)
        time.sleep(0.002)
    assert resp.status == 200 and got == 8 * 1024 * 1024
    c.close()


def test_goaway_mid_load_fails_no_request(plane):
    """The backend says GOAWAY after the 50th stream of each connection (as a server
    limiting requests per connection does): the streams it allowed finish, the later ones
    (refused: kgw had sent them before the GOAWAY arrived) go to a new connection; no
    request fails."""
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        rs = list(pool.map(lambda i: request(plane.port, f"/goaway/echo?i={i}"), range(300)))
    assert [r.status for r in rs] == [200] * 300
    assert len({r.header("x-conn") for r in rs}) > 1


def backend_resets(plane: PlaneRunner, code: str) -> float:
    for line in plane.metrics().splitlines():
        if line.startswith("kgw_l7_http2_stream_resets_total{") \
                and 'peer="backend"' in line and f'code="{code}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_refused_stream_is_retried_on_a_connection(plane):
    before = backend_resets(plane, "refused_stream")
    r = request(plane.port, "/refuse")
    assert r.status == 200
    # (each connection refuses its first /refuse: one at least was reset)
    assert backend_resets(plane, "refused_stream") > before


def test_backend_cut_before_the_head_is_503_and_after_it_cuts_the_client(plane):
    r = request(plane.port, "/cut-before-head")
    assert r.status == 503
    c = http.client.HTTPConnection("127.0.0.1", plane.port, timeout=5)
    c.request("GET", "/cut-after-head")
    resp = c.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    c.close()
    assert request(plane.port, "/echo").status == 200  # a new connection serves the next


def test_retry_policy_retries_a_reset(plane):
    r = request(plane.port, "/retry/cut-before-head")
    assert r.status == 503  # every try cut: the last answer
    r = request(plane.port, "/retry/flaky")  # the first try cut, the second answered
    assert r.status == 200 and r.header("x-req-authority")


def test_a_mirror_to_an_http2_backend_gets_the_request_as_headers(plane):
    r = request(plane.port, "/mirrored/x", host="m.example")
    assert r.status == 200 and r.json()["path"] == "/mirrored/x"


def test_tls_backend_offered_h2_speaks_http2_and_one_that_picks_http11_gets_it(plane):
    r = request(plane.port, "/tls-h2/echo", host="t.example")
    assert r.status == 200 and r.header("x-conn") and r.header("x-req-authority") == "t.example"
    r = request(plane.port, "/tls-h1/x", host="t.example")
    assert r.status == 200 and r.json()["path"] == "/tls-h1/x"  # kgw echo's JSON, HTTP/1.1
