"""kgw_l7.oidc driven directly: the sealed cookies, the provider's documents, and the whole
login dance of one check against a real OpenID Provider (tests/oidc_provider.py, Authlib's
grants) on loopback: redirect, authorize, code exchange with PKCE, ID token validated with
the provider's JWKS, session, refresh, logout, the provider down."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.parse
import urllib.request

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from kgw_l7 import oidc
from kgw_l7.auth import PENDING, AuthRequest, Denial
from kgw_l7.auth_config import OIDC
from kgw_l7.oidc import OidcCheck, Sealer, parse_discovery, parse_tokens, pkce_challenge
from tests.oidc_provider import Provider

KEY1, KEY2 = os.urandom(32), os.urandom(32)
HTML = ("accept", "text/html,application/xhtml+xml")
CALLBACK = "https://app.test/oauth2/callback"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def fetch(url: str) -> tuple[int, dict[str, str]]:
    """One GET to the provider, redirects not followed."""
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}


@pytest.fixture
def op():
    p = Provider(redirect_uris=(CALLBACK,)).start()
    yield p
    p.close()


def config(op: Provider, **kw) -> OIDC:
    base = dict(issuer=op.issuer, client_id="kgw", client_secret="s3cret",
                redirect_url=CALLBACK, cookie_keys=(KEY1,), logout_path="/logout",
                forward_access_token=True, forward_id_token_header="x-id-token",
                scopes=("openid", "email"), timeout=2.0)
    return OIDC(**{**base, **kw})


def request(path: str = "/app", query: str = "", headers=(), cookies: dict | None = None):
    hs = [(n.encode(), v.encode()) for n, v in headers]
    if cookies:
        hs.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    return AuthRequest(b"GET", path.encode(), query.encode(), tuple(hs), b"127.0.0.1")


async def run(check: OidcCheck, req: AuthRequest):
    verdict = check.check(req)
    if verdict is PENDING:
        verdict = await check.resume(req)
    return verdict


def header(d: Denial, name: str) -> list[str]:
    return [v.decode() for n, v in d.headers if n == name.encode()]


def set_cookies(d: Denial) -> dict[str, str]:
    out = {}
    for line in header(d, "set-cookie"):
        pair = line.split(";")[0]
        k, _, v = pair.partition("=")
        out[k] = v
    return out


async def login(check: OidcCheck, op: Provider, path: str = "/app", query: str = "x=1"
                ) -> dict[str, str]:
    """The browser's dance; returns the cookies it ends with."""
    d = await run(check, request(path, query, [HTML]))
    assert isinstance(d, Denial) and d.status == 302, d
    jar = set_cookies(d)
    location = header(d, "location")[0]
    assert location.startswith(op.issuer + "/authorize?")
    status, headers = await asyncio.to_thread(fetch, location)
    assert status == 302, status
    back = urllib.parse.urlsplit(headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    d = await run(check, request(back.path, back.query, [HTML], jar))
    assert isinstance(d, Denial) and d.status == 302, d
    assert header(d, "location") == [f"{path}?{query}" if query else path]
    jar.update(set_cookies(d))
    return {k: v for k, v in jar.items() if v}


def test_sealer_round_trip_rotation_and_forgery():
    old = Sealer((KEY1,))
    sealed = old.seal(b"s", {"a": 1})
    rotated = Sealer((KEY2, KEY1))
    assert rotated.open(b"s", sealed) == {"a": 1}  # an old cookie still opens
    assert Sealer((KEY1,)).open(b"s", rotated.seal(b"s", {"b": 2})) is None  # new key
    assert Sealer((KEY2,)).open(b"s", sealed) is None  # the old key rotated out
    assert old.open(b"other", sealed) is None  # another cookie's name
    flipped = bytearray(base64.urlsafe_b64decode(sealed + b"=" * (-len(sealed) % 4)))
    flipped[-1] ^= 1
    assert old.open(b"s", base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=")) is None
    for junk in (b"", b"%%%", b"abc", b"A" * 5000):
        assert old.open(b"s", junk) is None


def test_documents():
    cfg = OIDC("https://op.test", "c", "s", CALLBACK, (KEY1,))
    doc = {"issuer": "https://op.test", "authorization_endpoint": "https://op.test/a",
           "token_endpoint": "https://op.test/t", "jwks_uri": "https://op.test/k"}
    ep = parse_discovery(json.dumps(doc).encode(), cfg)
    assert (ep.authorization, ep.token, ep.end_session) == ("https://op.test/a",
                                                            "https://op.test/t", "")
    for bad, why in ((b"[", "not JSON"), (b"[]", "not a JSON object"),
                     (json.dumps({**doc, "issuer": "https://evil"}).encode(), "issuer"),
                     (json.dumps({**doc, "jwks_uri": "file:///x"}).encode(), "jwks_uri")):
        with pytest.raises(ValueError, match=why):
            parse_discovery(bad, cfg)
    with pytest.raises(ValueError, match="token_type"):
        parse_tokens(b'{"access_token": "a", "token_type": "mac"}', False)
    with pytest.raises(ValueError, match="id_token"):
        parse_tokens(b'{"access_token": "a", "token_type": "Bearer"}', True)
    # S256 as the provider's side computes it (Authlib's own implementation)
    for verifier in ("a" * 43, "dBjftJeZ4CVP-mJ92K1ZU_KDmxbVoD9w63ZBtmqZL7Y"):
        assert pkce_challenge(verifier) == create_s256_code_challenge(verifier)


async def test_the_login_dance(op):
    check = OidcCheck(config(op))
    # Not a browser navigation: 401, no redirect.
    for headers in ([], [("accept", "application/json")],
                    [HTML, ("x-requested-with", "XMLHttpRequest")]):
        d = await run(check, request(headers=headers))
        assert isinstance(d, Denial) and d.status == 401
    jar = await login(check, op)
    (grant, auth), = op.seen["token"]
    assert (grant, auth) == ("authorization_code", "client_secret_basic")
    sent = op.seen["authorize"][0]
    assert sent["code_challenge_method"] == "S256" and sent["nonce"] and sent["state"]
    assert sent["scope"] == "openid email"

    req = request(headers=[("accept", "application/json")],
                  cookies={**jar, "other": "kept"})
    assert await run(check, req) is None
    assert req.claims["sub"] == "alice" and req.principal == "alice"
    out = dict(req.upstream(list(req.headers)))
    assert out[b"authorization"].startswith(b"Bearer ")
    assert out[b"x-id-token"].count(b".") == 2
    assert out[b"cookie"] == b"other=kept"  # the session cookie stays here

    # A cookie of another key, a tampered one: no session.
    forged = Sealer((KEY2,)).seal(b"kgw-oidc-session", {"at": "x", "it": "y", "exp": 1e12})
    for value in (forged.decode(), jar["kgw-oidc-session"][:-2] + "AA"):
        d = await run(check, request(headers=[HTML], cookies={"kgw-oidc-session": value}))
        assert isinstance(d, Denial) and d.status == 302  # back to the provider

    # The callback again (replayed code, or no state cookie): refused.
    state = op.seen["authorize"][0]["state"]
    d = await run(check, request("/oauth2/callback", f"code=x&state={state}", [HTML]))
    assert isinstance(d, Denial) and d.status == 401


async def test_refresh_then_logout(op):
    op.expires_in = 1
    check = OidcCheck(config(op, token_endpoint_auth="client_secret_post", clock_skew=0))
    jar = await login(check, op)
    first = request(cookies=jar)
    assert await run(check, first) is None and first.reply == []
    await asyncio.sleep(1.2)
    req = request(cookies=jar)
    assert check.check(req) is PENDING  # expired: refreshed on this request
    assert await check.resume(req) is None
    assert [g for g, _ in op.seen["token"]] == ["authorization_code", "refresh_token"]
    assert {a for _, a in op.seen["token"]} == {"client_secret_post"}
    (name, line), = req.reply
    assert name == b"set-cookie" and line.startswith(b"kgw-oidc-session=")
    assert b"HttpOnly" in line and b"SameSite=Lax" in line and b"Secure" in line
    renewed = line.split(b";")[0].split(b"=", 1)[1].decode()
    assert dict(req.upstream([]))[b"authorization"] != \
        dict(first.upstream([]))[b"authorization"]

    d = await run(check, request("/logout", cookies={"kgw-oidc-session": renewed}))
    assert isinstance(d, Denial) and d.status == 302
    assert header(d, "location")[0].startswith(op.issuer + "/logout?")
    assert "id_token_hint=" in header(d, "location")[0]
    assert set_cookies(d) == {"kgw-oidc-session": ""}
    assert "Max-Age=0" in header(d, "set-cookie")[0]


async def test_the_provider_down(op, caplog):
    check = OidcCheck(config(op))
    jar = await login(check, op)
    op.down = True
    op.expires_in = 300
    # A valid session needs no provider.
    assert await run(check, request(cookies=jar)) is None
    # A refresh or a login that needs it: 503, logged once.
    session = check._session(request(cookies=jar))
    expired = check.sealer.seal(b"kgw-oidc-session", {**session, "exp": time.time() - 5})
    for _ in range(3):
        d = await run(check, request(cookies={"kgw-oidc-session": expired.decode()}))
        assert isinstance(d, Denial) and d.status == 503, d
    assert sum("logins get 503" in r.getMessage() for r in caplog.records) == 1
    op.down = False
    d = await run(check, request(cookies={"kgw-oidc-session": expired.decode()}))
    assert d is None
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_discovery_fails_then_503():
    check = OidcCheck(OIDC("http://127.0.0.1:9", "kgw", "s", CALLBACK, (KEY1,), timeout=0.5))
    t0 = time.monotonic()
    d = await run(check, request(headers=[HTML]))
    assert isinstance(d, Denial) and d.status == 503
    assert time.monotonic() - t0 < 5
    assert "discovery" in check.op.error


async def test_without_secrets_every_request_is_refused():
    check = OidcCheck(OIDC("https://op.test", "kgw", "", CALLBACK, ()))
    d = await run(check, request(headers=[HTML]))
    assert isinstance(d, Denial) and d.status == 403


def teardown_module() -> None:
    oidc._OPS.clear()
