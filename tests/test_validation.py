"""API-server validation: valid minimal objects pass, each rule fails where it should, junk
never raises.

Each rule gets a row: a valid base object, the edits that break it, and the exact path
(and part of the message) of the error the API server would report.
"""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.duration import parse_duration
from controller.objects import KINDS, api_version
from controller.schema import SCHEMAS, FieldError, apply_defaults, validate
from controller.schema.nodes import go_regex

DELETE = object()

# -- minimal valid objects, one per kind ---------------------------------------------------

MINIMAL: dict[str, str] = {
    "GatewayClass": "spec: {controllerName: kgw.dev/gateway-controller}",
    "Gateway": "spec: {gatewayClassName: kgw, listeners: [{name: http, port: 80, protocol: HTTP}]}",
    "HTTPRoute": "spec: {}",
    "GRPCRoute": "spec: {}",
    "TLSRoute": "spec: {hostnames: [a.example.com], "
                "rules: [{backendRefs: [{name: s, port: 443}]}]}",
    "TCPRoute": "spec: {rules: [{backendRefs: [{name: s, port: 9000}]}]}",
    "UDPRoute": "spec: {rules: [{backendRefs: [{name: s, port: 53}]}]}",
    "ReferenceGrant": "spec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, "
                      "namespace: a}], to: [{group: '', kind: Service}]}",
    "BackendTLSPolicy": "spec: {targetRefs: [{group: '', kind: Service, name: s}],"
                        " validation: {wellKnownCACertificates: System, hostname: s.example.com}}",
    "ListenerSet": "spec: {parentRef: {name: gw}, listeners: [{name: http, port: 80, protocol: "
                   "HTTP}]}",
    "TrafficPolicy": "spec: {targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, "
                     "name: r}]}",
    "SecurityPolicy": "spec: {targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, "
                      "name: gw}]}",
    "Namespace": "{}",
    "Service": "spec: {ports: [{port: 80}]}",
    "EndpointSlice": "addressType: IPv4",
    "Secret": "{}",
    "ConfigMap": "{}",
}


def minimal(kind: str, version: str | None = None) -> dict:
    k = KINDS[kind]
    obj = {"apiVersion": api_version(k, version or k.versions[0]), "kind": kind,
           "metadata": {"name": "x", **({"namespace": "default"} if k.namespaced else {})}}
    obj.update(yaml.safe_load(MINIMAL[kind]) or {})
    return obj


def errors_of(obj: Any) -> list[FieldError]:
    return validate(apply_defaults(obj))


ALL_VERSIONS = [(k.kind, v) for k in KINDS.values() for v in k.versions]


@pytest.mark.parametrize("kind,version", ALL_VERSIONS, ids=[f"{k}-{v}" for k, v in ALL_VERSIONS])
def test_minimal_objects_are_valid(kind: str, version: str) -> None:
    assert errors_of(minimal(kind, version)) == []


def test_every_served_version_has_a_schema() -> None:
    assert {(k, v) for k, v in ALL_VERSIONS} <= set(SCHEMAS)


# -- editing helpers ------------------------------------------------------------------------


def _parts(path: str) -> list[str | int]:
    out: list[str | int] = []
    for part in path.replace("[", ".[").split("."):
        if part:
            out.append(int(part[1:-1]) if part.startswith("[") else part)
    return out


def edited(obj: dict, edits: dict[str, Any]) -> dict:
    """A copy of obj with each path set to a value (or removed, for DELETE)."""
    obj = copy.deepcopy(obj)
    for path, value in edits.items():
        *parents, last = _parts(path)
        node: Any = obj
        for p in parents:
            if isinstance(p, str) and p not in node:
                node[p] = {}
            node = node[p]
        if value is DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return obj


ROUTE = yaml.safe_load("""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [www.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /app}}]
    backendRefs: [{name: svc, port: 8080}]
""")

GATEWAY = yaml.safe_load("""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: kgw
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: https, port: 443, protocol: HTTPS, hostname: www.example.com, tls: {certificateRefs: [{name: cert}]}}
""")  # noqa: E501 (data)

GRPC = yaml.safe_load("""
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{method: {service: echo.Echo, method: Say}}]
    backendRefs: [{name: svc, port: 50051}]
""")

