"""CRD defaulting: input -> expected defaulted output, one row per default."""

from __future__ import annotations

import base64
import copy

import pytest
import yaml

from controller.schema import apply_defaults

GW = "gateway.networking.k8s.io"


def doc(text: str) -> dict:
    return yaml.safe_load(text)


def at(obj, path: str):
    """obj at a dotted path with [i] indexes: at(o, "spec.rules[0].matches")."""
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        obj = obj[int(part[1:-1])] if part.startswith("[") else obj[part]
    return obj


HTTPROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{name: gw}]
"""

LISTENER_SET = """
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: ls, namespace: ns}
spec:
  parentRef: {name: gw}
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""

# (id, document, path into the defaulted object, expected value there)
CASES = [
    # HTTPRoute: rules, matches, paths
    ("httproute-no-rules", HTTPROUTE, "spec.rules",
     [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]),
    ("httproute-rule-without-matches",
     HTTPROUTE + "  rules: [{backendRefs: [{name: s, port: 80}]}]\n",
     "spec.rules[0].matches", [{"path": {"type": "PathPrefix", "value": "/"}}]),
    ("httproute-match-without-path", HTTPROUTE + "  rules: [{matches: [{method: GET}]}]\n",
     "spec.rules[0].matches[0]", {"method": "GET", "path": {"type": "PathPrefix", "value": "/"}}),
    ("httproute-path-type-only", HTTPROUTE + "  rules: [{matches: [{path: {type: Exact}}]}]\n",
     "spec.rules[0].matches[0].path", {"type": "Exact", "value": "/"}),
    ("httproute-path-value-only", HTTPROUTE + "  rules: [{matches: [{path: {value: /foo}}]}]\n",
     "spec.rules[0].matches[0].path", {"type": "PathPrefix", "value": "/foo"}),
    ("httproute-null-path-is-defaulted", HTTPROUTE + "  rules: [{matches: [{path: null}]}]\n",
     "spec.rules[0].matches[0].path", {"type": "PathPrefix", "value": "/"}),
    ("httproute-empty-matches-stay-empty", HTTPROUTE + "  rules: [{matches: []}]\n",
     "spec.rules[0].matches", []),
    ("httproute-header-match-type",
     HTTPROUTE + "  rules: [{matches: [{headers: [{name: a, value: b}]}]}]\n",
     "spec.rules[0].matches[0].headers[0]", {"name": "a", "value": "b", "type": "Exact"}),
    ("httproute-query-match-type",
     HTTPROUTE + "  rules: [{matches: [{queryParams: [{name: a, value: b}]}]}]\n",
     "spec.rules[0].matches[0].queryParams[0].type", "Exact"),
    # references
    ("parentref-group-kind", HTTPROUTE, "spec.parentRefs[0]",
     {"name": "gw", "group": GW, "kind": "Gateway"}),
    ("parentref-explicit-empty-group-kept",
     HTTPROUTE.replace("{name: gw}", "{name: s, group: '', kind: Service}"),
     "spec.parentRefs[0]", {"name": "s", "group": "", "kind": "Service"}),
    ("backendref-group-kind-weight",
     HTTPROUTE + "  rules: [{backendRefs: [{name: s, port: 80}]}]\n",
     "spec.rules[0].backendRefs[0]",
     {"name": "s", "port": 80, "group": "", "kind": "Service", "weight": 1}),
    ("backendref-weight-zero-kept",
     HTTPROUTE + "  rules: [{backendRefs: [{name: s, port: 80, weight: 0}]}]\n",
     "spec.rules[0].backendRefs[0].weight", 0),
    # filters
    ("redirect-status-code",
     HTTPROUTE + "  rules: [{filters: [{type: RequestRedirect, requestRedirect: {}}]}]\n",
     "spec.rules[0].filters[0].requestRedirect", {"statusCode": 302}),
    ("mirror-backendref-and-fraction",
     HTTPROUTE
     + "  rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80},"
                 " fraction: {numerator: 5}}}]}]\n",
     "spec.rules[0].filters[0].requestMirror",
     {"backendRef": {"name": "m", "port": 80, "group": "", "kind": "Service"},
      "fraction": {"numerator": 5, "denominator": 100}}),
    ("mirror-percent-has-no-default",
     HTTPROUTE
     + "  rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: "
       "80}}}]}]\n",
     "spec.rules[0].filters[0].requestMirror",
     {"backendRef": {"name": "m", "port": 80, "group": "", "kind": "Service"}}),
    ("cors-max-age",
     HTTPROUTE + "  rules: [{filters: [{type: CORS, cors: {allowOrigins: ['*']}}]}]\n",
     "spec.rules[0].filters[0].cors", {"allowOrigins": ["*"], "maxAge": 5}),
    ("backendref-filters-defaulted",
     HTTPROUTE + "  rules: [{backendRefs: [{name: s, port: 80, filters: [{type: RequestRedirect, "
                 "requestRedirect: {scheme: https}}]}]}]\n",
     "spec.rules[0].backendRefs[0].filters[0].requestRedirect",
     {"scheme": "https", "statusCode": 302}),
    ("session-persistence",
     HTTPROUTE + "  rules: [{sessionPersistence: {cookieConfig: {}}}]\n",
     "spec.rules[0].sessionPersistence",
     {"type": "Cookie", "cookieConfig": {"lifetimeType": "Session"}}),
    # Gateway
    ("listener-allowed-routes", """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g}
spec:
  gatewayClassName: c
  listeners: [{name: http, port: 80, protocol: HTTP}]
""", "spec.listeners[0].allowedRoutes", {"namespaces": {"from": "Same"}}),
    ("listener-allowed-routes-kinds-only", """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g}
spec:
  gatewayClassName: c
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}]
""", "spec.listeners[0].allowedRoutes",
     {"kinds": [{"kind": "HTTPRoute", "group": GW}], "namespaces": {"from": "Same"}}),
    ("listener-namespaces-selector-only", """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g}
spec:
  gatewayClassName: c
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {selector: {matchLabels: {a: b}}}}}]
""", "spec.listeners[0].allowedRoutes.namespaces",  # noqa: E501 (data)
     {"from": "Same", "selector": {"matchLabels": {"a": "b"}}}),
    ("listener-tls-mode-and-cert-ref", """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g}
spec:
  gatewayClassName: c
  listeners: [{name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}]
""", "spec.listeners[0].tls",
     {"mode": "Terminate", "certificateRefs": [{"name": "cert", "group": "", "kind": "Secret"}]}),
    ("gateway-address-type", """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g}
spec:
  gatewayClassName: c
  addresses: [{value: 10.0.0.1}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
""", "spec.addresses[0]", {"type": "IPAddress", "value": "10.0.0.1"}),
    ("gateway-allowed-listeners", """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g}
spec:
  gatewayClassName: c
  allowedListeners: {}
  listeners: [{name: http, port: 80, protocol: HTTP}]
""", "spec.allowedListeners", {"namespaces": {"from": "None"}}),
    ("gateway-frontend-validation-mode", """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g}
spec:
  gatewayClassName: c
  tls: {frontend: {default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}},
        backend: {clientCertificateRef: {name: client}}}
  listeners: [{name: http, port: 80, protocol: HTTP}]
""", "spec.tls", {"frontend": {"default": {"validation": {  # noqa: E501 (data)
        "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}],
        "mode": "AllowValidOnly"}}},
        "backend": {"clientCertificateRef": {"name": "client", "group": "", "kind": "Secret"}}}),
    ("gateway-status", """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: g}
spec:
  gatewayClassName: c
  listeners: [{name: http, port: 80, protocol: HTTP}]
""", "status.conditions[1]", {"type": "Programmed", "status": "Unknown", "reason": "Pending",
                              "message": "Waiting for controller",
                              "lastTransitionTime": "1970-01-01T00:00:00Z"}),
    # ListenerSet
    ("listenerset-parent-ref", LISTENER_SET, "spec.parentRef",
     {"name": "gw", "group": GW, "kind": "Gateway"}),
    ("listenerset-allowed-routes", LISTENER_SET, "spec.listeners[0].allowedRoutes",
     {"namespaces": {"from": "Same"}}),
    ("listenerset-tls-mode", LISTENER_SET.replace(
        "protocol: HTTP}", "protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}"),
     "spec.listeners[0].tls",
     {"mode": "Terminate", "certificateRefs": [{"name": "c", "group": "", "kind": "Secret"}]}),
    ("listenerset-status", LISTENER_SET, "status.conditions", [
        {"type": t, "status": "Unknown", "reason": "Pending", "message": "Waiting for controller",
         "lastTransitionTime": "1970-01-01T00:00:00Z"} for t in ("Accepted", "Programmed")]),
    ("gatewayclass-status", f"""
apiVersion: {GW}/v1
kind: GatewayClass
metadata: {{name: c}}
spec: {{controllerName: kgw.dev/gateway-controller}}
""", "status.conditions", [{"type": "Accepted", "status": "Unknown", "reason": "Waiting",
                             "message": "Waiting for controller",
                            "lastTransitionTime": "1970-01-01T00:00:00Z"}]),
    # GRPCRoute
    ("grpc-method-and-header-type", """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  rules: [{matches: [{method: {service: foo.Bar}, headers: [{name: a, value: b}]}],
           backendRefs: [{name: s, port: 50051}]}]
""", "spec.rules[0]", {"matches": [{"method": {"type": "Exact", "service": "foo.Bar"},
                                     "headers": [{"name": "a", "value": "b", "type": "Exact"}]}],
                        "backendRefs": [{"name": "s", "port": 50051, "group": "", "kind": "Service",
                                         "weight": 1}]}),
    ("grpc-no-rule-default", """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec: {parentRefs: [{name: gw}]}
""", "spec", {"parentRefs": [{"name": "gw", "group": GW, "kind": "Gateway"}]}),
    # L4 routes
    ("tcproute-backend", """
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: t}
spec: {rules: [{backendRefs: [{name: s, port: 9000}]}]}
""", "spec.rules[0].backendRefs[0]",
     {"name": "s", "port": 9000, "group": "", "kind": "Service", "weight": 1}),
    ("tlsroute-parent", """
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: t}
spec: {parentRefs: [{name: gw, sectionName: tls}], hostnames: [a.example.com],
       rules: [{backendRefs: [{name: s, port: 443}]}]}
""", "spec.parentRefs[0]", {"name": "gw", "sectionName": "tls", "group": GW, "kind": "Gateway"}),
    # core kinds
    ("service-defaults", """
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{port: 80}, {port: 443, targetPort: https, protocol: TCP}]}
""", "spec", {"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80},
                                             {"port": 443, "targetPort": "https",
                                              "protocol": "TCP"}]}),
    ("secret-string-data", """
apiVersion: v1
kind: Secret
metadata: {name: s}
data: {a: YQ==}
stringData: {b: hello}
""", "", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque",
          "data": {"a": "YQ==", "b": base64.b64encode(b"hello").decode()}}),
    ("endpointslice-port-protocol", """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: e}
addressType: IPv4
ports: [{name: http, port: 80}]
""", "ports[0]", {"name": "http", "port": 80, "protocol": "TCP"}),
]


