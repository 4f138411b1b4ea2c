"""kgw_l7.auth's own reading of a compact JWS (segments, base64url, JSON, cryptography's
verify, the registered claims) against PyJWT's: every token of the table gets the same
verdict (status, detail, challenge) from the check as from the same check with every
token left to PyJWT, as before kgw read tokens itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from kgw_l7 import auth
from kgw_l7.auth import AuthRequest, Denial, b64url_decode, claims_pass, plain_jws, split_jws
from kgw_l7.auth_config import JWT, JWTProvider

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())
EC384 = ec.generate_private_key(ec.SECP384R1())
ED = ed25519.Ed25519PrivateKey.generate()
ISS, AUD = "https://issuer.test", "api"


def now() -> int:
    """The time tokens are made at: when the test runs (not at import, minutes earlier in a
    whole suite)."""
    return int(time.time())

PEM = RSA.public_key().public_bytes(serialization.Encoding.PEM,
                                    serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk(private, kid, alg=None):
    d = json.loads(jwt.get_algorithm_by_name(alg or "RS256").to_jwk(private.public_key()))
    return {**d, "kid": kid, **({"alg": alg} if alg else {})}


JWKS = json.dumps({"keys": [jwk(RSA, "r"), jwk(RSA, "p", "PS256"),
                            jwk(EC, "e", "ES256"), jwk(EC384, "e3", "ES384"),
                            jwk(ED, "d", "EdDSA")]})
PROVIDERS = {
    "one": (JWTProvider("p", issuer=ISS, audiences=(AUD, "other-api"), local_jwks=JWKS),),
    "no-iss-no-aud": (JWTProvider("p", local_jwks=JWKS, clock_skew=0),),
    "two": (JWTProvider("a", issuer="https://a.test", local_jwks=JWKS),
            JWTProvider("b", issuer=ISS, audiences=(AUD,), local_jwks=JWKS)),
}
KIDS = {"RS256": "r", "RS384": "r", "RS512": "r", "PS256": "p", "ES256": "e", "ES384": "e3",
        "EdDSA": "d"}
SIGNERS = {"RS256": RSA, "RS384": RSA, "RS512": RSA, "PS256": RSA, "ES256": EC,
           "ES384": EC384, "EdDSA": ED}


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signed(alg="RS256", headers=None, key=None, **claims) -> bytes:
    payload = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 600, **claims}
    payload = {k: v for k, v in payload.items() if v is not ...}  # (... : left out)
    head = {"kid": KIDS.get(alg, "r"), **(headers or {})}
    return jwt.encode(payload, key or SIGNERS[alg], algorithm=alg, headers=head).encode()


def raw(header, payload, sig=b"c2ln") -> bytes:
    """A token made of these parts, whatever they are (no signature made)."""
    def part(x):
        return x if isinstance(x, bytes) else b64(json.dumps(x).encode())
    return part(header) + b"." + part(payload) + b"." + sig


def swap_last(segment: bytes) -> bytes:
    """``segment`` with its last character's unused bits set (decodes to the same bytes
    leniently, refused as non-canonical)."""
    alphabet = auth._B64URL_ALPHABET
    value = alphabet.index(segment[-1:])
    spare = 0x0F if len(segment) % 4 == 2 else 0x03
    return segment[:-1] + alphabet[value | spare:(value | spare) + 1]


def unaligned(obj: dict) -> bytes:
    """``obj`` as a base64url segment whose length is not a multiple of 4."""
    for n in range(4):
        seg = b64(json.dumps({**obj, "p": "x" * n}).encode())
        if len(seg) % 4:
            return seg
    raise AssertionError


def with_segment(token: bytes, i: int, change) -> bytes:
    parts = token.split(b".")
    parts[i] = change(parts[i])
    return b".".join(parts)


def resigned_hs256(secret: bytes, header=None, **claims) -> bytes:
    """An HS256 token with ``secret`` as the HMAC key, whatever it is (PyJWT refuses to
    make one with a PEM key)."""
    payload = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 600, **claims}
    signing_input = raw({"alg": "HS256", "typ": "JWT", **(header or {})}, payload, b"")
    return signing_input + b64(hmac.new(secret, signing_input[:-1], hashlib.sha256).digest())


def rs256(payload, header=None) -> bytes:
    """An RS256 token signed by RSA, whatever its payload (PyJWT checks some claims when it
    makes one)."""
    signing_input = raw({"alg": "RS256", "kid": "r", **(header or {})}, payload, b"")
    return signing_input + b64(RSA.sign(signing_input[:-1], padding.PKCS1v15(),
                                        hashes.SHA256()))


TOKENS = {
    # accepted, one per algorithm
    **{f"ok {alg}": (lambda alg=alg: signed(alg)) for alg in SIGNERS},
    "ok no kid (every RS256 key tried)": lambda: jwt.encode(
        {"iss": ISS, "aud": AUD, "exp": now() + 600}, RSA, algorithm="RS256").encode(),
    "ok aud list": lambda: signed(aud=["x", AUD]),
    "ok float exp (PyJWT decides)": lambda: signed(exp=now() + 600.5),
    "ok bool iat (PyJWT decides)": lambda: signed(iat=True),
    "ok iat and nbf": lambda: signed(iat=now() - 10, nbf=now() - 10),
    "ok typ and cty headers": lambda: signed(headers={"typ": "at+jwt", "cty": "x"}),
    "ok no exp": lambda: signed(exp=...),
    "ok within skew": lambda: signed(exp=now() - 30),
    # the signature
    "tampered signature": lambda: with_segment(signed(), 2, lambda s: s[:-6] + b"AAAAAA"),
    "tampered payload": lambda: with_segment(signed(), 1, lambda s: b64(json.dumps(
        {"iss": ISS, "aud": AUD, "sub": "mallory", "exp": now() + 600}).encode())),
    "signed by another key": lambda: signed(key=OTHER),
    "empty signature": lambda: with_segment(signed(), 2, lambda s: b""),
    "ES256 signature of the wrong size": lambda: with_segment(
        signed("ES256"), 2, lambda s: b64(base64.urlsafe_b64decode(s + b"==")[:-1])),
    "ES256 signed with the P-384 key's kid": lambda: signed(
        "ES256", headers={"kid": "e3"}, key=EC),
    # algorithm confusion
    "HS256 with the RSA public key as secret": lambda: resigned_hs256(PEM, {"kid": "r"}),
    "HS256 with the JWKS as secret": lambda: resigned_hs256(JWKS.encode()),
    "alg none": lambda: raw({"alg": "none"}, {"iss": ISS, "aud": AUD}, b""),
    "alg None (case)": lambda: raw({"alg": "None", "kid": "r"}, {"iss": ISS}, b""),
    "RS256 header, ES256 key's kid": lambda: signed("RS256", headers={"kid": "e"}),
    "alg missing": lambda: raw({"kid": "r"}, {"iss": ISS}),
    "alg not a string": lambda: raw({"alg": ["RS256"], "kid": "r"}, {"iss": ISS}),
    "kid not a string": lambda: raw({"alg": "RS256", "kid": 7}, {"iss": ISS}),
    "unknown kid": lambda: signed(headers={"kid": "zz"}),
    # segments
    "two segments": lambda: b".".join(signed().split(b".")[:2]),
    "four segments": lambda: signed() + b".x",
    "empty header": lambda: with_segment(signed(), 0, lambda s: b""),
    "empty payload": lambda: with_segment(signed(), 1, lambda s: b""),
    "padded header": lambda: with_segment(signed(), 0, lambda s: s + b"=" * (-len(s) % 4)),
    "padded signature": lambda: with_segment(signed(), 2, lambda s: s + b"=="),
    "non-canonical header": lambda: raw(swap_last(unaligned({"alg": "RS256", "kid": "r"})),
                                        {"iss": ISS}),
    "non-canonical payload": lambda: raw({"alg": "RS256", "kid": "r"},
                                         swap_last(unaligned({"iss": ISS, "aud": AUD}))),
    "non-canonical signature": lambda: with_segment(signed(), 2, swap_last),
    "segment 1 mod 4 long": lambda: with_segment(signed(), 1, lambda s: s + b"A" * (
        (1 - len(s)) % 4)),
    "standard base64 characters": lambda: with_segment(signed(), 2, lambda s: s[:-2] + b"+/"),
    "header not JSON": lambda: raw(b64(b"{alg: RS256}"), {"iss": ISS}),
    "header a JSON list": lambda: raw(["RS256"], {"iss": ISS}),
    "header too long": lambda: raw({"alg": "RS256", "kid": "r", "x": "y" * 800}, {"iss": ISS}),
    "payload not JSON": lambda: raw({"alg": "RS256", "kid": "r"}, b64(b"not json")),
    "payload a JSON list": lambda: raw({"alg": "RS256", "kid": "r"}, [1, 2]),
    "payload deeply nested": lambda: raw({"alg": "RS256", "kid": "r"},
                                         b64(b"[" * 3000 + b"]" * 3000)),
    "payload not UTF-8": lambda: raw({"alg": "RS256", "kid": "r"}, b64(b'{"a":"\xff"}')),
    "crit header": lambda: signed(headers={"crit": ["exp"], "exp": 1}),
    "b64 false header": lambda: raw({"alg": "RS256", "kid": "r", "b64": False,
                                     "crit": ["b64"]}, b""),
    "huge token": lambda: signed(pad="x" * auth.MAX_CREDENTIAL),
    # the claims
    "expired": lambda: signed(exp=now() - 3600),
    "exp not a number": lambda: signed(exp="soon"),
    "exp null": lambda: signed(exp=None),
    "exp a float in the past": lambda: signed(exp=now() - 3600.5),
    "nbf ahead": lambda: signed(nbf=now() + 3600),
    "nbf not a number": lambda: signed(nbf="x"),
    "iat ahead": lambda: signed(iat=now() + 3600),
    "iat not a number": lambda: signed(iat=[1]),
    "wrong issuer": lambda: signed(iss="https://evil.test"),
    "issuer missing": lambda: signed(iss=...),
    "issuer not a string": lambda: rs256({"iss": [ISS], "aud": AUD}),
    "issuer a number": lambda: rs256({"iss": 1, "aud": AUD}),
    "signed payload not JSON": lambda: rs256(b64(b"[1, 2")),
    "signed payload a JSON list": lambda: rs256([ISS, AUD]),
    "wrong audience": lambda: signed(aud="someone-else"),
    "audience missing": lambda: signed(aud=...),
    "audience empty string": lambda: signed(aud=""),
    "audience empty list": lambda: signed(aud=[]),
    "audience list with a number": lambda: signed(aud=[AUD, 3]),
    "audience a number": lambda: signed(aud=3),
    "sub not a string": lambda: signed(sub=42),
    "jti not a string": lambda: signed(jti={"a": 1}),
}


class PyJwtOnly(auth.JwtCheck):
    """The check as it was before kgw read tokens itself: every token to PyJWT."""

    __slots__ = ()

    def _verify(self, token, provider, alg, keys, plain):
        return self._decode(token, provider, alg, keys)


def verdict(v):
    if v is None:
        return None
    assert isinstance(v, Denial), v
    return v.status, v.detail, v.headers, v.body


def request(tok: bytes) -> AuthRequest:
    return AuthRequest(b"GET", b"/", b"", ((b"authorization", b"Bearer " + tok),), b"10.0.0.1")


@pytest.mark.parametrize("providers", list(PROVIDERS))
@pytest.mark.parametrize("case", list(TOKENS))
def test_same_verdict_as_pyjwt(case, providers):
    tok = TOKENS[case]()
    cfg = JWT(PROVIDERS[providers])
    ours, theirs = auth.JwtCheck(cfg), PyJwtOnly(cfg)
    req_ours, req_theirs = request(tok), request(tok)
    v = ours.check(req_ours)
    assert verdict(v) == verdict(theirs.check(req_theirs))
    if v is None:
        assert req_ours.claims == req_theirs.claims
        assert req_ours.principal == req_theirs.principal
        assert req_ours.remove == req_theirs.remove
    if case.startswith("ok") and providers != "no-iss-no-aud":
        assert v is None, v
    if case.startswith("ok") and providers == "one":
        assert req_ours.claims is not None and req_ours.claims.get("iss") == ISS


@pytest.mark.parametrize("case,why", [
    ("tampered signature", "bad signature"), ("tampered payload", "bad signature"),
    ("signed by another key", "bad signature"), ("empty signature", "bad signature"),
    ("ES256 signature of the wrong size", "bad signature"),
    ("HS256 with the RSA public key as secret", "algorithm 'HS256' not allowed"),
    ("HS256 with the JWKS as secret", "algorithm 'HS256' not allowed"),
    ("alg none", "algorithm 'none' not allowed"), ("alg missing", "algorithm None"),
    ("RS256 header, ES256 key's kid", "no key for kid 'e'"),
    ("two segments", "malformed"), ("four segments", "malformed"),
    ("padded header", "malformed"), ("padded signature", "malformed"),
    ("standard base64 characters", "malformed"), ("header not JSON", "malformed"),
    ("header a JSON list", "malformed"), ("header too long", "malformed"),
    ("non-canonical signature", "invalid (Invalid crypto padding)"),
    ("non-canonical payload", "invalid (Invalid payload padding)"),
    ("signed payload not JSON", "invalid (Invalid payload string"),
    ("signed payload a JSON list", "must be a json object"),
    ("payload not JSON", "bad signature"), ("issuer a number", "issuer not allowed"),
    ("crit header", "invalid ("), ("huge token", "too large"),
    ("expired", "expired"), ("nbf ahead", "not yet valid"), ("iat ahead", "not yet valid"),
    ("wrong issuer", "issuer not allowed"), ("issuer missing", 'missing the "iss" claim'),
    ("wrong audience", "audience not allowed"), ("audience list with a number", "audience"),
    ("sub not a string", "Subject must be a string"), ("exp not a number", "exp"),
])
def test_refused_401_for_the_reason(case, why):
    v = auth.JwtCheck(JWT(PROVIDERS["one"])).check(request(TOKENS[case]()))
    assert isinstance(v, Denial) and v.status == 401, v
    assert why in v.detail
    assert dict(v.headers)[b"www-authenticate"].startswith(
        b'Bearer realm="kgw", error="invalid_token"')


def test_hs256_with_an_explicit_secret_is_left_to_pyjwt():
    secret = b"s3cret-s3cret-s3cret-s3cret-s3cr"
    check = auth.JwtCheck(JWT((JWTProvider("h", hmac_secret=secret),)))
    assert check.check(request(resigned_hs256(secret))) is None
    v = check.check(request(resigned_hs256(b"o" * 32)))
    assert isinstance(v, Denial) and "bad signature" in v.detail


@pytest.mark.parametrize("segment", [b"", b"QQ", b"QUI", b"QUJD", b"_-8", b"A" * 101,
                                     b"QR", b"QUJ", b"QUJDR", b"_-9", b"QQ==", b"Q"])
def test_b64url_decode_accepts_what_pyjwt_accepts(segment):
    try:
        theirs = jwt.api_jws.PyJWS._decode_base64url_segment(segment, "x")
    except jwt.DecodeError:
        theirs = None
    if b"=" in segment:
        return  # (split_jws refuses padding before this is asked)
    assert b64url_decode(segment) == theirs


#: Payloads, times as offsets from when the test runs ("now+5": now() + 5).
CLAIMS = [
    {}, {"exp": "now+5"}, {"exp": "now-5"}, {"exp": "now-100"}, {"exp": "now+0.5"},
    {"exp": "1"}, {"exp": None}, {"exp": True}, {"nbf": "now+5"}, {"nbf": "now+100"},
    {"iat": "now+0"}, {"iat": "now+100"}, {"iat": 1.5}, {"iss": ISS}, {"iss": "x"}, {"iss": 1},
    {"iss": ISS, "aud": AUD}, {"iss": ISS, "aud": [AUD]}, {"iss": ISS, "aud": ["x"]},
    {"iss": ISS, "aud": ""}, {"iss": ISS, "aud": []}, {"iss": ISS, "aud": [AUD, None]},
    {"iss": ISS, "aud": {"a": AUD}}, {"iss": ISS, "aud": AUD, "sub": 1},
    {"iss": ISS, "aud": AUD, "jti": "j"}, {"iss": ISS, "aud": AUD, "jti": 2},
]


def at_now(claims: dict) -> dict:
    def value(v):
        if isinstance(v, str) and v.startswith("now"):
            offset = float(v[3:])
            return now() + (int(offset) if offset == int(offset) else offset)
        return v
    return {k: value(v) for k, v in claims.items()}


@pytest.mark.parametrize("claims", CLAIMS, ids=[json.dumps(c) for c in CLAIMS])
@pytest.mark.parametrize("issuer,audience", [(None, None), (ISS, None), (ISS, [AUD, "b"])])
def test_claims_pass_only_when_pyjwt_passes(claims, issuer, audience):
    claims = at_now(claims)
    tok = raw({"alg": "HS256"}, claims, b"")
    try:
        jwt.decode(tok, audience=audience, issuer=issuer, leeway=10, options={
            "verify_signature": False, "verify_exp": True, "verify_nbf": True,
            "verify_iat": True, "verify_aud": audience is not None, "verify_iss": True,
            "verify_sub": True, "verify_jti": True})
        pyjwt_passes = True
    except jwt.PyJWTError:
        pyjwt_passes = False
    if claims_pass(claims, issuer, audience, 10, time.time()):
        assert pyjwt_passes
    elif all(type(claims.get(n, 0)) is int for n in ("exp", "nbf", "iat")) \
            and claims.get("aud") not in ("", []):
        assert not pyjwt_passes  # (not sure only of what is rare)


def test_plain_form_reads_the_signed_bytes():
    tok = signed()
    parts = split_jws(tok)
    assert parts is not None
    claims, signing_input, signature = plain_jws(tok, *parts)
    head, payload, sig = tok.split(b".")
    assert signing_input == head + b"." + payload
    assert signature == base64.urlsafe_b64decode(sig + b"=" * (-len(sig) % 4))
    assert claims == jwt.decode(tok, options={"verify_signature": False})
    assert plain_jws(tok, {**parts[0], "crit": []}, *parts[1:]) is None


# The last accepted token's field value (``LastToken``): a repeated token is matched by
# comparing bytes, never across different credentials.

def claims_of(check, field_value: bytes, name=b"authorization"):
    req = AuthRequest(b"GET", b"/", b"", ((name, field_value),), b"10.0.0.1")
    v = check.check(req)
    return v if v is not None else req.claims


def test_the_last_token_is_matched_by_its_bytes_only():
    check = auth.JwtCheck(JWT(PROVIDERS["one"]))
    alice, bob = signed(sub="alice"), signed(sub="bob")
    assert claims_of(check, b"Bearer " + alice)["sub"] == "alice"
    assert check.last.raw == b"Bearer " + alice
    assert claims_of(check, b"Bearer " + alice)["sub"] == "alice"
    assert claims_of(check, b"Bearer " + bob)["sub"] == "bob"  # not alice's answer
    assert claims_of(check, b"Bearer " + alice)["sub"] == "alice"
    forged = with_segment(alice, 1, lambda s: b64(json.dumps(
        {"iss": ISS, "aud": AUD, "sub": "root", "exp": now() + 600}).encode()))
    v = claims_of(check, b"Bearer " + forged)
    assert isinstance(v, Denial) and "bad signature" in v.detail
    v = claims_of(check, b"Bearer " + alice[:-1])
    assert isinstance(v, Denial)
    assert claims_of(check, b"bearer  " + alice)["sub"] == "alice"  # (same token, the LRU)


def test_the_last_token_expires_with_the_token():
    t0 = now()
    clock = [float(t0)]
    check = auth.JwtCheck(JWT(PROVIDERS["one"]), clock=lambda: clock[0])
    tok = signed(exp=t0 + 10)
    assert claims_of(check, b"Bearer " + tok)["sub"] == "alice"
    first = check.last.verified
    clock[0] += 60 + 5  # within exp + the 60 s skew: still remembered
    assert claims_of(check, b"Bearer " + tok)["sub"] == "alice"
    assert check.last.verified is first
    clock[0] += 10  # past it: verified again (and PyJWT, on the real clock, accepts it)
    assert claims_of(check, b"Bearer " + tok)["sub"] == "alice"
    assert check.last.verified is not first
    clock[0] = t0 + auth.CACHE_TTL + 1000.0
    tok2 = signed(sub="carol")
    assert claims_of(check, b"Bearer " + tok2)["sub"] == "carol"


def test_the_pipeline_asks_the_memo_before_the_check(monkeypatch):
    """A pipeline answers a repeated token from the check's memo (LastToken) without
    calling ``check``; another token, a refused one, or the remembered one once its exp
    passed on the check's clock, goes to ``check`` (verified anew)."""
    t0 = now()
    clock = [float(t0)]
    check = auth.JwtCheck(JWT(PROVIDERS["no-iss-no-aud"]), clock=lambda: clock[0])
    pipeline = auth.AuthPipeline([check])
    calls = []
    original = auth.JwtCheck.check
    monkeypatch.setattr(auth.JwtCheck, "check",
                        lambda self, req: calls.append(1) or original(self, req))

    def run(field_value):
        req = AuthRequest(b"GET", b"/", b"", ((b"authorization", field_value),), b"10.0.0.1")
        v = pipeline.run(req)
        return v if v is not None else req.claims["sub"]

    alice, bob = b"Bearer " + signed(sub="alice", exp=t0 + 30), b"Bearer " + signed(sub="bob")
    assert (run(alice), len(calls)) == ("alice", 1)
    assert (run(alice), len(calls)) == ("alice", 1)  # the memo: no call
    assert (run(bob), len(calls)) == ("bob", 2)
    assert (run(alice), len(calls)) == ("alice", 3)  # (the LRU, then remembered again)
    assert (run(alice), len(calls)) == ("alice", 3)
    forged = alice[:-4] + (b"AAAA" if not alice.endswith(b"AAAA") else b"BBBB")
    assert run(forged).status == 401 and len(calls) == 4
    assert (run(alice), len(calls)) == ("alice", 4)  # (a refusal is not remembered)
    clock[0] = t0 + 31.0  # past exp on the check's clock: the memo does not answer
    first = check.last.verified
    assert (run(alice), len(calls)) == ("alice", 5)  # (verified again: PyJWT's real clock)
    assert check.last.verified is not first


