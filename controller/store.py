"""The object store: the current set of objects, indexed the ways translation reads them.

The store applies source events and reports which keys changed, so translation can
redo only what depends on them. It is the only mutable piece between the source and
translation; translation reads it and never writes it.
"""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Iterable, Iterator

from controller.objects import Obj, ObjectKey
from controller.source import Event, EventType

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class Store:
    def __init__(self) -> None:
        self._objects: dict[ObjectKey, Obj] = {}
        self._by_kind: dict[str, dict[ObjectKey, Obj]] = defaultdict(dict)
        # (namespace, service name) -> EndpointSlice keys
        self._slices: dict[tuple[str, str], set[ObjectKey]] = defaultdict(set)

    def apply(self, events: Iterable[Event]) -> set[ObjectKey]:
        """Apply events; return the keys whose object actually changed."""
        changed: set[ObjectKey] = set()
        for ev in events:
            if ev.type is EventType.DELETED:
                if self._remove(ev.key):
                    changed.add(ev.key)
            else:
                old = self._objects.get(ev.key)
                if old is not None and old == ev.obj:
                    continue
                if old is not None:
                    self._remove(ev.key)
                self._put(ev.key, ev.obj)
                changed.add(ev.key)
        return changed

    def _put(self, key: ObjectKey, obj: Obj) -> None:
        self._objects[key] = obj
        self._by_kind[key.kind][key] = obj
        if key.kind == "EndpointSlice":
            svc = _service_of(obj)
            if svc:
                self._slices[(key.namespace, svc)].add(key)

    def _remove(self, key: ObjectKey) -> bool:
        obj = self._objects.pop(key, None)
        if obj is None:
            return False
        self._by_kind[key.kind].pop(key, None)
        if key.kind == "EndpointSlice":
            svc = _service_of(obj)
            if svc:
                self._slices[(key.namespace, svc)].discard(key)
        return True

    # -- reads ---------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self._objects.get(ObjectKey(kind, namespace, name))

    def get_key(self, key: ObjectKey) -> Obj | None:
        return self._objects.get(key)

    def list(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """Objects of a kind, in key order (deterministic)."""
        items = self._by_kind.get(kind, {})
        keys = sorted(k for k in items if namespace is None or k.namespace == namespace)
        return [items[k] for k in keys]

    def keys(self, kind: str | None = None) -> Iterator[ObjectKey]:
        if kind is None:
            return iter(sorted(self._objects))
        return iter(sorted(self._by_kind.get(kind, {})))

    def endpoint_slices(self, namespace: str, service: str) -> builtins.list[Obj]:
        """EndpointSlices labelled ``kubernetes.io/service-name: service``."""
        keys = sorted(self._slices.get((namespace, service), ()))
        return [self._objects[k] for k in keys]

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key: object) -> bool:
        return key in self._objects


def _service_of(slice_: Obj) -> str | None:
    """The Service an EndpointSlice belongs to (tolerates malformed metadata)."""
    meta = slice_.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    svc = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, dict) else None
    return svc if isinstance(svc, str) else None
