"""The auth checks through the proxy: a plane in front of ``kgw echo`` with rules that
require a JWT (inline keys, and a remote JWKS that rotates and then hangs), basic auth, an
API key and authorization rules; real HTTP/1.1 and HTTP/2 clients."""

from __future__ import annotations

import base64
import http.client
import time

import bcrypt
import pytest

from kgw_l7.auth_config import (
    JWT, APIKeyAuth, Authorization, AuthorizationRule, BasicAuth, ClaimRequirement,
    ClaimToHeader, CredentialSource, JWTProvider, RemoteJWKS,
)
from kgw_l7.config import L7Config, Listener, RulePolicy, VirtualHost

from .conftest import PlaneRunner, free_port, request
from .test_auth import RSA, RSA2, JwksServer, jwk, jwks, token
from .test_proxy import backend, prefix, rule

pytestmark = pytest.mark.slow

ISSUER = dict(issuer="https://issuer.test", audiences=("api",))


@pytest.fixture(scope="module")
def jwks_server():
    s = JwksServer()
    s.doc = jwks(jwk(RSA, "k1"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def proxy(echoes, jwks_server):
    port = free_port()
    v1 = backend(echoes["v1"])
    inline = JWTProvider("inline", local_jwks=jwks(jwk(RSA, "k1")), **ISSUER,
                         claim_to_headers=(ClaimToHeader("sub", "x-user"),))
    remote = JWTProvider("remote", remote_jwks=RemoteJWKS(jwks_server.url, timeout=1.0),
                         **ISSUER)
    elsewhere = JWTProvider("elsewhere", local_jwks=jwks(jwk(RSA, "k1")), **ISSUER,
                            extract_from=(CredentialSource("query", "access_token"),
                                          CredentialSource("cookie", "tok")))
    short = JWTProvider("short", local_jwks=jwks(jwk(RSA, "k1")), **ISSUER, clock_skew=0.0,
                        claim_to_headers=(ClaimToHeader("sub", "x-user"),))
    secured = [
        prefix("/short", rule("short", v1, policy=RulePolicy(jwt=JWT((short,))))),
        prefix("/elsewhere", rule("elsewhere", v1, policy=RulePolicy(jwt=JWT((elsewhere,))))),
        prefix("/jwt", rule("jwt", v1, policy=RulePolicy(jwt=JWT((inline,))))),
        prefix("/scoped", rule("scoped", v1, policy=RulePolicy(
            jwt=JWT((inline,), required_scopes=("orders:write",))))),
        prefix("/remote", rule("remote", v1, policy=RulePolicy(jwt=JWT((remote,))))),
        prefix("/basic", rule("basic", v1, policy=RulePolicy(basic_auth=BasicAuth(
            (("ann", bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()),),
            forward_username_header="x-user")))),
        prefix("/key", rule("key", v1, policy=RulePolicy(api_key_auth=APIKeyAuth(
            (("mobile", "k-123"),), forward_client_id_header="x-client")))),
        prefix("/admin", rule("admin", v1, policy=RulePolicy(
            jwt=JWT((inline,)), authorization=Authorization(rules=(
                AuthorizationRule("admins", "Allow",
                                  claims=(ClaimRequirement("role", ("admin",)),)),))))),
        prefix("/", rule("open", v1)),
    ]
    cfg = L7Config(listeners=(Listener("main", "127.0.0.1", port, virtual_hosts=(
        VirtualHost("*", tuple(secured)),)),), generation=1)
    runner = PlaneRunner(workers=1)
    runner.apply(cfg)
    runner.port = port  # type: ignore[attr-defined]
    yield runner
    runner.close()


def hdr(resp, name):
    return resp.json()["headers"].get(name)


def test_a_repeated_token_is_removed_and_its_claims_forwarded(proxy, send):
    """The same token again (the worker's verified-token cache: one worker here) gets the
    same treatment: the head forwarded as received less the token and the client's own
    X-User, plus the claim's X-User."""
    bearer = "Bearer " + token(RSA, jti="repeated")
    for i in range(3):
        r = send(proxy.port, "/jwt", headers={"x-keep": str(i), "authorization": bearer,
                                              "x-user": "mallory"})
        assert r.status == 200
        assert hdr(r, "X-User") == ["alice"], i
        assert hdr(r, "Authorization") is None, i
        assert hdr(r, "X-Keep") == [str(i)]


def test_the_remembered_token_on_one_connection(proxy):
    """One HTTP/1.1 connection, the token in its usual spelling (its line cut from the
    received head): a repeated token keeps its claims, another token (or a forged one) is
    verified anew, and a remembered token whose exp passes is refused (no clock skew on
    this provider)."""
    exp = int(time.time()) + 2
    alice = "Bearer " + token(RSA, exp=exp)
    bob = "Bearer " + token(RSA, sub="bob")
    forged = alice[:-6] + ("AAAAAA" if not alice.endswith("AAAAAA") else "BBBBBB")
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        def user(bearer, keep="1"):
            r = request(proxy.port, "/short", conn=conn,
                        headers=[("Authorization", bearer), ("X-Keep", keep)])
            if r.status != 200:
                return r.status
            assert hdr(r, "Authorization") is None and hdr(r, "X-Keep") == [keep]
            return hdr(r, "X-User")

        assert user(alice) == ["alice"]
        assert user(alice, "2") == ["alice"]
        assert user(bob) == ["bob"]
        assert user(alice) == ["alice"]
        assert user(forged) == 401
        assert user(alice) == ["alice"]
        time.sleep(max(0.0, exp + 0.5 - time.time()))
        assert user(alice) == 401
        assert user(bob) == ["bob"]
    finally:
        conn.close()


def test_jwt_end_to_end(proxy, send):
    p = proxy.port
    ok = send(p, "/jwt", headers={"authorization": "Bearer " + token(RSA)})
    assert ok.status == 200
    assert hdr(ok, "X-User") == ["alice"]
    assert hdr(ok, "Authorization") is None  # removed before forwarding
    for bad in (token(RSA, exp=int(time.time()) - 3600), token(RSA, aud="other"),
                token(RSA2), token(RSA)[:-6] + "xxxxxx", "e30.e30.", "%%%.%%%.%%%"):
        r = send(p, "/jwt", headers={"authorization": "Bearer " + bad})
        assert r.status == 401, bad
        assert 'error="invalid_token"' in r.header("www-authenticate")
    r = send(p, "/jwt")
    assert (r.status, r.header("www-authenticate")) == (401, 'Bearer realm="kgw"')
    r = send(p, "/jwt", headers={"authorization": "Bearer " + "a" * 9000})
    assert r.status == 401
    assert send(p, "/open").status == 200


def test_token_from_query_or_cookie_removed(proxy, send):
    """A token read from a query parameter or a cookie does not reach the backend (the
    other parameters and cookies do)."""
    p, tok = proxy.port, token(RSA)
    r = send(p, f"/elsewhere/x?a=1&access_token={tok}&b=2")
    assert r.status == 200
    assert r.json()["path"] == "/elsewhere/x?a=1&b=2"
    r = send(p, f"/elsewhere/x?access_token={tok}")
    assert (r.status, r.json()["path"]) == (200, "/elsewhere/x")
    r = send(p, "/elsewhere/y", headers={"cookie": f"a=1; tok={tok}; b=2"})
    assert r.status == 200
    assert hdr(r, "Cookie") == ["a=1; b=2"]
    r = send(p, "/elsewhere/y", headers={"cookie": f"tok={tok}"})
    assert (r.status, hdr(r, "Cookie")) == (200, None)
    assert send(p, "/elsewhere/y", headers={"cookie": "tok=forged"}).status == 401


def test_scopes_403(proxy, send):
    p = proxy.port
    r = send(p, "/scoped", headers={"authorization": "Bearer " + token(RSA, scope="orders:read")})
    assert r.status == 403 and "insufficient_scope" in r.header("www-authenticate")
    r = send(p, "/scoped", headers={"authorization": "Bearer " + token(
        RSA, scope="orders:read orders:write")})
    assert r.status == 200


def test_basic_and_api_key(proxy, send):
    p = proxy.port
    good = "Basic " + base64.b64encode(b"ann:secret").decode()
    r = send(p, "/basic", headers={"authorization": good})
    assert r.status == 200 and hdr(r, "X-User") == ["ann"]
    for bad in ("Basic " + base64.b64encode(b"ann:wrong").decode(), "Basic !!notbase64", None):
        r = send(p, "/basic", headers={"authorization": bad} if bad else None)
        assert r.status == 401 and r.header("www-authenticate") == 'Basic realm="kgw"'
    r = send(p, "/key", headers={"x-api-key": "k-123", "x-client": "spoofed"})
    assert r.status == 200 and hdr(r, "X-Client") == ["mobile"]
    assert hdr(r, "X-Api-Key") is None
    assert send(p, "/key", headers={"x-api-key": "nope"}).status == 401


def test_authorization_rules(proxy, send):
    p = proxy.port
    r = send(p, "/admin", headers={"authorization": "Bearer " + token(RSA, role="admin")})
    assert r.status == 200
    r = send(p, "/admin", headers={"authorization": "Bearer " + token(RSA, role="dev")})
    assert r.status == 403
    assert send(p, "/admin").status == 401


def test_remote_jwks_rotation_and_hang(proxy, jwks_server):
    p = proxy.port
    send = request  # (once: the JWKS server's state moves on)
    assert send(p, "/remote", headers={"authorization": "Bearer " + token(RSA, "k1")}
                ).status == 200
    jwks_server.doc = jwks(jwk(RSA2, "k2"))
    time.sleep(2.2)  # (auth.REFETCH_INTERVAL)
    assert send(p, "/remote", headers={"authorization": "Bearer " + token(RSA2, "k2")}
                ).status == 200
    jwks_server.hang.set()
    try:
        # the last good keys keep serving while the URI hangs
        assert send(p, "/remote", headers={"authorization": "Bearer " + token(
            RSA2, "k2", jti="again")}).status == 200
        time.sleep(2.2)
        t0 = time.monotonic()
        r = send(p, "/remote", headers={"authorization": "Bearer " + token(RSA2, "k9")})
        assert r.status == 401
        assert time.monotonic() - t0 < 5
    finally:
        jwks_server.hang.clear()
