"""The per-request auth step: a rule's security sections compiled, at config time, into one
ordered list of checks (``AuthPipeline``) that the exchange runs after routing and before
anything is forwarded.

Every check answers synchronously when it can -- ``None`` (pass: go on), a ``Denial``
(the request is answered with it) -- or ``PENDING`` when it must wait for something
(a JWKS refetch for an unknown ``kid``, a bcrypt hash computed off the event loop, an
external auth service). The exchange then leaves its synchronous path and awaits
``AuthPipeline.resume``, which completes that check and runs the rest. A request no
check stopped carries what the checks want changed upstream (``AuthRequest.set_headers``,
``remove``): claims copied into headers, a token removed.

Checks run in ``ORDER``: authentication first, then authorization, which sees what
authentication established (the JWT's claims). Adding a kind of check is one class here
and one line in ``CHECKS``.

Every failure is a 401, 403 or 503 with a generic body and a ``detail`` for the access
log: never an exception out of a check (``AuthPipeline.run`` turns one into a 503 and
logs it), never a pass.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

import jwt as pyjwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from kgw_l7.auth_config import (
    JWT, APIKeyAuth, Authorization, BasicAuth, ClaimRequirement, CredentialSource,
    JWTProvider, RemoteJWKS,
)
from kgw_l7.config import RulePolicy
from kgw_l7.problems import PROBLEMS

log = logging.getLogger("kgw.l7.auth")

#: A check that must wait (see the module's docstring).
PENDING: Any = object()

#: Credentials longer than this are refused before any parsing (a JWT with a few dozen
#: claims is well under 2 KiB; Envoy's default header limit is 60 KiB for all of them).
MAX_CREDENTIAL = 8192
#: Verified tokens (and basic-auth credentials) remembered per check, least recently used
#: out first: a client that repeats its token pays a dict lookup, not a signature check.
CACHE_SIZE = 1024
#: A verified token is re-verified at least this often (its key may have been removed).
CACHE_TTL = 300.0
#: Largest JWKS document read from a remote URI.
MAX_JWKS = 1 << 20
#: Unknown ``kid``: the remote JWKS is refetched at most this often (a flood of made-up
#: kids costs one fetch per interval, not one per request).
REFETCH_INTERVAL = 2.0
#: A failed remote JWKS fetch is retried after this long (the last good keys are kept).
RETRY_INTERVAL = 10.0
#: bcrypt verifications waiting for or running in a thread; beyond it: 503.
MAX_HASHING = 32

_UNAUTHORIZED = b"unauthorized\n"
_FORBIDDEN = b"forbidden\n"
_UNAVAILABLE = b"authentication unavailable\n"


class Denial:
    """The answer to a request a check refused."""

    __slots__ = ("status", "headers", "body", "detail")

    def __init__(self, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None,
                 body: bytes | None = None) -> None:
        self.status = status
        self.headers = headers or []
        self.body = body if body is not None else (
            _UNAUTHORIZED if status == 401 else _FORBIDDEN if status == 403 else _UNAVAILABLE)
        #: Why, for the access log and the log (never sent to the client).
        self.detail = detail

    def __repr__(self) -> str:
        return f"Denial({self.status}, {self.detail!r})"


class AuthRequest:
    """What the checks see of a request, and what they establish about it."""

    __slots__ = ("method", "path", "query", "headers", "peer", "claims", "principal",
                 "set_headers", "remove", "new_query", "reply", "pending", "retried")

    def __init__(self, method: bytes, path: bytes, query: bytes,
                 headers: tuple[tuple[bytes, bytes], ...], peer: bytes) -> None:
        self.fill(method, path, query, headers, peer)

    def fill(self, method: bytes, path: bytes, query: bytes,
             headers: tuple[tuple[bytes, bytes], ...], peer: bytes) -> None:
        """The request's own fields set, what the checks establish empty (``__init__``,
        and ``new_request`` on an object it allocated itself)."""
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.peer = peer
        #: The verified JWT's payload (None: no JWT was verified).
        self.claims: dict[str, Any] | None = None
        #: Who authentication says the client is (user, client id, ``sub``), for the log.
        self.principal: str | None = None
        #: Upstream header changes: these names removed, then these lines added.
        self.set_headers: list[tuple[bytes, bytes]] = []
        self.remove: set[bytes] = set()
        #: The query the backend gets instead of the client's (a credential taken out of
        #: it); None: the client's.
        self.new_query: bytes | None = None
        #: Header lines added to the response the client gets (a renewed session cookie).
        self.reply: list[tuple[bytes, bytes]] = []
        #: What the pending check needs to finish (its own business).
        self.pending: Any = None
        #: The pending check already waited once (a second PENDING is a denial).
        self.retried = False

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def set_header(self, name: bytes, value: bytes) -> None:
        """``name: value`` to the backend, whatever the client sent under that name."""
        self.remove.add(name)
        self.set_headers.append((name, value))

    def upstream(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """``headers`` with this request's changes applied."""
        if self.remove:
            remove = self.remove
            headers = [h for h in headers if h[0] not in remove]
        return headers + self.set_headers if self.set_headers else headers

    def drop_cookie(self, name: bytes) -> None:
        """The backend gets the client's cookies but ``name`` (all Cookie fields folded
        into one, RFC 6265 section 5.4; none left: no Cookie field)."""
        kept = [part for part in _cookie_pairs(self.upstream(list(self.headers)))
                if part.partition(b"=")[0] != name]
        self.remove.add(b"cookie")
        self.set_headers = [h for h in self.set_headers if h[0] != b"cookie"]
        if kept:
            self.set_headers.append((b"cookie", b"; ".join(kept)))

    def drop_param(self, name: bytes) -> None:
        """The backend gets the query without the parameter ``name``."""
        query = self.new_query if self.new_query is not None else self.query
        self.new_query = b"&".join(p for p in query.split(b"&")
                                   if p and p.partition(b"=")[0] != name)

    @property
    def changes(self) -> bool:
        return bool(self.remove or self.set_headers or self.new_query is not None)

    def head_suffix(self, suffix: bytes) -> bytes | None:
        """``suffix`` (the rule's header lines after the head as received) with this
        request's lines added, for a head forwarded as received minus the removed fields
        (``Exchange.head_as_received``); None when a removed name is one of the suffix's
        own lines (the head is rebuilt then)."""
        if self.remove and suffix:
            lines = b"\r\n" + suffix.lower()
            for name in self.remove:
                if b"\r\n" + name + b":" in lines:
                    return None
        if self.set_headers:
            return suffix + b"".join([b"%s: %s\r\n" % nv for nv in self.set_headers])
        return suffix


