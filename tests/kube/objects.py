"""Objects the kube tests put into the fake API server (as `kubectl apply` would)."""

from __future__ import annotations

from typing import Any

GW = "gateway.networking.k8s.io/v1"


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name,
                         "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}}


def gateway_class(name: str = "kgw") -> dict[str, Any]:
    return {"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": name},
            "spec": {"controllerName": "kgw.dev/gateway-controller"}}


def gateway(port: int, ns: str = "test", name: str = "gw",
            tls_secret: str | None = None) -> dict[str, Any]:
    listeners: list[dict[str, Any]] = [{"name": "http", "protocol": "HTTP", "port": port,
                                        "allowedRoutes": {"namespaces": {"from": "Same"}}}]
    if tls_secret:
        listeners.append({"name": "https", "protocol": "HTTPS", "port": port + 1,
                          "allowedRoutes": {"namespaces": {"from": "Same"}},
                          "tls": {"mode": "Terminate",
                                  "certificateRefs": [
                                      {"group": "", "kind": "Secret", "name": tls_secret}]}})
    return {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": name, "namespace": ns},
            "spec": {"gatewayClassName": "kgw",
                     "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                     "listeners": listeners}}


def service(ns: str = "test", name: str = "svc") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                                      "targetPort": 8080}]}}


def endpoint_slice(port: int, ns: str = "test", service_name: str = "svc") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service_name}-1", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]}


def http_route(host: str, ns: str = "test", name: str = "web",
               gateway_name: str = "gw") -> dict[str, Any]:
    return {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": name, "namespace": ns},
            "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                     "name": gateway_name}],
                     "hostnames": [host],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                "backendRefs": [{"group": "", "kind": "Service", "name": "svc",
                                                 "port": 80, "weight": 1}]}]}}


def secret(name: str, ns: str = "test", cert: str = "Y2VydA==", key: str = "a2V5") -> dict[str,
                                                                                           Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
            "type": "kubernetes.io/tls", "data": {"tls.crt": cert, "tls.key": key}}


def basic(port: int, backend_port: int, ns: str = "test") -> list[dict[str, Any]]:
    return [namespace(ns), gateway_class(), gateway(port, ns), service(ns),
            endpoint_slice(backend_port, ns)]


def vhosts(translation: Any) -> set[str]:
    if translation is None:
        return set()
    l7 = translation.l7.to_dict()
    return {vh["hostname"] for lst in l7["listeners"] for vh in lst["virtual_hosts"]}
