"""The kinds kgw reads, and how objects are named.

Objects stay the plain dicts the Kubernetes API (or a YAML file) gives us: the shape is
the API's own, documented upstream, and both sources produce it without conversion.
This module only says which kinds exist, which API versions serve them, and how an
object is keyed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GATEWAY_GROUP = "gateway.networking.k8s.io"
CONTROLLER_NAME = "kgw.dev/gateway-controller"
#: kgw's own policy kinds (controller/policy): TrafficPolicy, SecurityPolicy.
POLICY_GROUP = "gateway.kgw.dev"

Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    group: str  # "" for the core group
    kind: str
    namespaced: bool
    #: API versions the standard and experimental channels serve, newest first.
    versions: tuple[str, ...]
    plural: str


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind(GATEWAY_GROUP, "GatewayClass", False, ("v1", "v1beta1"), "gatewayclasses"),
        Kind(GATEWAY_GROUP, "Gateway", True, ("v1", "v1beta1"), "gateways"),
        Kind(GATEWAY_GROUP, "HTTPRoute", True, ("v1", "v1beta1"), "httproutes"),
        Kind(GATEWAY_GROUP, "GRPCRoute", True, ("v1",), "grpcroutes"),
        Kind(GATEWAY_GROUP, "TLSRoute", True, ("v1", "v1alpha3", "v1alpha2"), "tlsroutes"),
        Kind(GATEWAY_GROUP, "TCPRoute", True, ("v1", "v1alpha2"), "tcproutes"),
        Kind(GATEWAY_GROUP, "UDPRoute", True, ("v1alpha2",), "udproutes"),
        Kind(GATEWAY_GROUP, "ReferenceGrant", True, ("v1", "v1beta1", "v1alpha2"),
             "referencegrants"),
        Kind(GATEWAY_GROUP, "BackendTLSPolicy", True, ("v1", "v1alpha3"), "backendtlspolicies"),
        Kind(GATEWAY_GROUP, "ListenerSet", True, ("v1",), "listenersets"),
        Kind(POLICY_GROUP, "TrafficPolicy", True, ("v1alpha1",), "trafficpolicies"),
        Kind(POLICY_GROUP, "SecurityPolicy", True, ("v1alpha1",), "securitypolicies"),
        Kind("", "Namespace", False, ("v1",), "namespaces"),
        Kind("", "Service", True, ("v1",), "services"),
        Kind("discovery.k8s.io", "EndpointSlice", True, ("v1",), "endpointslices"),
        Kind("", "Secret", True, ("v1",), "secrets"),
        Kind("", "ConfigMap", True, ("v1",), "configmaps"),
    )
}

ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute")
POLICY_KINDS = ("TrafficPolicy", "SecurityPolicy")
#: The groups whose objects kgw writes status to.
STATUS_GROUPS = (GATEWAY_GROUP, POLICY_GROUP)


def api_version(kind: Kind, version: str) -> str:
    return f"{kind.group}/{version}" if kind.group else version


def parse_api_version(api_version_: str) -> tuple[str, str]:
    """"gateway.networking.k8s.io/v1" -> (group, version); "v1" -> ("", "v1")."""
    group, _, version = api_version_.rpartition("/")
    return group, version


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    kind: str
    namespace: str  # "" for cluster-scoped kinds
    name: str

    def __str__(self) -> str:
        if not self.name:  # an object we could not name (e.g. metadata.name missing)
            return self.kind
        return (f"{self.kind} {self.namespace}/{self.name}" if self.namespace
                else f"{self.kind} {self.name}")

    @classmethod
    def of(cls, obj: Obj) -> ObjectKey:
        meta = obj.get("metadata") or {}
        return cls(obj.get("kind", ""), meta.get("namespace") or "", meta.get("name") or "")


def generation(obj: Obj) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 1)


def resource_version(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
