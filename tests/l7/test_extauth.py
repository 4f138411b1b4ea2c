"""kgw_l7.extauth without I/O: the check requests (HTTP, and gRPC decoded back with the
Envoy protos) and what each kind of answer means, table-driven."""

from __future__ import annotations

import struct

import pytest

from kgw_l7.config import Backend, Endpoint, ExtAuth
from kgw_l7.extauth import (
    AuthError, Decision, Request, Settings, grpc_check, grpc_decision, http_check,
    http_decision,
)

pb = pytest.importorskip("envoy.service.auth.v3.external_auth_pb2")

SVC = Backend("auth/svc:80", endpoints=(Endpoint("127.0.0.1", 1),))
REQ = Request(
    method=b"POST", target=b"/orders/1?x=y", authority=b"shop.example.com:8080",
    headers=((b"host", b"shop.example.com:8080"), (b"authorization", b"Bearer t"),
             (b"cookie", b"a=1"), (b"x-tenant", b"t1"), (b"x-tenant", b"t2"),
             (b"content-length", b"11"), (b"connection", b"keep-alive")),
    body=b"hello", size=11, peer=b"10.0.0.7:5555", scheme=b"https", version=b"1.1",
    request_id=b"rid-1")


def settings(**kw: object) -> Settings:
    return Settings(ExtAuth(protocol=kw.pop("protocol", "HTTP"), backend=SVC, **kw), None)  # type: ignore[arg-type]


def test_http_check_sends_the_fixed_headers_and_the_allowed_ones() -> None:
    method, target, headers = http_check(settings(path_prefix="/authz/"), REQ)
    assert (method, target) == (b"POST", b"/authz/orders/1?x=y")
    assert headers == [(b"host", b"shop.example.com:8080"), (b"authorization", b"Bearer t"),
                       (b"content-length", b"5")]
    _, _, headers = http_check(settings(allowed_headers=("X-Tenant", "connection")), REQ)
    assert (b"x-tenant", b"t1") in headers and (b"x-tenant", b"t2") in headers
    assert b"connection" not in dict(headers) and b"cookie" not in dict(headers)


@pytest.mark.parametrize("allowed, status, headers, want", [
    # 200: allowed; every header but the answer's own fields goes to the backend
    ((), 200, ((b"x-user", b"alice"), (b"content-type", b"text/plain"),
               (b"content-length", b"0"), (b"host", b"evil")),
     Decision(True, set=((b"x-user", b"alice"),))),
    # 200 with allowedResponseHeaders: only those
    (("x-user",), 200, ((b"x-user", b"alice"), (b"x-other", b"1")),
     Decision(True, set=((b"x-user", b"alice"),))),
    # anything else denies with the service's status, headers and body
    ((), 401, ((b"www-authenticate", b"Bearer"), (b"content-length", b"4")),
     Decision(False, 401, ((b"www-authenticate", b"Bearer"),), b"nope",
              reason="ext auth denied (401)")),
    ((), 500, (), Decision(False, 500, (), b"nope", reason="ext auth denied (500)")),
])
def test_http_decision(allowed: tuple[str, ...], status: int, headers: tuple, want: Decision
                       ) -> None:
    body = b"" if status == 200 else b"nope"
    assert http_decision(settings(allowed_response_headers=allowed), status, headers,
                         body) == want


def test_decision_apply_sets_adds_and_removes() -> None:
    d = Decision(True, set=((b"x-user", b"alice"),), add=((b"x-group", b"b"),),
                 remove=(b"x-strip",))
    out = d.apply([(b"x-user", b"mallory"), (b"x-strip", b"1"), (b"x-group", b"a"),
                   (b"accept", b"*/*")])
    assert out == [(b"x-group", b"a"), (b"accept", b"*/*"), (b"x-user", b"alice"),
                   (b"x-group", b"b")]


