"""The proxy end to end: a 2-worker plane in front of ``kgw echo`` backends on loopback,
driven by real HTTP clients. Covers every match kind and filter, the error mapping,
timeouts, retries, mirrors, weights, keep-alive and streaming."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kgw_l7.config import (
    CORS, Backend, Endpoint, Filters, HeaderMatch, HeaderModifier, L7Config, Listener, Mirror,
    PathMatch, PathModifier, QueryParamMatch, Redirect, Retry, Route, RouteMatch, Rule,
    URLRewrite, VirtualHost,
)

from .conftest import Echo, PlaneRunner, eventually, free_port, raw, request

pytestmark = pytest.mark.slow


def backend(e: Echo, name: str | None = None, weight: int = 1, **kw: Any) -> Backend:
    return Backend(name=name or f"infra/{e.pod.split('-')[0]}:8080", weight=weight,
                   endpoints=(Endpoint("127.0.0.1", e.port),), **kw)


def rule(name: str, *backends: Backend, **kw: Any) -> Rule:
    return Rule(name=f"infra/{name}/0", route=f"infra/{name}", gateway="infra/gw",
                backends=backends, **kw)


def prefix(value: str, r: Rule, **kw: Any) -> Route:
    return Route(RouteMatch(path=PathMatch("PathPrefix", value), **kw), r)


class RawBackend:
    """A deliberately broken backend: its answer depends on the request path."""

    ANSWERS = {
        b"/raw/truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        b"/raw/garbage": b"this is not HTTP\r\n\r\n",
        b"/raw/close": b"",
    }

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                path = data.split(b" ")[1].split(b"?")[0] if b" " in data else b""
                c.sendall(self.ANSWERS.get(path, b""))

    def close(self) -> None:
        self.sock.close()


def build_config(echoes: dict[str, Echo], port: int, generation: int = 1,
                 raw_port: int = 1) -> L7Config:
    v1, v2, v3 = echoes["v1"], echoes["v2"], echoes["v3"]
    dead = free_port()  # nothing listens there
    mods = HeaderModifier(set=(("X-Header-Set", "set-overwrites-values"),),
                          add=(("X-Header-Add", "header-val-1"),
                               ("X-Header-Add-Append", "header-val-2")),
                          remove=("X-Header-Remove",))
    routes = (
        Route(RouteMatch(path=PathMatch("Exact", "/exact")), rule("exact", backend(v2))),
        prefix("/hdr", rule("hdr-two", backend(v2)),
               headers=(HeaderMatch("X-Version", "two"),)),
        prefix("/hdr", rule("hdr-re", backend(v3)),
               headers=(HeaderMatch("X-Version", "^v[0-9]+$", "RegularExpression"),)),
        prefix("/hdr", rule("hdr-any", backend(v1))),
        Route(RouteMatch(path=PathMatch("RegularExpression", "/re/[0-9]+")),
              rule("regex", backend(v2))),
        prefix("/q", rule("query", backend(v2)), query_params=(QueryParamMatch("v", "two"),)),
        prefix("/method", rule("method", backend(v2)), method="POST"),
        prefix("/reqhdr", rule("reqhdr", backend(v1),
                               filters=Filters(request_headers=mods))),
        prefix("/resphdr", rule("resphdr", backend(v1), filters=Filters(
            response_headers=HeaderModifier(set=(("X-Resp-Set", "yes"),),
                                            add=(("X-Resp-Add", "added"),),
                                            remove=("X-Content-Type-Options",))))),
        prefix("/redirect-scheme", rule("redirect-scheme", filters=Filters(
            redirect=Redirect(scheme="https", hostname="example.org", status_code=301)))),
        prefix("/redirect-port", rule("redirect-port", filters=Filters(
            redirect=Redirect(hostname="example.org", port=8080)))),
        prefix("/redirect-path", rule("redirect-path", filters=Filters(
            redirect=Redirect(path=PathModifier("ReplacePrefixMatch", "/new"),
                              status_code=308)))),
        prefix("/redirect-listener-port", rule("redirect-listener-port", filters=Filters(
            redirect=Redirect(hostname="example.org")))),
        prefix("/rewrite-prefix", rule("rewrite-prefix", backend(v1), filters=Filters(
            rewrite=URLRewrite(hostname="rewritten.example",
                               path=PathModifier("ReplacePrefixMatch", "/"))))),
        prefix("/rewrite-full", rule("rewrite-full", backend(v1), filters=Filters(
            rewrite=URLRewrite(path=PathModifier("ReplaceFullPath", "/full"))))),
        prefix("/mirror", rule("mirror", backend(v1), filters=Filters(
            mirrors=(Mirror(backend(v3)), Mirror(backend(v2), percent=0.0)),
            request_headers=mods))),
        prefix("/weights", rule("weights", backend(v1, weight=70), backend(v2, weight=30),
                                backend(v3, weight=0))),
        prefix("/invalid", rule("invalid", direct_status=500)),
        prefix("/no-backends", rule("no-backends")),
        prefix("/bad-ref", rule("bad-ref", Backend(name="infra/missing:80",
                                                   error_status=500))),
        prefix("/no-endpoints", rule("no-endpoints", Backend(name="infra/empty:80"))),
        prefix("/unreachable", rule("unreachable", Backend(
            name="infra/dead:80", endpoints=(Endpoint("127.0.0.1", dead),)))),
        prefix("/backend-timeout", rule("backend-timeout", backend(v1),
                                        backend_timeout=0.5)),
        prefix("/request-timeout", rule("request-timeout", backend(v1),
                                        request_timeout=0.5)),
        prefix("/retry/codes", rule("retry-codes", backend(v1),
                                    retry=Retry(attempts=2, codes=(500,)))),
        prefix("/retry/reset", rule("retry-reset", backend(v1), retry=Retry(attempts=3))),
        prefix("/retry/none", rule("retry-none", backend(v1))),
        prefix("/cors", rule("cors", backend(v1), filters=Filters(cors=CORS(
            allow_origins=("https://www.foo.com", "https://*.bar.com"),
            allow_methods=("GET", "OPTIONS"), allow_headers=("x-header-1", "x-header-2"),
            expose_headers=("x-header-3",), allow_credentials=True, max_age=3600)))),
        prefix("/befilter", rule("befilter", backend(v1, filters=Filters(
            request_headers=HeaderModifier(add=(("X-Backend-Filter", "v1"),)))))),
        prefix("/be-rewrite", rule("be-rewrite", backend(v1, filters=Filters(
            rewrite=URLRewrite(hostname="be.example",
                               path=PathModifier("ReplacePrefixMatch", "/rewritten")))))),
        prefix("/be-redirect", rule("be-redirect", backend(v1, filters=Filters(
            redirect=Redirect(path=PathModifier("ReplaceFullPath", "/redirected")))))),
        prefix("/be-mirror", rule("be-mirror", backend(v1, filters=Filters(
            mirrors=(Mirror(backend(v3)),))))),
        # One endpoint of the heavier backend is dead: shares with cold pools.
        prefix("/lb-weights", rule("lb-weights", Backend(
            name="infra/lbw-a:80", weight=3,
            endpoints=(Endpoint("127.0.0.1", v1.port), Endpoint("127.0.0.1", dead))),
            backend(v2, name="infra/lbw-b:80", weight=1))),
        prefix("/raw", rule("raw", Backend(name="infra/raw:80",
                                             endpoints=(Endpoint("127.0.0.1", raw_port),)))),
        prefix("/", rule("default", backend(v1))),
    )
    vhosts = (
        VirtualHost("exact.example.com", (prefix("/", rule("exact-host", backend(v2))),)),
        VirtualHost("*.wild.example.com", (prefix("/", rule("wild-host", backend(v3))),)),
        VirtualHost("*.example.com", (prefix("/", rule("short-wild", backend(v1))),)),
        VirtualHost("nomatch.test", (Route(RouteMatch(path=PathMatch("Exact", "/only")),
                                           rule("only", backend(v1))),)),
        VirtualHost("*", routes),
    )
    return L7Config(listeners=(Listener("main", "127.0.0.1", port, virtual_hosts=vhosts),),
                    generation=generation)


@pytest.fixture(scope="module")
def proxy(echoes: dict[str, Echo], tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    log = tmp_path_factory.mktemp("l7") / "access.log"
    runner = PlaneRunner(workers=2, access_log=str(log), header_timeout=1.0,
                         idle_timeout=2.0)
    raw_backend = RawBackend()
    runner.apply(build_config(echoes, port, raw_port=raw_backend.port))
    runner.port = port  # type: ignore[attr-defined]
    runner.access_log = log  # type: ignore[attr-defined]
    yield runner
    runner.close()
    raw_backend.close()


def pod(resp: Any) -> str:
    assert resp.status == 200, (resp.status, resp.body[:200])
    return resp.json()["pod"]


# -- matching -----------------------------------------------------------------------------

def test_host_matching_exact_wildcard_longest_and_default(proxy, send):
    p = proxy.port
    assert pod(send(p, "/", host="exact.example.com")).startswith("v2")
    assert pod(send(p, "/", host="EXACT.Example.com:8080")).startswith("v2")  # case, port
    assert pod(send(p, "/", host="a.b.wild.example.com")).startswith("v3")  # longest wild
    assert pod(send(p, "/", host="other.example.com")).startswith("v1")
    assert pod(send(p, "/hdr", host="unknown.test")).startswith("v1")  # falls to "*"


def test_no_route_is_404(proxy, send):
    assert send(proxy.port, "/other", host="nomatch.test").status == 404
    assert send(proxy.port, "/only", host="nomatch.test").status == 200


def test_path_exact_prefix_regex(proxy, send):
    p = proxy.port
    assert pod(send(p, "/exact")).startswith("v2")
    assert pod(send(p, "/exact/more")).startswith("v1")  # not exact: default route
    assert pod(send(p, "/re/123")).startswith("v2")
    assert pod(send(p, "/re/12a")).startswith("v1")
    # Prefix matching is per path element: /hdrx is not under /hdr.
    assert send(p, "/hdrx").json()["path"] == "/hdrx"


def test_header_match_exact_regex_then_order(proxy, send):
    p = proxy.port
    assert pod(send(p, "/hdr", headers={"x-version": "two"})).startswith("v2")
    assert pod(send(p, "/hdr", headers={"X-Version": "v42"})).startswith("v3")
    assert pod(send(p, "/hdr", headers={"X-Version": "three"})).startswith("v1")


def test_query_and_method_match(proxy, send):
    p = proxy.port
    assert pod(send(p, "/q?v=two&x=1")).startswith("v2")
    assert pod(send(p, "/q?x=1&v=one")).startswith("v1")
    assert pod(send(p, "/method", method="POST", body=b"x")).startswith("v2")
    assert pod(send(p, "/method")).startswith("v1")


# -- forwarding ---------------------------------------------------------------------------

def test_forwarded_headers_and_host_preserved(proxy):
    r = request(proxy.port, "/path?a=b", host="svc.test:1234",
                headers={"X-Forwarded-For": "10.0.0.1", "X-Request-Id": "abc",
                         "Connection": "keep-alive, X-Hop", "X-Hop": "gone",
                         "Keep-Alive": "timeout=5"})
    doc = r.json()
    assert doc["host"] == "svc.test:1234"
    assert doc["path"] == "/path?a=b"
    h = doc["headers"]
    assert h["X-Forwarded-For"] == ["10.0.0.1, 127.0.0.1"]
    assert h["X-Forwarded-Proto"] == ["http"]
    assert h["X-Request-Id"] == ["abc"]
    assert "X-Hop" not in h and "Keep-Alive" not in h and "Connection" not in h
    r2 = request(proxy.port, "/").json()["headers"]
    assert len(r2["X-Request-Id"][0]) == 36  # generated UUID


def test_backend_connection_fields_never_reach_the_client(proxy):
    """A backend that sends Connection: keep-alive and Keep-Alive (nginx, Node.js): the
    client gets neither, on a fresh backend connection (head re-encoded) and on a pooled
    one (the response relayed as received, names in the backend's case)."""
    set_header = "Connection:keep-alive,Keep-Alive:timeout=5,X-Kept:1"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        f = s.makefile("rb")
        for i in range(3):
            s.sendall(b"GET /conn-fields/%d HTTP/1.1\r\nHost: x\r\nX-Echo-Set-Header: %s\r\n\r\n"
                      % (i, set_header.encode()))
            status = f.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            fields = []
            while (line := f.readline()) != b"\r\n":
                fields.append(line.rstrip(b"\r\n").split(b":", 1))
            names = [n.lower() for n, _ in fields]
            assert b"connection" not in names and b"keep-alive" not in names
            assert [v.strip() for n, v in fields if n.lower() == b"x-kept"] == [b"1"]
            length = int(dict((n.lower(), v) for n, v in fields)[b"content-length"])
            assert json.loads(f.read(length))["path"] == "/conn-fields/%d" % i
        # The last two went over a pooled connection, relayed as the backend wrote them.
        assert [n for n, _ in fields if n.lower() == b"x-kept"] == [b"X-Kept"]

def test_request_header_modifier(proxy, send):
    r = send(proxy.port, "/reqhdr", headers=[
        ("X-Header-Remove", "remove-val"), ("X-Header-Add-Append", "append-val-1"),
        ("X-Header-Set", "set-val")])
    h = r.json()["headers"]
    assert h["X-Header-Set"] == ["set-overwrites-values"]
    assert h["X-Header-Add"] == ["header-val-1"]
    assert ",".join(h["X-Header-Add-Append"]) == "append-val-1,header-val-2"
    assert "X-Header-Remove" not in h


def test_response_header_modifier(proxy, send):
    r = send(proxy.port, "/resphdr", headers={"X-Echo-Set-Header": "X-Resp-Add:orig"})
    assert r.status == 200
    assert r.header("x-resp-set") == "yes"
    assert sorted(r.all("x-resp-add")) == ["added", "orig"]
    assert r.header("x-content-type-options") is None


def test_backend_filters(proxy, send):
    h = send(proxy.port, "/befilter").json()["headers"]
    assert h["X-Backend-Filter"] == ["v1"]


def test_backend_level_rewrite_redirect_mirror(proxy, send, echoes):
    doc = send(proxy.port, "/be-rewrite/original").json()
    assert doc["path"] == "/rewritten/original" and doc["host"] == "be.example"
    r = send(proxy.port, "/be-redirect/x", host="h.test")
    assert r.status == 302 and r.header("location") == f"http://h.test:{proxy.port}/redirected"
    tag = uuid.uuid4().hex
    assert pod(send(proxy.port, f"/be-mirror/{tag}", method="POST", body=b"abc")).startswith("v1")
    eventually(lambda: f"/be-mirror/{tag}" in echoes["v3"].log(), timeout=5)


def test_redirects(proxy, send):
    p = proxy.port
    r = send(p, "/redirect-scheme/x?q=1", host="a.test")
    assert r.status == 301
    assert r.header("location") == "https://example.org/redirect-scheme/x?q=1"
    r = send(p, "/redirect-port")
    assert r.status == 302 and r.header("location") == "http://example.org:8080/redirect-port"
    r = send(p, "/redirect-path/a/b", host="h.test")
    assert r.status == 308 and r.header("location") == f"http://h.test:{p}/new/a/b"
    # No port and no scheme: the listener's port (not a default one here).
    r = send(p, "/redirect-listener-port")
    assert r.header("location") == f"http://example.org:{p}/redirect-listener-port"


def test_url_rewrites(proxy, send):
    doc = send(proxy.port, "/rewrite-prefix/three?x=1", host="orig.test").json()
    assert doc["path"] == "/three?x=1"
    assert doc["host"] == "rewritten.example"
    assert send(proxy.port, "/rewrite-prefix").json()["path"] == "/"
    assert send(proxy.port, "/rewrite-full/one/two").json()["path"] == "/full"


def test_mirror_sees_request(proxy, send, echoes):
    tag = uuid.uuid4().hex
    r = send(proxy.port, f"/mirror/{tag}", headers={"X-Header-Remove": "x"})
    assert pod(r).startswith("v1")
    eventually(lambda: f"/mirror/{tag}" in echoes["v3"].log(), timeout=5)
    time.sleep(0.2)
    assert f"/mirror/{tag}" not in echoes["v2"].log()  # 0 percent


def test_weights(proxy, send):
    counts = {"v1": 0, "v2": 0, "v3": 0}
    conn = send.connect(proxy.port)
    for _ in range(500):
        counts[pod(send(proxy.port, "/weights", conn=conn))[:2]] += 1
    conn.close()
    assert counts["v3"] == 0
    assert abs(counts["v1"] / 500 - 0.70) <= 0.05, counts
    assert abs(counts["v2"] / 500 - 0.30) <= 0.05, counts


def test_weights_with_cold_pools_and_a_dead_endpoint(proxy):
    """Every request misses the pool (the backend closes each connection): backends by
    weight (3:1), endpoints in turn (one of the two of the heavier backend dead, 502).
    Picking the endpoint twice per request sent all of that backend's share to the same
    endpoint."""
    counts = {"v1": 0, "v2": 0, "502": 0}
    n = 400
    for _ in range(n):
        r = request(proxy.port, "/lb-weights", headers={"X-Echo-Set-Header": "Connection:close"})
        counts["502" if r.status == 502 else pod(r)[:2]] += 1
    for key, share in (("v1", 0.375), ("502", 0.375), ("v2", 0.25)):
        assert abs(counts[key] / n - share) <= 0.07, counts


# -- error mapping --------------------------------------------------------------------------

@pytest.mark.parametrize("path,status", [
    ("/invalid", 500), ("/no-backends", 500), ("/bad-ref", 500), ("/no-endpoints", 503),
    ("/unreachable", 502), ("/backend-timeout?delay=2s", 504),
    ("/request-timeout?delay=2s", 504), ("/status/503", 503),
])
def test_error_statuses(proxy, send, path, status):
    assert send(proxy.port, path).status == status


def test_timeouts_not_hit(proxy, send):
    assert send(proxy.port, "/backend-timeout?delay=100ms").status == 200
    assert send(proxy.port, "/request-timeout").status == 200


def metric_sum(text: str, name: str, *having: str) -> float:
    """The sum of ``name``'s samples whose labels hold every string of ``having``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            if all(h in labels for h in having):
                total += float(value)
    return total


def test_retry_on_codes(proxy, send):
    before = metric_sum(proxy.metrics(), "kgw_l7_retries_total", "retry-codes")
    u = uuid.uuid4().hex
    r = send(proxy.port, f"/retry/codes?responseCode=500&succeedAfter=2&uuid={u}")
    assert r.status == 200  # 2 failures, 2 retries
    assert metric_sum(proxy.metrics(), "kgw_l7_retries_total", "retry-codes") == before + 2
    u = uuid.uuid4().hex
    assert send(proxy.port,
                   f"/retry/codes?responseCode=500&succeedAfter=3&uuid={u}").status == 500
    u = uuid.uuid4().hex  # 503 is not in the codes: no retry
    assert send(proxy.port,
                   f"/retry/codes?responseCode=503&succeedAfter=1&uuid={u}").status == 503


def test_retry_on_connection_reset(proxy, send):
    u = uuid.uuid4().hex
    assert send(proxy.port, f"/retry/reset?succeedAfter=2&uuid={u}").status == 200
    u = uuid.uuid4().hex
    assert send(proxy.port, f"/retry/reset?succeedAfter=4&uuid={u}").status in (500, 503)
    u = uuid.uuid4().hex
    assert send(proxy.port, f"/retry/none?succeedAfter=2&uuid={u}").status == 503


# -- CORS ---------------------------------------------------------------------------------

def test_cors_preflight_and_simple(proxy, send):
    p = proxy.port
    r = send(p, "/cors", method="OPTIONS", headers={
        "Origin": "https://xpto.www.bar.com", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-header-1"})
    assert r.status == 200
    assert r.header("access-control-allow-origin") == "https://xpto.www.bar.com"
    assert r.header("access-control-allow-methods") == "GET, OPTIONS"
    assert r.header("access-control-allow-headers") == "x-header-1, x-header-2"
    assert r.header("access-control-expose-headers") == "x-header-3"
    assert r.header("access-control-max-age") == "3600"
    assert r.header("access-control-allow-credentials") == "true"
    r = send(p, "/cors", method="OPTIONS", headers={
        "Origin": "https://foobar.com", "Access-Control-Request-Method": "GET"})
    assert r.status == 200 and r.body == b""  # answered by the proxy, not forwarded
    assert r.header("access-control-allow-origin") is None
    r = send(p, "/cors", headers={"Origin": "https://www.foo.com"})
    assert pod(r).startswith("v1")
    assert r.header("access-control-allow-origin") == "https://www.foo.com"
    r = send(p, "/cors", headers={"Origin": "https://foobar.com"})
    assert r.status == 200 and r.header("access-control-allow-origin") is None


# -- HTTP/1.1 mechanics -------------------------------------------------------------------

def test_keep_alive_reuses_connections(proxy):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    ports = set()
    for _ in range(20):
        r = request(proxy.port, "/ka", conn=conn)
        assert r.status == 200
        ports.add(conn.sock.getsockname()[1])
    conn.close()
    assert len(ports) == 1  # one client connection served all requests
    # And the proxy reused its upstream connections: the echo saw few client ports.
    seen = set()
    for _ in range(10):
        doc = request(proxy.port, "/ka2").json()
        seen.add(doc["headers"]["X-Request-Id"][0])
    assert len(seen) == 10


def test_absolute_form_target(proxy):
    out = raw(proxy.port, b"GET http://exact.example.com/abs?q=1 HTTP/1.1\r\n"
              b"Host: exact.example.com\r\nConnection: close\r\n\r\n")
    doc = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert doc["path"] == "/abs?q=1" and doc["pod"].startswith("v2")


def test_http10_client(proxy):
    out = raw(proxy.port, b"GET /h10 HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in out.lower()
    out = raw(proxy.port, b"GET /bytes/1000?chunked=1 HTTP/1.0\r\nHost: x\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower() and len(body) == 1000  # close-delimited


def test_pipelined_requests(proxy):
    reqs = b"".join(b"GET /pipe/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    out = raw(proxy.port, reqs + b"GET /pipe/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 6
    paths = [p.decode() for p in re.findall(rb'"path": ?"([^"]*)"', out)]
    assert paths == [f"/pipe/{i}" for i in range(5)] + ["/pipe/last"]


def test_expect_100_continue(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"POST /expect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        data = b""
        while b"}" not in data[-5:]:
            data += s.recv(65536)
        doc = json.loads(data.split(b"\r\n\r\n", 1)[1])
        assert doc["body"]["length"] == 5 and "Expect" not in doc["headers"]


def test_chunked_request_with_trailers(proxy):
    out = raw(proxy.port, b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    doc = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert doc["body"]["length"] == 11
    assert doc["headers"]["Transfer-Encoding"] == ["chunked"] or "Transfer-Encoding" not in doc[
        "headers"]


def test_large_bodies_stream_both_ways(proxy, send):
    import hashlib
    body = bytes(range(256)) * (8 * 1024 * 4)  # 8 MiB
    r = send(proxy.port, "/upload", method="POST", body=body, timeout=30)
    assert r.json()["body"] == {"length": len(body),
                                "sha256": hashlib.sha256(body).hexdigest()}
    r = send(proxy.port, "/bytes/20000000", timeout=30)
    assert r.status == 200 and len(r.body) == 20_000_000
    r = send(proxy.port, "/bytes/5000000?chunked=1", timeout=30)
    assert r.status == 200 and len(r.body) == 5_000_000


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_client(proxy):
    out = subprocess.run(["curl", "-sS", "-H", "Host: exact.example.com",
                          f"http://127.0.0.1:{proxy.port}/curl"],
                         capture_output=True, timeout=10, check=True).stdout
    assert json.loads(out)["pod"].startswith("v2")


# -- HTTP/2 on the HTTP/1.1 listener ------------------------------------------------------------

@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
@pytest.mark.parametrize("body", [None, "hello"])
def test_h2c_upgrade(proxy, body):
    """curl --http2 asks to upgrade to h2c: a request without a body is upgraded (101, its
    response on stream 1 in HTTP/2), one with a body is served as HTTP/1.1 (RFC 9113
    §3.2 lets a server ignore the upgrade); the backend sees none of Upgrade,
    Connection: upgrade, HTTP2-Settings either way."""
    argv = ["curl", "-sS", "-i", "--http2", f"http://127.0.0.1:{proxy.port}/h2c"]
    if body is not None:
        argv += ["-d", body]
    out = subprocess.run(argv, capture_output=True, timeout=10, check=True).stdout
    if body is None:
        switch, _, out = out.partition(b"\r\n\r\n")
        assert switch.startswith(b"HTTP/1.1 101") and b"Upgrade: h2c" in switch, switch
    head, _, data = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200" if body is None else b"HTTP/1.1 200"), out[:300]
    doc = json.loads(data)
    assert doc["method"] == ("GET" if body is None else "POST")
    sent = {k.lower() for k in doc["headers"]}
    assert not sent & {"upgrade", "http2-settings", "connection"}, doc["headers"]
    if body is not None:
        assert doc["body"]["length"] == len(body)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_http2_prior_knowledge_is_served(proxy):
    p = subprocess.run(["curl", "-sS", "-i", "--http2-prior-knowledge",
                        f"http://127.0.0.1:{proxy.port}/h2"],
                       capture_output=True, timeout=10, check=True)
    head, _, data = p.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200"), p.stdout[:300]
    assert json.loads(data)["path"] == "/h2"


def test_refused_requests_are_logged_and_counted_with_their_listener(proxy):
    """Requests kgw refuses before routing (400, 431, 505 for the HTTP/2 preface, 408)
    get an access-log line and count under their listener and its gateway."""
    assert raw(proxy.port, b"GET /dup HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
               ).startswith(b"HTTP/1.1 400")
    assert raw(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000
               + b"\r\n\r\n").startswith(b"HTTP/1.1 431")
    # The preface later than a connection's first bytes is not HTTP/2 prior knowledge.
    h2 = raw(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert h2.startswith(b"HTTP/1.1 200") and h2.count(b"HTTP/1.1 ") == 1  # refused: 505
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished: 408 after 1 s
        assert s.recv(1000).startswith(b"HTTP/1.1 408")
    text = proxy.metrics()
    for code in (400, 431, 505, 408):
        assert (f'kgw_l7_requests_total{{backend="",code="{code}",gateway="infra/gw",'
                f'listener="main",route=""}}') in text, code
    lines = [json.loads(s) for s in Path(proxy.access_log).read_text().splitlines()]
    refused = {e["response_code"]: e for e in lines if e["method"] is None}
    assert refused[400]["response_code_details"] == "more than one Host header"
    assert refused[400]["response_flags"] == "DPE" and refused[400]["listener"] == "main"
    assert "HTTP/2" in refused[505]["response_code_details"]
    assert refused[431]["response_code_details"] == "request header block too large"
    assert refused[408]["response_code_details"] == "request header timeout"


# -- bad input -----------------------------------------------------------------------------

def test_malformed_request_400_and_close(proxy):
    out = raw(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") and b"connection: close" in out.lower()
    assert raw(proxy.port, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize("payload", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: "
    b"chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
])
def test_smuggling_shapes_rejected(proxy, payload):
    out = raw(proxy.port, payload)
    assert out[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 501"), out[:100]


def test_header_block_too_large_431(proxy):
    out = raw(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431")
    many = b"".join(b"X-%d: v\r\n" % i for i in range(150))
    assert raw(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n").startswith(
        b"HTTP/1.1 431")


def test_slow_header_times_out(proxy):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        data = s.recv(1000)
    assert data.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - t0 < 5


def test_idle_keepalive_connection_closed(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by the proxy after idle_timeout (2 s)
        assert time.monotonic() - t0 < 6


# -- observability ----------------------------------------------------------------------------

def test_metrics_and_access_log(proxy):
    request(proxy.port, "/metrics-probe")
    text = proxy.metrics()
    sent_before = metric_sum(text, "kgw_l7_response_body_bytes_total", 'route="infra/default"')
    received_before = metric_sum(text, "kgw_l7_request_body_bytes_total",
                                 'route="infra/default"')
    r = request(proxy.port, "/metrics-probe", method="POST", body=b"x" * 1000)
    assert r.status == 200
    text = proxy.metrics()
    assert metric_sum(text, "kgw_l7_request_body_bytes_total",
                      'route="infra/default"') == received_before + 1000
    assert metric_sum(text, "kgw_l7_response_body_bytes_total",
                      'route="infra/default"') >= sent_before + len(r.body)
    assert metric_sum(text, "kgw_l7_upstream_connect_duration_seconds_count",
                      'backend="infra/v1:8080"') >= 1
    assert 'kgw_l7_listener_active_connections{listener="main"}' in text
    assert "kgw_l7_worker_restarts_total 0.0" in text
    assert ('kgw_l7_requests_total{backend="infra/v1:8080",code="200",gateway="infra/gw",'
            'listener="main",route="infra/default"}') in text
    assert "kgw_l7_request_duration_seconds_bucket" in text
    assert 'kgw_l7_upstream_connect_failures_total{backend="infra/dead:80"}' in text
    assert "kgw_l7_config_generation 1.0" in text
    assert "kgw_l7_workers 2.0" in text
    lines = [json.loads(s) for s in Path(proxy.access_log).read_text().splitlines()]
    probe = [e for e in lines if e["path"] == "/metrics-probe"]
    assert probe and probe[0]["response_code"] == 200
    assert probe[0]["route_name"] == "infra/default/0"
    assert probe[0]["upstream_host"].startswith("127.0.0.1:")
    assert set(probe[0]) >= {"start_time", "method", "authority", "bytes_received",
                             "bytes_sent", "duration", "request_id"}


def test_websocket_through_proxy(proxy):
    websocket = pytest.importorskip("websocket")  # websocket-client
    ws = websocket.create_connection(f"ws://127.0.0.1:{proxy.port}/ws", timeout=5)
    try:
        for msg in ("hello", "x" * 70000):
            ws.send(msg)
            assert ws.recv() == msg
        ws.ping(b"p")
    finally:
        ws.close()
    # The connection became a tunnel; the proxy still serves new requests.
    assert request(proxy.port, "/after-ws").status == 200


def test_retry_replays_request_body(proxy):
    u = uuid.uuid4().hex
    r = request(proxy.port, f"/retry/codes?responseCode=500&succeedAfter=1&uuid={u}",
                method="POST", body=b"payload-123")
    assert r.status == 200 and r.json()["body"]["length"] == 11


def test_head_request(proxy):
    r = request(proxy.port, "/head-check", method="HEAD")
    assert r.status == 200 and r.body == b"" and int(r.header("content-length")) > 0
    assert request(proxy.port, "/other", method="HEAD", host="nomatch.test").status == 404
    # the connection pool still works after HEAD responses
    assert request(proxy.port, "/after-head").status == 200


def test_broken_backends(proxy):
    assert request(proxy.port, "/raw/garbage").status == 502
    assert request(proxy.port, "/raw/close").status == 503  # closed before answering
    # Truncated body: the client gets the head, then its connection is cut.
    with pytest.raises(http.client.IncompleteRead):
        request(proxy.port, "/raw/truncated")
    assert request(proxy.port, "/after-broken").status == 200


def test_client_gone_mid_download(proxy):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            s.sendall(b"GET /bytes/50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(1000).startswith(b"HTTP/1.1 200")
    # the proxy is fine, and has not kept those upstream connections
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    for _ in range(5):
        assert request(proxy.port, "/after-gone", conn=conn).status == 200
    conn.close()


def test_slow_reader_gets_everything(proxy):
    """Backpressure: a client reading slowly still gets every byte (the proxy pauses
    the backend instead of buffering without bound)."""
    n = 8_000_000
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % n)
        got = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        got = len(head.split(b"\r\n\r\n", 1)[1])
        time.sleep(0.5)  # let the proxy hit the full socket buffer
        while True:
            chunk = s.recv(262144)
            if not chunk:
                break
            got += len(chunk)
    assert got == n


def test_head_as_received_and_rebuilt_send_the_same_fields(proxy):
    """A request's own header block goes upstream as received when nothing rewrites it
    (the first request of a read); a pipelined one is rebuilt field by field. The backend
    sees the same fields either way, the body's Content-Length once."""
    one = (b"POST / HTTP/1.1\r\nHost: svc.test\r\nX-Mixed-Case: v\r\nContent-Length: 2\r\n"
           b"\r\nhi")
    out = raw(proxy.port, one + one.replace(b"POST / ", b"POST /?second ")
              + b"GET / HTTP/1.1\r\nHost: svc.test\r\nConnection: close\r\n\r\n")
    docs = [json.loads(part[part.index(b"{"):part.rindex(b"}") + 1])
            for part in out.split(b"HTTP/1.1 200")[1:]]
    assert [d["path"] for d in docs] == ["/", "/?second", "/"]
    for d in docs[:2]:
        h = d["headers"]
        assert h["X-Mixed-Case"] == ["v"] and h["Content-Length"] == ["2"]
        assert h["X-Forwarded-For"] == ["127.0.0.1"] and h["X-Forwarded-Proto"] == ["http"]
        assert len(h["X-Request-Id"][0]) == 36
    assert docs[0]["headers"]["X-Request-Id"] != docs[1]["headers"]["X-Request-Id"]
    assert "Connection" not in docs[2]["headers"]
