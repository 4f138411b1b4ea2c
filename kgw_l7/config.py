"""The L7 proxy's configuration model.

This is the contract between the controller and the userspace proxy: plain, frozen,
typed records that say *what to serve* and nothing about where it came from. The proxy
never imports Gateway API code; the controller's translation builds these records
(like an xDS snapshot in Envoy-based gateways).

Ordering is meaningful and already resolved by the producer:

* ``Listener.virtual_hosts`` -- the proxy picks a virtual host by exact hostname first,
  then by the longest matching wildcard suffix (``*.example.com``), then ``*``.
* ``VirtualHost.routes`` -- evaluated in order; the first whose match accepts the
  request wins. The producer sorts them by Gateway API precedence.

Every record is hashable and compares by value, so an unchanged piece of configuration
can be detected cheaply and reused (a worker keeps its compiled router for a virtual
host whose record is equal to the previous one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from kgw_l7.auth_config import Security

PathMatchType = Literal["Exact", "PathPrefix", "RegularExpression"]
ValueMatchType = Literal["Exact", "RegularExpression"]
PathModifierType = Literal["ReplaceFullPath", "ReplacePrefixMatch"]
ListenerProtocol = Literal["HTTP", "HTTPS"]
#: How the proxy speaks to a backend: HTTP/1.1 in clear text or TLS ("http", "https"),
#: WebSocket relayed over HTTP/1.1 ("ws", "wss"), HTTP/2 with prior knowledge in clear
#: text ("h2c"), or TLS offering ALPN h2 then http/1.1 ("h2": whichever the backend picks).
BackendProtocol = Literal["http", "h2c", "h2", "https", "ws", "wss"]
#: The protocols spoken in HTTP/2 (``kgw_l7.upstream.Pool``).
HTTP2_PROTOCOLS = frozenset({"h2c", "h2"})
#: Field metadata: ``to_dict`` leaves the field out while it is None (fields most configs
#: never set, such as policies: dumps and golden files stay as they were without them).
OMIT_NONE = {"omit_none": True}


@dataclass(frozen=True, slots=True)
class PathMatch:
    type: PathMatchType = "PathPrefix"
    value: str = "/"


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """Match on a request header. ``name`` is compared case-insensitively."""

    name: str
    value: str
    type: ValueMatchType = "Exact"


@dataclass(frozen=True, slots=True)
class QueryParamMatch:
    """Match on a query parameter. ``name`` is compared case-sensitively."""

    name: str
    value: str
    type: ValueMatchType = "Exact"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """All conditions must hold (logical AND)."""

    path: PathMatch = PathMatch()
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderModifier:
    """Applied in the order: set (overwrite), add (append a value), remove."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PathModifier:
    type: PathModifierType
    #: Replacement: the full path, or the prefix that replaces ``RouteMatch.path.value``.
    value: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer with a redirect instead of forwarding.

    ``None`` fields keep the request's value. ``port`` None means "the port implied by
    the scheme" when ``scheme`` is set, otherwise the listener's port; a port that is the
    scheme's default (80 for http, 443 for https) is left out of Location.
    """

    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    path: PathModifier | None = None
    status_code: int = 302


@dataclass(frozen=True, slots=True)
class URLRewrite:
    hostname: str | None = None
    path: PathModifier | None = None


@dataclass(frozen=True, slots=True)
class CORS:
    allow_origins: tuple[str, ...] = ()  # may hold "*" or "https://*.example.com"
    allow_methods: tuple[str, ...] = ()  # may hold "*"
    allow_headers: tuple[str, ...] = ()  # may hold "*"
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age: int = 5


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """TLS from the proxy to a backend (BackendTLSPolicy)."""

    #: Server name sent in SNI and checked against the certificate.
    hostname: str
    #: PEM bundle of trusted CAs; empty means the system trust store.
    ca_pem: str = ""
    #: Extra names accepted in the backend certificate's SAN (besides ``hostname``).
    subject_alt_names: tuple[str, ...] = ()
    #: Client certificate and key (PEM) presented to the backend, if any.
    client_cert_pem: str = ""
    #: Not in the repr: a log line or a traceback that prints the record must not leak it.
    client_key_pem: str = dataclasses.field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Backend:
    """One weighted destination of a rule.

    ``endpoints`` holds only ready endpoints. A backend with ``error_status`` set is a
    reference that could not be resolved: the share of requests it would have received
    is answered with that status (500 in Gateway API) instead of being forwarded.
    """

    name: str  # e.g. "ns/service:port", used in metrics and logs
    weight: int = 1
    endpoints: tuple[Endpoint, ...] = ()
    protocol: BackendProtocol = "http"
    tls: UpstreamTLS | None = None
    filters: Filters | None = None
    error_status: int | None = None


@dataclass(frozen=True, slots=True)
class Mirror:
    backend: Backend
    #: Share of requests mirrored, 0-100 (fractions allowed).
    percent: float = 100.0


ExtAuthProtocol = Literal["HTTP", "GRPC"]


@dataclass(frozen=True, slots=True)
class ExtAuth:
    """Ask an authorization service before forwarding (Gateway API ExternalAuth filter,
    SecurityPolicy ``extAuth``; the protocols as Envoy's ext_authz: ``kgw_l7.extauth``).

    Every failure to get an answer (timeout, service down, garbage) denies unless
    ``fail_open``; answers are never cached (each request asks, whatever its credentials).
    """

    protocol: ExtAuthProtocol
    #: The authorization service (for GRPC, spoken to in HTTP/2: h2c or h2).
    backend: Backend
    #: HTTP: prefix added to the request's path in the check request.
    path_prefix: str = ""
    #: Lower-case request header names sent to the service. HTTP: in addition to Host,
    #: Method, Path, Content-Length and Authorization (always sent). GRPC: empty = all.
    allowed_headers: tuple[str, ...] = ()
    #: HTTP: lower-case names of the service's response headers copied into the request to
    #: the backend on allow; empty = all of them (but Host and framing fields).
    allowed_response_headers: tuple[str, ...] = ()
    #: Request body bytes sent along (0: none); a longer body is cut to this size.
    max_body: int = 0
    #: Seconds to wait for the answer (then: denied, or allowed when ``fail_open``).
    timeout: float = 2.0
    fail_open: bool = False
    #: The status of a request denied because the service gave no answer.
    status_on_error: int = 403


@dataclass(frozen=True, slots=True)
class Filters:
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    redirect: Redirect | None = None
    rewrite: URLRewrite | None = None
    mirrors: tuple[Mirror, ...] = ()
    cors: CORS | None = None
    ext_auth: ExtAuth | None = dataclasses.field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 1
    #: Response codes that trigger a retry; connection errors always do.
    codes: tuple[int, ...] = ()
    backoff: float | None = None  # seconds


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """TrafficPolicy ``requestLimits``: a larger body is answered 413 (checked while it
    streams), more header fields 431. None: no limit beyond the proxy's own."""

    max_body_size: int | None = None
    max_headers: int | None = None


@dataclass(frozen=True, slots=True)
class ExtAuthSpec:
    """SecurityPolicy ``extAuth`` as validated (JSON), and the policy's namespace: the
    controller resolves its backendRef per route rule into ``Filters.ext_auth``, which is
    what the proxy applies (controller/policy/extauth.py says why it lands this way)."""

    namespace: str
    spec: str


@dataclass(frozen=True, slots=True)
class RulePolicy:
    """What kgw policies (TrafficPolicy, SecurityPolicy) apply to a rule, one field per
    section (controller/policy/registry.py), already merged by precedence."""

    request_limits: RequestLimits | None = None
    #: SecurityPolicy ``extAuth`` (applied as the rule's ``Filters.ext_auth``).
    ext_auth: ExtAuthSpec | None = None


@dataclass(frozen=True, slots=True)
class ListenerPolicy:
    """What kgw policies apply to a bound socket's connections before any routing
    (sections a Gateway or listener target sets)."""

    #: TrafficPolicy ``requestHeaderTimeout``: a request head must arrive whole within
    #: this many seconds of its first byte (None: the worker's default).
    request_header_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """One (match, action) pair: a rule's match, with the rule's action.

    A rule with several matches becomes several ``Route`` records sharing ``rule``.
    """

    match: RouteMatch
    rule: Rule


@dataclass(frozen=True, slots=True)
class Rule:
    #: Stable identity for metrics, logs and status: "ns/route-name/rule-index" (or name).
    name: str
    route: str  # "ns/route-name"
    gateway: str  # "ns/gateway-name"
    filters: Filters = Filters()
    backends: tuple[Backend, ...] = ()
    #: Answer every request with this status instead of forwarding (e.g. 500 when the
    #: rule has no usable backend). Redirect filters take precedence.
    direct_status: int | None = None
    #: Whole request timeout and per-try backend timeout, in seconds.
    request_timeout: float | None = None
    backend_timeout: float | None = None
    retry: Retry | None = None
    #: What a request must prove before it is forwarded (a SecurityPolicy's sections).
    security: Security | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    #: kgw policies on the rule (None: none).
    policy: RulePolicy | None = dataclasses.field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, slots=True)
