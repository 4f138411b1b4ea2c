"""kgw_l7.auth driven directly: the checks and the pipeline, with keys made here."""

from __future__ import annotations

import asyncio
import dataclasses
import base64
import hashlib
import http.server
import json
import threading
import time

import bcrypt
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from kgw_l7 import auth
from kgw_l7.auth import PENDING, AuthPipeline, AuthRequest, Denial, parse_jwks
from kgw_l7.auth_config import (
    JWT, APIKeyAuth, Authorization, AuthorizationRule, BasicAuth, ClaimRequirement,
    ClaimToHeader, CredentialSource, HeaderRequirement, JWTProvider, RemoteJWKS,
)
from kgw_l7.config import RulePolicy
from kgw_l7.problems import PROBLEMS

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()


def jwk(private, kid, alg=None):
    algo = jwt.get_algorithm_by_name(alg or "RS256")
    d = json.loads(algo.to_jwk(private.public_key()))
    d["kid"] = kid
    if alg:
        d["alg"] = alg
    return d


def jwks(*keys):
    return json.dumps({"keys": list(keys)})


def token(private, kid="k1", alg="RS256", **claims):
    payload = {"iss": "https://issuer.test", "aud": "api", "sub": "alice",
               "exp": int(time.time()) + 600, **claims}
    return jwt.encode(payload, private, algorithm=alg, headers={"kid": kid} if kid else None)


def request(headers=(), path=b"/", query=b"", method=b"GET", peer=b"10.0.0.7"):
    return AuthRequest(method, path, query, tuple((n.encode(), v.encode()) for n, v in headers),
                       peer)


def bearer(tok):
    return [("authorization", "Bearer " + tok)]


PROVIDER = JWTProvider("p", issuer="https://issuer.test", audiences=("api",),
                       local_jwks=jwks(jwk(RSA, "k1"), jwk(EC, "e1", "ES256"),
                                       jwk(ED, "d1", "EdDSA")))


def pipeline(**sections):
    p = AuthPipeline.build(RulePolicy(**sections))
    assert p is not None
    return p


def run(p, req):
    verdict = p.run(req)
    if isinstance(verdict, int):
        verdict = asyncio.run(p.resume(req, verdict))
    return verdict


@pytest.mark.parametrize("private,kid,alg", [(RSA, "k1", "RS256"), (RSA, "k1", "RS384"),
                                             (RSA, "k1", "PS256"), (EC, "e1", "ES256"),
                                             (ED, "d1", "EdDSA")])
def test_jwt_algorithms_pass(private, kid, alg):
    p = pipeline(jwt=JWT((PROVIDER,)))
    req = request(bearer(token(private, kid, alg)))
    assert p.run(req) is None
    assert req.claims["sub"] == "alice"
    assert b"authorization" in req.remove  # the token is not forwarded by default


def denial(p, req):
    v = run(p, req)
    assert isinstance(v, Denial), v
    return v


def www(v):
    return dict(v.headers)[b"www-authenticate"].decode()


@pytest.mark.parametrize("make,why", [
    (lambda: token(RSA, exp=int(time.time()) - 3600), "expired"),
    (lambda: token(RSA, aud="other"), "audience"),
    (lambda: token(RSA, iss="https://evil.test"), "issuer"),
    (lambda: token(RSA, nbf=int(time.time()) + 3600), "not yet valid"),
    (lambda: token(RSA2), "bad signature"),
    (lambda: token(RSA)[:-4] + "AAAA", "bad signature"),
    (lambda: jwt.encode({"sub": "x"}, None, algorithm="none"), "algorithm"),
    (lambda: jwt.encode({"sub": "x", "iss": "https://issuer.test", "aud": "api"},
                        "secret", algorithm="HS256", headers={"kid": "k1"}), "algorithm"),
    (lambda: "abc.def", "malformed"),
    (lambda: "!!!.@@@.###", "malformed"),
    (lambda: "a" * (auth.MAX_CREDENTIAL + 1), "too large"),
    (lambda: token(RSA, kid="nope"), "no key"),
])
def test_jwt_refused_401(make, why):
    p = pipeline(jwt=JWT((PROVIDER,)))
    v = denial(p, request(bearer(make())))
    assert v.status == 401
    assert why in v.detail
    assert www(v).startswith('Bearer realm="kgw", error="invalid_token"')


