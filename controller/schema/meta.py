"""ObjectMeta as the API server validates it for every kind (apimachinery's ValidateObjectMeta).

Names follow one of three DNS rules depending on the kind; label and annotation keys
are qualified names; label values are short tokens; annotations together stay under
256 KiB.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from controller.schema.errors import FieldError
from controller.schema.nodes import Anything, Int, ListOf, MapOf, Node, Str, index, join, obj

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(rf"{_LABEL}")
_DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")

#: apimachinery's TotalAnnotationSizeLimitB.
ANNOTATIONS_SIZE_LIMIT = 256 * 1024

NameCheck = Callable[[str], list[str]]


def dns1123_subdomain(value: str) -> list[str]:
    """Most kinds: lower-case RFC 1123 subdomain, at most 253 characters."""
    if len(value) > 253:
        return [f"must be no more than 253 characters (is {len(value)})"]
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        return ["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', "
                "and must start and end with an alphanumeric character (e.g. 'example.com')"]
    return []


def dns1123_label(value: str) -> list[str]:
    """Namespaces: lower-case RFC 1123 label, at most 63 characters."""
    if len(value) > 63:
        return [f"must be no more than 63 characters (is {len(value)})"]
    if not _DNS1123_LABEL.fullmatch(value):
        return ["a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
                "'-', and must start and end with an alphanumeric character (e.g. 'my-name')"]
    return []


def dns1035_label(value: str) -> list[str]:
    """Services: RFC 1035 label (starts with a letter), at most 63 characters."""
    if len(value) > 63:
        return [f"must be no more than 63 characters (is {len(value)})"]
    if not _DNS1035_LABEL.fullmatch(value):
        return ["a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
                "with an "
                "alphabetic character, and end with an alphanumeric character (e.g. 'my-name')"]
    return []


def qualified_name(value: str) -> list[str]:
    """Label and annotation keys: ``[prefix/]name``, prefix a DNS subdomain, name <= 63."""
    prefix, slash, name = value.rpartition("/")
    if slash and not prefix:
        return ["prefix part must be non-empty"]
    errors = []
    if prefix:
        errors += [f"prefix part {m}" for m in dns1123_subdomain(prefix)]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append(f"name part must be no more than 63 characters (is {len(name)})")
    elif not _QUALIFIED_NAME_PART.fullmatch(name):
        errors.append("name part must consist of alphanumeric characters, '-', '_' or '.', and "
                      "must start and end "
                      "with an alphanumeric character (e.g. 'MyName', 'my.name', '123-abc')")
    return errors


def label_value(value: str) -> list[str]:
    if len(value) > 63:
        return [f"must be no more than 63 characters (is {len(value)})"]
    if not _LABEL_VALUE.fullmatch(value):
        return ["a valid label value must be empty or consist of alphanumeric characters, '-', '_' "
                "or '.', and must start and end with an alphanumeric character"]
    return []


def _labels_rule(labels: dict, path: str) -> Iterable[FieldError]:
    for key, value in labels.items():
        for message in qualified_name(key):
            yield FieldError(index(path, key), f"invalid label key: {message}")
        for message in label_value(value):
            yield FieldError(index(path, key), f"invalid label value {value[:64]!r}: {message}")


def _annotations_rule(annotations: dict, path: str) -> Iterable[FieldError]:
    size = 0
    for key, value in annotations.items():
        for message in qualified_name(key.lower()):
            yield FieldError(index(path, key), f"invalid annotation key: {message}")
        size += len(key.encode()) + len(value.encode())
    if size > ANNOTATIONS_SIZE_LIMIT:
        yield FieldError(path,
                         f"annotations may not exceed 256 KiB ({ANNOTATIONS_SIZE_LIMIT} bytes) in "
                         f"total (are {size} bytes)")


def _name_rule(check_name: NameCheck) -> Callable[[dict, str], Iterable[FieldError]]:
    def rule(meta: dict, path: str) -> Iterable[FieldError]:
        for message in check_name(meta["name"]):
            yield FieldError(join(path, "name"), message)
        if "namespace" in meta:
            for message in dns1123_label(meta["namespace"]):
                yield FieldError(join(path, "namespace"), message)

    rule.__name__ = f"name_rule({check_name.__name__})"
    return rule


def object_meta(check_name: NameCheck) -> Node:
    """The metadata node for a kind whose names follow ``check_name``."""
    return obj({
        "name": Str(1),
        "generateName": Str(),
        "namespace": Str(),
        "labels": MapOf(values=Str(), keys=Str(), rules=(_labels_rule,)),
        "annotations": MapOf(values=Str(), keys=Str(), rules=(_annotations_rule,)),
        "uid": Str(),
        "resourceVersion": Str(),
        "generation": Int(0),
        "creationTimestamp": Anything(),
        "deletionTimestamp": Anything(),
        "deletionGracePeriodSeconds": Int(),
        "ownerReferences": ListOf(Anything()),
        "finalizers": ListOf(Str(), unique=True),
        "managedFields": ListOf(Anything()),
        "selfLink": Str(),
    }, required=["name"], rules=[_name_rule(check_name)])
