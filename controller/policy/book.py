"""The translator's memory of kgw policies: each namespace resolved once per change of
its policies, and each policy's last good version (which keeps applying while a newer
one is Invalid)."""

from __future__ import annotations

from collections.abc import Iterable

from controller.objects import POLICY_KINDS, Obj, ObjectKey
from controller.policy.attach import NamespacePolicies, resolve_namespace
from controller.store import Store


class PolicyBook:
    def __init__(self) -> None:
        self._resolved: dict[str, NamespacePolicies] = {}
        self._last_good: dict[ObjectKey, Obj] = {}

    def changed(self, store: Store, keys: Iterable[ObjectKey]) -> None:
        """Forget what ``keys`` (changed objects) invalidate."""
        for k in keys:
            if k.kind in POLICY_KINDS:
                self._resolved.pop(k.namespace, None)
                if k not in store:
                    self._last_good.pop(k, None)

    def namespace(self, store: Store, namespace: str) -> NamespacePolicies:
        got = self._resolved.get(namespace)
        if got is None:
            policies = [o for kind in POLICY_KINDS for o in store.list(kind, namespace)]
            got = resolve_namespace(namespace, policies, self._last_good)
            self._last_good.update(got.valid)
            self._resolved[namespace] = got
        return got

    def all(self, store: Store) -> list[NamespacePolicies]:
        """Every namespace that has kgw policies, in order."""
        namespaces = sorted({k.namespace for kind in POLICY_KINDS for k in store.keys(kind)})
        return [self.namespace(store, ns) for ns in namespaces]
