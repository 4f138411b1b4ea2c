"""Types shared by the Gateway API kinds (apis/v1/shared_types.go, object_reference_types.go).

Each constant is one named Go type of the API with its kubebuilder markers; the kind
modules compose them the way the Go structs do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from controller.duration import DURATION_PATTERN
from controller.schema.errors import FieldError
from controller.schema.nodes import Int, ListOf, MapOf, Str, extend, index, join, obj, with_default

GATEWAY_GROUP = "gateway.networking.k8s.io"

# -- patterns --------------------------------------------------------------------------

DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN_RE = rf"^{DNS_LABEL}(\.{DNS_LABEL})*$"
HOSTNAME_RE = rf"^(\*\.)?{DNS_LABEL}(\.{DNS_LABEL})*$"
QUALIFIED_NAME_RE = (
    rf"^({DNS_LABEL}(\.{DNS_LABEL})*/)?([A-Za-z0-9][-A-Za-z0-9_.]{{0,61}})?[A-Za-z0-9]$")
HEADER_NAME_RE = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$"
#: Experimental channel only: printable US-ASCII, single tabs/spaces between. The CRD
#: writes ``^[!-~]+([\t ]?[!-~]+)*$``; this is the same language without the optional
#: separator, whose ambiguity makes a backtracking engine (Python's) take exponential time.
HEADER_VALUE_RE = r"^[!-~]+([\t ][!-~]+)*$"
PATH_CHARS_RE = r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$"

# -- scalar types ----------------------------------------------------------------------

HOSTNAME = Str(1, 253, HOSTNAME_RE,
               pattern_hint="must be a lower-case RFC 1123 hostname, optionally prefixed by '*.'")
PRECISE_HOSTNAME = Str(1, 253, DNS_SUBDOMAIN_RE,
                       pattern_hint="must be a lower-case RFC 1123 hostname (no wildcard)")
GROUP = Str(None, 253, rf"^$|{DNS_SUBDOMAIN_RE}",
            pattern_hint="must be empty or an RFC 1123 subdomain")
KIND = Str(1, 63, r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$",
           pattern_hint="must be a Kind such as 'Service'")
OBJECT_NAME = Str(1, 253)
NAMESPACE = Str(1, 63, rf"^{DNS_LABEL}$", pattern_hint="must be an RFC 1123 label")
SECTION_NAME = Str(1, 253, DNS_SUBDOMAIN_RE,
                   pattern_hint="must be an RFC 1123 subdomain (lower case, '-', '.')")
PORT = Int(1, 65535)
HEADER_NAME = Str(1, 256, HEADER_NAME_RE,
                  pattern_hint="must be an HTTP header name (RFC 7230 token)")
DURATION = Str(pattern=DURATION_PATTERN,
               pattern_hint="must be a Gateway API duration such as '10s', '1m30s' or '500ms'")
#: Keys of Gateway.spec.infrastructure labels/annotations, checked by CEL (the Go type's
#: own pattern is not in the CRD: OpenAPI cannot constrain map keys).
ANNOTATION_KEY = Str(1, None, QUALIFIED_NAME_RE,
                     pattern_hint="Annotation keys must be in the form of an optional DNS "
                                  "subdomain prefix followed by "
                                  "a required name segment of up to 63 characters.")
ANNOTATION_VALUE = Str(0, 4096)
LABEL_KEY = Str(1, None, QUALIFIED_NAME_RE,
                pattern_hint="Label keys must be in the form of an optional DNS subdomain prefix "
                             "followed by a required name segment of up to 63 characters.")
LABEL_VALUE = Str(0, 63, r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
                  pattern_hint="must be a label value")
CONTROLLER_NAME = Str(1, 253, rf"^{DNS_LABEL}(\.{DNS_LABEL})*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$",
                      pattern_hint="must be a domain-prefixed path such as "
                                   "'example.com/controller'")
ADDRESS_TYPE = Str(1, 253,
                   rf"^Hostname|IPAddress|NamedAddress|{DNS_LABEL}(\.{DNS_LABEL})*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$",
                   pattern_hint="must be 'IPAddress', 'Hostname' or a domain-prefixed type")
ABSOLUTE_URI = Str(1, 253, r"^(([^:/?#]+):)(//([^/?#]*))([^?#]*)(\?([^#]*))?(#(.*))?",
                   pattern_hint="must be an absolute URI with a scheme and an authority")
#: TLS options: the CRD checks only the values and the count.
OPTIONS = MapOf(values=ANNOTATION_VALUE, keys=Str(), max_props=16)

# -- helpers for rules -------------------------------------------------------------------


def unset(value: Any) -> bool:
    """CEL's ``!has(x) || x == ''`` for optional strings (and ``0`` for ports)."""
    return value is None or value == "" or value == 0


