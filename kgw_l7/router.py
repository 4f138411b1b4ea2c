"""The router: an ``L7Config`` compiled once into lookup tables and prebuilt operations.

Compilation happens in the worker when a config arrives; the hot path then does dict
lookups, a short loop over precompiled matchers, and applies prebuilt header operations.
Everything is bytes on the hot path (config strings are encoded once here).

Compiled virtual hosts and rules are cached by their (frozen, hashable) config records, so
a new config that changes one route reuses every other compiled piece and the weighted
backends' round-robin state.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import random
import re
from typing import Any
from collections.abc import Callable
from urllib.parse import parse_qsl

from kgw_l7.balance import Balancer, HealthBook, KeySource
from kgw_l7.breaker import Breaker
from kgw_l7.auth import AuthPipeline
from kgw_l7.oidc import CHECKS as AUTH_CHECKS
from kgw_l7.config import (
    CORS, HTTP2_PROTOCOLS, Backend, Filters, HeaderModifier, L7Config, Listener, Redirect,
    Route, Rule, RulePolicy, URLRewrite, VirtualHost, with_rule_policy,
)
from kgw_l7.globallimit import GlobalLimit
from kgw_l7.ratelimit import LocalLimit
from kgw_l7.extauth import Settings as ExtAuthSettings
from kgw_l7.regex import compile_bytes, compile_text
from kgw_l7.session import SessionPolicy, key_from_env

log = logging.getLogger("kgw.l7.router")

DEFAULT_PORTS = {b"http": 80, b"https": 443}


def _b(s: str) -> bytes:
    return s.encode("latin-1")


# -- header operations ------------------------------------------------------------------

class HeaderOps:
    """A HeaderModifier as prebuilt operations: drop names, then append (name, value)s.

    Gateway API order is set (overwrite), add (append), remove; folding them into one
    filter pass plus one extend gives the same result.
    """

    __slots__ = ("drop", "append")

    def __init__(self, mod: HeaderModifier) -> None:
        remove = {_b(n).lower() for n in mod.remove}
        sets = [(_b(n).lower(), _b(v)) for n, v in mod.set]
        adds = [(_b(n).lower(), _b(v)) for n, v in mod.add]
        self.drop = frozenset(remove | {n for n, _ in sets})
        # A later "set" of the same name wins over an earlier one.
        last_set: dict[bytes, bytes] = {}
        for n, v in sets:
            last_set[n] = v
        self.append = tuple([(n, v) for n, v in last_set.items() if n not in remove]
                            + [(n, v) for n, v in adds if n not in remove])

    def apply(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        drop = self.drop
        if drop:
            headers = [h for h in headers if h[0] not in drop]
        if self.append:
            headers.extend(self.append)
        return headers


def _ops(mod: HeaderModifier | None) -> HeaderOps | None:
    if mod is None or not (mod.set or mod.add or mod.remove):
        return None
    return HeaderOps(mod)


# -- path rewriting ---------------------------------------------------------------------

def replace_prefix(path: bytes, prefix: bytes, replacement: bytes) -> bytes:
    """Gateway API ReplacePrefixMatch: swap the matched prefix, keep the rest.

    Trailing slashes of the prefix and the replacement are not significant:
    prefix /foo, replacement /bar: /foo/x -> /bar/x, /foo -> /bar, /foo/ -> /bar/;
    replacement /: /foo/x -> /x, /foo -> /.
    """
    p = prefix.rstrip(b"/")
    rest = path[len(p):]
    result = replacement.rstrip(b"/") + rest
    return result or b"/"


class PathAction:
    """A compiled PathModifier: full replacement or prefix replacement."""

    __slots__ = ("full", "value")

    def __init__(self, kind: str, value: str) -> None:
        self.full = kind == "ReplaceFullPath"
        self.value = _b(value)

    def apply(self, path: bytes, matched_prefix: bytes | None) -> bytes:
        if self.full:
            return self.value
        if matched_prefix is None:
            return path  # ReplacePrefixMatch needs a PathPrefix match; the producer checks
        return replace_prefix(path, matched_prefix, self.value)


# -- redirects --------------------------------------------------------------------------

class RedirectAction:
    __slots__ = ("scheme", "hostname", "port", "path", "status")

    def __init__(self, r: Redirect) -> None:
        self.scheme = _b(r.scheme).lower() if r.scheme else None
        self.hostname = _b(r.hostname) if r.hostname else None
        self.port = r.port
        self.path = PathAction(r.path.type, r.path.value) if r.path else None
        self.status = r.status_code

    def location(self, scheme: bytes, host: bytes, listener_port: int, path: bytes,
                 query: bytes, matched_prefix: bytes | None) -> bytes:
        """The Location value. Gateway API port rules: an explicit port wins; with a
        scheme set, that scheme's well-known port; otherwise the listener's port. A port
        that is the scheme's default is left out."""
        out_scheme = self.scheme or scheme
        if self.port is not None:
            port = self.port
        elif self.scheme is not None:
            port = DEFAULT_PORTS.get(self.scheme, listener_port)
        else:
            port = listener_port
        out_host = self.hostname or host
        if b":" in out_host and not out_host.startswith(b"["):
            out_host = b"[" + out_host + b"]"  # IPv6 literal
        if port != DEFAULT_PORTS.get(out_scheme):
            out_host = b"%s:%d" % (out_host, port)
        if self.path is not None:
            path = self.path.apply(path, matched_prefix)
        if query:
            path = path + b"?" + query
        return b"%s://%s%s" % (out_scheme, out_host, path)


