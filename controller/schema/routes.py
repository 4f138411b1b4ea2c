"""Route kinds: HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, UDPRoute (experimental channel).

Sources: apis/v1/httproute_types.go, grpcroute_types.go, tlsroute_types.go and the
v1alpha2 TCP/UDP/TLS route types. Each CEL rule is a function next to the node that
carries it in the CRD, with the CRD's message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controller.duration import parse_duration
from controller.schema.common import (BACKEND_OBJECT_REFERENCE, BACKEND_REF, DURATION,
                                      HEADER_FILTER,
                                      HEADER_NAME, HEADER_VALUE_RE, HOSTNAME, HOSTNAMES,
                                      LOCAL_OBJECT_REFERENCE,
                                      PARENT_REFS, PATH_CHARS_RE, PORT, PRECISE_HOSTNAME,
                                      REQUEST_MIRROR,
                                      SECTION_NAME, SESSION_PERSISTENCE, at_most_once, filter_union,
                                      rule_names_unique)
from controller.schema.errors import FieldError
from controller.schema.nodes import (Bool, Int, ListOf, Str, extend, go_regex, index, join, obj,
                                     with_default)

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
DEFAULT_PATH = {"type": "PathPrefix", "value": "/"}
DEFAULT_MATCHES = [{"path": DEFAULT_PATH}]
DEFAULT_RULES = [{"matches": DEFAULT_MATCHES}]

# -- HTTPRoute matches --------------------------------------------------------------------

_PATH_CHARS = go_regex(PATH_CHARS_RE)
#: CEL on HTTPPathMatch for Exact/PathPrefix values: (test, message), in the CRD's order.
_PATH_VALUE_RULES = (
    (lambda v: v.startswith("/"),
     "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "//" not in v, "must not contain '//' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "/./" not in v, "must not contain '/./' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "/../" not in v, "must not contain '/../' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "%2f" not in v, "must not contain '%2f' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "%2F" not in v, "must not contain '%2F' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "#" not in v, "must not contain '#' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: not v.endswith("/.."),
     "must not end with '/..' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: not v.endswith("/."),
     "must not end with '/.' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: _PATH_CHARS.search(v) is not None,
     "must only contain valid characters (matching "
     "^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types ['Exact', 'PathPrefix']"),
)


def _path_value_rules(p: dict, path: str) -> Iterable[FieldError]:
    if p.get("type", "PathPrefix") not in ("Exact", "PathPrefix"):
        return
    value = p.get("value", "/")
    for ok, message in _PATH_VALUE_RULES:
        if not ok(value):
            yield FieldError(join(path, "value"), message)


PATH_MATCH = obj({
    "type": Str(enum=("Exact", "PathPrefix", "RegularExpression"), default="PathPrefix"),
    "value": Str(None, 1024, default="/"),
}, rules=[_path_value_rules])

HEADER_MATCH = obj({
    "type": Str(enum=("Exact", "RegularExpression"), default="Exact"),
    "name": HEADER_NAME,
    "value": Str(1, 4096, HEADER_VALUE_RE,
                 pattern_hint="must be printable US-ASCII, words separated by single "
                                                        "spaces or tabs"),
}, required=["name", "value"])

QUERY_PARAM_MATCH = obj({
    "type": Str(enum=("Exact", "RegularExpression"), default="Exact"),
    "name": HEADER_NAME,
    "value": Str(1, 1024),
}, required=["name", "value"])

HTTP_ROUTE_MATCH = obj({
    "path": with_default(PATH_MATCH, DEFAULT_PATH),
    "headers": ListOf(HEADER_MATCH, max_items=16, map_keys=("name",)),
    "queryParams": ListOf(QUERY_PARAM_MATCH, max_items=16, map_keys=("name",)),
    "method": Str(enum=HTTP_METHODS),
})

# -- HTTPRoute filters ------------------------------------------------------------------


def _path_modifier_rules(m: dict, path: str) -> Iterable[FieldError]:
    mtype = m.get("type")
    for type_value, fld in (("ReplaceFullPath", "replaceFullPath"),
                            ("ReplacePrefixMatch", "replacePrefixMatch")):
        if mtype == type_value and fld not in m:
            yield FieldError(join(path, fld),
                             f"{fld} must be specified when type is set to '{type_value}'")
        if fld in m and mtype != type_value:
            yield FieldError(join(path, "type"), f"type must be '{type_value}' when {fld} is set")


PATH_MODIFIER = obj({
    "type": Str(enum=("ReplaceFullPath", "ReplacePrefixMatch")),
    "replaceFullPath": Str(None, 1024),
    "replacePrefixMatch": Str(None, 1024),
}, required=["type"], rules=[_path_modifier_rules])

REQUEST_REDIRECT = obj({
    "scheme": Str(enum=("http", "https")),
    "hostname": PRECISE_HOSTNAME,
    "path": PATH_MODIFIER,
    "port": PORT,
    "statusCode": Int(enum=(301, 302, 303, 307, 308), default=302),
})

URL_REWRITE = obj({"hostname": PRECISE_HOSTNAME, "path": PATH_MODIFIER})


def _wildcard_alone(what: str, kind: str = "other origins"):
    def rule(items: list, path: str) -> Iterable[FieldError]:
        if "*" in items and len(items) > 1:
            yield FieldError(path, f"{what} cannot contain '*' alongside {kind}")

    rule.__name__ = f"wildcard_alone({what})"
    return rule


CORS_ORIGIN = Str(1, 253, r"(^\*$)|(^([a-zA-Z][a-zA-Z0-9+\-.]+):\/\/([^:/?#]+)(:([0-9]{1,5}))?$)",
                  pattern_hint="must be '*' or an origin '<scheme>://<host>[:<port>]'")

CORS = obj({
    "allowOrigins": ListOf(CORS_ORIGIN, max_items=64, unique=True,
                           rules=(_wildcard_alone("AllowOrigins"),)),
    "allowCredentials": Bool(),
    "allowMethods": ListOf(Str(enum=HTTP_METHODS + ("*",)), max_items=9, unique=True,
                           rules=(_wildcard_alone("AllowMethods", "other methods"),)),
    "allowHeaders": ListOf(HEADER_NAME, max_items=64, unique=True,
                           rules=(_wildcard_alone("AllowHeaders", "other methods"),)),
    "exposeHeaders": ListOf(HEADER_NAME, max_items=64, unique=True),
    "maxAge": Int(1, default=5),
})


def _external_auth_union(a: dict, path: str) -> Iterable[FieldError]:
    proto = a.get("protocol")
    for proto_value, fld in (("GRPC", "grpc"), ("HTTP", "http")):
        if proto == proto_value and fld not in a:
            yield FieldError(join(path, fld),
                             f"{fld} must be specified when protocol is set to '{proto_value}'")
        if fld in a and proto != proto_value:
            yield FieldError(join(path, "protocol"),
                             f"protocol must be '{proto_value}' when {fld} is set")


EXTERNAL_AUTH = obj({
    "protocol": Str(enum=("HTTP", "GRPC")),
    "backendRef": BACKEND_OBJECT_REFERENCE,
    "grpc": obj({"allowedHeaders": ListOf(Str(), max_items=64, unique=True)}),
    "http": obj({
        "path": Str(None, 1024, PATH_CHARS_RE, pattern_hint="must be a valid URL path"),
        "allowedHeaders": ListOf(Str(), max_items=64, unique=True),
        "allowedResponseHeaders": ListOf(Str(), max_items=64, unique=True),
    }),
    "forwardBody": obj({"maxSize": Int(0)}),
}, required=["protocol", "backendRef"], rules=[_external_auth_union])

HTTP_FILTER_FIELDS = {
    "CORS": "cors",
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExternalAuth": "externalAuth",
    "ExtensionRef": "extensionRef",
}

HTTP_FILTER = obj({
    "type": Str(enum=("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror",
                      "RequestRedirect", "URLRewrite", "ExtensionRef", "CORS", "ExternalAuth")),
    "requestHeaderModifier": HEADER_FILTER,
    "responseHeaderModifier": HEADER_FILTER,
    "requestMirror": REQUEST_MIRROR,
    "requestRedirect": REQUEST_REDIRECT,
    "urlRewrite": URL_REWRITE,
    "cors": CORS,
    "externalAuth": EXTERNAL_AUTH,
    "extensionRef": LOCAL_OBJECT_REFERENCE,
}, required=["type"], rules=[filter_union(HTTP_FILTER_FIELDS)])


def _redirect_xor_rewrite(filters: list, path: str) -> Iterable[FieldError]:
    types = {f.get("type") for f in filters}
    if "RequestRedirect" in types and "URLRewrite" in types:
        yield FieldError(path,
                         "May specify either httpRouteFilterRequestRedirect or "
                         "httpRouteFilterRequestRewrite, but not both")


HTTP_FILTERS = ListOf(HTTP_FILTER, max_items=16, rules=(
    _redirect_xor_rewrite,
    at_most_once("CORS", "RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect",
                 "URLRewrite"),
))

HTTP_BACKEND_REF = extend(BACKEND_REF, {"filters": HTTP_FILTERS})

# -- HTTPRoute rules --------------------------------------------------------------------


def _timeouts_ordered(t: dict, path: str) -> Iterable[FieldError]:
    if "request" in t and "backendRequest" in t:
        request, backend = parse_duration(t["request"]), parse_duration(t["backendRequest"])
        if request != 0 and backend > request:
            yield FieldError(join(path, "backendRequest"),
                             "backendRequest timeout cannot be longer than request timeout")


TIMEOUTS = obj({"request": DURATION, "backendRequest": DURATION}, rules=[_timeouts_ordered])

RETRY = obj({
    "codes": ListOf(Int(400, 599), unique=True),
    "attempts": Int(),
    "backoff": DURATION,
})


def _replaces_prefix(f: dict, config: str) -> bool:
    mod = (f.get(config) or {}).get("path") or {}
    return mod.get("type") == "ReplacePrefixMatch" and "replacePrefixMatch" in mod


def _single_prefix_match(rule: dict) -> bool:
    matches = rule.get("matches", DEFAULT_MATCHES)
    return len(matches) == 1 and "path" in matches[0] and matches[0]["path"].get(
        "type", "PathPrefix") == "PathPrefix"


def _http_rule_rules(rule: dict, path: str) -> Iterable[FieldError]:
    """The CEL rules on HTTPRouteRule."""
    filters = rule.get("filters", [])
    backends = rule.get("backendRefs", [])
    if backends and any("requestRedirect" in f for f in filters):
        yield FieldError(path, "RequestRedirect filter must not be used together with backendRefs")
    single_prefix = _single_prefix_match(rule)
    for config, name in (("requestRedirect", "RequestRedirect"), ("urlRewrite", "URLRewrite")):
        if sum(_replaces_prefix(f, config) for f in filters) == 1 and not single_prefix:
            yield FieldError(join(path, "matches"),
                             f"When using {name} filter with path.replacePrefixMatch, "
                             "exactly one PathPrefix match must be specified")
        # CEL: exists_one backendRef whose filters have exists_one such filter.
        in_backends = sum(sum(_replaces_prefix(f, config) for f in b.get("filters", [])) == 1
                          for b in backends)
        if in_backends == 1 and not single_prefix:
            word = "when" if name == "RequestRedirect" else "When"
            yield FieldError(join(path, "matches"),
                             f"Within backendRefs, {word} using {name} filter with "
                             "path.replacePrefixMatch, exactly one PathPrefix match must "
                             "be specified")


HTTP_ROUTE_RULE = obj({
    "name": SECTION_NAME,
    "matches": ListOf(HTTP_ROUTE_MATCH, max_items=64, default=DEFAULT_MATCHES),
    "filters": HTTP_FILTERS,
    "backendRefs": ListOf(HTTP_BACKEND_REF, max_items=16),
    "timeouts": TIMEOUTS,
    "retry": RETRY,
    "sessionPersistence": SESSION_PERSISTENCE,
}, rules=[_http_rule_rules])


def _total_matches(rules: list, path: str) -> Iterable[FieldError]:
    if sum(len(r.get("matches", DEFAULT_MATCHES)) for r in rules) > 128:
        yield FieldError(path,
                         "While 16 rules and 64 matches per rule are allowed, the total number of "
                         "matches across all rules in a route must be less than 128")


DEFAULT_GATEWAYS = Str(enum=("All", "None"))

HTTP_ROUTE_SPEC = obj({
    "parentRefs": PARENT_REFS,
    "hostnames": HOSTNAMES,
    "rules": ListOf(HTTP_ROUTE_RULE, min_items=1, max_items=16, default=DEFAULT_RULES,
                    rules=(rule_names_unique, _total_matches)),
    "useDefaultGateways": DEFAULT_GATEWAYS,
})

# -- GRPCRoute ----------------------------------------------------------------------------

# The CRD writes "^(?i)..."; Python wants global flags first, which means the same.
_GRPC_SERVICE = go_regex(r"(?i)^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$")
_GRPC_METHOD = go_regex(r"^[A-Za-z_][A-Za-z_0-9]*$")


def _grpc_method_rules(m: dict, path: str) -> Iterable[FieldError]:
    mtype = m.get("type", "Exact")
    if "type" in m and "service" not in m and "method" not in m:
        yield FieldError(path, "One or both of 'service' or 'method' must be specified")
    if mtype == "Exact" and "service" in m and not _GRPC_SERVICE.search(m["service"]):
        yield FieldError(join(path, "service"), "service must only contain valid characters "
                                                "(matching "
                                                "^(?i)\\.?[a-z_][a-z_0-9]*(\\.[a-z_][a-z_0-9]*)*$)")
    if mtype == "Exact" and "method" in m and not _GRPC_METHOD.search(m["method"]):
        yield FieldError(join(path, "method"),
                         "method must only contain valid characters (matching "
                         "^[A-Za-z_][A-Za-z_0-9]*$)")


GRPC_METHOD_MATCH = obj({
    "type": Str(enum=("Exact", "RegularExpression"), default="Exact"),
    "service": Str(None, 1024),
    "method": Str(None, 1024),
}, rules=[_grpc_method_rules])

GRPC_HEADER_MATCH = obj({
    "type": Str(enum=("Exact", "RegularExpression"), default="Exact"),
    "name": HEADER_NAME,
    "value": Str(1, 4096),
}, required=["name", "value"])

GRPC_ROUTE_MATCH = obj({
    "method": GRPC_METHOD_MATCH,
    "headers": ListOf(GRPC_HEADER_MATCH, max_items=16, map_keys=("name",)),
})

GRPC_FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "ExtensionRef": "extensionRef",
}

GRPC_FILTER = obj({
    "type": Str(
        enum=("ResponseHeaderModifier", "RequestHeaderModifier", "RequestMirror", "ExtensionRef")),
    "requestHeaderModifier": HEADER_FILTER,
    "responseHeaderModifier": HEADER_FILTER,
    "requestMirror": REQUEST_MIRROR,
    "extensionRef": LOCAL_OBJECT_REFERENCE,
}, required=["type"], rules=[filter_union(GRPC_FILTER_FIELDS)])

GRPC_FILTERS = ListOf(GRPC_FILTER, max_items=16,
                      rules=(at_most_once("RequestHeaderModifier", "ResponseHeaderModifier"),))

GRPC_ROUTE_RULE = obj({
    "name": SECTION_NAME,
    "matches": ListOf(GRPC_ROUTE_MATCH, max_items=8),
    "filters": GRPC_FILTERS,
    "backendRefs": ListOf(extend(BACKEND_REF, {"filters": GRPC_FILTERS}), max_items=16),
    "sessionPersistence": SESSION_PERSISTENCE,
})

GRPC_ROUTE_SPEC = obj({
    "parentRefs": PARENT_REFS,
    "hostnames": HOSTNAMES,
    "rules": ListOf(GRPC_ROUTE_RULE, max_items=16, rules=(rule_names_unique,)),
    "useDefaultGateways": DEFAULT_GATEWAYS,
})

# -- TLSRoute, TCPRoute, UDPRoute -------------------------------------------------------------


def _no_ip_hostnames(hostnames: list, path: str) -> Iterable[FieldError]:
    import ipaddress

    for i, h in enumerate(hostnames):
        try:
            ipaddress.ip_address(h)
        except ValueError:
            continue
        yield FieldError(index(path, i), "Hostnames cannot contain an IP")


def _l4_rule(max_backends: int = 16) -> Any:
    return obj({
        "name": SECTION_NAME,
        "backendRefs": ListOf(BACKEND_REF, min_items=1, max_items=max_backends),
    }, required=["backendRefs"])


#: TLSRoute v1: hostnames required (1..1024), exactly one rule.
TLS_ROUTE_SPEC_V1 = obj({
    "parentRefs": PARENT_REFS,
    "hostnames": ListOf(HOSTNAME, min_items=1, max_items=1024, rules=(_no_ip_hostnames,)),
    "rules": ListOf(_l4_rule(), min_items=1, max_items=1, rules=(rule_names_unique,)),
    "useDefaultGateways": DEFAULT_GATEWAYS,
}, required=["hostnames", "rules"])

#: TLSRoute v1alpha3: hostnames required, up to 16 rules.
TLS_ROUTE_SPEC_V1ALPHA3 = obj({
    "parentRefs": PARENT_REFS,
    "hostnames": ListOf(HOSTNAME, min_items=1, max_items=16, rules=(_no_ip_hostnames,)),
    "rules": ListOf(_l4_rule(), min_items=1, max_items=16, rules=(rule_names_unique,)),
    "useDefaultGateways": DEFAULT_GATEWAYS,
}, required=["hostnames", "rules"])

#: TLSRoute v1alpha2: hostnames optional.
TLS_ROUTE_SPEC_V1ALPHA2 = obj({
    "parentRefs": PARENT_REFS,
    "hostnames": HOSTNAMES,
    "rules": ListOf(_l4_rule(), min_items=1, max_items=16, rules=(rule_names_unique,)),
    "useDefaultGateways": DEFAULT_GATEWAYS,
}, required=["rules"])

#: TCPRoute v1: exactly one rule.
TCP_ROUTE_SPEC_V1 = obj({
    "parentRefs": PARENT_REFS,
    "rules": ListOf(_l4_rule(), min_items=1, max_items=1, rules=(rule_names_unique,)),
    "useDefaultGateways": DEFAULT_GATEWAYS,
}, required=["rules"])

#: TCPRoute and UDPRoute v1alpha2 share one shape.
L4_ROUTE_SPEC = obj({
    "parentRefs": PARENT_REFS,
    "rules": ListOf(_l4_rule(), min_items=1, max_items=16, rules=(rule_names_unique,)),
    "useDefaultGateways": DEFAULT_GATEWAYS,
}, required=["rules"])
