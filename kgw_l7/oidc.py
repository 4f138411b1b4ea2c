"""OpenID Connect login at the gateway (SecurityPolicy ``oidc``): the authorization code
flow with PKCE (RFC 7636, S256), ``state`` and ``nonce``, for browser traffic.

A request either carries a session (an AES-GCM sealed cookie holding the tokens: any
worker, any replica with the same keys opens it, so there is no server-side session
store), or it is sent to log in: a browser navigation gets a 302 to the provider with a
state cookie holding what the callback needs (state, nonce, PKCE verifier, where to go
back); anything else (an XHR, an API client) gets a 401, since a redirect to a login
page means nothing to it. The callback path (the path of ``redirectURL``) exchanges the
code at the token endpoint, validates the ID token with the provider's JWKS (the JWT
check's key handling: ``kgw_l7.auth.Provider``), seals the session and sends the browser
back. An expired access token is renewed with the refresh token on the request that finds
it expired (the renewed cookie rides on that request's response). The logout path clears
the cookie and, when the provider has an end-session endpoint, goes there.

The provider's discovery document is fetched per worker in the background, kept, and
refetched; while the provider does not answer, requests that need it get 503 and the log
says so once (and once again when it answers). Every call to the provider has a
timeout. The pure parts (sealing, the documents, the URLs) are functions and records
here; the calls are ``OpState``'s and ``OidcCheck.resume``'s.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import os
import secrets
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kgw_l7.auth import (
    CHECKS as AUTH_CHECKS, LRU, PENDING, AuthRequest, Check, Denial, Provider, cookie_value,
    jose_header,
)
from kgw_l7.auth_config import OIDC, JWTProvider, RemoteJWKS

log = logging.getLogger("kgw.l7.oidc")

#: A cookie value longer than this is refused before decoding (browsers keep 4096 bytes
#: per cookie, name and attributes included).
MAX_COOKIE = 4096
#: A login must come back from the provider within this long (the state cookie's life).
STATE_TTL = 600
#: The discovery document is refetched this often, and after a failure this soon.
DISCOVERY_REFRESH = 3600.0
RETRY_INTERVAL = 5.0
#: Largest discovery document or token response read.
MAX_DOCUMENT = 1 << 20
_KEY_ID = 4
_NONCE = 12


# ---------------------------------------------------------------------------------------
# Sealed cookies
# ---------------------------------------------------------------------------------------

class Sealer:
    """Cookie values encrypted and authenticated with AES-256-GCM: key id (4 bytes of the
    key's SHA-256), 12-byte random nonce, ciphertext and tag, base64url. The cookie's
    name is the associated data, so a value moved into another cookie does not open.
    Rotation: the first key seals; any key opens (found by its id, not by trying)."""

    __slots__ = ("keys",)

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise ValueError("no cookie key")
        self.keys = tuple((hashlib.sha256(k).digest()[:_KEY_ID], AESGCM(k)) for k in keys)

    def seal(self, name: bytes, data: dict[str, Any]) -> bytes:
        kid, aead = self.keys[0]
        nonce = os.urandom(_NONCE)
        text = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(kid + nonce + aead.encrypt(nonce, text, name)) \
            .rstrip(b"=")

    def open(self, name: bytes, value: bytes) -> dict[str, Any] | None:
        """The data sealed under ``name``, or None (forged, tampered, another key, too
        large, not base64url)."""
        if len(value) > MAX_COOKIE:
            return None
        try:
            raw = base64.b64decode(value + b"=" * (-len(value) % 4), altchars=b"-_",
                                   validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _KEY_ID + _NONCE + 16:
            return None
        kid = raw[:_KEY_ID]
        for k, aead in self.keys:
            if k == kid:
                try:
                    text = aead.decrypt(raw[_KEY_ID:_KEY_ID + _NONCE], raw[_KEY_ID + _NONCE:],
                                        name)
                    data = json.loads(text)
                except (InvalidTag, ValueError):
                    return None
                return data if isinstance(data, dict) else None
        return None


# ---------------------------------------------------------------------------------------
# The provider's documents (pure)
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Endpoints:
    authorization: str
    token: str
    jwks_uri: str
    end_session: str = ""
    #: token_endpoint_auth_methods_supported (empty: not said).
    auth_methods: tuple[str, ...] = ()


def _is_url(v: Any) -> bool:
    return isinstance(v, str) and v.startswith(("https://", "http://")) and len(v) < 2048


def parse_discovery(body: bytes, cfg: OIDC) -> Endpoints:
    """OpenID Connect Discovery 1.0 section 3 document -> the endpoints kgw uses (the
    policy's own endpoints win). Raises ValueError naming what is wrong."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise ValueError(f"discovery document is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("discovery document is not a JSON object")
    if doc.get("issuer") != cfg.issuer:  # section 4.3: must be identical
        raise ValueError(f"discovery document's issuer {doc.get('issuer')!r} is not "
                         f"{cfg.issuer!r}")
    out: dict[str, str] = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        v = doc.get(name)
        if not isinstance(v, str) or not _is_url(v):
            raise ValueError(f"discovery document's {name} is missing or not an http(s) URL")
        out[name] = v
    end = doc.get("end_session_endpoint")
    methods = doc.get("token_endpoint_auth_methods_supported")
    return Endpoints(cfg.authorization_endpoint or out["authorization_endpoint"],
                     cfg.token_endpoint or out["token_endpoint"], out["jwks_uri"],
                     end if isinstance(end, str) and _is_url(end) else "",
                     tuple(m for m in methods if isinstance(m, str))
                     if isinstance(methods, list) else ())


def parse_tokens(body: bytes, need_id_token: bool) -> dict[str, Any]:
    """A successful token response (RFC 6749 section 5.1, OIDC Core 3.1.3.3). Raises
    ValueError."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError("token response is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
        raise ValueError("token response has no access_token")
    if str(doc.get("token_type", "")).lower() != "bearer":
        raise ValueError(f"token_type {doc.get('token_type')!r} is not Bearer")
    if need_id_token and not isinstance(doc.get("id_token"), str):
        raise ValueError("token response has no id_token")
    return doc


def token_error(body: bytes) -> str:
    """The ``error`` of a refused token request (RFC 6749 section 5.2), for the log."""
    try:
        doc = json.loads(body)
        return str(doc.get("error", "?"))[:64] if isinstance(doc, dict) else "?"
    except ValueError:
        return "?"


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 section 4.2, S256."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()) \
        .rstrip(b"=").decode()


def with_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)


def is_navigation(req: AuthRequest) -> bool:
    """A browser loading a page (worth a redirect to a login page), not a script's call or
    an API client: HTML accepted, not marked XHR, not a non-navigation fetch."""
    accept = req.header(b"accept")
    if accept is None or b"text/html" not in accept.lower():
        return False
    xhr = req.header(b"x-requested-with")
    if xhr is not None and xhr.lower() == b"xmlhttprequest":
        return False
    mode = req.header(b"sec-fetch-mode")
    return mode is None or mode == b"navigate"


def _payload(token: str) -> dict[str, Any]:
    """The claims of an ID token verified when its session was made (it came out of a
    sealed cookie): its middle segment decoded, nothing checked again."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    seg = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


# ---------------------------------------------------------------------------------------
# The provider, as a worker knows it
# ---------------------------------------------------------------------------------------

def http_call(method: str, url: str, headers: dict[str, str], body: bytes | None,
              timeout: float, ca_pem: str) -> tuple[int, bytes]:
    """One blocking HTTP exchange (run in a thread): status and body (bounded)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    ctx = ssl.create_default_context(cadata=ca_pem or None) if url.startswith("https:") \
        else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, resp.read(MAX_DOCUMENT + 1)
    except urllib.error.HTTPError as e:
        return e.code, e.read(MAX_DOCUMENT + 1)


class ProviderDown(Exception):
    """The provider did not answer (connection, timeout, garbage)."""


class OpState:
    """One OpenID Provider in a worker: its endpoints (discovered in the background, the
    last good ones kept), its ID token keys, and whether it answers. Shared by the rules
    naming the same provider, whatever their clients (each call is given its client)."""

    def __init__(self, cfg: OIDC) -> None:
        self.cfg = cfg
        self.endpoints: Endpoints | None = None
        self.keys: Provider | None = None
        self.failing = False
        self.error = ""
        self.first: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background discovery (in a running loop; idempotent)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.task is not None and self.task.get_loop() is loop and not self.task.done():
            return
        self.first = loop.create_future()
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            ok = await self.discover()
            await asyncio.sleep(DISCOVERY_REFRESH if ok else RETRY_INTERVAL)

    async def discover(self) -> bool:
        cfg = self.cfg
        url = cfg.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            status, body = await self.call("GET", url, {"accept": "application/json"}, None)
            if status != 200:
                raise ProviderDown(f"{url}: HTTP {status}")
            if len(body) > MAX_DOCUMENT:
                raise ProviderDown(f"{url}: larger than {MAX_DOCUMENT} bytes")
            try:
                ep = parse_discovery(body, cfg)
            except ValueError as e:
                raise ProviderDown(f"{url}: {e}") from None
        except ProviderDown as e:
            self.down(f"discovery failed: {e}")
            return False
        finally:
            if self.first is not None and not self.first.done():
                self.first.set_result(None)
        if self.keys is None or self.endpoints is None or self.endpoints.jwks_uri != ep.jwks_uri:
            self.keys = Provider(JWTProvider(
                f"oidc {cfg.issuer}", issuer=cfg.issuer,
                remote_jwks=RemoteJWKS(ep.jwks_uri, timeout=cfg.timeout, ca_pem=cfg.ca_pem),
                clock_skew=cfg.clock_skew))
        self.endpoints = ep
        self.up()
        return True

    async def call(self, method: str, url: str, headers: dict[str, str],
                   body: bytes | None) -> tuple[int, bytes]:
        """An exchange with the provider; ProviderDown when it gives no answer in time."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(
                None, http_call, method, url, headers, body, cfg.timeout, cfg.ca_pem),
                cfg.timeout + 1.0)
        except TimeoutError:
            raise ProviderDown(f"{url}: no answer in {cfg.timeout:g}s") from None
        except (OSError, ValueError, urllib.error.URLError) as e:
            raise ProviderDown(f"{url}: {e}") from None

    def down(self, why: str) -> None:
        if not self.failing:
            log.warning("OIDC provider %s: %s; logins get 503 until it answers",
                        self.cfg.issuer, why)
        self.failing = True
        self.error = why

    def up(self) -> None:
        if self.failing:
            log.warning("OIDC provider %s answers again", self.cfg.issuer)
        self.failing = False
        self.error = ""

    async def ready(self) -> Endpoints | None:
        """The endpoints, waiting (bounded) for the first discovery if it is under way."""
        self.start()
        first = self.first
        if self.endpoints is None and first is not None and not first.done():
            try:
                await asyncio.wait_for(asyncio.shield(first), self.cfg.timeout + 2.0)
            except TimeoutError:
                pass
        return self.endpoints

    async def token(self, cfg: OIDC, ep: Endpoints, form: dict[str, str]) -> tuple[int, bytes]:
        """A token request by the client ``cfg`` names, authenticated as it says (RFC 6749
        section 2.3.1)."""
        headers = {"content-type": "application/x-www-form-urlencoded",
                   "accept": "application/json"}
        method = cfg.token_endpoint_auth
        if method == "client_secret_basic" and ep.auth_methods \
                and "client_secret_basic" not in ep.auth_methods \
                and "client_secret_post" in ep.auth_methods:
            method = "client_secret_post"
        if method == "client_secret_post":
            form = {**form, "client_id": cfg.client_id, "client_secret": cfg.client_secret}
        else:
            pair = urllib.parse.quote(cfg.client_id, safe="") + ":" + \
                urllib.parse.quote(cfg.client_secret, safe="")
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            status, body = await self.call("POST", ep.token, headers,
                                           urllib.parse.urlencode(form).encode())
        except ProviderDown as e:
            self.down(str(e))
            raise
        if status >= 500:
            self.down(f"token endpoint: HTTP {status}")
            raise ProviderDown(f"token endpoint: HTTP {status}")
        self.up()
        return status, body

    async def verify_id_token(self, cfg: OIDC, token: str, nonce: str | None
                              ) -> dict[str, Any]:
        """OIDC Core 3.1.3.7: signature by the provider's keys, ``iss``, ``aud`` (the
        client ``cfg`` names), ``exp``, and the login's ``nonce``. Raises ValueError."""
        keys_of = self.keys
        if keys_of is None:
            raise ValueError("no provider keys")
        header = jose_header(token.encode())
        if header is None:
            raise ValueError("malformed ID token")
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in keys_of.algorithms or alg.startswith("HS"):
            raise ValueError(f"ID token algorithm {alg!r} not allowed")
        if not isinstance(kid, (str, type(None))):
            raise ValueError("ID token kid is not a string")
        keys = keys_of.keys_for(kid, alg)
        if not keys and keys_of.remote is not None:
            await keys_of.remote.refetch()
            keys = keys_of.keys_for(kid, alg)
        if not keys:
            raise ValueError(f"no provider key for kid {kid!r}")
        error: Exception | None = None
        for key in keys:
            try:
                claims = pyjwt.decode(token, key, algorithms=[alg], audience=cfg.client_id,
                                      issuer=cfg.issuer, leeway=cfg.clock_skew,
                                      options={"require": ["exp", "iat", "sub"]})
                break
            except pyjwt.InvalidSignatureError as e:
                error = e
            except pyjwt.PyJWTError as e:
                raise ValueError(f"ID token: {e}") from None
        else:
            raise ValueError(f"ID token: {error}")
        if nonce is not None and claims.get("nonce") != nonce:
            raise ValueError("ID token nonce does not match the login's")
        return claims


