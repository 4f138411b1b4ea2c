"""Core kinds kgw reads: Namespace, Service, EndpointSlice, Secret, ConfigMap.

Only the structure kgw relies on is checked, with the API server's rules for it
(pkg/apis/core/validation, pkg/apis/discovery/validation). Fields kgw does not read are
allowed without checks, so a real cluster's objects always load.

Some defaults of these kinds are not plain CRD-style ``default:`` values (a Service
port's targetPort defaults to its port; a Secret's stringData is folded into data), so
they live in :func:`default_core`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from controller.schema.errors import FieldError
from controller.schema.meta import dns1035_label, dns1123_label, dns1123_subdomain
from controller.schema.nodes import (Anything, Bool, Int, IntOrStr, ListOf, MapOf, Str, index, join,
                                     obj)

PROTOCOLS = ("TCP", "UDP", "SCTP")
_IANA_SVC_NAME = re.compile(r"[-a-z0-9]+")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
#: apimachinery's MaxSecretSize (also the ConfigMap limit).
MAX_DATA_SIZE = 1024 * 1024


def _iana_svc_name(value: str) -> list[str]:
    """A named port: <= 15 chars, lower-case alphanumerics and '-', at least one letter."""
    if len(value) > 15:
        return ["must be no more than 15 characters"]
    if not _IANA_SVC_NAME.fullmatch(value):
        return ["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"]
    if "--" in value:
        return ["must not contain consecutive hyphens"]
    if not re.search("[a-z]", value):
        return ["must contain at least one letter (a-z)"]
    if value.startswith("-") or value.endswith("-"):
        return ["must not begin or end with a hyphen"]
    return []


# -- Namespace -----------------------------------------------------------------------------

NAMESPACE_FIELDS = {"spec": obj({"finalizers": ListOf(Str())}, open=True), "status": Anything()}

# -- Service -------------------------------------------------------------------------------


def _service_port_rules(port: dict, path: str) -> Iterable[FieldError]:
    if "name" in port:
        for message in dns1123_label(port["name"]):
            yield FieldError(join(path, "name"), message)
    target = port.get("targetPort")
    if isinstance(target, int) and not 1 <= target <= 65535:
        yield FieldError(join(path, "targetPort"),
                         f"must be between 1 and 65535, inclusive (is {target})")
    if isinstance(target, str):
        for message in _iana_svc_name(target):
            yield FieldError(join(path, "targetPort"), f"named port {target[:64]!r} {message}")


SERVICE_PORT = obj({
    "name": Str(),
    "protocol": Str(enum=PROTOCOLS, default="TCP"),
    "appProtocol": Str(),
    "port": Int(1, 65535),
    "targetPort": IntOrStr(),
    "nodePort": Int(0, 65535),
}, required=["port"], rules=[_service_port_rules])


def _service_spec_rules(spec: dict, path: str) -> Iterable[FieldError]:
    stype = spec.get("type", "ClusterIP")
    ports = spec.get("ports", [])
    headless = spec.get("clusterIP") == "None"
    if not ports and stype != "ExternalName" and not headless:
        yield FieldError(join(path, "ports"),
                         "required field is missing (a Service needs at least one port)")
    if stype == "ExternalName":
        name = spec.get("externalName", "")
        if not name:
            yield FieldError(join(path, "externalName"),
                             "required for a Service of type ExternalName")
        else:
            for message in dns1123_subdomain(name.rstrip(".")):
                yield FieldError(join(path, "externalName"), message)
    names: set[str] = set()
    endpoints: set[tuple] = set()
    for i, port in enumerate(ports):
        at = index(join(path, "ports"), i)
        name = port.get("name", "")
        if len(ports) > 1 and not name:
            yield FieldError(join(at, "name"), "required when a Service has more than one port")
        if name and name in names:
            yield FieldError(join(at, "name"), f"duplicate port name {name!r}")
        names.add(name)
        key = (port["port"], port.get("protocol", "TCP"))
        if key in endpoints:
            yield FieldError(at, f"duplicate port {key[0]}/{key[1]}")
        endpoints.add(key)


SERVICE_FIELDS = {
    "spec": obj({
        "type": Str(enum=("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"),
                    default="ClusterIP"),
        "ports": ListOf(SERVICE_PORT),
        "selector": MapOf(values=Str()),
        "clusterIP": Str(),
        "clusterIPs": ListOf(Str()),
        "externalName": Str(),
        "appProtocol": Str(),
    }, open=True, rules=[_service_spec_rules]),
    "status": Anything(),
}

# -- EndpointSlice ----------------------------------------------------------------------------

ENDPOINT = obj({
    "addresses": ListOf(Str(), min_items=1, max_items=100),
    "conditions": obj({"ready": Bool(), "serving": Bool(), "terminating": Bool()}),
    "hostname": Str(),
    "targetRef": Anything(),
    "nodeName": Str(),
    "zone": Str(),
    "hints": Anything(),
    "deprecatedTopology": MapOf(values=Str()),
}, required=["addresses"])

ENDPOINT_PORT = obj({
    "name": Str(),
    "protocol": Str(enum=PROTOCOLS, default="TCP"),
    "port": Int(0, 65535),
    "appProtocol": Str(),
})


def _address_ok(address_type: str, address: str) -> str | None:
    if address_type == "FQDN":
        problems = dns1123_subdomain(address)
        return problems[0] if problems else None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"must be a valid {address_type} address"
    if ip.version != (4 if address_type == "IPv4" else 6):
        return f"must be an {address_type} address (addressType is {address_type})"
    return None


def _endpoint_slice_rules(eps: dict, path: str) -> Iterable[FieldError]:
    address_type = eps["addressType"]
    for i, endpoint in enumerate(eps.get("endpoints", [])):
        for j, address in enumerate(endpoint["addresses"]):
            problem = _address_ok(address_type, address)
            if problem:
                yield FieldError(index(join(index(join(path, "endpoints"), i), "addresses"), j),
                                 problem)
    names: set[str] = set()
    for i, port in enumerate(eps.get("ports", [])):
        at = join(index(join(path, "ports"), i), "name")
        name = port.get("name", "")
        if name:
            for message in dns1123_label(name):
                yield FieldError(at, message)
        if name in names:
            yield FieldError(at, f"duplicate port name {name!r}")
        names.add(name)


ENDPOINT_SLICE_FIELDS = {
    "addressType": Str(enum=("IPv4", "IPv6", "FQDN")),
    "endpoints": ListOf(ENDPOINT, max_items=1000),
    "ports": ListOf(ENDPOINT_PORT, max_items=20000),
}
#: endpoints may be absent: the API server treats a missing list as empty.
ENDPOINT_SLICE_REQUIRED = ("addressType",)
ENDPOINT_SLICE_RULES = (_endpoint_slice_rules,)

# -- Secret and ConfigMap ----------------------------------------------------------------------


def _config_keys(data: dict, path: str) -> Iterable[FieldError]:
    for key in data:
        if len(key) > 253 or not _CONFIG_KEY.fullmatch(key) or key in (".", ".."):
            yield FieldError(index(path, key),
                             "invalid key: must consist of alphanumeric characters, '-', '_' or "
                             "'.', at most 253 characters")


def _base64_values(data: dict, path: str) -> Iterable[FieldError]:
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            yield FieldError(index(path, key), "must be base64-encoded")


def _decoded_size(data: dict) -> int:
    total = 0
    for value in data.values():
        try:
            total += len(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            total += len(value)
    return total


TLS_SECRET_KEYS = ("tls.crt", "tls.key")


def _secret_rules(secret: dict, path: str) -> Iterable[FieldError]:
    data = secret.get("data", {})
    if secret.get("type") == "kubernetes.io/tls":
        for key in TLS_SECRET_KEYS:
            if key not in data and key not in secret.get("stringData", {}):
                yield FieldError(index(join(path, "data"), key),
                                 "required for a Secret of type kubernetes.io/tls")
    if _decoded_size(data) > MAX_DATA_SIZE:
        yield FieldError(join(path, "data"),
                         f"Too long: may not be more than {MAX_DATA_SIZE} bytes")


SECRET_FIELDS = {
    "type": Str(default="Opaque"),
    "data": MapOf(values=Str(), keys=Str(), rules=(_config_keys, _base64_values)),
    "stringData": MapOf(values=Str(), keys=Str(), rules=(_config_keys,)),
    "immutable": Bool(),
}
SECRET_RULES = (_secret_rules,)


def _configmap_rules(cm: dict, path: str) -> Iterable[FieldError]:
    data, binary = cm.get("data", {}), cm.get("binaryData", {})
    for key in data:
        if key in binary:
            yield FieldError(index(join(path, "binaryData"), key),
                             "duplicate of key present in data")
    size = sum(len(v.encode()) for v in data.values()) + _decoded_size(binary)
    if size > MAX_DATA_SIZE:
        yield FieldError(path,
                         f"Too long: data may not be more than {MAX_DATA_SIZE} bytes in total")


CONFIG_MAP_FIELDS = {
    "data": MapOf(values=Str(), keys=Str(), rules=(_config_keys,)),
    "binaryData": MapOf(values=Str(), keys=Str(), rules=(_config_keys, _base64_values)),
    "immutable": Bool(),
}
CONFIG_MAP_RULES = (_configmap_rules,)

# -- name rules per kind ----------------------------------------------------------------------

NAME_CHECKS = {
    "Namespace": dns1123_label,
    "Service": dns1035_label,
}

# -- non-structural defaults ------------------------------------------------------------------


def default_core(kind: str, value: dict[str, Any]) -> None:
    """The API server's defaults for core kinds that a CRD-style default cannot express."""
    if kind == "Service":
        spec = value.get("spec")
        ports = spec.get("ports") if isinstance(spec, dict) else None
        if isinstance(ports, list):
            for port in ports:
                if isinstance(port, dict) and "targetPort" not in port and "port" in port:
                    port["targetPort"] = port["port"]
    elif kind == "Secret":
        string_data = value.get("stringData")
        if isinstance(string_data, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in string_data.items()):
            data = value.get("data")
            if data is None:
                data = value["data"] = {}
            if isinstance(data, dict):
                for k, v in string_data.items():
                    data[k] = base64.b64encode(v.encode()).decode()
                del value["stringData"]