def unique_by(key: Callable[[Any], Any], message: str) -> Callable[[list, str],
                                                                   Iterable[FieldError]]:
    """A list rule: report each later entry whose key equals an earlier one's (None = skip)."""

    def rule(items: list, path: str) -> Iterable[FieldError]:
        seen: set[Any] = set()
        for i, item in enumerate(items):
            k = key(item)
            if k is None:
                continue
            if k in seen:
                yield FieldError(index(path, i), message)
            seen.add(k)

    rule.__name__ = f"unique_by({message!r})"
    return rule


def rule_names_unique(rules: list, path: str) -> Iterable[FieldError]:
    """CEL: "Rule name must be unique within the route"."""
    seen: set[str] = set()
    for i, r in enumerate(rules):
        name = r.get("name")
        if name is None:
            continue
        if name in seen:
            yield FieldError(join(index(path, i), "name"),
                             "Rule name must be unique within the route")
        seen.add(name)


# -- references ------------------------------------------------------------------------


def _service_needs_port(ref: dict, path: str) -> Iterable[FieldError]:
    """CEL on BackendObjectReference: "Must have port for Service reference"."""
    if ref.get("group", "") == "" and ref.get("kind",
                                              "Service") == "Service" and ref.get("port") is None:
        yield FieldError(join(path, "port"), "Must have port for Service reference")


LOCAL_OBJECT_REFERENCE = obj({"group": GROUP, "kind": KIND, "name": OBJECT_NAME},
                             required=["kind", "name"])

SECRET_OBJECT_REFERENCE = obj({
    "group": with_default(GROUP, ""),
    "kind": with_default(KIND, "Secret"),
    "name": OBJECT_NAME,
    "namespace": NAMESPACE,
}, required=["name"])

OBJECT_REFERENCE = obj({"group": GROUP, "kind": KIND, "name": OBJECT_NAME, "namespace": NAMESPACE},
                       required=["group", "kind", "name"])

BACKEND_OBJECT_REFERENCE = obj({
    "group": with_default(GROUP, ""),
    "kind": with_default(KIND, "Service"),
    "name": OBJECT_NAME,
    "namespace": NAMESPACE,
    "port": PORT,
}, required=["name"], rules=[_service_needs_port])

BACKEND_REF = extend(BACKEND_OBJECT_REFERENCE, {"weight": Int(0, 1000000, default=1)})

PARENT_REFERENCE = obj({
    "group": with_default(GROUP, GATEWAY_GROUP),
    "kind": with_default(KIND, "Gateway"),
    "namespace": NAMESPACE,
    "name": OBJECT_NAME,
    "sectionName": SECTION_NAME,
    "port": PORT,
}, required=["name"])


def _parent_identity(p: dict) -> tuple:
    return (p.get("group", GATEWAY_GROUP), p.get("kind", "Gateway"), p.get("name"),
            p.get("namespace") or "")


def distinct_parent_refs(refs: list, path: str) -> Iterable[FieldError]:
    """The experimental channel's two CEL rules on parentRefs.

    Refs to the same parent must all set sectionName/port or all leave them unset
    ("sectionName or port must be specified when parentRefs includes 2 or more
    references to the same parent"), and no two may be equal in both
    ("sectionName or port must be unique ...").
    """
    for i, p1 in enumerate(refs):
        for p2 in refs[i + 1:]:
            if _parent_identity(p1) != _parent_identity(p2):
                continue
            if (unset(p1.get("sectionName")) != unset(p2.get("sectionName"))
                    or unset(p1.get("port")) != unset(p2.get("port"))):
                yield FieldError(path,
                                 "sectionName or port must be specified when parentRefs includes 2 "
                                 "or more references to the same parent")
                return
    keys = [(_parent_identity(p), p.get("sectionName") or "", p.get("port") or 0) for p in refs]
    for i, k in enumerate(keys):
        if k in keys[:i]:
            yield FieldError(index(
                path, i), "sectionName or port must be unique when parentRefs includes 2 or more "
                                             "references to the same parent")


