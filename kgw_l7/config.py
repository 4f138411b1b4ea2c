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

from kgw_l7.auth_config import JWT, OIDC, APIKeyAuth, Authorization, BasicAuth

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


LBAlgorithm = Literal["RoundRobin", "LeastRequest", "Random", "ConsistentHash"]


@dataclass(frozen=True, slots=True)
class HashOn:
    """What a consistent-hash backend hashes: exactly one of these is set. A request
    without it (no such header, cookie or query parameter) is balanced round robin."""

    header: str | None = None  # compared case-insensitively
    cookie: str | None = None
    query: str | None = None
    source_ip: bool = False


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    """How one backend's endpoints share its requests (kgw_l7.balance)."""

    algorithm: LBAlgorithm = "RoundRobin"
    #: LeastRequest: endpoints sampled per choice (2 = power of two choices).
    choice_count: int = 2
    #: ConsistentHash only.
    hash_on: HashOn | None = None
    #: A new endpoint's share grows linearly from 10% to 100% over this many seconds
    #: (0: no slow start).
    slow_start_window: float = 0.0
    #: Below this percentage of usable (not ejected, not failing active checks)
    #: endpoints, every endpoint is used (Envoy's healthy_panic_threshold).
    panic_threshold: float = 50.0


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive health: an endpoint that fails this many times in a row is ejected for
    ``base_ejection_time`` x its ejection count (capped at ``max_ejection_time``).
    A threshold of 0 turns that kind of failure off."""

    #: 5xx answers (the backend's own) in a row.
    consecutive_5xx: int = 5
    #: Connection failures, resets before a response, and timeouts in a row.
    consecutive_local_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    #: At most this percentage of the backend's endpoints ejected at once (at least one).
    max_ejection_percent: float = 10.0


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Per backend limits, each enforced by every worker on its share (the limit
    divided by the worker count, rounded up). A request over a limit is answered 503
    with response flag ``UO`` (Envoy's upstream overflow)."""

    max_connections: int = 1024
    #: Requests waiting for a connection to open.
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    #: When set, retries may also reach this percentage of active requests (whichever
    #: of it and ``max_retries`` is larger; Envoy's retry budget).
    retry_budget_percent: float | None = None


HealthCheckType = Literal["HTTP", "TCP", "GRPC"]


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active health checking of every endpoint of a backend, once per node
    (kgw_l7.healthcheck)."""

    type: HealthCheckType = "HTTP"
    interval: float = 5.0
    timeout: float = 1.0
    unhealthy_threshold: int = 3
    healthy_threshold: int = 1
    #: Up to this much extra delay before each check (spreads the checks over time).
    jitter: float = 0.0
    #: HTTP: the request's path and Host (the endpoint's address when empty), and the
    #: statuses that pass, as inclusive ranges.
    path: str = "/"
    host: str = ""
    expected_statuses: tuple[tuple[int, int], ...] = ((200, 299),)
    #: GRPC: the service name asked of grpc.health.v1.Health/Check ("" = the server).
    grpc_service: str = ""


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """TrafficPolicy ``healthCheck``: active checks, passive checks (outlier detection),
    or both."""

    active: HealthCheck | None = None
    passive: OutlierDetection | None = None


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
    #: Resilience (TrafficPolicy sections; None = round robin, no health checking, no
    #: circuit breaker: what every backend gets without a policy).
    load_balancer: LoadBalancer | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    outlier_detection: OutlierDetection | None = dataclasses.field(default=None,
                                                                   metadata=OMIT_NONE)
    circuit_breaker: CircuitBreaker | None = dataclasses.field(default=None,
                                                               metadata=OMIT_NONE)
    health_check: HealthCheck | None = dataclasses.field(default=None, metadata=OMIT_NONE)


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


SessionType = Literal["Cookie", "Header"]


@dataclass(frozen=True, slots=True)
class SessionPersistence:
    """A rule's session persistence (Gateway API ``sessionPersistence``; kgw_l7.session).

    Requests bringing back the token a response gave go to the same endpoint while it is
    ready and the session lives."""

    #: Cookie or header name ("" = kgw_l7.session.DEFAULT_NAME).
    name: str = ""
    type: SessionType = "Cookie"
    #: Seconds from the session's start / from its last request; None = no limit.
    absolute_timeout: float | None = None
    idle_timeout: float | None = None
    #: Cookie lifetimeType Permanent: the cookie has a Max-Age (the absolute timeout).
    permanent: bool = False


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """TrafficPolicy ``requestLimits``: a larger body is answered 413 (checked while it
    streams), more header fields 431. None: no limit beyond the proxy's own."""

    max_body_size: int | None = None
    max_headers: int | None = None