class VirtualHost:
    #: "*" (any host), "*.example.com" (wildcard) or an exact hostname, lowercase.
    hostname: str
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, slots=True)
class Certificate:
    """A serving certificate, chosen by SNI among those of a listener."""

    #: Hostname patterns this certificate serves ("*" = default).
    server_names: tuple[str, ...]
    cert_pem: str
    #: Not in the repr: a log line or a traceback that prints the record must not leak it.
    key_pem: str = dataclasses.field(repr=False)


ClientValidationMode = Literal["AllowValidOnly", "AllowInsecureFallback"]


@dataclass(frozen=True, slots=True)
class ClientValidation:
    """Client certificate validation on a listener (Gateway ``spec.tls.frontend``).

    Gateway API sets it per port, so it applies to every certificate (every SNI name)
    served on the listener.
    """

    #: PEM bundle of the CAs a client certificate must chain to.
    ca_pem: str
    #: ``AllowValidOnly``: a handshake without a certificate that verifies fails.
    #: ``AllowInsecureFallback``: every client is served, with or without a certificate.
    mode: ClientValidationMode = "AllowValidOnly"


@dataclass(frozen=True, slots=True)
class Listener:
    """One bound socket: everything the Gateways serve on (address, port)."""

    name: str  # e.g. "0.0.0.0:80"
    address: str  # "0.0.0.0", "::" or a specific address
    port: int
    protocol: ListenerProtocol = "HTTP"
    certificates: tuple[Certificate, ...] = ()
    virtual_hosts: tuple[VirtualHost, ...] = ()
    #: HTTPS only: client certificates are requested and checked (mTLS); None = not.
    client_validation: ClientValidation | None = None
    #: kgw policies on its connections (None: none).
    policy: ListenerPolicy | None = dataclasses.field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, slots=True)
class L7Config:
    listeners: tuple[Listener, ...] = ()
    #: Increases with each configuration the producer publishes.
    generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def to_dict(value: Any) -> Any:
    """A JSON-ready view of a config record (stable key order, tuples as lists)."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get("omit_none") and getattr(value, f.name) is None)}
    if isinstance(value, (tuple, list)):
        return [to_dict(v) for v in value]
    return value


__all__ = [
    "Backend", "CORS", "Certificate", "ClientValidation", "Endpoint", "ExtAuth", "ExtAuthSpec",
    "Filters", "HeaderMatch", "HeaderModifier", "L7Config", "Listener", "ListenerPolicy", "Mirror",
    "PathMatch", "PathModifier", "QueryParamMatch", "Redirect", "RequestLimits", "Retry",
    "Route", "RouteMatch", "Rule", "RulePolicy", "URLRewrite", "UpstreamTLS", "VirtualHost",
    "to_dict",
]
