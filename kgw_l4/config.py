"""The L4 data plane's configuration model.

The contract between the controller and the kernel data plane (and its userspace
fallback): frontends to load-balance and TLS passthrough listeners to route by SNI.
Nothing here refers to Gateway API; the controller's translation produces it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

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
class SNIRoute:
    """TLS passthrough: connections whose ClientHello names one of ``hostnames``."""

    name: str  # e.g. "ns/tlsroute-name"
    #: Exact names or "*.example.com" wildcards, lowercase; "*" matches any SNI.
    hostnames: tuple[str, ...]
    backends: tuple[BackendGroup, ...] = ()
    #: The Gateway ("ns/name") and listener the route attached to, for metrics labels (a
    #: route attached through two listeners of one port is two SNIRoutes).
    gateway: str = ""
    listener: str = ""


@dataclass(frozen=True, slots=True)
class TLSPassthrough:
    """A listener that reads the SNI, picks a route and splices the connection."""

    name: str
    address: str
    port: int
    routes: tuple[SNIRoute, ...] = ()


@dataclass(frozen=True, slots=True)
class L4Config:
    frontends: tuple[Frontend, ...] = ()
    tls_passthrough: tuple[TLSPassthrough, ...] = ()
    generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def to_dict(value: Any) -> Any:
    """A JSON-ready view of a config record (stable key order, tuples as lists)."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_dict(v) for v in value]
    return value
