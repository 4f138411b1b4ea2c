"""ReferenceGrant and BackendTLSPolicy (apis/v1beta1/referencegrant_types.go,
apis/v1/backendtlspolicy_types.go)."""

from __future__ import annotations

from collections.abc import Iterable

from controller.schema.common import (ABSOLUTE_URI, GROUP, HOSTNAME, KIND, LOCAL_OBJECT_REFERENCE,
                                      NAMESPACE,
                                      OBJECT_NAME, OPTIONS, PRECISE_HOSTNAME, SECTION_NAME, unset)
from controller.schema.errors import FieldError
from controller.schema.nodes import ListOf, Str, index, join, obj

REFERENCE_GRANT_SPEC = obj({
    "from": ListOf(obj({"group": GROUP, "kind": KIND, "namespace": NAMESPACE},
                       required=["group", "kind", "namespace"]), min_items=1, max_items=16),
    "to": ListOf(obj({"group": GROUP, "kind": KIND, "name": OBJECT_NAME},
                     required=["group", "kind"]),
                 min_items=1, max_items=16),
}, required=["from", "to"])


def _target_identity(t: dict) -> tuple:
    return t["group"], t["kind"], t["name"]


def _distinct_targets(targets: list, path: str) -> Iterable[FieldError]:
    """CEL: refs to one target must all set sectionName or none, and be unique."""
    for i, t1 in enumerate(targets):
        for t2 in targets[i + 1:]:
            if _target_identity(t1) == _target_identity(t2) and unset(
                t1.get("sectionName")) != unset(t2.get("sectionName")):
                yield FieldError(path,
                                 "sectionName must be specified when targetRefs includes 2 or more "
                                 "references to the same target")
                return
    keys = [(_target_identity(t), t.get("sectionName") or "") for t in targets]
    for i, k in enumerate(keys):
        if k in keys[:i]:
            yield FieldError(index(path, i),
                             "sectionName must be unique when targetRefs includes 2 or more "
                             "references to the same target")


TARGET_REF = obj({"group": GROUP, "kind": KIND, "name": OBJECT_NAME, "sectionName": SECTION_NAME},
                 required=["group", "kind", "name"])


def _san_union(san: dict, path: str) -> Iterable[FieldError]:
    stype = san["type"]
    for type_value, fld, label in (("Hostname", "hostname", "Hostname"), ("URI", "uri", "URI")):
        present = bool(san.get(fld))
        if stype == type_value and not present:
            yield FieldError(join(path, fld),
                             f"SubjectAltName element must contain {label}, if Type is set to "
                             f"{label}")
        if stype != type_value and present:
            yield FieldError(join(path, fld),
                             f"SubjectAltName element must not contain {label}, if Type is not "
                             f"set to {label}")


SUBJECT_ALT_NAME = obj({
    "type": Str(enum=("Hostname", "URI")),
    "hostname": HOSTNAME,
    "uri": ABSOLUTE_URI,
}, required=["type"], rules=[_san_union])


def _ca_source(v: dict, path: str) -> Iterable[FieldError]:
    has_refs = bool(v.get("caCertificateRefs"))
    has_well_known = bool(v.get("wellKnownCACertificates"))
    if has_refs and has_well_known:
        yield FieldError(path,
                         "must not contain both CACertificateRefs and WellKnownCACertificates")
    if not has_refs and not has_well_known:
        yield FieldError(path, "must specify either CACertificateRefs or WellKnownCACertificates")


BACKEND_TLS_VALIDATION = obj({
    "caCertificateRefs": ListOf(LOCAL_OBJECT_REFERENCE, max_items=8),
    "wellKnownCACertificates": Str(enum=("System",)),
    "hostname": PRECISE_HOSTNAME,
    "subjectAltNames": ListOf(SUBJECT_ALT_NAME, max_items=5),
}, required=["hostname"], rules=[_ca_source])

BACKEND_TLS_POLICY_SPEC = obj({
    "targetRefs": ListOf(TARGET_REF, min_items=1, max_items=16, rules=(_distinct_targets,)),
    "validation": BACKEND_TLS_VALIDATION,
    "options": OPTIONS,
}, required=["targetRefs", "validation"])