RULE0 = "spec.rules[0]"
M0 = "spec.rules[0].matches[0]"
F0 = "spec.rules[0].filters"
HDR = {"type": "RequestHeaderModifier",
       "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}
RESP_HDR = {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["x"]}}
REDIRECT = {"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}
REWRITE = {"type": "URLRewrite", "urlRewrite": {"hostname": "b.example.com"}}
PREFIX_REWRITE = {"type": "URLRewrite",
                  "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}
PREFIX_REDIRECT = {"type": "RequestRedirect",
                   "requestRedirect": {
                       "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}
MIRROR = {"backendRef": {"name": "m", "port": 80}}

# (id, base, edits, expected error path, part of the expected message)
CASES: list[tuple[str, dict, dict[str, Any], str, str]] = [
    # --- HTTPRoute path matches (CEL on HTTPPathMatch)
    ("path-not-absolute", ROUTE, {f"{M0}.path.value": "app"}, f"{M0}.path.value", "start with '/'"),
    ("path-double-slash", ROUTE, {f"{M0}.path.value": "/a//b"}, f"{M0}.path.value",
     "must not contain '//'"),
    ("path-dot-segment", ROUTE, {f"{M0}.path.value": "/a/./b"}, f"{M0}.path.value", "'/./'"),
    ("path-dotdot-segment", ROUTE, {f"{M0}.path.value": "/a/../b"}, f"{M0}.path.value", "'/../'"),
    ("path-encoded-slash-lower", ROUTE, {f"{M0}.path.value": "/a%2fb"}, f"{M0}.path.value",
     "'%2f'"),
    ("path-encoded-slash-upper", ROUTE, {f"{M0}.path.value": "/a%2Fb"}, f"{M0}.path.value",
     "'%2F'"),
    ("path-fragment", ROUTE, {f"{M0}.path.value": "/a#b"}, f"{M0}.path.value", "'#'"),
    ("path-ends-dotdot", ROUTE, {f"{M0}.path.value": "/a/.."}, f"{M0}.path.value",
     "must not end with '/..'"),
    ("path-ends-dot", ROUTE, {f"{M0}.path.value": "/a/."}, f"{M0}.path.value",
     "must not end with '/.'"),
    ("path-bad-character", ROUTE, {f"{M0}.path.value": "/a b"}, f"{M0}.path.value",
     "valid characters"),
    ("path-exact-checked-too", ROUTE, {f"{M0}.path": {"type": "Exact", "value": "x"}},
     f"{M0}.path.value", "start with '/'"),
    ("path-too-long", ROUTE, {f"{M0}.path.value": "/" + "a" * 1024}, f"{M0}.path.value",
     "at most 1024"),
    ("path-type-enum", ROUTE, {f"{M0}.path.type": "Prefix"}, f"{M0}.path.type", "must be one of"),
    # --- header / query / method matches
    ("header-name-pseudo", ROUTE, {f"{M0}.headers": [{"name": ":method", "value": "GET"}]},
     f"{M0}.headers[0].name", "header name"),
    ("header-value-empty", ROUTE, {f"{M0}.headers": [{"name": "a", "value": ""}]},
     f"{M0}.headers[0].value", "at least 1"),
    ("header-value-newline", ROUTE, {f"{M0}.headers": [{"name": "a", "value": "x\ny"}]},
     f"{M0}.headers[0].value", "printable"),
    ("header-value-required", ROUTE, {f"{M0}.headers": [{"name": "a"}]}, f"{M0}.headers[0].value",
     "required"),
    ("header-duplicate", ROUTE,
     {f"{M0}.headers": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]},
     f"{M0}.headers[1]", "duplicate"),
    ("header-type-enum", ROUTE, {f"{M0}.headers": [{"name": "a", "value": "1", "type": "Prefix"}]},
     f"{M0}.headers[0].type", "must be one of"),
    ("query-too-many", ROUTE,
     {f"{M0}.queryParams": [{"name": f"q{i}", "value": "v"} for i in range(17)]},
     f"{M0}.queryParams", "at most 16"),
    ("query-value-too-long", ROUTE, {f"{M0}.queryParams": [{"name": "q", "value": "v" * 1025}]},
     f"{M0}.queryParams[0].value", "at most 1024"),
    ("method-lower-case", ROUTE, {f"{M0}.method": "get"}, f"{M0}.method", "must be one of"),
    ("matches-too-many", ROUTE,
     {f"{RULE0}.matches": [{"path": {"value": f"/{i}"}} for i in range(65)]},
     f"{RULE0}.matches", "at most 64"),
    # --- filters: union of type and config
    ("filter-config-missing", ROUTE, {f"{RULE0}.filters": [{"type": "RequestHeaderModifier"}]},
     f"{F0}[0].requestHeaderModifier", "must be specified for RequestHeaderModifier"),
    ("filter-config-of-other-type", ROUTE,
     {f"{RULE0}.filters": [
         {"type": "RequestMirror", "requestMirror": MIRROR, "requestHeaderModifier": {}}]},
     f"{F0}[0].requestHeaderModifier",
     "must be nil if the filter.type is not RequestHeaderModifier"),
    ("filter-type-required", ROUTE, {f"{RULE0}.filters": [{"requestHeaderModifier": {}}]},
     f"{F0}[0].type", "required"),
    ("filter-type-enum", ROUTE, {f"{RULE0}.filters": [{"type": "Magic"}]}, f"{F0}[0].type",
     "must be one of"),
    ("request-header-modifier-twice", ROUTE, {f"{RULE0}.filters": [HDR, HDR]}, f"{F0}[1]",
     "RequestHeaderModifier filter cannot be repeated"),
    ("response-header-modifier-twice", ROUTE, {f"{RULE0}.filters": [RESP_HDR, RESP_HDR]},
     f"{F0}[1]", "ResponseHeaderModifier filter cannot be repeated"),
    ("url-rewrite-twice", ROUTE, {f"{RULE0}.filters": [REWRITE, REWRITE]}, f"{F0}[1]",
     "URLRewrite filter cannot"),
    ("cors-twice", ROUTE, {f"{RULE0}.filters": [{"type": "CORS", "cors": {}}] * 2}, f"{F0}[1]",
     "CORS filter cannot"),
    ("redirect-and-rewrite", ROUTE,
     {f"{RULE0}.backendRefs": DELETE, f"{RULE0}.filters": [REDIRECT, REWRITE]},
     F0, "either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite"),
    ("redirect-with-backends", ROUTE, {f"{RULE0}.filters": [REDIRECT]}, RULE0,
     "RequestRedirect filter must not be used together with backendRefs"),
    ("header-modifier-duplicate-set", ROUTE,
     {f"{RULE0}.filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
         "set": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]}}]},
     f"{F0}[0].requestHeaderModifier.set[1]", "duplicate"),
    ("header-modifier-duplicate-remove", ROUTE,
     {f"{RULE0}.filters": [
         {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["a", "a"]}}]},
     f"{F0}[0].requestHeaderModifier.remove[1]", "duplicate"),
    # --- path modifiers
    ("rewrite-prefix-needs-prefix-match", ROUTE,
     {f"{M0}.path.type": "Exact", f"{RULE0}.filters": [PREFIX_REWRITE]}, f"{RULE0}.matches",
     "When using URLRewrite filter with path.replacePrefixMatch"),
    ("rewrite-prefix-needs-one-match", ROUTE,
     {f"{RULE0}.matches": [{"path": {"value": "/a"}}, {"path": {"value": "/b"}}],
      f"{RULE0}.filters": [PREFIX_REWRITE]},
     f"{RULE0}.matches", "exactly one PathPrefix match"),
    ("redirect-prefix-needs-prefix-match", ROUTE,
     {f"{M0}.path.type": "Exact", f"{RULE0}.backendRefs": DELETE,
      f"{RULE0}.filters": [PREFIX_REDIRECT]},
     f"{RULE0}.matches", "When using RequestRedirect filter with path.replacePrefixMatch"),
    ("backend-rewrite-prefix-needs-prefix-match", ROUTE,
     {f"{M0}.path.type": "Exact", f"{RULE0}.backendRefs[0].filters": [PREFIX_REWRITE]},
     f"{RULE0}.matches", "Within backendRefs, When using URLRewrite"),
    ("full-path-needs-value", ROUTE,
     {f"{RULE0}.filters": [
         {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath"}}}]},
     f"{F0}[0].urlRewrite.path.replaceFullPath", "replaceFullPath must be specified"),
    ("prefix-value-with-full-type", ROUTE,
     {f"{RULE0}.filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
         "type": "ReplaceFullPath", "replaceFullPath": "/x", "replacePrefixMatch": "/y"}}}]},
     f"{F0}[0].urlRewrite.path.type",
     "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set"),
    # --- redirect, mirror, CORS
    ("redirect-status-code", ROUTE,
     {f"{RULE0}.backendRefs": DELETE,
      f"{RULE0}.filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 305}}]},
     f"{F0}[0].requestRedirect.statusCode", "must be one of 301, 302, 303, 307, 308"),
    ("redirect-port-zero", ROUTE,
     {f"{RULE0}.backendRefs": DELETE,
      f"{RULE0}.filters": [{"type": "RequestRedirect", "requestRedirect": {"port": 0}}]},
     f"{F0}[0].requestRedirect.port", "greater than or equal to 1"),
    ("redirect-hostname-wildcard", ROUTE,
     {f"{RULE0}.backendRefs": DELETE,
      f"{RULE0}.filters": [
          {"type": "RequestRedirect", "requestRedirect": {"hostname": "*.example.com"}}]},
     f"{F0}[0].requestRedirect.hostname", "no wildcard"),
    ("redirect-scheme", ROUTE,
     {f"{RULE0}.backendRefs": DELETE,
      f"{RULE0}.filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "ftp"}}]},
     f"{F0}[0].requestRedirect.scheme", "must be one of"),
    ("mirror-percent-range", ROUTE,
     {f"{RULE0}.filters": [{"type": "RequestMirror", "requestMirror": {**MIRROR, "percent": 101}}]},
     f"{F0}[0].requestMirror.percent", "less than or equal to 100"),
    ("mirror-percent-and-fraction", ROUTE,
     {f"{RULE0}.filters": [{"type": "RequestMirror", "requestMirror": {
         **MIRROR, "percent": 5, "fraction": {"numerator": 1}}}]},
     f"{F0}[0].requestMirror", "Only one of percent or fraction"),
    ("mirror-fraction-over-one", ROUTE,
     {f"{RULE0}.filters": [{"type": "RequestMirror", "requestMirror": {
         **MIRROR, "fraction": {"numerator": 3, "denominator": 2}}}]},
     f"{F0}[0].requestMirror.fraction", "numerator must be less than or equal to denominator"),
    ("mirror-service-needs-port", ROUTE,
     {f"{RULE0}.filters": [
         {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "m"}}}]},
     f"{F0}[0].requestMirror.backendRef.port", "Must have port for Service reference"),
    ("cors-wildcard-origin-alone", ROUTE,
     {f"{RULE0}.filters": [{"type": "CORS", "cors": {"allowOrigins": ["*", "https://a.example.com"]}}]},
     f"{F0}[0].cors.allowOrigins", "AllowOrigins cannot contain '*' alongside"),
    ("cors-wildcard-method-alone", ROUTE,
     {f"{RULE0}.filters": [{"type": "CORS", "cors": {"allowMethods": ["*", "GET"]}}]},
     f"{F0}[0].cors.allowMethods", "AllowMethods cannot contain '*'"),
    ("cors-origin-format", ROUTE,
     {f"{RULE0}.filters": [{"type": "CORS", "cors": {"allowOrigins": ["example.com"]}}]},
     f"{F0}[0].cors.allowOrigins[0]", "origin"),
    ("cors-max-age", ROUTE, {f"{RULE0}.filters": [{"type": "CORS", "cors": {"maxAge": 0}}]},
     f"{F0}[0].cors.maxAge", "greater than or equal to 1"),
    ("external-auth-union", ROUTE,
     {f"{RULE0}.filters": [{"type": "ExternalAuth", "externalAuth": {
         "protocol": "GRPC", "backendRef": MIRROR["backendRef"]}}]},
     f"{F0}[0].externalAuth.grpc", "grpc must be specified when protocol is set to 'GRPC'"),
    # --- backends, timeouts, retry, session persistence
    ("service-needs-port", ROUTE, {f"{RULE0}.backendRefs[0].port": DELETE},
     f"{RULE0}.backendRefs[0].port", "Must have port for Service reference"),
    ("weight-too-big", ROUTE, {f"{RULE0}.backendRefs[0].weight": 1000001},
     f"{RULE0}.backendRefs[0].weight", "less than or equal to 1000000"),
    ("weight-negative", ROUTE, {f"{RULE0}.backendRefs[0].weight": -1},
     f"{RULE0}.backendRefs[0].weight", "greater than or equal to 0"),
    ("backend-port-string", ROUTE, {f"{RULE0}.backendRefs[0].port": "8080"},
     f"{RULE0}.backendRefs[0].port", "must be an integer"),
    ("backend-namespace-label", ROUTE, {f"{RULE0}.backendRefs[0].namespace": "a.b"},
     f"{RULE0}.backendRefs[0].namespace", "RFC 1123 label"),
    ("backends-too-many", ROUTE,
     {f"{RULE0}.backendRefs": [{"name": f"s{i}", "port": 80} for i in range(17)]},
     f"{RULE0}.backendRefs", "at most 16"),
    ("timeout-format", ROUTE, {f"{RULE0}.timeouts": {"request": "1d"}}, f"{RULE0}.timeouts.request",
     "duration"),
    ("timeout-float", ROUTE, {f"{RULE0}.timeouts": {"request": "1.5s"}},
     f"{RULE0}.timeouts.request", "duration"),
    ("backend-timeout-longer", ROUTE,
     {f"{RULE0}.timeouts": {"request": "1s", "backendRequest": "2s"}},
     f"{RULE0}.timeouts.backendRequest",
     "backendRequest timeout cannot be longer than request timeout"),
    ("retry-code-range", ROUTE, {f"{RULE0}.retry": {"codes": [600]}}, f"{RULE0}.retry.codes[0]",
     "599"),
    ("retry-backoff-format", ROUTE, {f"{RULE0}.retry": {"backoff": "soon"}},
     f"{RULE0}.retry.backoff", "duration"),
    ("permanent-cookie-needs-timeout", ROUTE,
     {f"{RULE0}.sessionPersistence": {"cookieConfig": {"lifetimeType": "Permanent"}}},
     f"{RULE0}.sessionPersistence.absoluteTimeout", "AbsoluteTimeout must be specified"),
    # --- rules, hostnames, parentRefs
    ("rule-names-unique", ROUTE, {"spec.rules": [{"name": "a"}, {"name": "a"}]},
     "spec.rules[1].name", "Rule name must be unique within the route"),
    ("rule-name-format", ROUTE, {f"{RULE0}.name": "Bad_Name"}, f"{RULE0}.name",
     "RFC 1123 subdomain"),
    ("rules-empty", ROUTE, {"spec.rules": []}, "spec.rules", "at least 1"),
    ("rules-too-many", ROUTE, {"spec.rules": [{}] * 17}, "spec.rules", "at most 16"),
    ("matches-total", ROUTE,
     {"spec.rules": [{"matches": [{"path": {"value": f"/{r}/{i}"}} for i in range(64)]}
                     for r in range(3)]},
     "spec.rules", "total number of matches across all rules"),
    ("hostname-upper-case", ROUTE, {"spec.hostnames": ["WWW.example.com"]}, "spec.hostnames[0]",
     "hostname"),
    ("hostname-inner-wildcard", ROUTE, {"spec.hostnames": ["a.*.com"]}, "spec.hostnames[0]",
     "hostname"),
    ("hostname-trailing-newline", ROUTE, {"spec.hostnames": ["a.example.com\n"]},
     "spec.hostnames[0]", "hostname"),
    ("hostnames-too-many", ROUTE, {"spec.hostnames": [f"h{i}.example.com" for i in range(17)]},
     "spec.hostnames", "at most 16"),
    ("parent-refs-mixed-section", ROUTE,
     {"spec.parentRefs": [{"name": "gw"}, {"name": "gw", "sectionName": "http"}]},
     "spec.parentRefs", "sectionName or port must be specified"),
    ("parent-refs-same-section", ROUTE,
     {"spec.parentRefs": [{"name": "gw", "sectionName": "a"}, {"name": "gw", "sectionName": "a"}]},
     "spec.parentRefs[1]", "sectionName or port must be unique"),
    ("parent-refs-same-twice", ROUTE, {"spec.parentRefs": [{"name": "gw"}, {"name": "gw"}]},
     "spec.parentRefs[1]", "must be unique"),
    ("parent-ref-port", ROUTE, {"spec.parentRefs[0].port": 70000}, "spec.parentRefs[0].port",
     "65535"),
    ("parent-ref-name-required", ROUTE, {"spec.parentRefs": [{"sectionName": "a"}]},
     "spec.parentRefs[0].name", "required"),
    ("parent-ref-kind-format", ROUTE, {"spec.parentRefs[0].kind": "my/kind"},
     "spec.parentRefs[0].kind", "Kind"),
    # --- structure
    ("unknown-field", ROUTE, {f"{RULE0}.backendRef": [{"name": "s", "port": 80}]},
     f"{RULE0}.backendRef", "unknown field"),
    ("rules-not-a-list", ROUTE, {"spec.rules": "everything"}, "spec.rules", "must be a list"),
    ("spec-missing", ROUTE, {"spec": DELETE}, "spec", "required"),
    ("spec-null", ROUTE, {"spec": None}, "spec", "required"),
    ("match-not-object", ROUTE, {f"{RULE0}.matches": ["/app"]}, f"{M0}", "must be an object"),
    ("use-default-gateways", ROUTE, {"spec.useDefaultGateways": "Some"}, "spec.useDefaultGateways",
     "must be one of"),
    # --- Gateway listeners
    ("listener-name-unique", GATEWAY, {"spec.listeners[1].name": "http"}, "spec.listeners[1].name",
     "Listener name must be unique"),
    ("listener-combination-unique", GATEWAY,
     {"spec.listeners": [{"name": "a", "port": 80, "protocol": "HTTP"},
                         {"name": "b", "port": 80, "protocol": "HTTP"}]},
     "spec.listeners[1]", "Combination of port, protocol and hostname must be unique"),
    ("http-listener-with-tls", GATEWAY,
     {"spec.listeners[0].tls": {"certificateRefs": [{"name": "c"}]}},
     "spec.listeners[0].tls", "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"),
    ("tcp-listener-with-hostname", GATEWAY,
     {"spec.listeners[0]": {"name": "tcp", "port": 9000, "protocol": "TCP",
                            "hostname": "a.example.com"}},
     "spec.listeners[0].hostname", "hostname must not be specified for protocols ['TCP', 'UDP']"),
    ("udp-listener-lower-case-with-tls", GATEWAY,
     {"spec.listeners[0]": {"name": "udp", "port": 53, "protocol": "udp",
                            "tls": {"mode": "Passthrough"}}},
     "spec.listeners[0].tls", "tls must not be specified"),
    ("tls-listener-needs-tls", GATEWAY,
     {"spec.listeners[0]": {"name": "tls", "port": 443, "protocol": "TLS"}},
     "spec.listeners[0].tls", "tls mode must be set for protocol TLS"),
    ("https-listener-passthrough", GATEWAY, {"spec.listeners[1].tls.mode": "Passthrough"},
     "spec.listeners[1].tls.mode", "tls mode must be Terminate for protocol HTTPS"),
    ("terminate-needs-certificates", GATEWAY, {"spec.listeners[1].tls.certificateRefs": DELETE},
     "spec.listeners[1].tls.certificateRefs",
     "certificateRefs or options must be specified when mode is Terminate"),
    ("tls-mode-enum", GATEWAY, {"spec.listeners[1].tls.mode": "terminate"},
     "spec.listeners[1].tls.mode", "must be one of"),
    ("listener-protocol-format", GATEWAY, {"spec.listeners[0].protocol": "HTTP/2"},
     "spec.listeners[0].protocol", "domain-prefixed"),
    ("listener-port-zero", GATEWAY, {"spec.listeners[0].port": 0}, "spec.listeners[0].port",
     "greater than or equal to 1"),
    ("listener-port-bool", GATEWAY, {"spec.listeners[0].port": True}, "spec.listeners[0].port",
     "must be an integer"),
    ("listener-name-format", GATEWAY, {"spec.listeners[0].name": "HTTP"}, "spec.listeners[0].name",
     "RFC 1123"),
    ("listeners-empty", GATEWAY, {"spec.listeners": []}, "spec.listeners", "at least 1"),
    ("listeners-missing", GATEWAY, {"spec.listeners": DELETE}, "spec.listeners", "required"),
    ("gateway-class-missing", GATEWAY, {"spec.gatewayClassName": DELETE}, "spec.gatewayClassName",
     "required"),
    ("allowed-routes-from", GATEWAY,
     {"spec.listeners[0].allowedRoutes": {"namespaces": {"from": "None"}}},
     "spec.listeners[0].allowedRoutes.namespaces.from", "must be one of"),
    ("allowed-routes-kinds", GATEWAY,
     {"spec.listeners[0].allowedRoutes": {"kinds": [{"group": "x"}]}},
     "spec.listeners[0].allowedRoutes.kinds[0].kind", "required"),
    # --- Gateway addresses, infrastructure, TLS
    ("address-ip-invalid", GATEWAY, {"spec.addresses": [{"value": "10.0.0.300"}]},
     "spec.addresses[0].value", "IPv4 or IPv6"),
    ("address-ip-zone", GATEWAY,
     {"spec.addresses": [{"type": "IPAddress", "value": "fe80::1%eth0"}]},
     "spec.addresses[0].value", "IPv4 or IPv6"),
    ("address-hostname-invalid", GATEWAY,
     {"spec.addresses": [{"type": "Hostname", "value": "Bad_Host"}]},
     "spec.addresses[0].value", "Hostname value must be empty or contain only valid characters"),
    ("address-ip-duplicate", GATEWAY,
     {"spec.addresses": [{"value": "10.0.0.1"}, {"value": "10.0.0.1"}]},
     "spec.addresses[1]", "IPAddress values must be unique"),
    ("address-type-format", GATEWAY, {"spec.addresses": [{"type": "ip", "value": "1.2.3.4"}]},
     "spec.addresses[0].type", "IPAddress"),
    ("infrastructure-label-key", GATEWAY, {"spec.infrastructure": {"labels": {"bad key": "v"}}},
     "spec.infrastructure.labels[bad key]", "Label keys must be in the form"),
    ("infrastructure-label-value", GATEWAY, {"spec.infrastructure": {"labels": {"k": "v" * 64}}},
     "spec.infrastructure.labels[k]", "at most 63"),
    ("infrastructure-too-many-labels", GATEWAY,
     {"spec.infrastructure": {"labels": {f"k{i}": "v" for i in range(9)}}},
     "spec.infrastructure.labels", "at most 8"),
    ("infrastructure-parameters-ref", GATEWAY,
     {"spec.infrastructure": {"parametersRef": {"group": "a", "kind": "B"}}},
     "spec.infrastructure.parametersRef.name", "required"),
    ("frontend-per-port-unique", GATEWAY,
     {"spec.tls": {"frontend": {"default": {}, "perPort": [
         {"port": 443, "tls": {}}, {"port": 443, "tls": {}}]}}},
     "spec.tls.frontend.perPort[1]", "Port for TLS configuration must be unique"),
    ("frontend-ca-refs-required", GATEWAY,
     {"spec.tls": {"frontend": {"default": {"validation": {}}}}},
     "spec.tls.frontend.default.validation.caCertificateRefs", "required"),
    ("tls-options-too-many", GATEWAY,
     {"spec.listeners[1].tls.options": {f"k{i}": "v" for i in range(17)}},
     "spec.listeners[1].tls.options", "at most 16"),
    ("default-scope", GATEWAY, {"spec.defaultScope": "Namespace"}, "spec.defaultScope",
     "must be one of"),
    # --- GRPCRoute
    ("grpc-method-empty", GRPC, {f"{M0}.method": {"type": "Exact"}}, f"{M0}.method",
     "One or both of 'service' or 'method' must be specified"),
    ("grpc-service-chars", GRPC, {f"{M0}.method.service": "echo/Echo"}, f"{M0}.method.service",
     "service must only contain valid characters"),
    ("grpc-method-chars", GRPC, {f"{M0}.method.method": "Say.Hi"}, f"{M0}.method.method",
     "method must only contain valid characters"),
    ("grpc-filter-type", GRPC, {f"{RULE0}.filters": [REWRITE]}, f"{F0}[0].type", "must be one of"),
    ("grpc-header-modifier-twice", GRPC, {f"{RULE0}.filters": [HDR, HDR]}, f"{F0}[1]",
     "RequestHeaderModifier filter cannot be repeated"),
    ("grpc-matches-too-many", GRPC,
     {f"{RULE0}.matches": [{"method": {"service": f"s{i}"}} for i in range(9)]},
     f"{RULE0}.matches", "at most 8"),
    ("grpc-rule-names", GRPC, {"spec.rules": [{"name": "a"}, {"name": "a"}]}, "spec.rules[1].name",
     "Rule name must be unique"),
]