# -- CORS -------------------------------------------------------------------------------

class CorsPolicy:
    """HTTPCORSFilter: preflights are answered by the proxy (with CORS headers only when
    the Origin is allowed); other requests from an allowed Origin get the allow-origin
    (and credentials/expose) headers added to the backend's response, requests from
    other origins pass through untouched."""

    __slots__ = ("any_origin", "exact", "patterns", "methods", "any_method", "headers",
                 "any_header", "expose", "credentials", "max_age")

    def __init__(self, c: CORS) -> None:
        self.any_origin = "*" in c.allow_origins
        self.exact = frozenset(_b(o).lower() for o in c.allow_origins if "*" not in o)
        self.patterns = tuple(
            re.compile(b".*".join(re.escape(_b(part).lower()) for part in o.split("*")),
                       re.DOTALL)
            for o in c.allow_origins if "*" in o and o != "*")
        self.any_method = "*" in c.allow_methods
        self.methods = b", ".join(_b(m) for m in c.allow_methods if m != "*")
        self.any_header = "*" in c.allow_headers
        self.headers = b", ".join(_b(h) for h in c.allow_headers if h != "*")
        self.expose = b", ".join(_b(h) for h in c.expose_headers)
        self.credentials = c.allow_credentials
        self.max_age = b"%d" % c.max_age

    def allows(self, origin: bytes) -> bool:
        if self.any_origin:
            return True
        o = origin.lower()
        if o in self.exact:
            return True
        return any(p.fullmatch(o) for p in self.patterns)

    def preflight_headers(self, origin: bytes, req_method: bytes,
                          req_headers: bytes | None) -> list[tuple[bytes, bytes]]:
        out = [(b"access-control-allow-origin", origin)]
        methods = req_method if self.any_method else self.methods
        if methods:
            out.append((b"access-control-allow-methods", methods))
        hdrs = (req_headers or b"") if self.any_header else self.headers
        if hdrs:
            out.append((b"access-control-allow-headers", hdrs))
        if self.expose:
            out.append((b"access-control-expose-headers", self.expose))
        out.append((b"access-control-max-age", self.max_age))
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        out.append((b"vary", b"Origin"))
        return out

    def response_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        out = [(b"access-control-allow-origin", origin)]
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        if self.expose:
            out.append((b"access-control-expose-headers", self.expose))
        return out


# -- rules and backends -----------------------------------------------------------------

class CompiledFilters:
    __slots__ = ("req_ops", "resp_ops", "redirect", "rewrite_host", "rewrite_path",
                 "mirrors", "cors", "ext_auth")

    def __init__(self, f: Filters | None, compile_backend: Callable[[Backend], CompiledBackend]
                 ) -> None:
        f = f or Filters()
        self.req_ops = _ops(f.request_headers)
        self.resp_ops = _ops(f.response_headers)
        self.redirect = RedirectAction(f.redirect) if f.redirect else None
        rw: URLRewrite | None = f.rewrite
        self.rewrite_host = _b(rw.hostname) if rw and rw.hostname else None
        self.rewrite_path = PathAction(rw.path.type, rw.path.value) if rw and rw.path else None
        self.mirrors = tuple((compile_backend(m.backend), m.percent) for m in f.mirrors)
        self.cors = CorsPolicy(f.cors) if f.cors else None
        #: External authorization asked before forwarding (kgw_l7.extauth), or None.
        self.ext_auth = ExtAuthSettings(f.ext_auth, compile_backend(f.ext_auth.backend)) \
            if f.ext_auth else None