def _decode(message: bytes) -> object:
    assert message[0] == 0 and struct.unpack(">I", message[1:5])[0] == len(message) - 5
    req = pb.CheckRequest()
    req.ParseFromString(message[5:])
    return req


def test_grpc_check_request_fields() -> None:
    req = _decode(grpc_check(settings(protocol="GRPC"), REQ))
    http = req.attributes.request.http  # type: ignore[attr-defined]
    assert (http.method, http.path, http.query, http.host, http.scheme, http.protocol) == (
        "POST", "/orders/1?x=y", "x=y", "shop.example.com:8080", "https", "HTTP/1.1")
    assert (http.id, http.size, http.raw_body) == ("rid-1", 11, b"hello")
    assert http.headers["x-tenant"] == "t1,t2" and http.headers[":method"] == "POST"
    addr = req.attributes.source.address.socket_address  # type: ignore[attr-defined]
    assert (addr.address, addr.port_value) == ("10.0.0.7", 5555)
    # allowedHeaders: only those (and the pseudo-headers)
    req = _decode(grpc_check(settings(protocol="GRPC", allowed_headers=("authorization",)), REQ))
    assert set(req.attributes.request.http.headers) == {  # type: ignore[attr-defined]
        ":authority", ":method", ":path", "authorization"}


def _answer(resp: object) -> bytes:
    data = resp.SerializeToString()  # type: ignore[attr-defined]
    return struct.pack(">BI", 0, len(data)) + data


OK_TRAILERS = ((b"grpc-status", b"0"),)


def test_grpc_allow_and_deny() -> None:
    s = settings(protocol="GRPC")
    resp = pb.CheckResponse()
    resp.status.code = 0
    h = resp.ok_response.headers.add()
    h.header.key, h.header.value = "X-User", "alice"
    h = resp.ok_response.headers.add()
    h.header.key, h.header.value = "x-group", "g"
    h.append.value = True
    resp.ok_response.headers_to_remove.append("x-strip")
    assert grpc_decision(s, 200, (), _answer(resp), OK_TRAILERS) == Decision(
        True, set=((b"x-user", b"alice"),), add=((b"x-group", b"g"),), remove=(b"x-strip",))
    resp = pb.CheckResponse()
    resp.status.code = 7
    resp.denied_response.status.code = 401
    h = resp.denied_response.headers.add()
    h.header.key, h.header.value = "www-authenticate", "Bearer"
    resp.denied_response.body = "no"
    d = grpc_decision(s, 200, (), _answer(resp), OK_TRAILERS)
    assert (d.allowed, d.status, d.headers, d.body) == (
        False, 401, ((b"www-authenticate", b"Bearer"),), b"no")
    resp = pb.CheckResponse()
    resp.status.code = 16  # no denied_response: 403
    assert grpc_decision(s, 200, (), _answer(resp), OK_TRAILERS).status == 403


@pytest.mark.parametrize("status, body, trailers, error", [
    (503, b"", (), "HTTP 503"),
    (200, b"", ((b"grpc-status", b"14"), (b"grpc-message", b"down")), "gRPC status 14 down"),
    (200, b"", (), "gRPC status missing"),
    (200, b"\x00\x00\x00\x00\x09abc", OK_TRAILERS, "framing"),
    (200, b"\x01\x00\x00\x00\x00", OK_TRAILERS, "compressed"),
    (200, b"\x00\x00\x00\x00\x03\xff\xff\xff", OK_TRAILERS, "malformed CheckResponse"),
])
def test_grpc_no_answer(status: int, body: bytes, trailers: tuple, error: str) -> None:
    with pytest.raises(AuthError, match=error):
        grpc_decision(settings(protocol="GRPC"), status, (), body, trailers)


def test_no_answer_fails_closed_unless_told_to_fail_open() -> None:
    assert settings().on_error("timeout") == Decision(False, 403, reason="ext auth: timeout",
                                                      failed=True)
    assert settings(status_on_error=503).on_error("x").status == 503
    assert settings(fail_open=True).on_error("x").allowed
