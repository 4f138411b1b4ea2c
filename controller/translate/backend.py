"""A backendRef -> a Service port's ready endpoints, or the reason it can't be used.

Only core Services are supported backends. Unresolvable references are kept, with an
error, so the L7 plane answers their share of requests with 500 and status can say why.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.objects import GATEWAY_GROUP, ObjectKey
from controller.translate import backendtls
from controller.translate import conditions as c
from controller.translate import refgrant
from controller.translate.ir import Cond
from controller.translate.reader import Reader
from controller.translate.util import as_dict, as_int, as_list, as_str, ref_group, spec
from kgw_l4 import config as l4
from kgw_l7 import config as l7

#: Service port appProtocols (lower case) and how the proxy speaks to such a port.
#: HTTP/2: ``kubernetes.io/h2c`` (Gateway API's, HTTPRouteBackendProtocolH2C) and the
#: unprefixed names other implementations take for it (``h2c``; ``http2`` and ``grpc``
#: as Istio and Envoy Gateway do: gRPC is HTTP/2). In clear text that is HTTP/2 with prior
#: knowledge; with a BackendTLSPolicy on the port, TLS offering ALPN ``h2`` then
#: ``http/1.1``, in whichever the backend picks (``ResolvedBackend.l7``).
APP_PROTOCOLS: dict[str, l7.BackendProtocol] = {
    "kubernetes.io/h2c": "h2c",
    "h2c": "h2c",
    "http2": "h2c",
    "grpc": "h2c",
    "kubernetes.io/ws": "ws",
    "kubernetes.io/wss": "wss",
}
#: Service port appProtocols (lower case) that mean TLS, which kgw speaks only when a
#: BackendTLSPolicy says how to verify the backend (without one it would send clear text
#: to a TLS port).
TLS_ONLY = frozenset({"https", "kubernetes.io/wss", "wss"})


def unsupported_protocol(app_protocol: str, has_policy: bool) -> str | None:
    """Why kgw cannot talk to a Service port with this appProtocol (None: it can).

    kgw talks HTTP/1.1 or HTTP/2 (``APP_PROTOCOLS``) to backends, in clear text or in TLS
    from a BackendTLSPolicy; a WebSocket (kubernetes.io/ws) is an HTTP/1.1 Upgrade,
    relayed. Other values (none, "http", a domain-prefixed name kgw does not know) are
    taken as HTTP/1.1."""
    app = app_protocol.lower()
    if app in TLS_ONLY and not has_policy:
        return (f"appProtocol {app_protocol!r} is TLS, and no BackendTLSPolicy targets this port: "
                "kgw would send clear text; requests routed here are answered 500")
    return None


@dataclass(frozen=True, slots=True)
class ResolvedBackend:
    name: str
    weight: int
    endpoints: tuple[tuple[str, int], ...] = ()
    protocol: l7.BackendProtocol = "http"
    tls: l7.UpstreamTLS | None = None
    problem: Cond | None = None
    service: ObjectKey | None = None
    #: The Service's BackendTLSPolicy is unusable (the policy reports why).
    policy_error: bool = False
    #: The Service port's name (a BackendTLSPolicy's sectionName names it).
    port_name: str = ""

    def l7(self, filters: l7.Filters | None = None,
           default_protocol: l7.BackendProtocol = "http") -> l7.Backend:
        if self.problem is not None or self.policy_error:
            return l7.Backend(name=self.name, weight=self.weight, filters=filters, error_status=500)
        proto = self.protocol if self.protocol != "http" else default_protocol
        if self.tls is not None:
            proto = "wss" if proto in ("ws", "wss") else "h2" if proto == "h2c" else "https"
        return l7.Backend(
            name=self.name, weight=self.weight,
            endpoints=tuple(l7.Endpoint(a, p) for a, p in self.endpoints),
            protocol=proto, tls=self.tls, filters=filters,
        )

    def l4(self) -> l4.BackendGroup:
        eps = () if self.problem is not None or self.policy_error else tuple(
            l4.Endpoint(a, p) for a, p in self.endpoints)
        return l4.BackendGroup(name=self.name, weight=self.weight, endpoints=eps)


def _endpoints(reader: Reader, ns: str, svc: str, port_name: str) -> tuple[tuple[str, int], ...]:
    out: set[tuple[str, int]] = set()
    for sl in reader.endpoint_slices(ns, svc):
        number = None
        for p in map(as_dict, as_list(sl.get("ports"))):
            if (as_str(p.get("name")) or "") == port_name:
                number = as_int(p.get("port"))
                break
        if number is None:
            continue
        for ep in map(as_dict, as_list(sl.get("endpoints"))):
            if as_dict(ep.get("conditions")).get("ready") is False:
                continue
            for addr in as_list(ep.get("addresses")):
                if isinstance(addr, str) and addr:
                    out.add((addr, number))
    return tuple(sorted(out))


def resolve(
    reader: Reader,
    ref: dict,
    from_kind: str,
    from_ns: str,
    *,
    with_tls: bool = True,
) -> ResolvedBackend:
    group, kind = ref_group(ref, ""), as_str(ref.get("kind"), "Service") or "Service"
    name = as_str(ref.get("name"))
    ns = as_str(ref.get("namespace")) or from_ns
    port = as_int(ref.get("port"))
    w = as_int(ref.get("weight"), 1)
    weight = w if w is not None and w >= 0 else 1
    label = f"{ns}/{name}:{port}" if port is not None else f"{ns}/{name}"

    def bad(reason: str, message: str) -> ResolvedBackend:
        return ResolvedBackend(label, weight, problem=Cond(c.RESOLVED_REFS, False, reason, message))

    if group != "" or kind != "Service":
        return bad(c.R_INVALID_KIND, f"backendRef kind {group or 'core'}/{kind} is not supported")
    if not refgrant.permitted(reader, GATEWAY_GROUP, from_kind, from_ns, "", "Service", ns, name):
        return bad(c.R_REF_NOT_PERMITTED,
                   f"Service {ns}/{name} is in another namespace and no ReferenceGrant allows it")
    svc = reader.get("Service", ns, name)
    if svc is None:
        return bad(c.R_BACKEND_NOT_FOUND, f"Service {ns}/{name} not found")
    if port is None:
        return bad(c.R_BACKEND_NOT_FOUND, f"backendRef to Service {ns}/{name} needs a port")
    sp = next((p for p in map(as_dict, as_list(spec(svc).get("ports")))
               if as_int(p.get("port")) == port), None)
    if sp is None:
        return bad(c.R_BACKEND_NOT_FOUND, f"Service {ns}/{name} has no port {port}")
    port_name = as_str(sp.get("name"))
    protocol = APP_PROTOCOLS.get(as_str(sp.get("appProtocol")).lower(), "http")
    if as_str(spec(svc).get("type")) == "ExternalName" and as_str(spec(svc).get("externalName")):
        endpoints: tuple[tuple[str, int], ...] = ((as_str(spec(svc).get("externalName")), port),)
    else:
        endpoints = _endpoints(reader, ns, name, port_name)
    tls = None
    policy_error = False
    if with_tls:
        pol = backendtls.for_service_port(reader, ns, name, port_name)
        if pol is not None:
            # An unusable policy: the route's references are fine (the policy reports its
            # own error), but traffic must not go out in clear text -> 500, as upstream.
            policy_error = pol.tls is None
            tls = pol.tls
        why = unsupported_protocol(as_str(sp.get("appProtocol")), pol is not None)
        if why is not None:
            return ResolvedBackend(label, weight, problem=Cond(
                c.RESOLVED_REFS, False, c.R_UNSUPPORTED_PROTOCOL,
                f"Service {ns}/{name} port {port}: {why}"),
                service=ObjectKey("Service", ns, name))
    return ResolvedBackend(label, weight, endpoints, protocol, tls, None,
                           ObjectKey("Service", ns, name), policy_error, port_name)