class CompiledBackend:
    """A weighted destination: its endpoints and its own filters.

    Endpoint choice: round robin over every endpoint (``_rr``) for a backend with no
    resilience policy, the common case kept at its cost; a ``kgw_l7.balance.Balancer``
    (``balancer``) for one with a load balancer, outlier detection or active health
    checks. ``keys`` says where its consistent-hash key comes from (None: no hash).
    """

    __slots__ = ("name", "weight", "endpoints", "protocol", "tls", "error_status", "req_ops",
                 "resp_ops", "_rr", "record", "filters", "h2", "balancer", "breaker", "keys",
                 "fast")

    def __init__(self, b: Backend,
                 compile_backend: Callable[[Backend], CompiledBackend] | None = None,
                 book: HealthBook | None = None, workers: int = 1) -> None:
        self.record = b
        self.name = b.name
        self.weight = b.weight
        self.endpoints = tuple((e.address, e.port) for e in b.endpoints)
        self.protocol = b.protocol
        #: Spoken to in HTTP/2 (config.HTTP2_PROTOCOLS): the one flag ``Pool`` reads to
        #: choose the protocol.
        self.h2 = b.protocol in HTTP2_PROTOCOLS
        self.tls = b.tls
        self.error_status = b.error_status
        f = b.filters or Filters()
        self.req_ops = _ops(f.request_headers)
        self.resp_ops = _ops(f.response_headers)
        #: BackendRef-level filters beyond header modifiers (redirect, rewrite, mirrors),
        #: None when there are none (the common case).
        self.filters: CompiledFilters | None = None
        if f.redirect or f.rewrite or f.mirrors:
            self.filters = CompiledFilters(f, compile_backend or CompiledBackend)
        self._rr = itertools.cycle(range(len(self.endpoints))) if self.endpoints else None
        self.balancer: Balancer | None = None
        if b.load_balancer is not None or b.outlier_detection is not None \
                or b.health_check is not None:
            self.balancer = Balancer(b.name, self.endpoints, b.load_balancer,
                                     b.outlier_detection, book or HealthBook())
        self.keys: KeySource | None = self.balancer.keys if self.balancer is not None \
            else None
        self.breaker = Breaker(b.circuit_breaker, workers) \
            if b.circuit_breaker is not None else None
        #: No try of it needs reporting (kgw_l7.exchange's fast path may serve it).
        self.fast = self.breaker is None and (self.balancer is None or
                                              not self.balancer.tracks)

    def pick(self, key: bytes | None = None) -> tuple[str, int] | None:
        """The next endpoint (``key``: the request's consistent-hash key, if any), or
        None when none is ready or usable."""
        bal = self.balancer
        if bal is not None:
            return bal.pick(key)
        if self._rr is None:
            return None
        return self.endpoints[next(self._rr)]

    def usable(self, endpoint: tuple[str, int]) -> bool:
        """May ``endpoint`` be chosen now (configured, and not held back by a health
        check or an ejection)?"""
        bal = self.balancer
        if bal is not None:
            return bal.usable(endpoint)
        return endpoint in self.endpoints

    def pick_untried(self, tried: list[tuple[str, int]],
                     key: bytes | None = None) -> tuple[str, int] | None:
        """For a retry: the next endpoint that this request has not tried yet, if there
        is one (Envoy's previous_hosts retry predicate); else the next one."""
        bal = self.balancer
        if bal is not None:
            return bal.pick_untried(tried, key)
        first = self.pick()
        if first is None or first not in tried:
            return first
        for _ in range(len(self.endpoints) - 1):
            endpoint = self.pick()
            if endpoint not in tried:
                return endpoint
        return first


#: Longest weighted round-robin cycle precomputed per rule.
MAX_SCHEDULE = 1000