class Check:
    """One step of the pipeline."""

    __slots__ = ()
    name = ""

    def check(self, req: AuthRequest) -> Denial | None:
        raise NotImplementedError

    def memo(self) -> LastToken | None:
        """The check's memo of the last credential it accepted, which the pipeline asks
        before calling ``check`` (a C call where a check is a Python call): a match is
        ``check``'s own verdict, a miss goes on to ``check``. None: no memo."""
        return None

    async def resume(self, req: AuthRequest) -> Denial | None:
        """Finish a check that answered PENDING (``req.pending`` says what it waits for)."""
        raise NotImplementedError


def new_request(method: bytes, path: bytes, query: bytes,
                headers: tuple[tuple[bytes, bytes], ...], peer: bytes) -> AuthRequest:
    """``AuthRequest(method, path, query, headers, peer)`` for the exchange, once a
    request: compiled, the object is allocated and filled by C calls, without the type
    call's argument tuple and ``__init__``'s argument parsing (~0.4k instructions)."""
    req = AuthRequest.__new__(AuthRequest)
    req.fill(method, path, query, headers, peer)
    return req


class AuthPipeline:
    """A rule's checks, in order."""

    __slots__ = ("checks", "memos")

    def __init__(self, checks: list[Check]) -> None:
        self.checks = tuple(checks)
        #: each check's memo (Check.memo), or None
        self.memos = tuple(c.memo() for c in checks)

    @classmethod
    def build(cls, policy: RulePolicy | None, table: Any = None) -> AuthPipeline | None:
        """The checks of a rule's policy, in the order of ``table`` (default ``CHECKS``;
        the router passes kgw_l7.oidc.CHECKS), None: no auth section."""
        if policy is None:
            return None
        checks = [make(section) for field, make in table or CHECKS
                  if (section := getattr(policy, field, None)) is not None]
        return cls(checks) if checks else None

    def run(self, req: AuthRequest, start: int = 0) -> Denial | None | int:
        """Run the checks from ``start``: None (all passed), a Denial, or the index of the
        check that is PENDING (finish with ``resume``)."""
        checks = self.checks
        memos = self.memos
        for i in range(start, len(checks)):
            try:
                memo = memos[i]
                if memo is not None and memo.repeated(req, memo.clock()):
                    continue
                verdict = checks[i].check(req)
            except Exception:
                log.exception("auth check %s failed", checks[i].name)
                return Denial(503, f"{checks[i].name}: internal error")
            if verdict is PENDING:
                return i
            if verdict is not None:
                return verdict
        return None

    async def resume(self, req: AuthRequest, index: int) -> Denial | None:
        """Finish the PENDING check at ``index``, then run the rest (awaiting any other)."""
        while True:
            check = self.checks[index]
            try:
                verdict = await check.resume(req)
            except Exception:
                log.exception("auth check %s failed", check.name)
                return Denial(503, f"{check.name}: internal error")
            req.pending = None
            req.retried = False
            if verdict is not None:
                return verdict
            after = self.run(req, index + 1)
            if not isinstance(after, int):
                return after
            index = after


# ---------------------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------------------

def _query_param(query: bytes, name: bytes) -> bytes | None:
    for part in query.split(b"&"):
        k, sep, v = part.partition(b"=")
        if k == name and sep:
            return urllib.parse.unquote_to_bytes(v)
    return None


def cookie_value(headers: tuple[tuple[bytes, bytes], ...], name: bytes) -> bytes | None:
    for n, v in headers:
        if n == b"cookie":
            for part in v.split(b";"):
                k, sep, val = part.strip().partition(b"=")
                if k == name and sep:
                    return val.strip(b'"')
    return None


def _cookie_pairs(headers: Any) -> list[bytes]:
    """The ``name=value`` pairs of every Cookie field, in order."""
    return [p.strip() for n, v in headers if n == b"cookie" for p in v.split(b";")
            if p.strip()]


class _Source:
    """A CredentialSource compiled: ``take(req)`` -> the credential or None."""

    __slots__ = ("kind", "name", "prefix")

    def __init__(self, src: CredentialSource) -> None:
        self.kind = src.kind
        self.name = src.name.lower().encode() if src.kind == "header" else src.name.encode()
        self.prefix = src.prefix.lower().encode()

    def take(self, req: AuthRequest) -> bytes | None:
        if self.kind == "header":
            v = req.header(self.name)
            if v is None:
                return None
            if self.prefix:
                if v[:len(self.prefix)].lower() != self.prefix:
                    return None
                v = v[len(self.prefix):]
            return v.strip()
        if self.kind == "query":
            return _query_param(req.query, self.name) if req.query else None
        return cookie_value(req.headers, self.name)

    def drop(self, req: AuthRequest) -> None:
        """The credential is not forwarded: its header, query parameter or cookie goes."""
        if self.kind == "header":
            req.remove.add(self.name)
        elif self.kind == "query":
            req.drop_param(self.name)
        else:
            req.drop_cookie(self.name)


def _first(sources: tuple[_Source, ...], req: AuthRequest) -> tuple[bytes, _Source] | None:
    for s in sources:
        v = s.take(req)
        if v:
            return v, s
    return None


class LRU:
    """A bounded mapping, least recently used out first."""

    __slots__ = ("data", "size")

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.data: OrderedDict[Any, Any] = OrderedDict()
        self.size = size

    def get(self, key: Any) -> Any:
        v = self.data.get(key)
        if v is not None:
            self.data.move_to_end(key)
        return v

    def put(self, key: Any, value: Any) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        if len(self.data) > self.size:
            self.data.popitem(last=False)

    def pop(self, key: Any) -> None:
        self.data.pop(key, None)


# ---------------------------------------------------------------------------------------
# JWT
# ---------------------------------------------------------------------------------------