def test_jwt_no_token_challenge_without_error():
    v = denial(pipeline(jwt=JWT((PROVIDER,))), request())
    assert (v.status, www(v)) == (401, 'Bearer realm="kgw"')


def test_jwt_clock_skew():
    p = pipeline(jwt=JWT((PROVIDER,)))
    assert p.run(request(bearer(token(RSA, exp=int(time.time()) - 30)))) is None  # 60 s skew
    strict = pipeline(jwt=JWT((JWTProvider("p", local_jwks=PROVIDER.local_jwks,
                                           clock_skew=0),)))
    assert denial(strict, request(bearer(token(RSA, exp=int(time.time()) - 30)))).status == 401


def test_jwt_hs256_only_with_explicit_secret():
    p = pipeline(jwt=JWT((JWTProvider("h", hmac_secret=b"s3cret-s3cret-s3cret-s3cret-s3cr"),)))
    tok = jwt.encode({"sub": "bob"}, b"s3cret-s3cret-s3cret-s3cret-s3cr", algorithm="HS256")
    assert p.run(request(bearer(tok))) is None
    bad = jwt.encode({"sub": "bob"}, b"other-other-other-other-other-ot", algorithm="HS256")
    assert denial(p, request(bearer(bad))).status == 401


def test_jwt_scopes_and_claims_403():
    p = pipeline(jwt=JWT((PROVIDER,), required_scopes=("read", "write"),
                         required_claims=(ClaimRequirement("org.team", ("blue",)),)))
    ok = token(RSA, scope="read write admin", org={"team": "blue"})
    assert p.run(request(bearer(ok))) is None
    v = denial(p, request(bearer(token(RSA, scope="read", org={"team": "blue"}))))
    assert v.status == 403 and 'error="insufficient_scope"' in www(v)
    v = denial(p, request(bearer(token(RSA, scp=["read", "write"], org={"team": "red"}))))
    assert v.status == 403 and "org.team" in v.detail


def test_jwt_claims_to_headers_and_forward():
    prov = JWTProvider("p", local_jwks=PROVIDER.local_jwks, forward=True, claim_to_headers=(
        ClaimToHeader("sub", "x-user"), ClaimToHeader("org.team", "x-team"),
        ClaimToHeader("missing", "x-missing")))
    p = pipeline(jwt=JWT((prov,)))
    req = request(bearer(token(RSA, org={"team": "blue"})) + [("x-user", "spoofed"),
                                                             ("x-missing", "spoofed")])
    assert p.run(req) is None
    out = req.upstream(list(req.headers))
    assert (b"x-user", b"alice") in out and (b"x-team", b"blue") in out
    assert b"x-missing" not in dict(out) and (b"x-user", b"spoofed") not in out
    assert b"authorization" in dict(out)  # forward: the token stays


def test_jwt_token_from_query_cookie_header():
    prov = JWTProvider("p", local_jwks=PROVIDER.local_jwks, extract_from=(
        CredentialSource("header", "x-token"), CredentialSource("query", "access_token"),
        CredentialSource("cookie", "tok")))
    p = pipeline(jwt=JWT((prov,)))
    tok = token(RSA)
    assert p.run(request([("x-token", tok)])) is None
    assert p.run(request(query=b"a=1&access_token=" + tok.encode())) is None
    assert p.run(request([("cookie", "x=1; tok=" + tok)])) is None
    assert denial(p, request(bearer(tok))).status == 401  # not a source here


def test_jwt_verified_token_cached():
    check = auth.JwtCheck(JWT((PROVIDER,)))
    tok = token(RSA)
    assert check.check(request(bearer(tok))) is None
    calls = []
    real = jwt.decode
    jwt.decode = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        assert check.check(request(bearer(tok))) is None
    finally:
        jwt.decode = real
    assert calls == []


