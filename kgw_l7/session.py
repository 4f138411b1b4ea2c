"""Session persistence (Gateway API ``sessionPersistence``, GEP-1619): sans-IO tokens.

A rule with session persistence hands each client a token naming the endpoint that
served it -- in a cookie (``Set-Cookie``, type Cookie) or a response header (type
Header) -- and routes the requests that bring it back to that endpoint while it is one of
the rule's ready endpoints and the session has not expired.

The token must not let a client choose where its requests go beyond what the rule
allows, nor tell it the backends' addresses. It is 44 characters of base64url over::

    version (1) | created (4, Unix seconds) | last use (4) | endpoint id (8) | MAC (16)

The endpoint id is a keyed BLAKE2b of (rule, backend, address, port): it is looked up in
the rule's own table, so an id from another rule, another backend or an endpoint that is
gone (or that the backend's balancer does not use now: ejected, failing its health
check) finds nothing and the request is load balanced as usual (and given a new session,
as the GEP asks when the session's backend is unavailable). The MAC, a keyed BLAKE2b of
the rest, makes forging or extending a token (moving ``created`` or ``last use``)
impossible without the key. Times are wall-clock seconds: tokens travel between worker
processes, and between nodes and restarts when every one has the same key
(``KGW_SESSION_KEY``; without it each ``kgw run`` draws its own, and a session moving to
another node or a restarted one starts afresh on whichever endpoint it is sent to).

``absoluteTimeout`` bounds the session from its creation; ``idleTimeout`` from its last
use, so with an idle timeout every response carries a renewed token (at most one per
second: times are whole seconds). ``cookieConfig.lifetimeType`` Permanent gives the
cookie a Max-Age of what is left of the absolute timeout; Session (the default) gives it
none, so the browser drops it when it closes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import struct
from typing import Any

from kgw_l7.config import SessionPersistence

#: The environment variable holding the key (any string; hashed to 32 bytes).
KEY_ENV = "KGW_SESSION_KEY"
#: Default cookie or header name when ``sessionName`` is not set.
DEFAULT_NAME = "kgw-session"

_VERSION = 1
_BODY = struct.Struct("!BII8s")  # version, created, last use, endpoint id
_MAC_SIZE = 16
_RAW_SIZE = _BODY.size + _MAC_SIZE  # 33 bytes
TOKEN_SIZE = 44  # base64url of 33 bytes, unpadded


def key_from_env() -> bytes:
    """The key workers share (set by the L7 plane for its workers); a random one when
    the variable is absent (a process on its own: tests, ``kgw_l7`` run by hand)."""
    value = os.environ.get(KEY_ENV)
    if not value:
        return secrets.token_bytes(32)
    return hashlib.sha256(value.encode()).digest()


def endpoint_id(key: bytes, rule: str, backend: str, address: str, port: int) -> bytes:
    data = b"\0".join((rule.encode(), backend.encode(), address.encode(), b"%d" % port))
    return hashlib.blake2b(data, key=key, digest_size=8, person=b"kgw-ep").digest()


def encode(key: bytes, created: int, last: int, eid: bytes) -> bytes:
    body = _BODY.pack(_VERSION, created, last, eid)
    mac = hashlib.blake2b(body, key=key, digest_size=_MAC_SIZE, person=b"kgw-mac").digest()
    return base64.urlsafe_b64encode(body + mac).rstrip(b"=")


def decode(key: bytes, token: bytes) -> tuple[int, int, bytes] | None:
    """(created, last use, endpoint id) of a genuine token; None for anything else."""
    if len(token) != TOKEN_SIZE:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + b"=")
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _RAW_SIZE:
        return None
    body = raw[:_BODY.size]
    mac = hashlib.blake2b(body, key=key, digest_size=_MAC_SIZE, person=b"kgw-mac").digest()
    if not hmac.compare_digest(mac, raw[_BODY.size:]):
        return None
    version, created, last, eid = _BODY.unpack(body)
    if version != _VERSION:
        return None
    return created, last, eid


def cookie_value(headers: tuple[tuple[bytes, bytes], ...], name: bytes) -> bytes | None:
    """The value of cookie ``name`` in the request's Cookie fields (HTTP/2 may split them
    in several), or None."""
    for n, v in headers:
        if n != b"cookie" or name not in v:
            continue
        for pair in v.split(b";"):
            k, eq, value = pair.strip().partition(b"=")
            if eq and k == name:
                return value.strip(b'"')
    return None


class Session:
    """The session a request brought: its endpoint and its times (wall-clock seconds)."""

    __slots__ = ("backend", "endpoint", "created", "last")

    def __init__(self, backend: Any, endpoint: tuple[str, int], created: int,
                 last: int) -> None:
        self.backend = backend
        self.endpoint = endpoint
        self.created = created
        self.last = last


class SessionPolicy:
    """One rule's session persistence, compiled: its endpoint table and token rules.

    ``backends`` are the rule's compiled backends (``kgw_l7.router.CompiledBackend``:
    ``name``, ``endpoints`` and ``usable(endpoint)``, false for an endpoint its balancer
    has ejected or found unhealthy); the policy only reads them.
    """

    __slots__ = ("key", "rule", "name", "cookie", "header", "absolute", "idle", "permanent",
                 "_ids", "_by_id")

    def __init__(self, sp: SessionPersistence, rule: str, backends: tuple[Any, ...],
                 key: bytes) -> None:
        self.key = key
        self.rule = rule
        self.name = (sp.name or DEFAULT_NAME).encode()
        self.cookie = sp.type == "Cookie"
        #: The request field read back for type Header (lower case, as parsed).
        self.header = self.name.lower()
        self.absolute = sp.absolute_timeout
        self.idle = sp.idle_timeout
        self.permanent = sp.permanent
        self._ids: dict[tuple[Any, tuple[str, int]], bytes] = {}
        self._by_id: dict[bytes, tuple[Any, tuple[str, int]]] = {}
        for b in backends:
            for ep in b.endpoints:
                eid = endpoint_id(key, rule, b.name, ep[0], ep[1])
                self._ids[(b, ep)] = eid
                self._by_id[eid] = (b, ep)

    def find(self, headers: tuple[tuple[bytes, bytes], ...], now: float) -> Session | None:
        """The live session the request carries: a genuine token, not expired, whose
        endpoint is still one of the rule's. None otherwise (balance as usual)."""
        if self.cookie:
            token = cookie_value(headers, self.name)
        else:
            token = None
            for n, v in headers:
                if n == self.header:
                    token = v.strip()
                    break
        if token is None:
            return None
        got = decode(self.key, token)
        if got is None:
            return None
        created, last, eid = got
        if not self.alive(created, last, now):
            return None
        target = self._by_id.get(eid)
        if target is None or not target[0].usable(target[1]):
            return None  # (gone, or ejected / failing its health check: balanced anew)
        return Session(target[0], target[1], created, last)

    def alive(self, created: int, last: int, now: float) -> bool:
        t = int(now)
        if self.absolute is not None and t - created >= self.absolute:
            return False
        if self.idle is not None and t - last >= self.idle:
            return False
        return created <= t + 1  # (a token from the future: another node's clock skew)

    def response_header(self, session: Session | None, backend: Any,
                        endpoint: tuple[str, int], path: bytes, now: float
                        ) -> tuple[bytes, bytes] | None:
        """The field that gives the client its (new or renewed) token after ``endpoint``
        of ``backend`` served it; None when the token it brought stays good as it is.
        ``path`` is the cookie's Path (the route's path match)."""
        t = int(now)
        if session is not None and session.endpoint == endpoint \
                and session.backend is backend:
            if self.idle is None or session.last >= t:
                return None
            created = session.created
        else:
            created = t
        eid = self._ids.get((backend, endpoint))
        if eid is None:
            return None  # (not one of the rule's endpoints: a mirror, a stale pick)
        token = encode(self.key, created, t, eid)
        if not self.cookie:
            return self.header, token  # (lower case: what HTTP/2 requires)
        value = self.name + b"=" + token + b"; Path=" + path + b"; HttpOnly"
        if self.permanent and self.absolute is not None:
            value += b"; Max-Age=%d" % max(0, int(self.absolute) - (t - created))
        return b"set-cookie", value
