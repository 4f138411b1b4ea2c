"""The L4 data plane's configuration model.

The contract between the controller and the kernel data plane (and its userspace
fallback): frontends to load-balance, and TLS listeners that route by SNI, passing the
TLS through or terminating it.
Nothing here refers to Gateway API; the controller's translation produces it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from kgw_l7.config import HealthCheck

Protocol = Literal["TCP", "UDP"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class BackendGroup:
    """A weighted group of endpoints (one backendRef).

    The group's weight is shared equally among its endpoints. Weight 0 drains the
    group: it gets no new flows, but flows already pinned to it keep their endpoint.
    """

    name: str  # e.g. "ns/service:port"
    weight: int = 1
    endpoints: tuple[Endpoint, ...] = ()
    #: Probe each endpoint (kgw_l4.health, once per node): one failing it loses its
    #: Maglev slots until it passes again. Left out of ``to_dict`` when None.
    health_check: HealthCheck | None = dataclasses.field(
        default=None, metadata={"omit_empty": True})


@dataclass(frozen=True, slots=True)
class Frontend:
    """(address, port, protocol) -> weighted backends, forwarded without termination."""

    name: str  # e.g. "ns/gateway/listener"
    address: str  # "0.0.0.0" = every address of the node
    port: int
    protocol: Protocol = "TCP"
    backends: tuple[BackendGroup, ...] = ()
    #: Where it comes from, for metrics labels: the Gateway ("ns/name"), its listener's
    #: name, and the route whose backends it forwards to ("ns/name"; "" when none).
    gateway: str = ""
    listener: str = ""
    route: str = ""


@dataclass(frozen=True, slots=True)
class ServingCert:
    """A certificate chain and key (PEM) a terminating TLS listener presents."""

    #: Names it serves ("*.example.com" wildcards; "*" = any), lowercase.
    server_names: tuple[str, ...]
    cert_pem: str
    #: Not in the repr: a log line or a traceback that prints the record must not leak it.
    key_pem: str = dataclasses.field(repr=False)


@dataclass(frozen=True, slots=True)
class BackendTLS:
    """TLS from kgw to a backend (a BackendTLSPolicy) after terminating the client's."""

    #: Sent as SNI; checked against the certificate unless ``subject_alt_names`` is set.
    hostname: str
    #: Trusted CAs (PEM); empty = the system trust store.
    ca_pem: str = ""
    #: With these, the certificate must carry one of them (DNS names or URIs), and
    #: ``hostname`` is only sent.
    subject_alt_names: tuple[str, ...] = ()
    client_cert_pem: str = ""
    client_key_pem: str = dataclasses.field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Termination:
    """How a route of a Terminate listener is served: the TLS is terminated with
    ``certificates`` (chosen by SNI) and the decrypted stream forwarded to the route's
    backends, re-encrypted to the groups named in ``backend_tls``."""

    certificates: tuple[ServingCert, ...]
    #: (BackendGroup name, TLS to its endpoints); groups not named get plain TCP.
    backend_tls: tuple[tuple[str, BackendTLS], ...] = ()


@dataclass(frozen=True, slots=True)
class SNIRoute:
    """Connections whose ClientHello names one of ``hostnames``: passed through
    (``terminate`` None) or terminated."""

    name: str  # e.g. "ns/tlsroute-name"
    #: Exact names or "*.example.com" wildcards, lowercase; "*" matches any SNI.
    hostnames: tuple[str, ...]
    backends: tuple[BackendGroup, ...] = ()
    #: The Gateway ("ns/name") and listener the route attached to, for metrics labels (a
    #: route attached through two listeners of one port is two SNIRoutes).
    gateway: str = ""
    listener: str = ""
    terminate: Termination | None = None


@dataclass(frozen=True, slots=True)
class TLSPassthrough:
    """A TLS port: it reads the SNI, picks a route, and splices the connection to the
    route's backend or (a Terminate listener's route) terminates it. One port may hold
    routes of both kinds (Gateway API's "mixed" mode)."""

    name: str
    address: str
    port: int
    routes: tuple[SNIRoute, ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectionRateLimit:
    """New TCP connections per second from one source address to a listening port,
    enforced on the SYN by the kernel program before any socket sees it (bpf/synlimit.h).
    Any port of the node: an L4 frontend's, or one an L7 or TLS listener serves."""

    name: str  # e.g. "ns/gateway/listener"
    address: str  # "0.0.0.0" = every address of the node
    port: int
    #: connections per second per source, and how many a source may open at once
    per_second: float
    burst: int
    gateway: str = ""
    listener: str = ""


@dataclass(frozen=True, slots=True)
class L4Config:
    frontends: tuple[Frontend, ...] = ()
    tls_passthrough: tuple[TLSPassthrough, ...] = ()
    generation: int = 0
    #: Left out of ``to_dict`` while empty (most configs have none: dumps and golden
    #: files stay as they were without them).
    connection_limits: tuple[ConnectionRateLimit, ...] = dataclasses.field(
        default=(), metadata={"omit_empty": True})

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def to_dict(value: Any) -> Any:
    """A JSON-ready view of a config record (stable key order, tuples as lists)."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get("omit_empty") and not getattr(value, f.name))}
    if isinstance(value, (tuple, list)):
        return [to_dict(v) for v in value]
    return value