def test_jwks_unsupported_keys_skipped():
    doc = json.dumps({"keys": [jwk(RSA, "good"), {"kty": "oct", "k": "c2VjcmV0", "kid": "s"},
                               {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                               {**jwk(RSA, "enc"), "use": "enc"}, "junk"]})
    keys, skipped = parse_jwks(doc)
    assert [k.kid for k in keys] == ["good"]
    assert len(skipped) == 4 and any("oct" in s for s in skipped)
    with pytest.raises(ValueError):
        parse_jwks("{}")


HASH_BCRYPT = bcrypt.hashpw(b"pw1", bcrypt.gensalt(rounds=4)).decode()
HASH_SHA = "{SHA}" + base64.b64encode(hashlib.sha1(b"pw2").digest()).decode()


def basic(user, pw):
    return [("authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())]


def test_basic_auth():
    p = pipeline(basic_auth=BasicAuth((("ann", HASH_BCRYPT), ("ben", HASH_SHA)),
                                      forward_username_header="X-User"))
    req = request(basic("ann", "pw1"))
    assert p.run(req) == 0  # bcrypt: in a thread
    assert asyncio.run(p.resume(req, 0)) is None
    assert (b"x-user", b"ann") in req.set_headers
    assert p.run(request(basic("ann", "pw1"))) is None  # remembered
    assert run(p, request(basic("ben", "pw2"))) is None
    for bad in (basic("ann", "nope"), basic("ben", "nope"), basic("eve", "pw1"),
                [("authorization", "Basic %%%")], [("authorization", "Basic " + "QQ" * 5000)],
                [("authorization", "Basic " + base64.b64encode(b"nocolon").decode())], []):
        v = denial(p, request(bad))
        assert v.status == 401 and www(v) == 'Basic realm="kgw"', bad


def test_api_keys():
    p = pipeline(api_key_auth=APIKeyAuth(
        (("client-a", "key-a"), ("client-b", "key-b")),
        extract_from=(CredentialSource("header", "x-api-key"), CredentialSource("query", "key")),
        forward_client_id_header="x-client"))
    req = request([("x-api-key", "key-b")])
    assert p.run(req) is None
    out = req.upstream(list(req.headers))
    assert (b"x-client", b"client-b") in out and b"x-api-key" not in dict(out)
    assert p.run(request(query=b"key=key-a")) is None
    assert denial(p, request([("x-api-key", "key-c")])).status == 401
    assert denial(p, request()).status == 401


def test_authorization_rules():
    rules = Authorization(rules=(
        AuthorizationRule("deny-admin-writes", "Deny", methods=("POST",), paths=("/admin",)),
        AuthorizationRule("office", "Allow", client_cidrs=("10.0.0.0/8",)),
        AuthorizationRule("admins", "Allow", claims=(ClaimRequirement("role", ("admin",)),)),
        AuthorizationRule("probe", "Allow", headers=(HeaderRequirement("x-probe", ("yes",)),),
                          methods=("GET",)),
    ))
    p = pipeline(jwt=JWT((PROVIDER,)), authorization=rules)
    user = bearer(token(RSA))
    admin = bearer(token(RSA, role=["admin"]))
    assert run(p, request(user, peer=b"10.1.2.3")) is None
    assert run(p, request(user, peer=b"::ffff:10.1.2.3")) is None
    assert denial(p, request(user, peer=b"192.0.2.1")).status == 403
    assert run(p, request(admin, peer=b"192.0.2.1")) is None
    assert denial(p, request(admin, method=b"POST", path=b"/admin/x")).status == 403
    assert run(p, request(admin, method=b"POST", path=b"/administrator")) is None
    assert run(p, request(user + [("x-probe", "yes")], peer=b"192.0.2.1")) is None
    # authentication first: no token is a 401, not a 403
    assert denial(p, request(peer=b"10.1.2.3")).status == 401
    allow_default = pipeline(authorization=Authorization(default_action="Allow", rules=(
        AuthorizationRule("block", "Deny", client_cidrs=("192.0.2.0/24",)),)))
    assert run(allow_default, request()) is None
    assert denial(allow_default, request(peer=b"192.0.2.9")).status == 403


def test_a_failing_check_is_503_not_a_pass(monkeypatch):
    p = pipeline(jwt=JWT((PROVIDER,)))
    monkeypatch.setattr(auth.JwtCheck, "check", lambda self, req: 1 / 0)
    assert denial(p, request(bearer(token(RSA)))).status == 503


class JwksServer:
    """A JWKS over HTTP whose document the test changes; ``hang`` makes it not answer."""

    def __init__(self):
        self.doc = jwks()
        self.fetches = 0
        self.hang = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.fetches += 1
                if server.hang.is_set():
                    time.sleep(3)
                    return
                body = server.doc.encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.send_header("cache-control", "max-age=3600")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d/jwks" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def jwks_server(monkeypatch):
    monkeypatch.setattr(auth, "REFETCH_INTERVAL", 0.2)
    monkeypatch.setattr(auth, "_REMOTE", {})
    s = JwksServer()
    yield s
    s.close()


def test_remote_jwks_rotation_and_outage(jwks_server):
    jwks_server.doc = jwks(jwk(RSA, "k1"))
    prov = JWTProvider("r", remote_jwks=RemoteJWKS(jwks_server.url, timeout=1.0))

    async def scenario():
        p = pipeline(jwt=JWT((prov,)))
        # first request: keys not fetched yet -> waits for the fetch
        req = request(bearer(token(RSA, "k1")))
        v = p.run(req)
        assert v == 0 or v is None
        if v == 0:
            assert await p.resume(req, 0) is None
        # rotation: the server now has k2 only; a token with k2 triggers one refetch
        jwks_server.doc = jwks(jwk(RSA2, "k2"))
        await asyncio.sleep(0.3)
        req = request(bearer(token(RSA2, "k2")))
        assert p.run(req) == 0
        assert await p.resume(req, 0) is None
        # k1 is gone: a fresh k1 token is refused (after one more refetch attempt)
        req = request(bearer(token(RSA, "k1", jti="x")))
        v = p.run(req)
        if v == 0:
            v = await p.resume(req, 0)
        assert isinstance(v, Denial) and v.status == 401
        # the URI hangs: the last good keys keep working
        jwks_server.hang.set()
        await asyncio.sleep(0.3)
        req = request(bearer(token(RSA2, "k2", jti="y")))
        assert p.run(req) is None
        req = request(bearer(token(RSA2, "unknown")))
        assert p.run(req) == 0
        t0 = time.monotonic()
        v = await p.resume(req, 0)
        assert isinstance(v, Denial) and v.status == 401
        assert time.monotonic() - t0 < 2.0  # bounded by the fetch timeout

    asyncio.run(scenario())


def test_remote_jwks_never_fetched_is_503(jwks_server):
    jwks_server.hang.set()
    prov = JWTProvider("r", remote_jwks=RemoteJWKS(jwks_server.url, timeout=0.5))

    async def scenario():
        p = pipeline(jwt=JWT((prov,)))
        req = request(bearer(token(RSA, "k1")))
        assert p.run(req) == 0
        v = await p.resume(req, 0)
        assert isinstance(v, Denial) and v.status == 503
        # what the policy's status shows (kgw_l7.problems), until a fetch works
        assert PROBLEMS.view()[("jwks", jwks_server.url)] == "fetch failed: timed out"
        jwks_server.hang.clear()
        jwks_server.doc = jwks(jwk(RSA, "k1"))
        await auth.remote_keys(prov.remote_jwks).refetch()
        assert ("jwks", jwks_server.url) not in PROBLEMS.view()

    asyncio.run(scenario())


def test_pending_marker_is_not_a_verdict():
    assert PENDING is not None and not isinstance(PENDING, Denial)


def test_a_token_from_a_parameter_or_a_cookie_is_removed():
    """Not forwarded: the parameter goes from the query, the cookie from the Cookie fields
    (HTTP/2 sends one field per cookie: they are folded into one, RFC 6265 5.4)."""
    prov = JWTProvider("p", local_jwks=PROVIDER.local_jwks, extract_from=(
        CredentialSource("query", "t"), CredentialSource("cookie", "tok")))
    p = pipeline(jwt=JWT((prov,)))
    tok = token(RSA)
    for _ in range(2):  # the second time from the verified-token cache, edits and all
        req = request(query=f"a=1&t={tok}&b=&c".encode())
        assert p.run(req) is None
        assert req.new_query == b"a=1&b=&c" and req.changes
    for _ in range(2):
        req = request([("cookie", "a=1"), ("cookie", f"tok={tok}"), ("cookie", "b=2; c=3")])
        assert p.run(req) is None
        assert [v for n, v in req.upstream(list(req.headers)) if n == b"cookie"] == [
            b"a=1; b=2; c=3"]
    req = request([("cookie", f"tok={tok}")])
    assert p.run(req) is None
    assert [n for n, _ in req.upstream(list(req.headers))] == []
    kept = pipeline(jwt=JWT((dataclasses.replace(prov, forward=True),)))
    req = request(query=f"t={tok}".encode())
    assert kept.run(req) is None and req.new_query is None and not req.changes
