"""The internal representation between Gateway API objects and the data-plane configs.

Every record is frozen and compares by value, so the incremental Translator can tell
whether a resolved Gateway changed and reuse whatever depends only on unchanged ones.
Conditions are kept as ``Cond`` tuples; the status module turns them into API dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.objects import ObjectKey
from kgw_l7 import config as l7
from kgw_l4 import config as l4


@dataclass(frozen=True, slots=True)
class Cond:
    type: str
    ok: bool
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Selector:
    """A label selector, frozen. ``valid`` False matches nothing."""

    match_labels: tuple[tuple[str, str], ...] = ()
    #: (key, operator, values)
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    valid: bool = True

    def matches(self, labels: dict) -> bool:
        if not self.valid:
            return False
        for k, v in self.match_labels:
            if labels.get(k) != v:
                return False
        for k, op, values in self.match_expressions:
            if op == "In":
                if labels.get(k) not in values:
                    return False
            elif op == "NotIn":
                if k in labels and labels[k] in values:
                    return False
            elif op == "Exists":
                if k not in labels:
                    return False
            elif op == "DoesNotExist":
                if k in labels:
                    return False
            else:
                return False
        return True


@dataclass(frozen=True, slots=True)
class ListenerIR:
    gateway: ObjectKey
    name: str
    port: int
    protocol: str
    hostname: str | None
    #: "Terminate" / "Passthrough" for TLS-capable protocols, else None.
    tls_mode: str | None
    #: "Same" / "All" / "Selector" / "None"
    allowed_from: str
    selector: Selector | None
    supported_kinds: tuple[str, ...]
    certificates: tuple[l7.Certificate, ...]
    conditions: tuple[Cond, ...]
    #: Routes may attach (Accepted=True and not conflicted).
    accepted: bool
    #: The data planes serve it.
    programmed: bool
    #: HTTPS: client certificate validation of its port (Gateway spec.tls.frontend).
    client_validation: l7.ClientValidation | None = None
    #: The ListenerSet that declares it; None for the Gateway's own listeners.
    listener_set: ObjectKey | None = None
    #: The Secret ("ns/name") each of ``certificates`` comes from.
    certificate_secrets: tuple[str, ...] = ()
    #: kgw policy sections in effect here (Gateway, then listener targets), by field:
    #: ((field, compiled value), ...), sorted. Routes attached here start from these.
    policy: tuple[tuple[str, object], ...] = ()

    @property
    def owner(self) -> ObjectKey:
        """The object declaring the listener: its namespace is allowedRoutes' "Same"."""
        return self.listener_set or self.gateway

    @property
    def id(self) -> tuple[ObjectKey, str]:
        """Unique among all listeners: names repeat across a Gateway and its ListenerSets."""
        return (self.listener_set or self.gateway, self.name)


@dataclass(frozen=True, slots=True)
class ListenerSetIR:
    """A ListenerSet naming a Gateway of ours. Its listeners, once attached, are in the
    Gateway's ``listeners`` (``listener_set`` set); its conditions follow from theirs."""

    key: ObjectKey
    generation: int
    #: Accepted=False for the whole set (NotAllowed, ParentNotAccepted): nothing attached.
    problem: Cond | None = None


@dataclass(frozen=True, slots=True)
class GatewayIR:
    key: ObjectKey
    generation: int
    class_name: str
    accepted: bool
    conditions: tuple[Cond, ...]
    listeners: tuple[ListenerIR, ...]
    #: Addresses reported in status (type IPAddress).
    addresses: tuple[str, ...]
    #: Addresses the data planes bind for this Gateway.
    binds: tuple[str, ...]
    created: str = ""
    #: (cert PEM, key PEM) presented to TLS backends (spec.tls.backend.clientCertificateRef).
    backend_client_cert: tuple[str, str] | None = field(default=None, repr=False)
    #: spec.allowedListeners lets some namespace attach ListenerSets (status then
    #: reports attachedListenerSets).
    allows_listener_sets: bool = False
    #: ListenerSets naming this Gateway, in listener precedence order.
    listener_sets: tuple[ListenerSetIR, ...] = ()


@dataclass(frozen=True, slots=True)
class ParentResult:
    """One parentRef of a route that names a Gateway of ours."""

    parent_ref: tuple[tuple[str, object], ...]  # the normalized parentRef, as sorted items
    gateway: ObjectKey
    accepted: Cond
    #: (listener, effective hostnames) the route attached to.
    listeners: tuple[tuple[ListenerIR, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class L7Contribution:
    """Routes one route adds to one virtual host of one bound socket."""

    bind: tuple[str, int]
    hostname: str
    listener: ListenerIR
    #: (precedence key, route) pairs
    routes: tuple[tuple[tuple, l7.Route], ...]


@dataclass(frozen=True, slots=True)
class L4Contribution:
    bind: tuple[str, int]
    protocol: str  # "TCP" / "UDP" / "TLS"
    listener: ListenerIR
    route_key: ObjectKey
    created: str
    backends: tuple[l4.BackendGroup, ...]
    hostnames: tuple[str, ...] = ()
    #: TLSRoute on a Terminate listener: ``backends`` as it forwards the decrypted
    #: stream (a group whose BackendTLSPolicy is unusable has no endpoints: no clear text
    #: to a TLS backend), and the TLS to each group that has a policy.
    terminated: tuple[l4.BackendGroup, ...] = ()
    backend_tls: tuple[tuple[str, l4.BackendTLS], ...] = ()


@dataclass(frozen=True, slots=True)
class RouteResult:
    key: ObjectKey
    generation: int
    parents: tuple[ParentResult, ...]
    resolved_refs: Cond
    l7: tuple[L7Contribution, ...] = ()
    l4: tuple[L4Contribution, ...] = ()
    #: (Service key, Gateway key) pairs, for BackendTLSPolicy ancestors.
    services: frozenset = field(default_factory=frozenset)
    #: Everything read while resolving it.
    deps: frozenset = field(default_factory=frozenset)
    #: TLSRoute: the Gateways that terminate it (a Terminate listener), connecting to
    #: its backends themselves (a BackendTLSPolicy applies there).
    terminating: frozenset = field(default_factory=frozenset)
