"""The translator's memory of kgw policies: each namespace resolved once per change of
its policies, and each policy's last good version (which keeps applying while a newer
one is Invalid)."""

from __future__ import annotations

from collections.abc import Iterable

from controller.objects import POLICY_KINDS, Obj, ObjectKey
from controller.policy.attach import NamespacePolicies, resolve_namespace
from controller.store import Store


class StoreRefs:
    """The Secrets and ConfigMaps of one namespace, for the sections that read them
    (``Section.refs``), remembering which were read."""

    def __init__(self, store: Store, namespace: str) -> None:
        self.store = store
        self.namespace = namespace
        self.read: set[ObjectKey] = set()

    def get(self, kind: str, name: str) -> Obj | None:
        key = ObjectKey(kind, self.namespace, name)
        self.read.add(key)
        return self.store.get_key(key)


class PolicyBook:
    def __init__(self) -> None:
        self._resolved: dict[str, NamespacePolicies] = {}
        self._last_good: dict[ObjectKey, Obj] = {}
        #: The objects each namespace's resolution read besides its policies.
        self._reads: dict[str, set[ObjectKey]] = {}

    def changed(self, store: Store, keys: Iterable[ObjectKey]) -> None:
        """Forget what ``keys`` (changed objects) invalidate."""
        for k in keys:
            if k.kind in POLICY_KINDS:
                self._resolved.pop(k.namespace, None)
                if k not in store:
                    self._last_good.pop(k, None)
            elif k in self._reads.get(k.namespace, ()):
                self._resolved.pop(k.namespace, None)

    def namespace(self, store: Store, namespace: str) -> NamespacePolicies:
        got = self._resolved.get(namespace)
        if got is None:
            policies = [o for kind in POLICY_KINDS for o in store.list(kind, namespace)]
            refs = StoreRefs(store, namespace)
            got = resolve_namespace(namespace, policies, self._last_good, refs)
            self._last_good.update(got.valid)
            self._resolved[namespace] = got
            self._reads[namespace] = refs.read
        return got

    def reads(self, namespace: str) -> set[ObjectKey]:
        """What resolving ``namespace`` read besides its policies (its dependencies)."""
        return self._reads.get(namespace, set())

    def all(self, store: Store) -> list[NamespacePolicies]:
        """Every namespace that has kgw policies, in order."""
        namespaces = sorted({k.namespace for kind in POLICY_KINDS for k in store.keys(kind)})
        return [self.namespace(store, ns) for ns in namespaces]