@pytest.mark.parametrize("text,path,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_defaults(text: str, path: str, expected) -> None:
    assert at(apply_defaults(doc(text)), path) == expected


def test_input_is_not_modified() -> None:
    original = doc(HTTPROUTE + "  rules: [{matches: [{path: {value: /x}}]}]\n")
    snapshot = copy.deepcopy(original)
    apply_defaults(original)
    assert original == snapshot


def test_defaults_apply_only_where_the_parent_exists() -> None:
    out = apply_defaults(doc("""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g}
spec:
  gatewayClassName: c
  listeners: [{name: https, port: 443, protocol: HTTPS}]
"""))
    listener = out["spec"]["listeners"][0]
    assert "tls" not in listener  # tls.mode defaults only inside an existing tls
    assert "addresses" not in out["spec"] and "infrastructure" not in out["spec"]


def test_user_values_win_over_defaults() -> None:
    out = apply_defaults(doc(
        HTTPROUTE + "  rules: [{matches: [{path: {type: RegularExpression, value: '/a.*'}}]}]\n"))
    assert out["spec"]["rules"][0]["matches"][0]["path"] == {"type": "RegularExpression",
                                                             "value": "/a.*"}


@pytest.mark.parametrize("junk", [
    None, 42, "text", [], [1, 2], {"kind": 5},
    {"kind": "HTTPRoute", "apiVersion": "gateway.networking.k8s.io/v1", "spec": "oops"},
    {"kind": "HTTPRoute", "apiVersion": "gateway.networking.k8s.io/v1", "spec": {"rules": "oops"}},
    {"kind": "HTTPRoute", "apiVersion": "gateway.networking.k8s.io/v1",
     "spec": {"rules": [None, 3, "x", []]}},
    {"kind": "Gateway", "apiVersion": "gateway.networking.k8s.io/v1",
     "spec": {"listeners": [{"tls": 7}]}},
    {"kind": "Service", "apiVersion": "v1", "spec": {"ports": [None, {"port": "x"}]}},
    {"kind": "Secret", "apiVersion": "v1", "stringData": {"a": 1}},
])
def test_wrong_types_are_left_for_validation(junk) -> None:
    out = apply_defaults(junk)
    assert isinstance(out, dict)


def test_unknown_kind_is_copied_unchanged() -> None:
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"replicas": 1}}
    assert apply_defaults(obj) == obj


def test_unserved_version_is_not_defaulted() -> None:
    obj = doc(HTTPROUTE.replace("/v1", "/v1alpha1"))
    assert apply_defaults(obj) == obj


def test_self_referencing_yaml_does_not_hang() -> None:
    loop = yaml.safe_load("a: &x [*x]")
    obj = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": "r"}, "spec": {"rules": loop["a"]}}
    assert isinstance(apply_defaults(obj), dict)