#: One OpState per provider configuration in the worker (rules share discovery and keys).
_OPS: dict[tuple[str, str, str, float, str], OpState] = {}


def op_state(cfg: OIDC) -> OpState:
    key = (cfg.issuer, cfg.authorization_endpoint, cfg.token_endpoint, cfg.timeout,
           cfg.ca_pem)
    op = _OPS.get(key)
    if op is None:
        op = _OPS[key] = OpState(cfg)
    return op


# ---------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------

class OidcCheck(Check):
    """A session, or the login dance; the callback and logout paths are answered here.

    Without its Secrets (a client secret, a cookie key: the controller reports the policy
    Invalid) every request is refused: a broken login never opens a route."""

    __slots__ = ("cfg", "op", "sealer", "callback", "logout", "session", "attrs",
                 "redirect_uri", "scope", "broken", "opened")
    name = "oidc"

    def __init__(self, cfg: OIDC) -> None:
        self.cfg = cfg
        self.op = op_state(cfg)
        self.broken = "" if cfg.cookie_keys and cfg.client_secret else \
            "no client secret or cookie key (see the policy's status)"
        self.sealer = Sealer(cfg.cookie_keys or (bytes(32),))
        #: Session cookies opened lately -> (session, ID token claims): a browser repeating
        #: its cookie pays a lookup, not a decryption (the expiry is still checked).
        self.opened = LRU()
        url = urllib.parse.urlsplit(cfg.redirect_url)
        self.callback = (url.path or "/").encode()
        self.logout = cfg.logout_path.encode()
        self.session = cfg.session_cookie.encode()
        attrs = b"; Path=/; HttpOnly; SameSite=Lax"
        if url.scheme == "https":
            attrs += b"; Secure"
        if cfg.cookie_domain:
            attrs += b"; Domain=" + cfg.cookie_domain.encode()
        self.attrs = attrs
        self.redirect_uri = cfg.redirect_url
        scopes = list(cfg.scopes)
        if "openid" not in scopes:
            scopes.insert(0, "openid")
        self.scope = " ".join(scopes)

    # -- synchronous part -------------------------------------------------------------

    def check(self, req: AuthRequest) -> Denial | None:
        if self.broken:
            return Denial(403, "oidc: " + self.broken)
        self.op.start()
        path = req.path
        if self.logout and path == self.logout:
            return self._logout(req)
        if path == self.callback:
            req.pending = ("callback", None)
            return PENDING
        raw = cookie_value(req.headers, self.session)
        hit = self.opened.get(raw) if raw else None
        session = hit[0] if hit is not None else self._session(req)
        if session is not None:
            if session.get("exp", 0) > time.time():
                if hit is None:
                    hit = (session, _payload(session["it"]))
                    self.opened.put(raw, hit)
                return self._accept(req, session, hit[1])
            if self.cfg.refresh_token and session.get("rt"):
                req.pending = ("refresh", session)
                return PENDING
        return self._login(req)

    def _session(self, req: AuthRequest) -> dict[str, Any] | None:
        raw = cookie_value(req.headers, self.session)
        if not raw:
            return None
        s = self.sealer.open(self.session, raw)
        if s is None or not isinstance(s.get("at"), str) or not isinstance(s.get("it"), str):
            return None
        return s

    def _cookie(self, name: bytes, value: bytes, max_age: int | None = None) -> tuple[
            bytes, bytes]:
        line = name + b"=" + value + self.attrs
        if max_age is not None:
            line += b"; Max-Age=%d" % max_age
        return b"set-cookie", line

    def _login(self, req: AuthRequest) -> Denial | None:
        if not is_navigation(req):
            return Denial(401, "oidc: no session", [(b"www-authenticate", b'Bearer realm="kgw"')])
        ep = self.op.endpoints
        if ep is None:
            if not self.op.failing and not req.retried:
                req.pending = ("discover", None)
                return PENDING
            return Denial(503, f"oidc: provider {self.cfg.issuer} unavailable ({self.op.error})")
        state = secrets.token_urlsafe(24)
        nonce = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        back = req.path + (b"?" + req.query if req.query else b"")
        name = self._state_name(state)
        sealed = self.sealer.seal(name, {"s": state, "n": nonce, "v": verifier,
                                         "u": back.decode("latin-1"),
                                         "exp": time.time() + STATE_TTL})
        location = with_query(ep.authorization, {
            "response_type": "code", "client_id": self.cfg.client_id,
            "redirect_uri": self.redirect_uri, "scope": self.scope, "state": state,
            "nonce": nonce, "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256"})
        return Denial(302, "oidc: login", [(b"location", location.encode()),
                                           self._cookie(name, sealed, STATE_TTL)], b"")

    def _state_name(self, state: str) -> bytes:
        return (self.cfg.state_cookie + "-" + state[:8]).encode()

    def _accept(self, req: AuthRequest, session: dict[str, Any],
                claims: dict[str, Any] | None = None) -> Denial | None:
        if claims is None:
            claims = _payload(session["it"])
        req.claims = claims
        sub = claims.get("sub")
        req.principal = sub if isinstance(sub, str) else req.principal
        if self.cfg.forward_access_token:
            req.set_header(b"authorization", b"Bearer " + session["at"].encode())
        if self.cfg.forward_id_token_header:
            req.set_header(self.cfg.forward_id_token_header.lower().encode(),
                           session["it"].encode())
        req.drop_cookie(self.session)
        return None

    def _logout(self, req: AuthRequest) -> Denial:
        session = self._session(req)
        clear = self._cookie(self.session, b"", 0)
        ep = self.op.endpoints
        if ep is not None and ep.end_session:
            params = {"client_id": self.cfg.client_id}
            if session is not None:
                params["id_token_hint"] = session["it"]
            return Denial(302, "oidc: logout", [
                (b"location", with_query(ep.end_session, params).encode()), clear], b"")
        return Denial(200, "oidc: logout", [clear], b"logged out\n")

    # -- what waits for the provider --------------------------------------------------

    async def resume(self, req: AuthRequest) -> Denial | None:
        what, session = req.pending
        req.retried = True
        if what == "discover":
            await self.op.ready()
            verdict = self._login(req)
            return Denial(503, "oidc: provider not discovered") if verdict is PENDING \
                else verdict
        ep = await self.op.ready()
        if ep is None:
            return Denial(503, f"oidc: provider {self.cfg.issuer} unavailable "
                               f"({self.op.error})")
        try:
            if what == "callback":
                return await self._callback(req, ep)
            return await self._refresh(req, ep, session)
        except ProviderDown as e:
            return Denial(503, f"oidc: {e}")

    async def _callback(self, req: AuthRequest, ep: Endpoints) -> Denial:
        params = dict(urllib.parse.parse_qsl(req.query.decode("latin-1"),
                                             max_num_fields=32))
        if "error" in params:
            return Denial(401, f"oidc: the provider refused the login: {params['error'][:64]}")
        state, code = params.get("state", ""), params.get("code", "")
        if not state or not code:
            return Denial(401, "oidc: callback without state and code")
        name = self._state_name(state)
        raw = cookie_value(req.headers, name)
        login = self.sealer.open(name, raw) if raw else None
        if login is None or login.get("s") != state:
            return Denial(401, "oidc: callback without a matching login (state)")
        if login.get("exp", 0) < time.time():
            return Denial(401, "oidc: login took too long")
        status, body = await self.op.token(self.cfg, ep, {
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": self.redirect_uri, "code_verifier": login["v"]})
        if status != 200:
            return Denial(401, f"oidc: token endpoint refused the code (HTTP {status} "
                               f"{token_error(body)})")
        try:
            tokens = parse_tokens(body, need_id_token=True)
            await self.op.verify_id_token(self.cfg, tokens["id_token"], login["n"])
        except ValueError as e:
            return Denial(401, f"oidc: {e}")
        sealed = self._seal_session(tokens, None)
        if sealed is None:
            return Denial(503, "oidc: the tokens do not fit in a cookie")
        back = login.get("u")
        if not isinstance(back, str) or not back.startswith("/") or back.startswith("//"):
            back = "/"  # (only a path on this site: never an open redirect)
        return Denial(302, "oidc: logged in", [
            (b"location", back.encode("latin-1")), self._cookie(self.session, sealed[0]),
            self._cookie(name, b"", 0)], b"")

    async def _refresh(self, req: AuthRequest, ep: Endpoints,
                       session: dict[str, Any]) -> Denial | None:
        status, body = await self.op.token(self.cfg, ep, {"grant_type": "refresh_token",
                                                "refresh_token": session["rt"]})
        if status != 200:
            log.info("oidc: refresh refused (HTTP %d %s): logging in again", status,
                     token_error(body))
            return self._login(req)
        try:
            tokens = parse_tokens(body, need_id_token=False)
            if isinstance(tokens.get("id_token"), str):
                await self.op.verify_id_token(self.cfg, tokens["id_token"], None)
        except ValueError as e:
            return Denial(401, f"oidc: refresh: {e}")
        sealed = self._seal_session(tokens, session)
        if sealed is None:
            return Denial(503, "oidc: the tokens do not fit in a cookie")
        req.reply.append(self._cookie(self.session, sealed[0]))
        return self._accept(req, sealed[1])

    def _seal_session(self, tokens: dict[str, Any], old: dict[str, Any] | None
                      ) -> tuple[bytes, dict[str, Any]] | None:
        """The session cookie's value and what it holds (None: too large for a cookie)."""
        ttl = tokens.get("expires_in")
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or ttl <= 0:
            ttl = self.cfg.default_token_ttl
        data = {"at": tokens["access_token"],
                "it": tokens.get("id_token") or (old or {}).get("it"),
                "rt": tokens.get("refresh_token") or (old or {}).get("rt") or "",
                "exp": time.time() + float(ttl)}
        sealed = self.sealer.seal(self.session, data)
        if len(sealed) + len(self.session) + len(self.attrs) > MAX_COOKIE:
            log.warning("oidc: %s: session cookie of %d bytes: browsers keep 4096",
                        self.cfg.issuer, len(sealed))
            return None
        return sealed, data


#: Every check, in the order they run (``kgw_l7.auth.CHECKS`` with the login after the
#: JWT: both authenticate, before authorization reads the claims they establish).
CHECKS = (AUTH_CHECKS[0], ("oidc", OidcCheck), *AUTH_CHECKS[1:])