LocalRateLimitKey = Literal["", "client_ip", "header", "claim"]


@dataclass(frozen=True, slots=True)
class LocalRateLimit:
    """A token bucket shared by every worker of the node (``kgw_l7.ratelimit``): up to
    ``max_tokens`` requests at once, refilled with ``tokens_per_fill`` every
    ``fill_interval`` seconds; a request finding it empty is answered 429."""

    max_tokens: int
    tokens_per_fill: int
    fill_interval: float
    #: One bucket for every request (""), one per client address ("client_ip"), one per
    #: value of ``header`` ("header"; requests without it share one), or one per value of
    #: the JWT ``claim`` ("claim").
    key: LocalRateLimitKey = ""
    header: str = ""
    #: "client_ip": trusted proxies in front (the client is the ``trusted_hops``-th
    #: X-Forwarded-For entry from the right; 0: the connection's peer).
    trusted_hops: int = 0
    #: Which policy on which target: the bucket's identity (with the key's value).
    scope: str = ""
    #: "claim": the verified JWT's claim (a dotted path) whose value is the key; requests
    #: without one share a bucket.
    claim: str = ""


@dataclass(frozen=True, slots=True)
class GlobalRateLimit:
    """A token bucket counted in Redis (``kgw_l7.globallimit``), shared by every node and
    worker that has the same limit (``scope``): the same bucket and key as
    ``LocalRateLimit``, one round trip per request."""

    max_tokens: int
    tokens_per_fill: int
    fill_interval: float
    key: LocalRateLimitKey = ""
    header: str = ""
    trusted_hops: int = 0
    scope: str = ""
    #: Redis "host:port"
    address: str = ""
    #: seconds a check may take; then (as when Redis fails) ``fail_open`` decides:
    #: True lets the request through, False answers 429
    timeout: float = 0.1
    fail_open: bool = True


@dataclass(frozen=True, slots=True)
class RateLimit:
    """TrafficPolicy ``rateLimit``."""

    local: LocalRateLimit | None = None
    #: ``rateLimit.global``
    global_limit: GlobalRateLimit | None = dataclasses.field(default=None, metadata=OMIT_NONE)


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

    request_limits: RequestLimits | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    rate_limit: RateLimit | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    #: TrafficPolicy ``loadBalancer``, ``healthCheck``, ``circuitBreaker``: they apply to
    #: each backend of the rule (``with_rule_policy``).
    load_balancer: LoadBalancer | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    health: HealthPolicy | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    circuit_breaker: CircuitBreaker | None = dataclasses.field(default=None,
                                                               metadata=OMIT_NONE)
    #: TrafficPolicy ``backendProxyProtocol``: connections to the rule's backends start
    #: with a PROXY protocol header of this version (2) naming the client.
    backend_proxy_protocol: int | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    #: SecurityPolicy: the auth checks (kgw_l7.auth_config, compiled by kgw_l7.auth).
    jwt: JWT | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    oidc: OIDC | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    basic_auth: BasicAuth | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    api_key_auth: APIKeyAuth | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    authorization: Authorization | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    #: SecurityPolicy ``extAuth`` (applied as the rule's ``Filters.ext_auth``).
    ext_auth: ExtAuthSpec | None = dataclasses.field(default=None, metadata=OMIT_NONE)


def with_rule_policy(b: Backend, policy: RulePolicy | None) -> Backend:
    """``b`` as its rule's policy makes it: the resilience sections on the rule apply to
    every backend of the rule (the proxy's router and the active health checker both
    read backends through this). A section the backend sets itself wins."""
    if policy is None:
        return b
    lb, health, cb = policy.load_balancer, policy.health, policy.circuit_breaker
    if lb is None and health is None and cb is None:
        return b
    return dataclasses.replace(
        b, load_balancer=b.load_balancer or lb,
        health_check=b.health_check or (health.active if health is not None else None),
        outlier_detection=b.outlier_detection or (health.passive if health is not None
                                                  else None),
        circuit_breaker=b.circuit_breaker or cb)