def test_the_last_token_is_not_used_for_another_source_or_a_refusal():
    prov = JWTProvider("p", local_jwks=JWKS, extract_from=(
        auth.CredentialSource("header", "x-token"), auth.CredentialSource("query", "t")))
    check = auth.JwtCheck(JWT((prov,), required_scopes=("read",)))
    ok, no_scope = signed(scope="read"), signed(scope="write")
    assert claims_of(check, ok, b"x-token")["scope"] == "read"
    req = AuthRequest(b"GET", b"/", b"t=" + ok, (), b"10.0.0.1")
    assert check.check(req) is None and req.new_query == b""  # the query source's grant
    assert claims_of(check, ok, b"x-token")["scope"] == "read"
    assert claims_of(check, ok, b"x-token2").status == 401
    assert claims_of(check, no_scope, b"x-token").status == 403
    assert check.last.raw == ok
    assert claims_of(check, no_scope, b"x-token").status == 403  # refusals not remembered


JSON_CASES = [
    b'{"a":1}', b'{"a": [1, 2.5, null, true], "b": {"c": "d"}}', b'{}', b'{"a":1} ', b' {"a":1}',
    b'{"a":1}\n', b'{"a":', b'{"a":1}{', b'{"a":1}x', b'\xef\xbb\xbf{"a":1}', b'{\x00"\x00a\x00',
    '{"a":1}'.encode("utf-16"), '{"a":1}'.encode("utf-16-le"), '{"a":1}'.encode("utf-32"),
    b'{"a":"\xff"}', b'{"a":"\xed\xa0\x80"}', b'{"a":"\\ud800"}', b'{"a":NaN}',
    b'{"a":1e400}', b'{"a":"\x01"}', b'{"a" "b"}', b'{', b'{"a":' + b"[" * 5000 + b"]" * 5000
    + b"}", b"[1]", b'"s"', b"", b"{\xff",
]


@pytest.mark.parametrize("data", JSON_CASES)
def test_json_object_is_json_loads(data):
    def outcome(read):
        try:
            return "ok", repr(read(data))
        except (ValueError, RecursionError) as e:
            return type(e).__name__, str(e)
    assert outcome(auth.json_object) == outcome(json.loads)
