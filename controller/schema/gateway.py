"""Gateway and GatewayClass (apis/v1/gateway_types.go, gatewayclass_types.go; experimental
channel)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from controller.schema.common import (ADDRESS_TYPE, ANNOTATION_KEY, ANNOTATION_VALUE,
                                      CONTROLLER_NAME, GATEWAY_GROUP,
                                      GROUP, HOSTNAME, HOSTNAME_RE, KIND, LABEL_KEY, LABEL_SELECTOR,
                                      LABEL_VALUE,
                                      NAMESPACE, OBJECT_REFERENCE, OPTIONS, PORT,
                                      SECRET_OBJECT_REFERENCE, SECTION_NAME, unique_by)
from controller.schema.errors import FieldError
from controller.schema.nodes import ListOf, MapOf, Str, go_regex, index, join, obj, with_default

_HOSTNAME = go_regex(HOSTNAME_RE)

#: The status the CRD defaults a new object to, until a controller writes one.
_PENDING = {"status": "Unknown", "reason": "Pending", "message": "Waiting for controller",
            "lastTransitionTime": "1970-01-01T00:00:00Z"}
GATEWAY_STATUS_DEFAULT = {
    "conditions": [{"type": "Accepted", **_PENDING}, {"type": "Programmed", **_PENDING}]}
#: GatewayClass's status default still says reason "Waiting" (its conditions' own default,
#: which never applies when the whole status is defaulted, says "Pending").
GATEWAY_CLASS_STATUS_DEFAULT = {
    "conditions": [{"type": "Accepted", **_PENDING, "reason": "Waiting"}]}

# -- listeners --------------------------------------------------------------------------------


def _terminate_needs_certificates(tls: dict, path: str) -> Iterable[FieldError]:
    if tls.get("mode", "Terminate") == "Terminate" and not tls.get(
        "certificateRefs") and not tls.get("options"):
        yield FieldError(join(path, "certificateRefs"),
                         "certificateRefs or options must be specified when mode is Terminate")


LISTENER_TLS = obj({
    "mode": Str(enum=("Terminate", "Passthrough"), default="Terminate"),
    "certificateRefs": ListOf(SECRET_OBJECT_REFERENCE, max_items=64),
    "options": OPTIONS,
}, rules=[_terminate_needs_certificates])

ROUTE_GROUP_KIND = obj({"group": with_default(GROUP, GATEWAY_GROUP), "kind": KIND},
                       required=["kind"])

ALLOWED_ROUTES = obj({
    "namespaces": obj({
        "from": Str(enum=("All", "Selector", "Same"), default="Same"),
        "selector": LABEL_SELECTOR,
    }, default={"from": "Same"}),
    "kinds": ListOf(ROUTE_GROUP_KIND, max_items=8),
}, default={"namespaces": {"from": "Same"}})

PROTOCOL = Str(1, 255,
               r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9]+$",
               pattern_hint="must be HTTP, HTTPS, TLS, TCP, UDP or a domain-prefixed protocol")

LISTENER = obj({
    "name": SECTION_NAME,
    "hostname": HOSTNAME,
    "port": PORT,
    "protocol": PROTOCOL,
    "tls": LISTENER_TLS,
    "allowedRoutes": ALLOWED_ROUTES,
}, required=["name", "port", "protocol"])


def _is(protocol: str, *names: str) -> bool:
    return re.fullmatch("|".join(names), protocol, re.IGNORECASE) is not None


def _listener_rules(listeners: list, path: str) -> Iterable[FieldError]:
    """The CEL rules on spec.listeners, reported on the listener they are about."""
    seen_names: set[str] = set()
    seen_combos: set[tuple] = set()
    for i, listener in enumerate(listeners):
        at = index(path, i)
        protocol, tls = listener["protocol"], listener.get("tls")
        if _is(protocol, "HTTP", "TCP", "UDP") and tls is not None:
            yield FieldError(join(at, "tls"),
                             "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']")
        if _is(protocol, "HTTPS") and tls is not None and tls.get("mode", "") not in ("",
                                                                                      "Terminate"):
            yield FieldError(join(at, "tls.mode"), "tls mode must be Terminate for protocol HTTPS")
        if _is(protocol, "TLS") and (tls is None or not tls.get("mode")):
            yield FieldError(join(at, "tls"), "tls mode must be set for protocol TLS")
        if _is(protocol, "TCP", "UDP") and listener.get("hostname"):
            yield FieldError(join(at, "hostname"),
                             "hostname must not be specified for protocols ['TCP', 'UDP']")
        if listener["name"] in seen_names:
            yield FieldError(join(at, "name"), "Listener name must be unique within the Gateway")
        seen_names.add(listener["name"])
        combo = (listener["port"], protocol, listener.get("hostname"))
        if combo in seen_combos:
            yield FieldError(
                at, "Combination of port, protocol and hostname must be unique for each listener")
        seen_combos.add(combo)


LISTENERS = ListOf(LISTENER, min_items=1, max_items=64, rules=(_listener_rules,))

# -- addresses, infrastructure, TLS ------------------------------------------------------------


def _address_value(a: dict, path: str) -> Iterable[FieldError]:
    atype, value = a.get("type", "IPAddress"), a.get("value")
    if atype == "Hostname" and value is not None and not _HOSTNAME.search(value):
        yield FieldError(join(path, "value"),
                         "Hostname value must be empty or contain only valid characters (matching "
                         "^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$)")
    if atype == "IPAddress" and value is not None and not _is_ip(value):
        # The CRD says this with a oneOf: type IPAddress => value has format ipv4 or ipv6.
        yield FieldError(join(path, "value"),
                         f"invalid value {value[:64]!r}: must be an IPv4 or IPv6 address when "
                         "type is IPAddress")


def _is_ip(value: str) -> bool:
    """Go's net.ParseIP: no zone suffix ('%eth0'), which Python's ipaddress would accept."""
    if "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


GATEWAY_ADDRESS = obj({"type": with_default(ADDRESS_TYPE, "IPAddress"), "value": Str(None, 253)},
                      rules=[_address_value])


def _unique_address_values(addresses: list, path: str) -> Iterable[FieldError]:
    for atype in ("IPAddress", "Hostname"):
        seen: set[str] = set()
        for i, a in enumerate(addresses):
            if a.get("type", "IPAddress") != atype or "value" not in a:
                continue
            if a["value"] in seen:
                yield FieldError(index(path, i), f"{atype} values must be unique")
            seen.add(a["value"])


def _label_prefix_length(items: dict, path: str) -> Iterable[FieldError]:
    for key in items:
        if len(key.split("/")[0]) >= 253:
            yield FieldError(index(path, key),
                             "If specified, the key's prefix must be a DNS subdomain not longer "
                             "than 253 characters in total.")


INFRASTRUCTURE = obj({
    "labels": MapOf(values=LABEL_VALUE, keys=LABEL_KEY, max_props=8, rules=(_label_prefix_length,)),
    "annotations": MapOf(values=ANNOTATION_VALUE, keys=ANNOTATION_KEY, max_props=16,
                         rules=(_label_prefix_length,)),
    "parametersRef": obj({"group": GROUP, "kind": KIND, "name": Str(1, 253)},
                         required=["group", "kind", "name"]),
})

TLS_CONFIG = obj({"validation": obj({
    "caCertificateRefs": ListOf(OBJECT_REFERENCE, min_items=1, max_items=8),
    "mode": Str(enum=("AllowValidOnly", "AllowInsecureFallback"), default="AllowValidOnly"),
}, required=["caCertificateRefs"])})

GATEWAY_TLS = obj({
    "backend": obj({"clientCertificateRef": SECRET_OBJECT_REFERENCE}),
    "frontend": obj({
        "default": TLS_CONFIG,
        "perPort": ListOf(obj({"port": PORT, "tls": TLS_CONFIG}, required=["port", "tls"]),
                          max_items=64,
                          rules=(unique_by(lambda t: t["port"],
                                           "Port for TLS configuration must be unique within "
                                           "the Gateway"),)),
    }, required=["default"]),
})

GATEWAY_SPEC = obj({
    "gatewayClassName": Str(1, 253),
    "listeners": LISTENERS,
    "addresses": ListOf(GATEWAY_ADDRESS, max_items=16, rules=(_unique_address_values,)),
    "infrastructure": INFRASTRUCTURE,
    "allowedListeners": obj({"namespaces": obj({
        "from": Str(enum=("All", "Selector", "Same", "None"), default="None"),
        "selector": LABEL_SELECTOR,
    }, default={"from": "None"})}),
    "tls": GATEWAY_TLS,
    "defaultScope": Str(enum=("All", "None")),
}, required=["gatewayClassName", "listeners"])

# -- GatewayClass ------------------------------------------------------------------------------

GATEWAY_CLASS_SPEC = obj({
    "controllerName": CONTROLLER_NAME,
    "parametersRef": obj({"group": GROUP, "kind": KIND, "name": Str(1, 253),
                          "namespace": NAMESPACE},
                         required=["group", "kind", "name"]),
    "description": Str(None, 64),
}, required=["controllerName"])

# -- ListenerSet (apis/v1/listenerset_types.go; experimental channel) ---------------------------

#: ParentGatewayReference: the Gateway a ListenerSet adds its listeners to.
PARENT_GATEWAY_REFERENCE = obj({
    "group": with_default(GROUP, GATEWAY_GROUP),
    "kind": with_default(KIND, "Gateway"),
    "name": Str(1, 253),
    "namespace": NAMESPACE,
}, required=["name"])

#: ListenerEntry has the Gateway Listener's fields, markers and list-level CEL rules
#: (the same messages, "unique within the Gateway" included).
LISTENER_SET_SPEC = obj({
    "parentRef": PARENT_GATEWAY_REFERENCE,
    "listeners": LISTENERS,
}, required=["listeners", "parentRef"])

LISTENER_SET_STATUS_DEFAULT = GATEWAY_STATUS_DEFAULT