@dataclass(frozen=True, slots=True)
class ConnectionRateLimit:
    """New TCP connections per second per client address to a socket, with a burst."""

    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class AccessLogPolicy:
    """A Gateway's access log settings (TrafficPolicy ``accessLog``); a None field keeps
    the command line's value."""

    disabled: bool = False
    #: ``json``, ``text`` or ``text:TEMPLATE`` (checked by the controller).
    format: str | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    #: The lowest status logged (0 all, 400 errors, 500 server errors).
    min_status: int | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    #: The share of requests logged, 0 < sample <= 1.
    sample: float | None = dataclasses.field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, slots=True)
class SpanTag:
    """A span attribute a Gateway's tracing adds (TrafficPolicy ``customTags``): a request
    header's value (``header``, lower case), or ``value`` when the request has none or
    the tag is a literal (``header`` None)."""

    name: str
    header: str | None = None
    value: str | None = None


@dataclass(frozen=True, slots=True)
class TracingPolicy:
    """A Gateway's tracing (TrafficPolicy ``tracing``): its requests' spans go to
    ``endpoint`` (an OTLP/HTTP traces URL, or with ``protocol`` "grpc" a gRPC collector's
    address), ``ratio`` of new traces sampled (parent-based), under a resource named
    ``service_name`` (None: OTEL_SERVICE_NAME or "kgw") with ``resource``'s attributes;
    ``disabled``: no tracing for it at all."""

    disabled: bool = False
    endpoint: str | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    ratio: float = 1.0
    service_name: str | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    resource: tuple[tuple[str, str], ...] = ()
    tags: tuple[SpanTag, ...] = ()
    #: "http/protobuf" or "grpc" (kgw_l7.tracing_config.PROTOCOLS).
    protocol: str = "http/protobuf"


@dataclass(frozen=True, slots=True)
class ListenerPolicy:
    """What kgw policies apply to a bound socket's connections before any routing
    (sections a Gateway or listener target sets)."""

    #: TrafficPolicy ``requestHeaderTimeout``: a request head must arrive whole within
    #: this many seconds of its first byte (None: the worker's default).
    request_header_timeout: float | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    #: TrafficPolicy ``connectionRateLimit``: enforced by the kernel program, not the
    #: workers (the translation copies it into the L4 config's ``connection_limits``).
    connection_rate_limit: ConnectionRateLimit | None = dataclasses.field(default=None,
                                                                          metadata=OMIT_NONE)
    #: TrafficPolicy ``accessLog``: this socket's lines (None: the command line's).
    access_log: AccessLogPolicy | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    #: TrafficPolicy ``tracing``: this socket's requests' tracing (None: the command line's).
    tracing: TracingPolicy | None = dataclasses.field(default=None, metadata=OMIT_NONE)
    #: TrafficPolicy ``proxyProtocol``: connections start with a PROXY protocol header.
    proxy_protocol: ProxyProtocol | None = dataclasses.field(default=None, metadata=OMIT_NONE)


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
    #: Session persistence (None: none; left out of dumps then, as most rules have none).
    session: SessionPersistence | None = dataclasses.field(default=None, metadata=OMIT_NONE)
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


@dataclass(frozen=True, slots=True)
class ProxyProtocol:
    """A listener's connections start with a PROXY protocol header (v1 or v2): its client
    address is the connection's (TrafficPolicy ``proxyProtocol``; kgw_l7.proxyproto)."""

    #: Connections without any header are served too (with their own address).
    optional: bool = False


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
    "AccessLogPolicy", "Backend", "CORS", "Certificate", "CircuitBreaker", "ClientValidation",
    "ConnectionRateLimit", "Endpoint", "ExtAuth", "ExtAuthSpec", "Filters", "GlobalRateLimit",
    "HashOn", "HeaderMatch", "HeaderModifier", "HealthCheck", "HealthPolicy", "L7Config",
    "Listener", "ListenerPolicy", "LoadBalancer", "LocalRateLimit", "Mirror",
    "OutlierDetection", "PathMatch", "PathModifier", "ProxyProtocol", "QueryParamMatch",
    "RateLimit", "Redirect", "RequestLimits", "Retry", "Route", "RouteMatch", "Rule",
    "RulePolicy", "SessionPersistence", "SpanTag", "TracingPolicy", "URLRewrite", "UpstreamTLS",
    "VirtualHost", "to_dict", "with_rule_policy",
]