PARENT_REFS = ListOf(PARENT_REFERENCE, max_items=32, rules=(distinct_parent_refs,))
HOSTNAMES = ListOf(HOSTNAME, max_items=16)

# -- header modifiers, mirror, session persistence (HTTPRoute and GRPCRoute) ---------------

HTTP_HEADER = obj({"name": HEADER_NAME, "value": Str(1, 4096, HEADER_VALUE_RE,
                                                     pattern_hint="must be printable US-ASCII, "
                                                                  "words separated "
                                                                  "by single spaces or tabs")},
                  required=["name", "value"])

HEADER_FILTER = obj({
    "set": ListOf(HTTP_HEADER, max_items=16, map_keys=("name",)),
    "add": ListOf(HTTP_HEADER, max_items=16, map_keys=("name",)),
    "remove": ListOf(Str(), max_items=16, unique=True),
})


def _fraction_ok(f: dict, path: str) -> Iterable[FieldError]:
    if f.get("numerator", 0) > f.get("denominator", 100):
        yield FieldError(path, "numerator must be less than or equal to denominator")


FRACTION = obj({"numerator": Int(0), "denominator": Int(1, default=100)}, required=["numerator"],
               rules=[_fraction_ok])


def _percent_xor_fraction(m: dict, path: str) -> Iterable[FieldError]:
    if "percent" in m and "fraction" in m:
        yield FieldError(
            path, "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter")


REQUEST_MIRROR = obj({"backendRef": BACKEND_OBJECT_REFERENCE, "percent": Int(0, 100),
                      "fraction": FRACTION},
                     required=["backendRef"], rules=[_percent_xor_fraction])


def _permanent_cookie_needs_timeout(sp: dict, path: str) -> Iterable[FieldError]:
    cookie = sp.get("cookieConfig") or {}
    if cookie.get("lifetimeType") == "Permanent" and "absoluteTimeout" not in sp:
        yield FieldError(join(path, "absoluteTimeout"),
                         "AbsoluteTimeout must be specified when cookie lifetimeType is Permanent")


SESSION_PERSISTENCE = obj({
    "sessionName": Str(None, 128),
    "absoluteTimeout": DURATION,
    "idleTimeout": DURATION,
    "type": Str(enum=("Cookie", "Header"), default="Cookie"),
    "cookieConfig": obj({"lifetimeType": Str(enum=("Permanent", "Session"), default="Session")}),
}, rules=[_permanent_cookie_needs_timeout])


def filter_union(types: dict[str, str]) -> Callable[[dict, str], Iterable[FieldError]]:
    """The CEL pair per filter type: its config field is set iff ``type`` names it.

    ``types`` maps filter type -> config field ("RequestMirror" -> "requestMirror").
    """

    def rule(f: dict, path: str) -> Iterable[FieldError]:
        ftype = f.get("type")
        for type_value, fld in types.items():
            if fld in f and ftype != type_value:
                yield FieldError(join(path, fld),
                                 f"filter.{fld} must be nil if the filter.type is not {type_value}")
            elif fld not in f and ftype == type_value:
                yield FieldError(join(path, fld),
                                 f"filter.{fld} must be specified for {type_value} filter.type")

    rule.__name__ = "filter_union"
    return rule


def at_most_once(*filter_types: str) -> Callable[[list, str], Iterable[FieldError]]:
    """CEL: "<Type> filter cannot be repeated" for each of ``filter_types``."""

    def rule(filters: list, path: str) -> Iterable[FieldError]:
        for ftype in filter_types:
            positions = [i for i, f in enumerate(filters) if f.get("type") == ftype]
            for i in positions[1:]:
                yield FieldError(index(path, i), f"{ftype} filter cannot be repeated")

    rule.__name__ = "at_most_once"
    return rule


#: metav1.LabelSelector as CRDs embed it: plain strings (label syntax is not checked there).
LABEL_SELECTOR = obj({
    "matchLabels": MapOf(values=Str()),
    "matchExpressions": ListOf(obj({"key": Str(), "operator": Str(), "values": ListOf(Str())},
                                   required=["key", "operator"])),
})
