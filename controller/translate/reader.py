"""A read-only view of the Store that records what each translation step read.

The incremental Translator re-resolves a route only when one of the keys it read
changed. Some reads are not of one object but of a set (all ReferenceGrants of a
namespace, the EndpointSlices of a Service, the BackendTLSPolicies of a namespace); those
are recorded as pseudo keys, which the Translator derives from changed real keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.objects import POLICY_KINDS, Obj, ObjectKey
from controller.store import SERVICE_NAME_LABEL, Store

if TYPE_CHECKING:
    from controller.policy.attach import NamespacePolicies
    from controller.policy.book import PolicyBook

SLICES_OF = "EndpointSlice@service"  # ObjectKey(SLICES_OF, ns, service)
GRANTS_IN = "ReferenceGrant@namespace"  # ObjectKey(GRANTS_IN, ns, "")
POLICIES_IN = "BackendTLSPolicy@namespace"  # ObjectKey(POLICIES_IN, ns, "")
KGW_POLICIES_IN = "kgw-policy@namespace"  # ObjectKey(KGW_POLICIES_IN, ns, ""): both kinds


def pseudo_keys(key: ObjectKey, obj: Obj | None) -> list[ObjectKey]:
    """The set-read keys a change of ``key`` (now or formerly ``obj``) invalidates."""
    if key.kind == "EndpointSlice" and obj is not None:
        svc = ((obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if isinstance(svc, str) and svc:
            return [ObjectKey(SLICES_OF, key.namespace, svc)]
    elif key.kind == "ReferenceGrant":
        return [ObjectKey(GRANTS_IN, key.namespace, "")]
    elif key.kind == "BackendTLSPolicy":
        return [ObjectKey(POLICIES_IN, key.namespace, "")]
    elif key.kind in POLICY_KINDS:
        return [ObjectKey(KGW_POLICIES_IN, key.namespace, "")]
    return []


class Reader:
    __slots__ = ("store", "deps", "book")

    def __init__(self, store: Store, deps: set[ObjectKey] | None = None,
                 book: PolicyBook | None = None) -> None:
        self.store = store
        self.deps: set[ObjectKey] = deps if deps is not None else set()
        #: The translator's kgw policies (None: resolved afresh on each read).
        self.book = book

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        key = ObjectKey(kind, namespace, name)
        self.deps.add(key)
        return self.store.get_key(key)

    def endpoint_slices(self, namespace: str, service: str) -> list[Obj]:
        self.deps.add(ObjectKey(SLICES_OF, namespace, service))
        return self.store.endpoint_slices(namespace, service)

    def reference_grants(self, namespace: str) -> list[Obj]:
        self.deps.add(ObjectKey(GRANTS_IN, namespace, ""))
        return self.store.list("ReferenceGrant", namespace)

    def backend_tls_policies(self, namespace: str) -> list[Obj]:
        self.deps.add(ObjectKey(POLICIES_IN, namespace, ""))
        return self.store.list("BackendTLSPolicy", namespace)

    def kgw_policies(self, namespace: str) -> NamespacePolicies:
        """TrafficPolicies and SecurityPolicies of a namespace, resolved."""
        from controller.policy.book import PolicyBook
        self.deps.add(ObjectKey(KGW_POLICIES_IN, namespace, ""))
        if self.book is None:
            self.book = PolicyBook()
        return self.book.namespace(self.store, namespace)