@pytest.mark.parametrize("base,edits,path,message", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rule(base: dict, edits: dict, path: str, message: str) -> None:
    assert validate(apply_defaults(base)) == [], "the base object must be valid"
    errors = errors_of(edited(base, edits))
    assert any(e.path == path and message in e.message for e in errors), errors


@pytest.mark.parametrize("base,edits", [
    pytest.param(ROUTE, {f"{M0}.path": {"type": "RegularExpression", "value": "^.*(a|b)$"}},
                 id="regex-path-free-form"),
    pytest.param(ROUTE,
                 {f"{M0}.headers": [{"name": "Foo", "value": "1"}, {"name": "foo", "value": "2"}]},
                 id="header-case-variants-accepted"),
    pytest.param(ROUTE, {f"{RULE0}.timeouts": {"request": "0s", "backendRequest": "10s"}},
                 id="zero-request-timeout"),
    pytest.param(ROUTE, {f"{RULE0}.timeouts": {"request": "1m", "backendRequest": "59s999ms"}},
                 id="timeouts-ordered"),
    pytest.param(ROUTE, {
        f"{RULE0}.backendRefs[0]": {"group": "example.com", "kind": "Thing", "name": "t"}},
                 id="non-service-backend-without-port"),
    pytest.param(ROUTE, {"spec.parentRefs": [{"name": "gw", "sectionName": "a"},
                                             {"name": "gw", "sectionName": "b"}]},
                 id="parent-refs-distinct-sections"),
    pytest.param(ROUTE,
                 {"spec.parentRefs": [{"name": "gw", "port": 80}, {"name": "gw", "port": 443}]},
                 id="parent-refs-distinct-ports"),
    pytest.param(ROUTE, {"spec.parentRefs": [{"name": "gw"}, {"name": "gw", "namespace": "other"}]},
                 id="parent-refs-other-namespace"),
    pytest.param(ROUTE, {f"{RULE0}.filters": [PREFIX_REWRITE]},
                 id="prefix-rewrite-with-prefix-match"),
    pytest.param(ROUTE, {f"{RULE0}.matches": DELETE, f"{RULE0}.filters": [PREFIX_REWRITE]},
                 id="prefix-rewrite-with-default-match"),
    pytest.param(ROUTE, {"spec.hostnames": ["*.example.com", "1.2.3.4"]}, id="route-hostnames"),
    pytest.param(ROUTE,
                 {"spec.rules": [{"matches": [{"path": {"value": f"/{r}/{i}"}} for i in range(64)]}
                                 for r in range(2)]}, id="matches-128"),
    pytest.param(ROUTE, {f"{RULE0}.filters": [{"type": "ExtensionRef",
                                               "extensionRef": {"kind": "F", "name": "f"}},
                                              {"type": "ExtensionRef",
                                               "extensionRef": {"kind": "F", "name": "g"}}]},
                 id="extension-ref-repeatable"),
    pytest.param(ROUTE,
                 {f"{RULE0}.filters": [{"type": "RequestMirror", "requestMirror": MIRROR}] * 2},
                 id="mirror-repeatable"),
    pytest.param(ROUTE, {f"{M0}.path.value": "/a%20b/~x"}, id="path-percent-encoding"),
    pytest.param(ROUTE, {"spec.hostnames": None}, id="null-optional-field-pruned"),
    pytest.param(GATEWAY, {"spec.listeners[0]": {"name": "tls", "port": 443, "protocol": "TLS",
                                                 "tls": {"mode": "Passthrough"}}},
                 id="tls-passthrough"),
    pytest.param(GATEWAY, {"spec.listeners[1].tls": {"options": {"example.com/cert": "x"}}},
                 id="terminate-options"),
    pytest.param(GATEWAY, {"spec.listeners[1].hostname": DELETE}, id="https-without-hostname"),
    pytest.param(GATEWAY, {"spec.listeners[1].tls": DELETE},
                 id="https-without-tls-is-a-status-matter"),
    pytest.param(GATEWAY, {"spec.listeners[0].protocol": "example.com/proto"},
                 id="custom-protocol"),
    pytest.param(GATEWAY, {"spec.addresses": [{"type": "IPAddress"}, {"value": "::1"},
                                              {"type": "Hostname", "value": "lb.example.com"},
                                              {"type": "example.com/custom",
                                               "value": "anything goes"}]},
                 id="addresses"),
    pytest.param(GATEWAY, {"spec.listeners[0]": {"name": "tcp", "port": 80, "protocol": "TCP"}},
                 id="tcp-listener"),
    pytest.param(GRPC, {f"{M0}.method": {"type": "RegularExpression", "service": "echo/.*"}},
                 id="grpc-regex"),
    pytest.param(GRPC, {f"{M0}.method": {"service": "echo.Echo"}}, id="grpc-service-only"),
])
def test_valid_variants(base: dict, edits: dict) -> None:
    assert errors_of(edited(base, edits)) == []


# -- other kinds --------------------------------------------------------------------------

KIND_CASES: list[tuple[str, str, str | None, dict[str, Any], str, str]] = [
    # (id, kind, version, edits, path, message)
    ("gatewayclass-controller-path", "GatewayClass", None, {"spec.controllerName": "kgw.dev"},
     "spec.controllerName", "domain-prefixed path"),
    ("gatewayclass-description", "GatewayClass", None, {"spec.description": "d" * 65},
     "spec.description", "at most 64"),
    ("gatewayclass-parameters-ref", "GatewayClass", None,
     {"spec.parametersRef": {"group": "", "name": "p"}}, "spec.parametersRef.kind", "required"),
    ("tlsroute-v1-hostnames-required", "TLSRoute", "v1", {"spec.hostnames": DELETE},
     "spec.hostnames", "required"),
    ("tlsroute-ip-hostname", "TLSRoute", "v1", {"spec.hostnames": ["10.0.0.1"]},
     "spec.hostnames[0]", "Hostnames cannot contain an IP"),
    ("tlsroute-v1-one-rule", "TLSRoute", "v1",
     {"spec.rules": [{"backendRefs": [{"name": "s", "port": 1}]}] * 2}, "spec.rules", "at most 1"),
    ("tlsroute-backends-required", "TLSRoute", "v1alpha2", {"spec.rules": [{"backendRefs": []}]},
     "spec.rules[0].backendRefs", "at least 1"),
    ("tcproute-backends-missing", "TCPRoute", None, {"spec.rules": [{}]},
     "spec.rules[0].backendRefs", "required"),
    ("tcproute-rules-missing", "TCPRoute", None, {"spec.rules": DELETE}, "spec.rules", "required"),
    ("udproute-service-port", "UDPRoute", None, {"spec.rules[0].backendRefs[0].port": DELETE},
     "spec.rules[0].backendRefs[0].port", "Must have port"),
    ("udproute-rule-names", "UDPRoute", None,
     {"spec.rules": [{"name": "a", "backendRefs": [{"name": "s", "port": 1}]}] * 2},
     "spec.rules[1].name", "Rule name must be unique"),
    ("listenerset-parent-required", "ListenerSet", None, {"spec.parentRef": DELETE},
     "spec.parentRef", "required"),
    ("listenerset-parent-name", "ListenerSet", None, {"spec.parentRef": {"namespace": "a"}},
     "spec.parentRef.name", "required"),
    ("listenerset-parent-namespace", "ListenerSet", None,
     {"spec.parentRef.namespace": "Not_A_Label"}, "spec.parentRef.namespace", "RFC 1123 label"),
    ("listenerset-listeners-required", "ListenerSet", None, {"spec.listeners": DELETE},
     "spec.listeners", "required"),
    ("listenerset-listeners-empty", "ListenerSet", None, {"spec.listeners": []}, "spec.listeners",
     "at least 1"),
    ("listenerset-listener-port", "ListenerSet", None, {"spec.listeners[0].port": 0},
     "spec.listeners[0].port", "greater than or equal to 1"),
    ("listenerset-listener-names", "ListenerSet", None,
     {"spec.listeners": [{"name": "a", "port": 80, "protocol": "HTTP"},
                         {"name": "a", "port": 81, "protocol": "HTTP"}]},
     "spec.listeners[1].name", "Listener name must be unique"),
    ("listenerset-listener-combination", "ListenerSet", None,
     {"spec.listeners": [{"name": "a", "port": 80, "protocol": "HTTP"},
                         {"name": "b", "port": 80, "protocol": "HTTP"}]},
     "spec.listeners[1]", "Combination of port, protocol and hostname must be unique"),
    ("listenerset-http-tls", "ListenerSet", None,
     {"spec.listeners[0].tls": {"mode": "Terminate", "certificateRefs": [{"name": "c"}]}},
     "spec.listeners[0].tls", "tls must not be specified"),
    ("listenerset-tls-mode", "ListenerSet", None, {"spec.listeners[0].protocol": "TLS"},
     "spec.listeners[0].tls", "tls mode must be set for protocol TLS"),
    ("listenerset-tcp-hostname", "ListenerSet", None,
     {"spec.listeners[0].protocol": "TCP", "spec.listeners[0].hostname": "a.example.com"},
     "spec.listeners[0].hostname", "hostname must not be specified"),
    ("listenerset-https-certificates", "ListenerSet", None,
     {"spec.listeners[0].protocol": "HTTPS", "spec.listeners[0].tls": {}},
     "spec.listeners[0].tls.certificateRefs", "certificateRefs or options must be specified"),
    ("referencegrant-from-empty", "ReferenceGrant", None, {"spec.from": []}, "spec.from",
     "at least 1"),
    ("referencegrant-from-namespace", "ReferenceGrant", None,
     {"spec.from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]},
     "spec.from[0].namespace", "required"),
    ("referencegrant-to-kind", "ReferenceGrant", "v1beta1",
     {"spec.to": [{"group": "", "kind": "not/kind"}]}, "spec.to[0].kind", "Kind"),
    ("btls-no-ca", "BackendTLSPolicy", None, {"spec.validation.wellKnownCACertificates": DELETE},
     "spec.validation", "must specify either CACertificateRefs or WellKnownCACertificates"),
    ("btls-both-ca", "BackendTLSPolicy", None,
     {"spec.validation.caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}]},
     "spec.validation", "must not contain both CACertificateRefs and WellKnownCACertificates"),
    ("btls-well-known-enum", "BackendTLSPolicy", None,
     {"spec.validation.wellKnownCACertificates": "Mozilla"},
     "spec.validation.wellKnownCACertificates", "must be one of"),
    ("btls-hostname-precise", "BackendTLSPolicy", "v1alpha3",
     {"spec.validation.hostname": "*.example.com"}, "spec.validation.hostname", "no wildcard"),
    ("btls-san-hostname-missing", "BackendTLSPolicy", None,
     {"spec.validation.subjectAltNames": [{"type": "Hostname"}]},
     "spec.validation.subjectAltNames[0].hostname", "SubjectAltName element must contain Hostname"),
    ("btls-san-uri-with-hostname", "BackendTLSPolicy", None,
     {"spec.validation.subjectAltNames": [
         {"type": "URI", "uri": "spiffe://a/b", "hostname": "a.example.com"}]},
     "spec.validation.subjectAltNames[0].hostname", "must not contain Hostname"),
    ("btls-san-uri-format", "BackendTLSPolicy", None,
     {"spec.validation.subjectAltNames": [{"type": "URI", "uri": "not a uri"}]},
     "spec.validation.subjectAltNames[0].uri", "absolute URI"),
    ("btls-targets-section-mixed", "BackendTLSPolicy", None,
     {"spec.targetRefs": [{"group": "", "kind": "Service", "name": "s"},
                          {"group": "", "kind": "Service", "name": "s", "sectionName": "https"}]},
     "spec.targetRefs",
     "sectionName must be specified when targetRefs includes 2 or more references"),
    ("btls-targets-duplicate", "BackendTLSPolicy", None,
     {"spec.targetRefs": [{"group": "", "kind": "Service", "name": "s"}] * 2},
     "spec.targetRefs[1]", "sectionName must be unique"),
    ("btls-targets-required", "BackendTLSPolicy", None, {"spec.targetRefs": []}, "spec.targetRefs",
     "at least 1"),
    # metadata
    ("name-upper-case", "HTTPRoute", None, {"metadata.name": "Route"}, "metadata.name",
     "RFC 1123 subdomain"),
    ("name-too-long", "Gateway", None, {"metadata.name": "a" * 254}, "metadata.name",
     "no more than 253"),
    ("name-missing", "HTTPRoute", None, {"metadata.name": DELETE}, "metadata.name", "required"),
    ("namespace-format", "HTTPRoute", None, {"metadata.namespace": "a.b"}, "metadata.namespace",
     "RFC 1123 label"),
    ("namespace-name-dot", "Namespace", None, {"metadata.name": "a.b"}, "metadata.name",
     "RFC 1123 label"),
    ("service-name-digit", "Service", None, {"metadata.name": "1svc"}, "metadata.name", "DNS-1035"),
    ("label-key", "Service", None, {"metadata.labels": {"-bad": "v"}}, "metadata.labels[-bad]",
     "invalid label key"),
    ("label-value", "Service", None, {"metadata.labels": {"app": "a b"}}, "metadata.labels[app]",
     "invalid label value"),
    ("label-value-type", "Service", None, {"metadata.labels": {"app": 1}}, "metadata.labels[app]",
     "must be a string"),
    ("annotation-key", "Gateway", None, {"metadata.annotations": {"a/b/c": "v"}},
     "metadata.annotations[a/b/c]", "invalid annotation key"),
    ("annotations-size", "Gateway", None, {"metadata.annotations": {"a": "v" * (256 * 1024)}},
     "metadata.annotations", "256"),
    ("metadata-unknown-field", "Gateway", None, {"metadata.nmae": "x"}, "metadata.nmae",
     "unknown field"),
    # core kinds
    ("service-port-zero", "Service", None, {"spec.ports[0].port": 0}, "spec.ports[0].port",
     "greater than or equal to 1"),
    ("service-port-big", "Service", None, {"spec.ports[0].port": 65536}, "spec.ports[0].port",
     "65535"),
    ("service-port-string", "Service", None, {"spec.ports[0].port": "80"}, "spec.ports[0].port",
     "must be an integer"),
    ("service-ports-need-names", "Service", None, {"spec.ports": [{"port": 80}, {"port": 81}]},
     "spec.ports[0].name", "required when a Service has more than one port"),
    ("service-port-duplicate", "Service", None,
     {"spec.ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}, "spec.ports[1]",
     "duplicate port 80/TCP"),
    ("service-port-name-duplicate", "Service", None,
     {"spec.ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}, "spec.ports[1].name",
     "duplicate"),
    ("service-ports-required", "Service", None, {"spec.ports": DELETE}, "spec.ports",
     "at least one port"),
    ("service-target-port-zero", "Service", None, {"spec.ports[0].targetPort": 0},
     "spec.ports[0].targetPort", "between 1 and 65535"),
    ("service-target-port-name", "Service", None, {"spec.ports[0].targetPort": "HTTP_1"},
     "spec.ports[0].targetPort", "named port"),
    ("service-protocol", "Service", None, {"spec.ports[0].protocol": "tcp"},
     "spec.ports[0].protocol", "must be one of"),
    ("service-external-name", "Service", None, {"spec": {"type": "ExternalName"}},
     "spec.externalName", "required"),
    ("endpointslice-address-type", "EndpointSlice", None, {"addressType": DELETE}, "addressType",
     "required"),
    ("endpointslice-ipv4-address", "EndpointSlice", None, {"endpoints": [{"addresses": ["::1"]}]},
     "endpoints[0].addresses[0]", "IPv4"),
    ("endpointslice-bad-address", "EndpointSlice", None, {"endpoints": [{"addresses": ["10.0.0"]}]},
     "endpoints[0].addresses[0]", "valid IPv4"),
    ("endpointslice-fqdn", "EndpointSlice", None,
     {"addressType": "FQDN", "endpoints": [{"addresses": ["Bad_Name"]}]},
     "endpoints[0].addresses[0]", "RFC 1123"),
    ("endpointslice-no-addresses", "EndpointSlice", None, {"endpoints": [{"addresses": []}]},
     "endpoints[0].addresses", "at least 1"),
    ("endpointslice-ready-type", "EndpointSlice", None,
     {"endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]},
     "endpoints[0].conditions.ready", "must be a boolean"),
    ("endpointslice-port-range", "EndpointSlice", None, {"ports": [{"port": 70000}]},
     "ports[0].port", "65535"),
    ("endpointslice-port-names", "EndpointSlice", None,
     {"ports": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]}, "ports[1].name", "duplicate"),
    ("secret-not-base64", "Secret", None, {"data": {"a": "not base64!"}}, "data[a]", "base64"),
    ("secret-key-format", "Secret", None, {"data": {"a/b": "YQ=="}}, "data[a/b]", "invalid key"),
    ("tls-secret-needs-key", "Secret", None,
     {"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}}, "data[tls.key]",
     "kubernetes.io/tls"),
    ("configmap-value-type", "ConfigMap", None, {"data": {"a": 1}}, "data[a]", "must be a string"),
    ("configmap-duplicate-key", "ConfigMap", None,
     {"data": {"a": "x"}, "binaryData": {"a": "YQ=="}}, "binaryData[a]", "duplicate"),
]


@pytest.mark.parametrize("kind,version,edits,path,message", [c[1:] for c in KIND_CASES],
                         ids=[c[0] for c in KIND_CASES])
def test_kind_rule(kind: str, version: str | None, edits: dict, path: str, message: str) -> None:
    base = minimal(kind, version)
    assert errors_of(base) == [], "the base object must be valid"
    errors = errors_of(edited(base, edits))
    assert any(e.path == path and message in e.message for e in errors), errors


def test_kind_variants_that_are_valid() -> None:
    variants = [
        edited(minimal("TLSRoute", "v1alpha2"), {"spec.hostnames": DELETE}),
        edited(minimal("TCPRoute", "v1alpha2"),
               {"spec.rules": [{"backendRefs": [{"name": f"s{i}", "port": 1}]} for i in range(3)]}),
        edited(minimal("Gateway"), {"metadata.name": "a" * 253}),
        edited(minimal("HTTPRoute"), {"metadata.name": "1-route.v2"}),
        edited(minimal("Service"),
               {"spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
        edited(minimal("Service"), {"spec": {"clusterIP": "None", "selector": {"app": "a"}}}),
        edited(minimal("Service"),
               {"spec.ports": [{"name": "http", "port": 80, "targetPort": "http-alt"},
                               {"name": "dns", "port": 80, "protocol": "UDP"}]}),
        edited(minimal("EndpointSlice"),
               {"addressType": "IPv6", "endpoints": [{"addresses": ["fd00::1"],
                                                      "conditions": {"ready": True}}],
                "ports": [{"name": "", "port": 8080, "appProtocol": "http"}]}),
        edited(minimal("Secret"),
               {"type": "kubernetes.io/tls", "stringData": {"tls.crt": "c", "tls.key": "k"}}),
        edited(minimal("Secret"), {"data": {"a": "YWJj", "b": ""}}),
        edited(minimal("ConfigMap"),
               {"data": {"ca.crt": "-----BEGIN"}, "binaryData": {"b": "AAE="}}),
        edited(minimal("BackendTLSPolicy"), {
            "spec.validation": {"caCertificateRefs": [
                {"group": "", "kind": "ConfigMap", "name": "ca"}],
                                "hostname": "s.example.com",
                                "subjectAltNames": [{"type": "Hostname",
                                                     "hostname": "*.example.com"},
                                                    {"type": "URI", "uri": "spiffe://td/ns/a/sa/b"}]},
            "spec.targetRefs": [{"group": "", "kind": "Service", "name": "s", "sectionName": "a"},
                                {"group": "", "kind": "Service", "name": "s",
                                 "sectionName": "b"}]}),
        edited(minimal("ReferenceGrant", "v1alpha2"),
               {"spec.to": [{"group": "", "kind": "Secret", "name": "s"}]}),
    ]
    for obj in variants:
        assert errors_of(obj) == [], obj


# -- kind and version -----------------------------------------------------------------------


@pytest.mark.parametrize("obj,path,message", [
    ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}, "kind",
     "unknown kind 'Deployment'"),
    ({"apiVersion": "gateway.networking.k8s.io/v1alpha1", "kind": "HTTPRoute",
      "metadata": {"name": "r"}, "spec": {}},
     "apiVersion", "HTTPRoute is not served at 'gateway.networking.k8s.io/v1alpha1'"),
    ({"apiVersion": "v1", "kind": "HTTPRoute", "metadata": {"name": "r"}, "spec": {}}, "apiVersion",
     "served versions"),
    ({"apiVersion": "gateway.networking.k8s.io/v1alpha3", "kind": "TCPRoute",
      "metadata": {"name": "t"}, "spec": {}},
     "apiVersion", "gateway.networking.k8s.io/v1alpha2"),
    ({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "TCPRoute", "metadata": {"name": "t"},
      "spec": {"rules": [{"backendRefs": [{"name": "a", "port": 1}]},
                         {"backendRefs": [{"name": "b", "port": 1}]}]}},
     "spec.rules", "at most 1"),
    ({"apiVersion": "gateway.networking.k8s.io/v1", "metadata": {"name": "r"}}, "kind", "required"),
    ({"kind": "HTTPRoute", "metadata": {"name": "r"}}, "apiVersion", "required"),
    ({"kind": 7}, "kind", "required"),
    ("HTTPRoute", "", "must be a mapping"),
    (None, "", "must be a mapping"),
])
def test_kind_and_version(obj: Any, path: str, message: str) -> None:
    errors = validate(obj)
    assert any(e.path == path and message in e.message for e in errors), errors


def test_error_renders_path_and_message() -> None:
    assert str(FieldError("spec.rules", "must be a list")) == "spec.rules: must be a list"


# -- never raises -------------------------------------------------------------------------

JUNK: list[Any] = [
    None, True, 0, -1, 1.5, float("nan"), "", "x" * 100_000, [], [None], {}, {"": None}, {1: 2},
    [[[[[]]]]], {"a": {"b": {"c": [1, "2", None]}}},
]


def _deep(n: int) -> Any:
    value: Any = "leaf"
    for i in range(n):
        value = [value] if i % 2 else {"k": value}
    return value


JUNK.append(_deep(5000))


def _mutations(obj: Any, path: tuple = ()):
    """Every (path) to a node of obj, for replacing that node with junk."""
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _mutations(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _mutations(v, path + (i,))


def _replace(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    obj = copy.copy(obj)
    obj[path[0]] = _replace(obj[path[0]], path[1:], value)
    return obj


def _fuzz_bases() -> list[dict]:
    bases = [ROUTE, GATEWAY, GRPC] + [minimal(k, v) for k, v in ALL_VERSIONS]
    rich = edited(ROUTE, {f"{RULE0}.filters": [HDR, {
        "type": "RequestMirror", "requestMirror": {**MIRROR, "fraction": {"numerator": 1}}},
                                               {"type": "CORS", "cors": {"allowOrigins": ["*"],
                                                                         "allowMethods": ["GET"]}}],
                          f"{RULE0}.timeouts": {"request": "10s", "backendRequest": "1s"},
                          f"{RULE0}.sessionPersistence": {"cookieConfig": {
                              "lifetimeType": "Permanent"}, "absoluteTimeout": "1h"},
                          f"{M0}.headers": [{"name": "a", "value": "b"}],
                          f"{M0}.queryParams": [{"name": "q", "value": "v"}]})
    bases.append(rich)
    bases.append(edited(GATEWAY, {"spec.addresses": [{"value": "10.0.0.1"},
                                                     {"type": "Hostname", "value": "a.b"}],
                                  "spec.infrastructure": {"labels": {"a": "b"},
                                                          "annotations": {"c": "d"}},
                                  "spec.tls": {"frontend": {"default": {"validation": {
                                      "caCertificateRefs": [
                                          {"group": "", "kind": "ConfigMap", "name": "ca"}]}}}}}))
    bases.append(edited(minimal("EndpointSlice"),
                        {"endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 1}]}))
    bases.append(edited(minimal("Secret"), {"type": "kubernetes.io/tls",
                                            "data": {"tls.crt": "YQ==", "tls.key": "YQ=="}}))
    return bases


def test_validate_never_raises_on_mangled_objects() -> None:
    """Replace every node of every base object with each kind of junk; validate must answer."""
    rng = random.Random(1234)
    checked = 0
    for base in _fuzz_bases():
        for path in _mutations(base):
            for junk in rng.sample(JUNK, 4):
                mangled = _replace(base, path, junk)
                # The file source validates defaulted objects; validate() must also cope without.
                for candidate in (mangled, apply_defaults(mangled) if isinstance(mangled, dict)
                                  else mangled):
                    errors = validate(candidate)
                    assert isinstance(errors, list)
                    assert all(isinstance(e, FieldError) and "internal error" not in e.message
                               for e in errors), errors
                    checked += 1
    assert checked > 1000


def test_pathological_strings_are_rejected_not_hung() -> None:
    """The CRD's header-value pattern backtracks exponentially in Python's engine if copied
    verbatim."""
    value = "a" * 4000 + "\x00"
    errors = errors_of(edited(ROUTE, {f"{M0}.headers": [{"name": "h", "value": value}]}))
    assert [e.path for e in errors] == [f"{M0}.headers[0].value"]


def test_yaml_anchor_loop_is_reported() -> None:
    loop = yaml.safe_load("a: &x [*x]")["a"]
    errors = errors_of(edited(ROUTE, {"spec.rules": loop}))
    assert errors and all(isinstance(e, FieldError) for e in errors)


def test_go_regex_end_anchor() -> None:
    assert go_regex(r"^a$").search("a\n") is None
    assert go_regex(r"^[$a]+$").search("$a") is not None  # '$' inside a class stays literal
    assert go_regex(r"^a\$$").search("a$") is not None


# -- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize("text,seconds", [
    ("0s", 0.0), ("10s", 10.0), ("500ms", 0.5), ("1m", 60.0), ("1h30m", 5400.0),
    ("1h1m1s1ms", 3661.001), ("99999ms", 99.999), ("1s1s", 2.0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "1", "1d", "1.5s", "-1s", "100000s", "1h1m1s1ms1s", " 1s", "1s\n", "1us", "s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# -- the conformance suite's manifests must all be accepted ---------------------------------------


def _conformance_dir() -> Path | None:
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "conformance"]
    if os.environ.get("KGW_CONFORMANCE_DIR"):
        candidates.insert(0, Path(os.environ["KGW_CONFORMANCE_DIR"]))
    return next((c for c in candidates if (c / "manifests").is_dir()), None)


#: Placeholders the upstream suite substitutes before applying a manifest; here they get
#: values of the kind the suite would put there.
PLACEHOLDERS = {
    "{GATEWAY_CLASS_NAME}": "kgw",
    "{GATEWAY_CONTROLLER_NAME}": "kgw.dev/gateway-controller",
    "PLACEHOLDER_USABLE_ADDRS": "192.0.2.10",
    "PLACEHOLDER_UNUSABLE_ADDRS": "192.0.2.11",
}


def _conformance_objects() -> list[tuple[str, dict]]:
    root = _conformance_dir()
    if root is None:
        return []
    out = []
    for path in sorted((root / "manifests").rglob("*.yaml")):
        text = path.read_text()
        for placeholder, value in PLACEHOLDERS.items():
            text = text.replace(placeholder, value)
        for i, obj in enumerate(yaml.safe_load_all(text)):
            if isinstance(obj, dict) and obj.get("kind") in KINDS:
                out.append((f"{path.relative_to(root / 'manifests')}#{i}", obj))
    return out


def test_conformance_manifests_are_accepted() -> None:
    objects = _conformance_objects()
    if not objects:
        pytest.skip("conformance data not found (../shared/conformance or $KGW_CONFORMANCE_DIR)")
    failures = {name: errors for name, obj in objects if (errors := errors_of(obj))}
    assert failures == {}
    assert len(objects) > 300