def smooth_schedule(backends: list[CompiledBackend]) -> tuple[CompiledBackend, ...] | None:
    """nginx's smooth weighted round robin, unrolled over one cycle (weights reduced by
    their gcd). None when the cycle would be longer than MAX_SCHEDULE."""
    weights = [b.weight for b in backends]
    g = 0
    for w in weights:
        g = math.gcd(g, w)
    weights = [w // g for w in weights]
    total = sum(weights)
    if total > MAX_SCHEDULE:
        return None
    current = [0] * len(weights)
    out = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        out.append(backends[best])
    return tuple(out)


class CompiledPolicy:
    """A rule's kgw policy (``config.RulePolicy``) as the exchange checks it per request
    (``Exchange.police``); 0 means no limit."""

    __slots__ = ("max_body_size", "max_headers", "local_limit", "global_limit")

    def __init__(self, p: RulePolicy) -> None:
        limits = p.request_limits
        self.max_body_size = (limits.max_body_size or 0) if limits is not None else 0
        self.max_headers = (limits.max_headers or 0) if limits is not None else 0
        rl = p.rate_limit
        self.local_limit = LocalLimit(rl.local) if rl is not None and rl.local is not None \
            else None
        #: Checked in ``Exchange.forward`` (a Redis round trip: off the fast path).
        self.global_limit = GlobalLimit(rl.global_limit) \
            if rl is not None and rl.global_limit is not None else None


class CompiledRule:
    __slots__ = ("name", "route", "gateway", "filters", "backends", "_cum", "_total",
                 "direct_status", "request_timeout", "backend_timeout", "retry_attempts",
                 "retry_codes", "retry_backoff", "needs_body_copy", "resp_ops_for",
                 "_schedule", "_pos", "no_deadline", "head_suffix_for", "default_timeout",
                 "session", "proxy_send", "policy", "auth")

    def __init__(self, r: Rule, compile_backend: Callable[[Backend], CompiledBackend],
                 session_key: bytes = b"") -> None:
        self.name = r.name
        self.route = r.route
        self.gateway = r.gateway
        self.filters = CompiledFilters(r.filters, compile_backend)
        # (the rule's policy: its resilience sections apply to each of its backends)
        live = [compile_backend(with_rule_policy(b, r.policy)) for b in r.backends
                if b.weight > 0]
        self.backends = tuple(live)
        cum = list(itertools.accumulate(b.weight for b in live))
        self._cum = cum
        self._total = cum[-1] if cum else 0
        self._schedule = smooth_schedule(live) if len(live) > 1 else None
        self._pos = random.randrange(len(self._schedule)) if self._schedule else 0
        self.direct_status = r.direct_status
        if self.direct_status is None and not r.backends:
            self.direct_status = 500  # a rule with nowhere to send traffic
        self.request_timeout = r.request_timeout
        self.backend_timeout = r.backend_timeout
        retry = r.retry
        self.retry_attempts = retry.attempts if retry else 0
        self.retry_codes = frozenset(retry.codes) if retry else frozenset()
        self.retry_backoff = retry.backoff if retry else None
        #: No timeout and no retry: eligible for the exchange's synchronous fast path
        #: (precomputed: it is checked for every request).
        #: Backend connections start with a PROXY protocol v2 header naming the client
        #: (TrafficPolicy backendProxyProtocol): one connection per client connection.
        self.proxy_send = r.policy is not None and r.policy.backend_proxy_protocol is not None
        self.no_deadline = (not self.request_timeout and not self.backend_timeout
                            and not self.retry_attempts and not self.proxy_send
                            and self.filters.ext_auth is None)
        #: Neither timeout is set: the worker's default response timeout applies
        #: (WorkerOptions.response_timeout, enforced by its periodic sweep). An explicit
        #: 0 (Gateway API "0s") is no timeout at all.
        self.default_timeout = self.request_timeout is None and self.backend_timeout is None
        self.needs_body_copy = bool(self.retry_attempts or self.filters.mirrors or any(
            b.filters is not None and b.filters.mirrors for b in live))
        #: Response header operations per chosen backend (its own, then the rule's).
        self.resp_ops_for = {
            b: tuple(o for o in (b.resp_ops, self.filters.resp_ops) if o is not None)
            for b in live}
        #: Per chosen backend, when the request's own header block may go upstream as it
        #: came with only lines added: those added lines (the rule's, then the
        #: backend's header "add"s), encoded. Absent when something rewrites the head.
        self.head_suffix_for = {b: s for b in live
                                if (s := _head_suffix(self.filters, b)) is not None}
        #: Session persistence (kgw_l7.session), None for a rule without it.
        self.session = (SessionPolicy(r.session, r.name, self.backends,
                                      session_key or key_from_env())
                        if r.session is not None else None)
        #: None: no kgw policy on the rule (the common case: one check per request).
        self.policy = CompiledPolicy(r.policy) if r.policy is not None else None
        if self.policy is not None and self.policy.global_limit is not None:
            # The global limit's check awaits Redis: the request runs in a task
            # (``Exchange.forward``), never on the fast path.
            self.no_deadline = False
        #: The checks a request goes through before it is forwarded (None: none).
        self.auth = AuthPipeline.build(r.policy, AUTH_CHECKS)

    def pick_backend(self) -> CompiledBackend | None:
        """The next backend by weight; None when every weight is zero (answer 500).

        Small weight sets follow a precomputed smooth weighted round-robin schedule
        (exact shares over every cycle, interleaved as nginx does); very large weight
        sums fall back to a weighted random choice."""
        n = len(self.backends)
        if n == 1:
            return self.backends[0]
        if n == 0:
            return None
        sched = self._schedule
        if sched is not None:
            i = self._pos
            self._pos = i + 1 if i + 1 < len(sched) else 0
            return sched[i]
        return self.backends[bisect.bisect_right(self._cum, random.random() * self._total)]


def _head_suffix(rule: CompiledFilters, backend: CompiledBackend) -> bytes | None:
    """See CompiledRule.head_suffix_for: header lines to append, or None when the request
    head must be rebuilt (a rewrite, or a header "set"/"remove") or must be headers: an
    HTTP/2 backend, or one of its mirrors (they share the exchange's ``OutRequest``)."""
    bf = backend.filters
    if backend.h2 or any(m.h2 for m, _ in rule.mirrors) or (
            bf is not None and any(m.h2 for m, _ in bf.mirrors)):
        return None
    if rule.ext_auth is not None:
        return None  # an allowing answer may change the request's headers
    if rule.rewrite_host is not None or rule.rewrite_path is not None or (
            bf is not None and (bf.rewrite_host is not None or bf.rewrite_path is not None)):
        return None
    lines: list[bytes] = []
    for ops in (rule.req_ops, backend.req_ops):
        if ops is not None:
            if ops.drop:
                return None
            lines.extend(b"%s: %s\r\n" % nv for nv in ops.append)
    return b"".join(lines)


# -- matching ---------------------------------------------------------------------------

_EXACT, _PREFIX, _REGEX = 0, 1, 2

#: Matches nothing: stands in for a regular expression that does not compile.
_NEVER_B = re.compile(b"(?!)")
_NEVER_S = re.compile("(?!)")


def _regex(pattern: str, as_bytes: bool, rule: str) -> re.Pattern[Any]:
    """Compile a user's regular expression (kgw_l7.regex: the controller validates with
    the same functions); a broken one makes its match never succeed (logged) instead of
    failing the whole config."""
    try:
        return compile_bytes(pattern) if as_bytes else compile_text(pattern)
    except re.error as exc:
        log.error("rule %s: invalid regular expression %r (%s): it matches nothing",
                  rule, pattern, exc)
        return _NEVER_B if as_bytes else _NEVER_S


class CompiledRoute:
    """One RouteMatch: path test first (cheapest), then method, headers, query."""

    __slots__ = ("path_kind", "path", "path_slash", "regex", "method", "headers", "query",
                 "rule", "matched_prefix", "cookie_path")

    def __init__(self, route: Route, rule: CompiledRule) -> None:
        m = route.match
        value = _b(m.path.value) if m.path.type != "RegularExpression" else b""
        self.matched_prefix = None
        if m.path.type == "Exact":
            self.path_kind = _EXACT
        elif m.path.type == "RegularExpression":
            self.path_kind = _REGEX
        else:
            self.path_kind = _PREFIX
            value = value.rstrip(b"/")  # "/foo/" and "/foo" match the same paths
            self.matched_prefix = value or b"/"
        self.path = value
        self.path_slash = value + b"/"
        #: A session cookie's Path: the path the match names (GEP-1619), "/" for a regex.
        self.cookie_path = (self.matched_prefix if self.path_kind == _PREFIX
                            else value if self.path_kind == _EXACT else b"/")
        self.regex = _regex(m.path.value, True, rule.name) if self.path_kind == _REGEX else None
        self.method = _b(m.method).upper() if m.method else None
        self.headers = tuple(
            (_b(h.name).lower(),
             _regex(h.value, True, rule.name) if h.type == "RegularExpression" else _b(h.value),
             h.type == "RegularExpression")
            for h in m.headers)
        self.query = tuple(
            (q.name,
             _regex(q.value, False, rule.name) if q.type == "RegularExpression" else q.value,
             q.type == "RegularExpression")
            for q in m.query_params)
        self.rule = rule

    def matches(self, path: bytes, method: bytes, headers: tuple[tuple[bytes, bytes], ...],
                query: bytes) -> bool:
        kind = self.path_kind
        if kind == _PREFIX:
            p = self.path
            if p and path != p and not path.startswith(self.path_slash):
                return False
        elif kind == _EXACT:
            if path != self.path:
                return False
        elif self.regex.fullmatch(path) is None:  # type: ignore[union-attr]
            return False
        if self.method is not None and method != self.method:
            return False
        for name, want, is_re in self.headers:
            # A plain loop: a list comprehension costs a frame per header matcher.
            got = None
            for n, v in headers:
                if n == name:
                    got = v if got is None else got + b"," + v
            if got is None:
                return False
            if is_re:
                if want.search(got) is None:  # type: ignore[union-attr]
                    return False
            elif got != want:
                return False
        if self.query:
            params: dict[str, str] = {}
            for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                params.setdefault(key, value)  # the first occurrence counts
            for key, want_value, is_re in self.query:
                got_value = params.get(key)
                if got_value is None:
                    return False
                if is_re:
                    if want_value.search(got_value) is None:  # type: ignore[union-attr]
                        return False
                elif got_value != want_value:
                    return False
        return True


class CompiledVirtualHost:
    __slots__ = ("hostname", "routes")

    def __init__(self, vh: VirtualHost, compile_rule: Callable[[Rule], CompiledRule]) -> None:
        self.hostname = vh.hostname
        self.routes = tuple(CompiledRoute(r, compile_rule(r.rule)) for r in vh.routes)

    def find(self, path: bytes, method: bytes, headers: tuple[tuple[bytes, bytes], ...],
             query: bytes) -> CompiledRoute | None:
        for route in self.routes:
            if route.matches(path, method, headers, query):
                return route
        return None


class ListenerRouter:
    """Host lookup for one listener: exact, then longest wildcard suffix, then ``*``."""

    __slots__ = ("exact", "wildcards", "catch_all", "listener")

    def __init__(self, listener: Listener, vhosts: list[CompiledVirtualHost]) -> None:
        self.listener = listener
        self.exact: dict[bytes, CompiledVirtualHost] = {}
        wild: list[tuple[bytes, CompiledVirtualHost]] = []
        self.catch_all: CompiledVirtualHost | None = None
        for vh in vhosts:
            name = vh.hostname.lower()
            if name == "*":
                self.catch_all = vh
            elif name.startswith("*."):
                wild.append((_b(name[1:]), vh))  # ".example.com"
            else:
                self.exact[_b(name)] = vh
        wild.sort(key=lambda x: len(x[0]), reverse=True)
        self.wildcards = tuple(wild)

    def vhost(self, host: bytes) -> CompiledVirtualHost | None:
        vh = self.exact.get(host)
        if vh is not None:
            return vh
        if host.endswith(b"."):
            vh = self.exact.get(host[:-1])
            if vh is not None:
                return vh
        for suffix, vh in self.wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                return vh
        return self.catch_all


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(path, query) of a request-target; absolute-form targets lose scheme and host."""
    if target[:1] != b"/":
        if b"://" in target:
            rest = target.split(b"://", 1)[1]
            slash = rest.find(b"/")
            target = rest[slash:] if slash >= 0 else b"/"
        elif target == b"*":
            return target, b""
    q = target.find(b"?")
    if q < 0:
        return target, b""
    return target[:q], target[q + 1:]


class RouterCache:
    """Compiled pieces kept across configs.

    A config that changes one route recompiles that route's virtual host only. Virtual
    hosts are recognised by identity: the producer (and ``kgw_l7.snapshot`` on the
    worker side) hands out the same VirtualHost object while it is unchanged, so a
    10k-host config is rebuilt without hashing 10k nested records. Rules and backends
    of newly compiled hosts are looked up by value, so equal ones keep their compiled
    objects (and round-robin state). Entries not used by the latest config are dropped.
    """

    def __init__(self, workers: int = 1, session_key: bytes = b"") -> None:
        #: Per-endpoint health and load of every backend (kgw_l7.balance).
        self.book = HealthBook()
        #: Worker processes sharing the circuit breakers' limits (kgw_l7.breaker).
        self.workers = workers
        #: Signs session persistence tokens (kgw_l7.session); one per worker process,
        #: the same in every worker of a plane (KGW_SESSION_KEY).
        self.session_key = session_key or key_from_env()
        # id(vh) -> (vh, compiled, the rules and backends it compiled or reused)
        self._vhosts: dict[int, tuple[VirtualHost, CompiledVirtualHost, dict[Rule, CompiledRule],
                                      dict[Backend, CompiledBackend]]] = {}
        self._rules: dict[Rule, CompiledRule] = {}
        self._backends: dict[Backend, CompiledBackend] = {}
        self.compiled_vhosts = 0  # how many vhosts the last build compiled (tests)

    def build(self, config: L7Config) -> dict[str, ListenerRouter]:
        vhosts: dict[int, tuple[VirtualHost, CompiledVirtualHost,
                                dict[Rule, CompiledRule], dict[Backend, CompiledBackend]]] = {}
        rules: dict[Rule, CompiledRule] = {}
        backends: dict[Backend, CompiledBackend] = {}
        self.compiled_vhosts = 0

        def backend(b: Backend) -> CompiledBackend:
            cb = backends.get(b) or self._backends.get(b)
            if cb is None:
                cb = CompiledBackend(b, backend, self.book, self.workers)
            backends[b] = cb
            return cb

        def rule(r: Rule) -> CompiledRule:
            cr = rules.get(r) or self._rules.get(r)
            if cr is None:
                cr = CompiledRule(r, backend, self.session_key)
            else:  # keep its backends alive in the new cache
                for b in r.backends:
                    backend(with_rule_policy(b, r.policy))
                for m in r.filters.mirrors:
                    backend(m.backend)
                if r.filters.ext_auth is not None:
                    backend(r.filters.ext_auth.backend)
            rules[r] = cr
            return cr

        def vhost(vh: VirtualHost) -> CompiledVirtualHost:
            entry = vhosts.get(id(vh)) or self._vhosts.get(id(vh))
            if entry is not None and entry[0] is vh:
                # dict.update reuses the stored hashes: no record is hashed again
                rules.update(entry[2])
                backends.update(entry[3])
            else:
                nr, nb = len(rules), len(backends)
                cv = CompiledVirtualHost(vh, rule)
                self.compiled_vhosts += 1
                # what this host uses, including what it shares with hosts compiled
                # before it in this build (those are not among the newly added items)
                own_rules = dict(itertools.islice(rules.items(), nr, None))
                own_backends = dict(itertools.islice(backends.items(), nb, None))
                for r in vh.routes:
                    if r.rule in rules:
                        own_rules[r.rule] = rules[r.rule]
                    for b in r.rule.backends:
                        b = with_rule_policy(b, r.rule.policy)
                        if b in backends:
                            own_backends[b] = backends[b]
                entry = (vh, cv, own_rules, own_backends)
            vhosts[id(vh)] = entry
            return entry[1]

        out = {lis.name: ListenerRouter(lis, [vhost(vh) for vh in lis.virtual_hosts])
               for lis in config.listeners}
        self._vhosts, self._rules, self._backends = vhosts, rules, backends
        self.book.retain({(cb.name, ep) for cb in backends.values()
                          if cb.balancer is not None for ep in cb.endpoints})
        return out

    def backends(self) -> list[CompiledBackend]:
        """The compiled backends of the latest config."""
        return list(self._backends.values())

