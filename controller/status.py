"""The status book: the Gateway API status of every object, as the API server would hold it.

Translation is pure and does not know the time, so its conditions carry no
``lastTransitionTime``. The book stamps it: a condition keeps the time it last changed
``status``, exactly as Kubernetes controllers are expected to do, so readers can tell how
long a Gateway has been Programmed. The book also says which objects' status changed,
which is what a writer to the API server needs (write only on change).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from controller.objects import KINDS, Obj, ObjectKey, api_version

#: List items inside a status are matched with their previous selves by these fields.
_IDENTITY_FIELDS = ("name", "parentRef", "ancestorRef")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _identity(item: Mapping[str, Any]) -> Any:
    for f in _IDENTITY_FIELDS:
        if f in item:
            return (f, repr(item[f]))
    return None


def stamp(new: Any, old: Any, now: str | None) -> Any:
    """Copy ``new`` adding lastTransitionTime to its conditions, keeping ``old``'s where
    a condition's status did not change."""
    if isinstance(new, dict):
        out = {}
        for k, v in new.items():
            prev = old.get(k) if isinstance(old, dict) else None
            out[k] = _stamp_conditions(v, prev, now) if k == "conditions" else stamp(v, prev, now)
        return out
    if isinstance(new, list):
        olds = {}
        if isinstance(old, list):
            olds = {_identity(o): o for o in old if isinstance(o, dict)
                    and _identity(o) is not None}
        return [stamp(item, olds.get(_identity(item)) if isinstance(item, dict) else None, now)
                for item in new]
    return new


def _stamp_conditions(conds: Any, old: Any, now: str | None) -> Any:
    if not isinstance(conds, list):
        return conds
    before = {c.get("type"): c for c in old if isinstance(c, dict)} if isinstance(old, list) else {}
    out = []
    for c in conds:
        c = dict(c)
        prev = before.get(c.get("type"))
        if prev is not None and prev.get("status") == c.get(
            "status") and "lastTransitionTime" in prev:
            c["lastTransitionTime"] = prev["lastTransitionTime"]
        else:
            c.setdefault("lastTransitionTime", now)
        out.append(c)
    return out


class StatusBook:
    def __init__(self, clock: Callable[[], str | None] = _now) -> None:
        self._clock = clock
        self._status: dict[ObjectKey, dict[str, Any]] = {}
        self._unstamped: dict[ObjectKey, Any] = {}

    def update(self, statuses: Mapping[ObjectKey, Mapping[str, Any]]) -> set[ObjectKey]:
        """Replace the whole set of statuses; return the keys whose status changed.

        Copy-on-write: the new book replaces the old one in one assignment, so a reader
        on another thread (the admin API, while a large update runs in a worker thread)
        sees the old statuses or the new ones, never a mix, never a dict that changes
        size under it."""
        now = self._clock()
        changed: set[ObjectKey] = set()
        status, unstamped = dict(self._status), dict(self._unstamped)
        for key in set(status) - set(statuses):
            del status[key]
            del unstamped[key]
            changed.add(key)
        for key, new in statuses.items():
            if unstamped.get(key) == new:
                continue
            status[key] = stamp(new, status.get(key), now)
            unstamped[key] = new
            changed.add(key)
        self._status, self._unstamped = status, unstamped
        return changed

    def get(self, key: ObjectKey) -> dict[str, Any] | None:
        return self._status.get(key)

    def __iter__(self) -> Iterator[ObjectKey]:
        return iter(sorted(self._status))

    def as_list(self, lookup: Callable[[ObjectKey], Obj | None]) -> dict[str, Any]:
        """The statuses as a Kubernetes List of objects (metadata + status, no spec)."""
        items = []
        book = self._status  # one version of the book (update() replaces it whole)
        for key in sorted(book):
            obj = lookup(key) or {}
            meta = obj.get("metadata") or {}
            kind = KINDS.get(key.kind)
            version = (obj.get("apiVersion") if obj else None) or (
                api_version(kind, kind.versions[0]) if kind else "")
            item_meta: dict[str, Any] = {"name": key.name}
            if key.namespace:
                item_meta["namespace"] = key.namespace
            for f in ("generation", "resourceVersion", "uid", "creationTimestamp"):
                if f in meta:
                    item_meta[f] = meta[f]
            items.append({"apiVersion": version, "kind": key.kind, "metadata": item_meta,
                          "status": book[key]})
        return {"apiVersion": "v1", "kind": "List", "items": items}