#: Algorithms a token may use, and the public key type that verifies each. HS* are added
#: per provider only when it has an explicit secret.
_KEY_TYPES: dict[str, tuple[type, ...]] = {
    "RS256": (rsa.RSAPublicKey,), "RS384": (rsa.RSAPublicKey,), "RS512": (rsa.RSAPublicKey,),
    "PS256": (rsa.RSAPublicKey,), "PS384": (rsa.RSAPublicKey,), "PS512": (rsa.RSAPublicKey,),
    "ES256": (ec.EllipticCurvePublicKey,), "ES384": (ec.EllipticCurvePublicKey,),
    "ES512": (ec.EllipticCurvePublicKey,),
    "EdDSA": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
}
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_HMAC = ("HS256", "HS384", "HS512")


class JwksKey:
    """One usable key of a JWKS."""

    __slots__ = ("kid", "alg", "key")

    def __init__(self, kid: str | None, alg: str | None, key: Any) -> None:
        self.kid = kid
        self.alg = alg
        self.key: Any = key

    def fits(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        key: Any = self.key
        if not isinstance(key, _KEY_TYPES[alg]):
            return False
        curve = _CURVES.get(alg)
        return curve is None or cast(Any, key).curve.name == curve  # (an EC key here)


def parse_jwks(text: str | bytes) -> tuple[list[JwksKey], list[str]]:
    """A JWKS document's usable verification keys, and what was skipped (and why).

    Raises ValueError when the document is not a JWKS at all."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('not a JWKS: no "keys" list')
    keys: list[JwksKey] = []
    skipped: list[str] = []
    for i, jwk in enumerate(doc["keys"]):
        label = f"keys[{i}]"
        if not isinstance(jwk, dict):
            skipped.append(f"{label}: not an object")
            continue
        kid = jwk.get("kid")
        if isinstance(kid, str):
            label += f" (kid {kid!r})"
        else:
            kid = None
        if jwk.get("use", "sig") != "sig":
            skipped.append(f"{label}: use {jwk.get('use')!r}")
            continue
        alg = jwk.get("alg")
        if alg is not None and alg not in _KEY_TYPES:
            skipped.append(f"{label}: unsupported alg {alg!r}")
            continue
        if jwk.get("kty") not in ("RSA", "EC", "OKP"):
            skipped.append(f"{label}: unsupported kty {jwk.get('kty')!r}")
            continue
        if "d" in jwk:
            skipped.append(f"{label}: a private key")
            continue
        try:
            key = pyjwt.PyJWK(jwk).key
        except Exception as e:  # PyJWKError, InvalidKeyError, ValueError from cryptography
            skipped.append(f"{label}: {e}")
            continue
        keys.append(JwksKey(kid, alg, key))
    return keys, skipped


class RemoteKeys:
    """A remote JWKS as a worker knows it: fetched in the background (``Cache-Control:
    max-age`` or the refresh interval, ``ETag`` revalidation), refetched early when a token
    names an unknown key, the last good keys kept while the URI fails."""

    def __init__(self, cfg: RemoteJWKS) -> None:
        self.cfg = cfg
        self.keys: list[JwksKey] = []
        #: A fetch has succeeded at least once.
        self.loaded = False
        #: Bumped whenever the keys change (verified-token caches compare it).
        self.generation = 0
        self.etag: str | None = None
        self.last_attempt = -1e9
        self.inflight: asyncio.Future[float] | None = None
        self.task: asyncio.Task[None] | None = None
        self.reported: set[str] = set()
        self.failing = False
        self.wake: asyncio.Event | None = None

    def start(self) -> None:
        """Start the background refresh (in a running loop; idempotent)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.task is not None and self.task.get_loop() is loop and not self.task.done():
            return
        self.inflight = None  # (a previous loop's, in tests)
        self.wake = asyncio.Event()
        self.task = loop.create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            ttl = await self.fetch()
            try:
                await asyncio.wait_for(self.wake.wait(), ttl)  # type: ignore[union-attr]
            except TimeoutError:
                pass

    def fetch(self) -> asyncio.Future[Any]:
        """One fetch, shared by whoever asks while it runs; resolves to the seconds until
        the next regular one."""
        if self.inflight is None or self.inflight.done():
            self.last_attempt = time.monotonic()
            self.inflight = asyncio.ensure_future(self._fetch())
        return asyncio.shield(self.inflight)

    async def refetch(self) -> None:
        """Fetch now unless one ran less than REFETCH_INTERVAL ago; wait for it (bounded
        by the fetch's own timeout)."""
        self.start()
        running = self.inflight is not None and not self.inflight.done()
        if running or not self.loaded or \
                time.monotonic() - self.last_attempt >= REFETCH_INTERVAL:
            await self.fetch()

    async def _fetch(self) -> float:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        try:
            status, body, headers = await asyncio.wait_for(
                loop.run_in_executor(None, self._get), cfg.timeout)
            if status == 304 and self.loaded:
                ttl = _max_age(headers.get("cache-control", "")) or cfg.refresh_interval
                self.failing = False
                PROBLEMS.ok("jwks", cfg.uri)
                return ttl
            if status != 200:
                raise ValueError(f"HTTP {status}")
            if len(body) > MAX_JWKS:
                raise ValueError(f"document larger than {MAX_JWKS} bytes")
            keys, skipped = parse_jwks(body)
            for s in skipped:
                if s not in self.reported:  # reported once per key
                    self.reported.add(s)
                    log.warning("JWKS %s: key skipped: %s", cfg.uri, s)
            self.keys = keys
            self.loaded = True
            self.generation += 1
            self.etag = headers.get("etag")
            if self.failing:
                log.warning("JWKS %s: fetched again (%d keys)", cfg.uri, len(keys))
            self.failing = False
            PROBLEMS.ok("jwks", cfg.uri)
            ttl = _max_age(headers.get("cache-control", ""))
            return min(ttl, cfg.refresh_interval) if ttl else cfg.refresh_interval
        except Exception as e:
            if not self.failing:
                log.warning("JWKS %s: fetch failed (%s); %s", cfg.uri,
                            "timed out" if isinstance(e, TimeoutError) else e,
                            "keeping the last good keys" if self.loaded else "no keys yet")
            self.failing = True
            PROBLEMS.fail("jwks", cfg.uri, "fetch failed: " + (
                "timed out" if isinstance(e, TimeoutError) else str(e) or type(e).__name__))
            return min(RETRY_INTERVAL, self.cfg.refresh_interval)

    def _get(self) -> tuple[int, bytes, dict[str, str]]:
        """The HTTP GET (in a thread: urllib blocks)."""
        cfg = self.cfg
        req = urllib.request.Request(cfg.uri, headers={"accept": "application/json"})
        if self.etag and self.loaded:
            req.add_header("if-none-match", self.etag)
        ctx = None
        if cfg.uri.startswith("https:"):
            ctx = ssl.create_default_context(cadata=cfg.ca_pem or None)
        try:
            with urllib.request.urlopen(req, timeout=cfg.timeout, context=ctx) as resp:
                body = resp.read(MAX_JWKS + 1)
                return resp.status, body, {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as e:
            return e.code, b"", {k.lower(): v for k, v in e.headers.items()}


def _max_age(cache_control: str) -> float:
    for part in cache_control.split(","):
        k, _, v = part.strip().partition("=")
        if k.lower() == "max-age":
            try:
                return max(1.0, min(float(int(v)), 86400.0))
            except ValueError:
                return 0.0
        if k.lower() in ("no-cache", "no-store"):
            return 1.0
    return 0.0


#: One RemoteKeys per remote JWKS config in the worker: rules sharing a provider share
#: its keys and its fetches.
_REMOTE: dict[RemoteJWKS, RemoteKeys] = {}


def remote_keys(cfg: RemoteJWKS) -> RemoteKeys:
    rk = _REMOTE.get(cfg)
    if rk is None:
        rk = _REMOTE[cfg] = RemoteKeys(cfg)
    rk.start()
    return rk


class Provider:
    """A JWT issuer's keys (local, remote, HMAC) as the checks use them; also the OIDC
    login's ID token keys (kgw_l7.oidc)."""

    __slots__ = ("cfg", "name", "local", "remote", "algorithms", "claim_headers", "audience",
                 "hmac_secret")

    def __init__(self, p: JWTProvider) -> None:
        self.cfg = p
        self.name = p.name
        self.local: list[JwksKey] = []
        if p.local_jwks:
            self.local, skipped = parse_jwks(p.local_jwks)  # (the controller checked it)
            for s in skipped:
                log.warning("JWT provider %s: JWKS key skipped: %s", p.name, s)
        self.remote = remote_keys(p.remote_jwks) if p.remote_jwks is not None else None
        self.hmac_secret = p.hmac_secret
        self.algorithms = set(_KEY_TYPES) | (set(_HMAC) if p.hmac_secret else set())
        self.claim_headers = tuple((c.claim.split("."), c.header.lower().encode())
                                   for c in p.claim_to_headers)
        self.audience = list(p.audiences) or None

    def generation(self) -> int:
        return self.remote.generation if self.remote is not None else 0

    def keys_for(self, kid: str | None, alg: str) -> list[Any]:
        if alg in _HMAC:
            return [self.hmac_secret]
        keys = self.local + self.remote.keys if self.remote is not None else self.local
        return [k.key for k in keys if (kid is None or k.kid == kid) and k.fits(alg)]


def _claim(claims: dict[str, Any], path: list[str]) -> Any:
    v: Any = claims
    for p in path:
        if not isinstance(v, dict) or p not in v:
            return None
        v = v[p]
    return v


def _as_texts(v: Any) -> list[str]:
    items = v if isinstance(v, list) else [v]
    out = []
    for x in items:
        if isinstance(x, bool):
            out.append("true" if x else "false")
        elif isinstance(x, (str, int, float)):
            out.append(str(x))
    return out


def claim_holds(claims: dict[str, Any], req: ClaimRequirement) -> bool:
    v = _claim(claims, req.name.split("."))
    if v is None:
        return False
    if not req.values:
        return True
    have = _as_texts(v)
    return any(x in have for x in req.values)


def token_scopes(claims: dict[str, Any]) -> set[str]:
    """``scope`` (RFC 8693: space-separated) or ``scp`` (a list or a string)."""
    out: set[str] = set()
    for name in ("scope", "scp"):
        v = claims.get(name)
        if isinstance(v, str):
            out.update(v.split())
        elif isinstance(v, list):
            out.update(x for x in v if isinstance(x, str))
    return out


def _claim_text(v: Any) -> str:
    """A claim's value as text: a string as it is, anything else as compact JSON."""
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def _header_value(v: Any) -> bytes | None:
    text = _claim_text(v)
    if any(c in text for c in "\r\n\0"):
        return None
    return text.encode("utf-8", "replace")


def claim_key(claims: dict[str, Any] | None, path: list[str]) -> bytes:
    """The value of the claim at ``path`` in a verified token's ``claims`` as a rate limit's
    key (kgw_l7.ratelimit, key "claim"): the text ``claimToHeaders`` would send; b"" when
    no token was verified or it lacks the claim (those requests share one bucket)."""
    if claims is None:
        return b""
    v = _claim(claims, path)
    return b"" if v is None else _claim_text(v).encode("utf-8", "replace")


def _bearer(error: str | None, description: str | None = None, scope: str | None = None
            ) -> list[tuple[bytes, bytes]]:
    """RFC 6750 section 3: the challenge, with an error code when credentials were sent."""
    parts = ['Bearer realm="kgw"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="%s"' % description.replace('"', "'"))
    if scope:
        parts.append(f'scope="{scope}"')
    return [(b"www-authenticate", ", ".join(parts).encode())]


def _invalid(detail: str, description: str) -> Denial:
    return Denial(401, detail, _bearer("invalid_token", description))


_B64URL = re.compile(rb"[A-Za-z0-9_-]+")
_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Each base64url character's 6-bit value, for the check of a segment's last character.
_B64URL_VALUE = {c: i for i, c in enumerate(_B64URL_ALPHABET)}
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")


#: The C scanner json.loads ends in, with json.loads's settings.
_SCAN_JSON: Callable[[str, int], tuple[Any, int]] = \
    json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def json_object(data: bytes) -> Any:
    """``json.loads(data)``, shorter for what a JOSE header or a JWT payload usually is: a
    JSON object in UTF-8 with nothing around it, read by one call of json's C scanner
    (json.loads's own steps before and after it are Python code, which cost more than the
    scan itself). Anything else goes to json.loads: same value, same errors."""
    if data[:1] == b"{" and data[1:2] != b"\x00":  # (json.detect_encoding: UTF-8)
        try:
            text = data.decode("utf-8", "surrogatepass")  # (as json.loads decodes it)
            value, end = _SCAN_JSON(text, 0)
            if end == len(text):
                return value
        except (StopIteration, ValueError, RecursionError):
            pass
    return json.loads(data)


def split_jws(token: bytes) -> tuple[dict[str, Any], bytes, bytes, bytes] | None:
    """A compact JWS's protected header (RFC 7515 section 7.1) and its three segments, or
    None when ``token`` is not three base64url segments or its header is not a JSON
    object."""
    if token.count(b".") != 2:
        return None
    head, payload, sig = token.split(b".")
    if len(head) > 1024 or not _B64URL.fullmatch(head) or not _B64URL.fullmatch(payload) \
            or (sig and not _B64URL.fullmatch(sig)):
        return None
    try:  # (what base64.urlsafe_b64decode does, without its Python-level steps)
        header = json_object(binascii.a2b_base64(
            head.translate(_URL_TO_STD) + b"=" * (-len(head) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return None
    return (header, head, payload, sig) if isinstance(header, dict) else None


def jose_header(token: bytes) -> dict[str, Any] | None:
    """A compact JWS's protected header, or None (``split_jws``). Read here rather than by
    PyJWT, which would decode and check the whole token a second time."""
    parts = split_jws(token)
    return parts[0] if parts is not None else None


def b64url_decode(segment: bytes) -> bytes | None:
    """What a segment of base64url characters without padding encodes, None unless it is
    the canonical encoding (its length not 1 mod 4, the last character's unused bits
    zero): PyJWT refuses the others, and a token must mean the same bytes here as there."""
    rem = len(segment) & 3
    if rem:
        if rem == 1 or _B64URL_VALUE[segment[-1]] & (0x0F if rem == 2 else 0x03):
            return None
        segment += b"==" if rem == 2 else b"="
    return binascii.a2b_base64(segment.translate(_URL_TO_STD))


def plain_jws(token: bytes, header: dict[str, Any], head: bytes, payload: bytes,
              sig: bytes) -> tuple[dict[str, Any], bytes, bytes] | None:
    """(claims, signing input, signature) of a token in the common form: every segment in
    canonical base64url, a JSON object as payload, no ``crit`` or ``b64`` header (RFC 7515
    section 4.1.11, RFC 7797). None: anything else, which PyJWT then reads, refuses and
    says why (a token is read here, by kgw, only where that reading is PyJWT's)."""
    if "crit" in header or "b64" in header or b64url_decode(head) is None:
        return None
    body = b64url_decode(payload)
    signature = b64url_decode(sig)
    if body is None or signature is None:
        return None
    try:
        claims = json_object(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(claims, dict):
        return None
    return claims, token[:len(head) + 1 + len(payload)], signature


def _pkcs1(hash_alg: hashes.HashAlgorithm) -> Callable[[Any, bytes, bytes], None]:
    pad = padding.PKCS1v15()

    def verify(key: Any, sig: bytes, msg: bytes) -> None:
        key.verify(sig, msg, pad, hash_alg)
    return verify


def _pss(hash_alg: hashes.HashAlgorithm) -> Callable[[Any, bytes, bytes], None]:
    pad = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)

    def verify(key: Any, sig: bytes, msg: bytes) -> None:
        key.verify(sig, msg, pad, hash_alg)
    return verify


def _ecdsa(hash_alg: hashes.HashAlgorithm) -> Callable[[Any, bytes, bytes], None]:
    algorithm = ec.ECDSA(hash_alg)

    def verify(key: Any, sig: bytes, msg: bytes) -> None:
        # RFC 7518 section 3.4: R and S as two fixed-size big-endian integers, not DER.
        size = (key.curve.key_size + 7) // 8
        if len(sig) != 2 * size:
            raise InvalidSignature()
        key.verify(encode_dss_signature(int.from_bytes(sig[:size], "big"),
                                        int.from_bytes(sig[size:], "big")), msg, algorithm)
    return verify


def _eddsa(key: Any, sig: bytes, msg: bytes) -> None:
    key.verify(sig, msg)


#: How a signature of each asymmetric algorithm (RFC 7518 section 3, RFC 8037) is checked:
#: cryptography's verify, which raises InvalidSignature. HS* tokens are left to PyJWT.
_VERIFY: dict[str, Callable[[Any, bytes, bytes], None]] = {
    "RS256": _pkcs1(hashes.SHA256()), "RS384": _pkcs1(hashes.SHA384()),
    "RS512": _pkcs1(hashes.SHA512()),
    "PS256": _pss(hashes.SHA256()), "PS384": _pss(hashes.SHA384()),
    "PS512": _pss(hashes.SHA512()),
    "ES256": _ecdsa(hashes.SHA256()), "ES384": _ecdsa(hashes.SHA384()),
    "ES512": _ecdsa(hashes.SHA512()),
    "EdDSA": _eddsa,
}


def signed_by(alg: str, key: Any, signature: bytes, signing_input: bytes) -> bool:
    try:
        _VERIFY[alg](key, signature, signing_input)
    except InvalidSignature:
        return False
    return True


def claims_pass(claims: dict[str, Any], issuer: str | None, audience: list[str] | None,
                leeway: float, now: float) -> bool:
    """Do the registered claims certainly pass the checks PyJWT makes of them (RFC 7519
    section 4.1: ``iat``/``nbf`` not ahead of ``now`` and ``exp`` not behind it, by
    ``leeway``; ``iss`` equal to ``issuer``; one of ``audience`` in ``aud``; ``sub`` and
    ``jti`` strings)? False means "not certainly": PyJWT then decides, and says why (a
    float time, a ``bool``, an empty ``aud``... are rare enough to leave to it)."""
    for name in ("iat", "nbf"):
        if name in claims:
            v = claims[name]
            if type(v) is not int or v > now + leeway:
                return False
    if "exp" in claims:
        v = claims["exp"]
        if type(v) is not int or v <= now - leeway:
            return False
    if issuer is not None:
        iss = claims.get("iss")
        if type(iss) is not str or iss != issuer:
            return False
    if audience is not None:
        aud = claims.get("aud")
        if type(aud) is str:
            if not aud or aud not in audience:
                return False
        elif type(aud) is list and aud:
            for a in aud:
                if type(a) is not str:
                    return False
            if not any(a in aud for a in audience):
                return False
        else:
            return False
    sub, jti = claims.get("sub", ""), claims.get("jti", "")
    return type(sub) is str and type(jti) is str


def _refusal(e: pyjwt.PyJWTError) -> Denial:
    """The answer to a token PyJWT refused, by why."""
    if isinstance(e, pyjwt.InvalidSignatureError):
        return _invalid(f"jwt: bad signature ({e})", "signature verification failed")
    if isinstance(e, pyjwt.ExpiredSignatureError):
        return _invalid("jwt: expired", "token expired")
    if isinstance(e, pyjwt.ImmatureSignatureError):
        return _invalid("jwt: not yet valid", "token not yet valid")
    if isinstance(e, pyjwt.InvalidAudienceError):
        return _invalid("jwt: audience not allowed", "audience not allowed")
    if isinstance(e, pyjwt.InvalidIssuerError):
        return _invalid("jwt: issuer not allowed", "issuer not allowed")
    return _invalid(f"jwt: invalid ({e})", "invalid token")


class _Grant:
    """What an accepted token does to its request (the same every time for one token,
    provider and source: cached with it, so a repeated token costs a lookup)."""

    __slots__ = ("claims", "principal", "set_headers", "remove", "drop")

    def __init__(self, claims: dict[str, Any], principal: str | None,
                 set_headers: tuple[tuple[bytes, bytes], ...], remove: frozenset[bytes],
                 drop: _Source | None = None) -> None:
        self.claims = claims
        self.principal = principal
        self.set_headers = set_headers
        self.remove = remove
        self.drop = drop  # a token's query parameter or cookie to take out

    def apply(self, req: AuthRequest) -> None:
        req.claims = self.claims
        if self.principal is not None:
            req.principal = self.principal
        if self.set_headers:
            req.set_headers.extend(self.set_headers)
        if self.remove:
            req.remove.update(self.remove)
        if self.drop is not None:
            self.drop.drop(req)


class _Verified:
    __slots__ = ("claims", "provider", "generation", "until", "source", "grant")

    def __init__(self, claims: dict[str, Any], provider: Provider, generation: int,
                 until: float) -> None:
        self.claims = claims
        self.provider = provider
        self.generation = generation
        #: never past the token's ``exp`` (plus the provider's clock skew)
        self.until = until
        #: the source the token came from last, and what accepting it did (None: denied)
        self.source: _Source | None = None
        self.grant: _Grant | None = None


class LastToken:
    """The field value that carried the last token a check accepted, with what accepting
    it did: the next request carrying the same bytes in the same field (a client repeating
    its token) is matched by one comparison, without the prefix cut, the hash and the LRU
    move of the verified-token cache. Equal bytes are the same credential; the entry's
    expiry and key generation are checked as the cache's are."""

    __slots__ = ("field", "clock", "raw", "verified", "grant")

    def __init__(self, field: bytes, clock: Callable[[], float] = time.time) -> None:
        #: The header of the check's first source (b"": its first source is not a
        #: header, and nothing is remembered).
        self.field = field
        #: the check's clock (``now`` for ``repeated`` when the pipeline asks)
        self.clock = clock
        self.raw: bytes | None = None
        self.verified: _Verified | None = None
        self.grant: _Grant | None = None

    def repeated(self, req: AuthRequest, now: float) -> bool:
        """``req`` carries the remembered field value, still valid: its grant is applied."""
        verified, grant = self.verified, self.grant
        if verified is None or grant is None or req.header(self.field) != self.raw:
            return False
        if verified.until > now and verified.generation == verified.provider.generation():
            grant.apply(req)
            return True
        self.verified = self.grant = self.raw = None
        return False

    def remember(self, req: AuthRequest, verified: _Verified, grant: _Grant) -> None:
        field = self.field
        if field:
            self.raw = req.header(field)
            self.verified = verified
            self.grant = grant


class JwtCheck(Check):
    """RFC 7519 tokens verified against the providers' keys (RFC 7515 signatures by PyJWT
    and cryptography); scopes and claims required; claims to headers."""

    __slots__ = ("providers", "sources", "scopes", "claims", "cache", "last", "clock")
    name = "jwt"

    def __init__(self, cfg: JWT, clock: Callable[[], float] = time.time) -> None:
        self.providers = tuple(Provider(p) for p in cfg.providers)
        seen: dict[CredentialSource, _Source] = {}
        for p in cfg.providers:
            for s in p.extract_from:
                seen.setdefault(s, _Source(s))
        self.sources = tuple(seen.values())
        self.scopes = cfg.required_scopes
        self.claims = cfg.required_claims
        self.cache = LRU()
        first = self.sources[0] if self.sources else None
        self.last = LastToken(first.name if first is not None and first.kind == "header"
                              else b"", clock)
        self.clock = clock

    def memo(self) -> LastToken | None:
        return self.last

    def check(self, req: AuthRequest) -> Denial | None:
        now = self.clock()
        if self.last.repeated(req, now):
            return None
        found = _first(self.sources, req)
        if found is None:
            return Denial(401, "jwt: no token", _bearer(None))
        token, source = found
        if len(token) > MAX_CREDENTIAL:
            return _invalid("jwt: token too large", "token too large")
        hit = self.cache.get(token)
        if hit is not None:
            if hit.until > now and hit.generation == hit.provider.generation():
                grant = hit.grant
                if grant is not None and hit.source is source:
                    grant.apply(req)
                    if source is self.sources[0]:
                        self.last.remember(req, hit, grant)
                    return None
                return self._accept(req, hit, source)
            self.cache.pop(token)
        parts = split_jws(token)
        if parts is None:
            return _invalid("jwt: malformed token", "malformed token")
        header = parts[0]
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(kid, (str, type(None))):
            return _invalid("jwt: kid is not a string", "malformed token")
        plain = plain_jws(token, *parts)
        provider = self._provider(token, plain)
        if provider is None:
            return _invalid("jwt: no provider for this issuer", "unknown issuer")
        if not isinstance(alg, str) or alg not in provider.algorithms:
            return _invalid(f"jwt: algorithm {alg!r} not allowed", "algorithm not allowed")
        keys = provider.keys_for(kid, alg)
        if not keys:
            remote = provider.remote
            if remote is not None and not req.retried:
                req.pending = remote
                return PENDING
            if remote is not None and not remote.loaded:
                return Denial(503, f"jwt: provider {provider.name}: no keys (JWKS not fetched)")
            return _invalid(f"jwt: no key for kid {kid!r}, alg {alg}", "unknown key")
        generation = provider.generation()
        claims = self._verify(token, provider, alg, keys, plain)
        if isinstance(claims, Denial):
            return claims
        exp = claims.get("exp")
        until = now + CACHE_TTL
        if isinstance(exp, (int, float)):
            until = min(until, exp + provider.cfg.clock_skew)
        verified = _Verified(claims, provider, generation, until)
        self.cache.put(token, verified)
        return self._accept(req, verified, source)

    def _verify(self, token: bytes, provider: Provider, alg: str, keys: list[Any],
                plain: tuple[dict[str, Any], bytes, bytes] | None) -> dict[str, Any] | Denial:
        """The token's claims once its signature (by one of ``keys``) and registered claims
        are verified, or why it is refused. A token in the plain form is checked here:
        cryptography's verify on the segments ``plain_jws`` decoded, then the claims
        (PyJWT's reading is asked only of claims ``claims_pass`` is not sure of); any
        other by PyJWT."""
        if plain is None or alg not in _VERIFY:
            return self._decode(token, provider, alg, keys)
        claims, signing_input, signature = plain
        for key in keys:  # (without a kid, every key of the algorithm's type is tried)
            if signed_by(alg, key, signature, signing_input):
                break
        else:
            return _invalid("jwt: bad signature (Signature verification failed)",
                            "signature verification failed")
        if not claims_pass(claims, provider.cfg.issuer, provider.audience,
                           provider.cfg.clock_skew, time.time()):
            refused = self._claims_refused(token, provider)
            if refused is not None:
                return refused
        return claims

    @staticmethod
    def _decode(token: bytes, provider: Provider, alg: str, keys: list[Any]
                ) -> dict[str, Any] | Denial:
        """The token read and verified by PyJWT (HS*, and any token not in the plain form
        ``plain_jws`` reads): its claims, or why it is refused."""
        text = token.decode("ascii")  # (split_jws checked it is base64url and dots)
        error = None
        for key in keys:  # (without a kid, every key of the algorithm's type is tried)
            try:
                return pyjwt.decode(
                    text, key, algorithms=[alg], audience=provider.audience,
                    issuer=provider.cfg.issuer, leeway=provider.cfg.clock_skew,
                    options={"verify_aud": provider.audience is not None})
            except pyjwt.InvalidSignatureError as e:
                error = e
            except pyjwt.PyJWTError as e:
                return _refusal(e)
        return _refusal(cast(pyjwt.InvalidSignatureError, error))

    @staticmethod
    def _claims_refused(token: bytes, provider: Provider) -> Denial | None:
        """PyJWT's verdict on the claims of a token whose signature was verified (what
        ``claims_pass`` was not sure of): why they are refused, None if they pass."""
        audience = provider.audience
        try:
            pyjwt.decode(token.decode("ascii"), audience=audience, issuer=provider.cfg.issuer,
                         leeway=provider.cfg.clock_skew, options={
                             "verify_signature": False, "verify_exp": True,
                             "verify_nbf": True, "verify_iat": True,
                             "verify_aud": audience is not None, "verify_iss": True,
                             "verify_sub": True, "verify_jti": True})
        except pyjwt.PyJWTError as e:
            return _refusal(e)
        return None

    async def resume(self, req: AuthRequest) -> Denial | None:
        remote: RemoteKeys = req.pending
        await remote.refetch()
        req.retried = True
        return self.check(req)

    def _provider(self, token: bytes, plain: tuple[dict[str, Any], bytes, bytes] | None
                  ) -> Provider | None:
        """The provider whose ``issuer`` is the token's ``iss`` (not verified yet: it says
        which keys to verify it with); the one provider there is."""
        providers = self.providers
        if len(providers) == 1:
            return providers[0]
        if plain is not None:
            iss = plain[0].get("iss")
        else:
            try:
                iss = pyjwt.decode(token.decode("ascii"),
                                   options={"verify_signature": False}).get("iss")
            except pyjwt.PyJWTError:
                iss = None
        for p in providers:
            if p.cfg.issuer is None or p.cfg.issuer == iss:
                return p
        return None

    def _accept(self, req: AuthRequest, verified: _Verified, source: _Source
                ) -> Denial | None:
        """The required scopes and claims, then the request's changes (remembered with
        the token for its next request from the same source)."""
        claims, provider = verified.claims, verified.provider
        if self.scopes:
            have = token_scopes(claims)
            missing = [s for s in self.scopes if s not in have]
            if missing:
                return Denial(403, "jwt: missing scopes " + " ".join(missing), _bearer(
                    "insufficient_scope", "missing scope", " ".join(self.scopes)))
        for c in self.claims:
            if not claim_holds(claims, c):
                return Denial(403, f"jwt: claim {c.name} not satisfied",
                              _bearer("insufficient_scope", f"claim {c.name} required"))
        sub = claims.get("sub")
        set_headers: list[tuple[bytes, bytes]] = []
        remove: set[bytes] = set()
        for path, header in provider.claim_headers:
            v = _claim(claims, path)
            if v is not None and (value := _header_value(v)) is not None:
                set_headers.append((header, value))
            remove.add(header)  # never the client's own value under that name
        drop: _Source | None = None
        if not provider.cfg.forward:
            if source.kind == "header":
                remove.add(source.name)
            else:
                drop = source  # a query parameter or cookie: edited per request
        grant = _Grant(claims, sub if isinstance(sub, str) else None, tuple(set_headers),
                       frozenset(remove), drop)
        verified.source, verified.grant = source, grant
        grant.apply(req)
        if source is self.sources[0]:
            self.last.remember(req, verified, grant)
        return None


# ---------------------------------------------------------------------------------------
# Basic auth and API keys
# ---------------------------------------------------------------------------------------

def _basic_challenge(realm: str) -> list[tuple[bytes, bytes]]:
    return [(b"www-authenticate", b'Basic realm="%s"' % realm.encode())]


class BasicCheck(Check):
    """RFC 7617 credentials against htpasswd entries. bcrypt hashes are checked in a
    thread (a few milliseconds each, by design); a verified pair is remembered (by its
    SHA-256) so a client pays that once."""

    __slots__ = ("users", "header", "challenge", "verified", "hashing")
    name = "basicAuth"

    def __init__(self, cfg: BasicAuth) -> None:
        self.users = dict(cfg.users)
        self.header = cfg.forward_username_header.lower().encode() \
            if cfg.forward_username_header else None
        self.challenge = _basic_challenge(cfg.realm)
        self.verified = LRU()
        self.hashing = 0

    def check(self, req: AuthRequest) -> Denial | None:
        v = req.header(b"authorization")
        if v is None or v[:6].lower() != b"basic ":
            return Denial(401, "basicAuth: no credentials", self.challenge)
        if len(v) > MAX_CREDENTIAL:
            return Denial(401, "basicAuth: credentials too large", self.challenge)
        try:
            user_b, sep, password = base64.b64decode(v[6:].strip(), validate=True).partition(
                b":")
            user = user_b.decode("utf-8")
        except (binascii.Error, ValueError):
            return Denial(401, "basicAuth: malformed credentials", self.challenge)
        if not sep:
            return Denial(401, "basicAuth: malformed credentials", self.challenge)
        stored = self.users.get(user)
        if stored is None:
            return Denial(401, "basicAuth: unknown user", self.challenge)
        digest = hashlib.sha256(v).digest()
        if self.verified.get(digest) is not None:
            return self._accept(req, user)
        if stored.startswith("{SHA}"):
            sha = base64.b64encode(hashlib.sha1(password).digest()).decode()
            if hmac.compare_digest(sha, stored[5:]):
                self.verified.put(digest, user)
                return self._accept(req, user)
            return Denial(401, "basicAuth: wrong password", self.challenge)
        if self.hashing >= MAX_HASHING:
            return Denial(503, "basicAuth: too many password checks at once")
        req.pending = (user, password, stored.encode(), digest)
        return PENDING

    async def resume(self, req: AuthRequest) -> Denial | None:
        import bcrypt  # (imported only where bcrypt hashes are used)
        user, password, stored, digest = req.pending
        self.hashing += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(
                None, bcrypt.checkpw, password, stored)
        except ValueError:
            ok = False
        finally:
            self.hashing -= 1
        if not ok:
            return Denial(401, "basicAuth: wrong password", self.challenge)
        self.verified.put(digest, user)
        return self._accept(req, user)

    def _accept(self, req: AuthRequest, user: str) -> Denial | None:
        req.principal = user
        if self.header is not None:
            req.set_header(self.header, user.encode())
        return None


class ApiKeyCheck(Check):
    """A key from a header, query parameter or cookie, looked up by its SHA-256 (a dict
    lookup on a digest: no timing difference an attacker can steer by prefix)."""

    __slots__ = ("clients", "sources", "header", "sanitize")
    name = "apiKeyAuth"

    def __init__(self, cfg: APIKeyAuth) -> None:
        self.clients = {hashlib.sha256(key.encode()).digest(): client
                        for client, key in cfg.credentials}
        self.sources = tuple(_Source(s) for s in cfg.extract_from)
        self.header = cfg.forward_client_id_header.lower().encode() \
            if cfg.forward_client_id_header else None
        self.sanitize = cfg.sanitize

    def check(self, req: AuthRequest) -> Denial | None:
        challenge = [(b"www-authenticate", b'ApiKey realm="kgw"')]
        found = _first(self.sources, req)
        if found is None:
            return Denial(401, "apiKeyAuth: no key", challenge)
        key, source = found
        if len(key) > MAX_CREDENTIAL:
            return Denial(401, "apiKeyAuth: key too large", challenge)
        client = self.clients.get(hashlib.sha256(key).digest())
        if client is None:
            return Denial(401, "apiKeyAuth: unknown key", challenge)
        req.principal = client
        if self.header is not None:
            req.set_header(self.header, client.encode())
        if self.sanitize:
            source.drop(req)
        return None


# ---------------------------------------------------------------------------------------
# Authorization rules
# ---------------------------------------------------------------------------------------

class _Rule:
    __slots__ = ("name", "allow", "nets", "claims", "scopes", "headers", "methods", "paths")

    def __init__(self, r: Any) -> None:
        self.name = r.name
        self.allow = r.action == "Allow"
        self.nets = tuple(ipaddress.ip_network(c, strict=False) for c in r.client_cidrs)
        self.claims = r.claims
        self.scopes = r.scopes
        self.headers = tuple((h.name.lower().encode(), tuple(v.encode() for v in h.values))
                             for h in r.headers)
        self.methods = frozenset(m.upper().encode() for m in r.methods)
        self.paths = tuple(p.rstrip("/").encode() for p in r.paths)

    def matches(self, req: AuthRequest, addr: Any) -> bool:
        if self.methods and req.method not in self.methods:
            return False
        if self.paths and not any(req.path == p or req.path.startswith(p + b"/") or not p
                                  for p in self.paths):
            return False
        if self.nets and (addr is None or not any(addr in n for n in self.nets)):
            return False
        for name, values in self.headers:
            got = [v for n, v in req.headers if n == name]
            if not got or (values and not any(v in values for v in got)):
                return False
        if self.claims or self.scopes:
            claims = req.claims
            if claims is None:
                return False
            if not all(claim_holds(claims, c) for c in self.claims):
                return False
            if self.scopes and not set(self.scopes) <= token_scopes(claims):
                return False
        return True


def _address(peer: bytes) -> Any:
    try:
        addr = ipaddress.ip_address(peer.decode())
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


class AuthorizationCheck(Check):
    __slots__ = ("rules", "default_allow", "needs_addr")
    name = "authorization"

    def __init__(self, cfg: Authorization) -> None:
        self.rules = tuple(_Rule(r) for r in cfg.rules)
        self.default_allow = cfg.default_action == "Allow"
        self.needs_addr = any(r.nets for r in self.rules)

    def check(self, req: AuthRequest) -> Denial | None:
        addr = _address(req.peer) if self.needs_addr else None
        for r in self.rules:
            if r.matches(req, addr):
                return None if r.allow else Denial(403, f"authorization: rule {r.name} denies")
        return None if self.default_allow else Denial(403, "authorization: no rule allows")


#: Which section becomes which check, in the order they run: authentication, then
#: authorization (which reads what authentication established).
CHECKS: tuple[tuple[str, Callable[[Any], Check]], ...] = (
    ("jwt", JwtCheck),
    ("basic_auth", BasicCheck),
    ("api_key_auth", ApiKeyCheck),
    ("authorization", AuthorizationCheck),
)
#: (kgw_l7.oidc.CHECKS is this list with the OIDC login, which builds on this module.)
ORDER = tuple(name for name, _ in CHECKS)
