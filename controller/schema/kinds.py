"""One table: (kind, version) -> the schema the API server holds for it.

Gateway API kinds use the experimental channel's schema (a superset of standard). Every
version a kind serves (controller.objects.KINDS) has an entry; versions of one kind
share a schema except where upstream's differ (TLSRoute).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller.objects import KINDS, api_version
from controller.schema import core, gateway, kgwpolicy, policy, routes
from controller.schema.meta import NameCheck, dns1123_subdomain, object_meta
from controller.schema.nodes import Anything, Node, Obj, Rule, Str, obj, with_default


def _root(kind: str, fields: Mapping[str, Node], *, name_check: NameCheck = dns1123_subdomain,
          required: Iterable[str] = (), rules: Iterable[Rule] = ()) -> Obj:
    return obj({
        "apiVersion": Str(enum=tuple(api_version(KINDS[kind], v) for v in KINDS[kind].versions)),
        "kind": Str(enum=(kind,)),
        "metadata": object_meta(name_check),
        **fields,
    }, required=["apiVersion", "kind", "metadata", *required], rules=rules)


def _crd(kind: str, spec: Node, status: Node = Anything()) -> Obj:
    return _root(kind, {"spec": spec, "status": status}, required=["spec"])


_GATEWAY = _crd("Gateway", gateway.GATEWAY_SPEC,
                with_default(Anything(), gateway.GATEWAY_STATUS_DEFAULT))
_GATEWAY_CLASS = _crd("GatewayClass", gateway.GATEWAY_CLASS_SPEC,
                      with_default(Anything(), gateway.GATEWAY_CLASS_STATUS_DEFAULT))
_HTTP_ROUTE = _crd("HTTPRoute", routes.HTTP_ROUTE_SPEC)
_GRPC_ROUTE = _crd("GRPCRoute", routes.GRPC_ROUTE_SPEC)
_REFERENCE_GRANT = _crd("ReferenceGrant", policy.REFERENCE_GRANT_SPEC)
_BACKEND_TLS_POLICY = _crd("BackendTLSPolicy", policy.BACKEND_TLS_POLICY_SPEC)
_LISTENER_SET = _crd("ListenerSet", gateway.LISTENER_SET_SPEC,
                     with_default(Anything(), gateway.LISTENER_SET_STATUS_DEFAULT))

SCHEMAS: dict[tuple[str, str], Obj] = {
    ("GatewayClass", "v1"): _GATEWAY_CLASS,
    ("GatewayClass", "v1beta1"): _GATEWAY_CLASS,
    ("Gateway", "v1"): _GATEWAY,
    ("Gateway", "v1beta1"): _GATEWAY,
    ("HTTPRoute", "v1"): _HTTP_ROUTE,
    ("HTTPRoute", "v1beta1"): _HTTP_ROUTE,
    ("GRPCRoute", "v1"): _GRPC_ROUTE,
    ("TLSRoute", "v1"): _crd("TLSRoute", routes.TLS_ROUTE_SPEC_V1),
    ("TLSRoute", "v1alpha3"): _crd("TLSRoute", routes.TLS_ROUTE_SPEC_V1ALPHA3),
    ("TLSRoute", "v1alpha2"): _crd("TLSRoute", routes.TLS_ROUTE_SPEC_V1ALPHA2),
    ("TCPRoute", "v1"): _crd("TCPRoute", routes.TCP_ROUTE_SPEC_V1),
    ("TCPRoute", "v1alpha2"): _crd("TCPRoute", routes.L4_ROUTE_SPEC),
    ("UDPRoute", "v1alpha2"): _crd("UDPRoute", routes.L4_ROUTE_SPEC),
    ("ReferenceGrant", "v1"): _REFERENCE_GRANT,
    ("ReferenceGrant", "v1beta1"): _REFERENCE_GRANT,
    ("ReferenceGrant", "v1alpha2"): _REFERENCE_GRANT,
    ("BackendTLSPolicy", "v1"): _BACKEND_TLS_POLICY,
    ("BackendTLSPolicy", "v1alpha3"): _BACKEND_TLS_POLICY,
    ("ListenerSet", "v1"): _LISTENER_SET,
    ("TrafficPolicy", "v1alpha1"): _crd("TrafficPolicy", kgwpolicy.spec_schema("TrafficPolicy")),
    ("SecurityPolicy", "v1alpha1"): _crd("SecurityPolicy",
                                         kgwpolicy.spec_schema("SecurityPolicy")),
    ("Namespace", "v1"): _root("Namespace", core.NAMESPACE_FIELDS,
                               name_check=core.NAME_CHECKS["Namespace"]),
    ("Service", "v1"): _root("Service", core.SERVICE_FIELDS,
                             name_check=core.NAME_CHECKS["Service"]),
    ("EndpointSlice", "v1"): _root("EndpointSlice", core.ENDPOINT_SLICE_FIELDS,
                                   required=core.ENDPOINT_SLICE_REQUIRED,
                                   rules=core.ENDPOINT_SLICE_RULES),
    ("Secret", "v1"): _root("Secret", core.SECRET_FIELDS, rules=core.SECRET_RULES),
    ("ConfigMap", "v1"): _root("ConfigMap", core.CONFIG_MAP_FIELDS, rules=core.CONFIG_MAP_RULES),
}


def schema_for(kind: Any, api_version_: Any) -> Obj | None:
    """The schema for an object's kind and apiVersion, or None if kgw does not serve it.

    controller.objects.KINDS decides which versions are served; SCHEMAS may know more.
    """
    if not isinstance(kind, str) or not isinstance(api_version_, str) or kind not in KINDS:
        return None
    group, _, version = api_version_.rpartition("/")
    if group != KINDS[kind].group or version not in KINDS[kind].versions:
        return None
    return SCHEMAS.get((kind, version))
