"""The store as translation sees it: the user's objects plus those generated for Ingresses.

Generated objects live beside the store, never in it (the store holds what the source
gave); keys cannot collide, because generated names and namespaces are ones no user
object can have (convert.py).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator

from controller.objects import Obj, ObjectKey
from controller.store import Store


class Overlay(Store):
    """Read-only view of ``base`` with ``extra`` objects added (Store's read methods)."""

    def __init__(self, base: Store) -> None:
        super().__init__()
        self.base = base

    def replace(self, objects: Iterable[Obj]) -> set[ObjectKey]:
        """Make ``objects`` the generated ones; the keys that changed."""
        new = {ObjectKey.of(o): o for o in objects}
        changed = {k for k in self._objects.keys() - new.keys()}
        changed |= {k for k, o in new.items() if self._objects.get(k) != o}
        for k in changed:
            self._remove(k)
            if k in new:
                self._put(k, new[k])
        return changed

    def generated(self, key: ObjectKey) -> bool:
        return key in self._objects

    def generated_count(self) -> int:
        return len(self._objects)

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.get_key(ObjectKey(kind, namespace, name))

    def get_key(self, key: ObjectKey) -> Obj | None:
        found = self._objects.get(key)
        return found if found is not None else self.base.get_key(key)

    def list(self, kind: str, namespace: str | None = None) -> builtins.list[Obj]:
        mine = super().list(kind, namespace)
        if not mine:
            return self.base.list(kind, namespace)
        both = [(ObjectKey.of(o), o) for o in [*self.base.list(kind, namespace), *mine]]
        return [o for _k, o in sorted(both, key=lambda ko: ko[0])]

    def keys(self, kind: str | None = None) -> Iterator[ObjectKey]:
        return iter(sorted({*self.base.keys(kind), *super().keys(kind)}))

    def endpoint_slices(self, namespace: str, service: str) -> builtins.list[Obj]:
        return self.base.endpoint_slices(namespace, service)

    def __len__(self) -> int:
        return len(self.base) + len(self._objects)

    def __contains__(self, key: object) -> bool:
        return key in self._objects or key in self.base
