"""kgw's policy kinds, TrafficPolicy and SecurityPolicy (gateway.kgw.dev/v1alpha1).

``spec.targetRefs`` is GEP-713's LocalPolicyTargetReferenceWithSectionName; every other
spec field is a section, its schema owned by its module (controller/policy/registry.py).
Which kinds a target may be, and whether it exists, is for translation to report in
status (TargetNotFound, Invalid), not a reason to refuse the object: a policy may be
written before its route. ``namespace`` is accepted so that a policy naming another
namespace gets a condition saying it cannot, instead of being silently re-read as a
target in its own namespace (the API server prunes unknown fields).
"""

from __future__ import annotations

from controller.policy.registry import SECTIONS
from controller.schema.common import GROUP, KIND, NAMESPACE, OBJECT_NAME, SECTION_NAME
from controller.schema.nodes import ListOf, Obj, obj
from controller.schema.policy import _distinct_targets

#: The kinds a policy may target, by group.
TARGET_KINDS = {"gateway.networking.k8s.io": ("Gateway", "HTTPRoute", "GRPCRoute", "TCPRoute",
                                              "UDPRoute", "TLSRoute")}

POLICY_TARGET_REF = obj({"group": GROUP, "kind": KIND, "name": OBJECT_NAME,
                         "sectionName": SECTION_NAME, "namespace": NAMESPACE},
                        required=["group", "kind", "name"])

TARGET_REFS = ListOf(POLICY_TARGET_REF, min_items=1, max_items=16, rules=(_distinct_targets,))


def spec_schema(kind: str) -> Obj:
    """``spec`` of a policy kind: targetRefs and the kind's registered sections."""
    return obj({"targetRefs": TARGET_REFS, **{s.field: s.schema for s in SECTIONS[kind]}},
               required=["targetRefs"])
