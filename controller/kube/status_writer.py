"""Gateway API status, written back through the status subresource.

The Supervisor hands over the keys whose status changed; the writer queues them and
returns at once (a slow API server must not hold up configuration), and a background
task writes them while this agent holds the Lease. Each write is a read-modify-write of
``.../status`` (GET, then PUT with the resourceVersion read): a ``409 Conflict`` means
someone changed the object in between, so the writer reads again and re-applies.

What kgw owns in a status: all of a GatewayClass's and Gateway's status (translation
only reports on objects of kgw's class), and in routes and policies only the
``parents``/``ancestors`` entries whose ``controllerName`` is kgw's — entries of other
controllers sharing the route are kept as they are. Conditions carry the
``observedGeneration`` translation saw; a condition whose status did not change keeps
the ``lastTransitionTime`` already on the server, and a status equal to the server's is
not written at all (so a new leader writing "everything" only touches what differs).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client

from controller.kube.client import REQUEST_TIMEOUT, describe, status_code
from controller.kube.source import Backoff
from controller.objects import (CONTROLLER_NAME, KINDS, STATUS_GROUPS, ObjectKey, generation,
                                parse_api_version)
from controller.status import StatusBook, stamp
from controller.store import Store

log = logging.getLogger("kgw.kube.status")

#: Status lists shared between controllers, entry owner in ``controllerName``.
SHARED_LISTS = ("parents", "ancestors")
#: Attempts of one read-modify-write before giving up until the next change.
CONFLICT_RETRIES = 5


def with_observed_generation(status: Any, gen: int) -> Any:
    """Copy ``status`` setting observedGeneration on every condition that lacks it."""
    if isinstance(status, dict):
        out = {}
        for k, v in status.items():
            if k == "conditions" and isinstance(v, list):
                out[k] = [{**c, "observedGeneration": c.get("observedGeneration", gen)}
                          if isinstance(c, dict) else c for c in v]
            else:
                out[k] = with_observed_generation(v, gen)
        return out
    if isinstance(status, list):
        return [with_observed_generation(v, gen) for v in status]
    return status


def merge_status(server: dict[str, Any] | None, ours: dict[str, Any] | None,
                 controller_name: str = CONTROLLER_NAME) -> dict[str, Any]:
    """The status to write: ``ours`` over ``server``, other controllers' entries kept.

    ``ours`` None means kgw has nothing to say any more: its shared-list entries go,
    everything else stays.
    """
    server = server or {}
    merged = copy.deepcopy(server)
    for name in SHARED_LISTS:
        theirs = [e for e in server.get(name) or () if isinstance(e, dict)
                  and e.get("controllerName") != controller_name]
        mine = list((ours or {}).get(name) or ())
        if name in server or mine:
            merged[name] = theirs + mine
    for k, v in (ours or {}).items():
        if k not in SHARED_LISTS:
            merged[k] = v
    # Keep the server's lastTransitionTime where a condition's status did not change.
    return stamp(merged, server, "")


class KubeStatusWriter:
    """A ``controller.supervisor.StatusWriter`` for the Kubernetes API."""

    def __init__(self, api: client.ApiClient, *, is_leader: Callable[[], bool] = lambda: True,
                 controller_name: str = CONTROLLER_NAME, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.is_leader = is_leader
        self.controller_name = controller_name
        self._book: StatusBook | None = None
        self._store: Store | None = None
        self._pending: set[ObjectKey] = set()
        self._wake = asyncio.Event()
        self._backoff = Backoff(backoff_initial, backoff_max)
        #: Writes done (PUTs that succeeded), for metrics and tests.
        self.writes = 0

    # -- the StatusWriter protocol ------------------------------------------------------

    async def write(self, book: StatusBook, changed: set[Any], store: Store) -> None:
        self._book, self._store = book, store
        if self.is_leader():
            self._pending |= {k for k in changed if k.kind in KINDS
                              and KINDS[k.kind].group in STATUS_GROUPS}
            self._wake.set()

    async def write_all(self) -> None:
        """Called when this agent becomes the leader: write every current status once."""
        if self._book is not None:
            self._pending |= set(self._book)
            self._wake.set()

    async def drop(self) -> None:
        """Called when leadership is lost: what was not written is the next leader's."""
        self._pending.clear()

    # -- the background task --------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.is_leader():
                self._pending.clear()
                continue
            failed: set[ObjectKey] = set()
            while self._pending and self.is_leader():
                key = min(self._pending)
                self._pending.discard(key)
                try:
                    await self._write_key(key)
                except Exception as exc:
                    log.warning("writing the status of %s: %s", key, describe(exc))
                    failed.add(key)
            if failed:
                self._pending |= failed
                await asyncio.sleep(self._backoff.next())
                self._wake.set()
            else:
                self._backoff.reset()

    async def _write_key(self, key: ObjectKey) -> None:
        if self._book is None or self._store is None:
            return
        obj = self._store.get_key(key)
        if obj is None:
            return  # deleted: its status went with it
        ours = self._book.get(key)
        if ours is not None:
            ours = with_observed_generation(ours, generation(obj))
        await asyncio.to_thread(self._write_one, key, str(obj.get("apiVersion") or ""), ours)

    def _write_one(self, key: ObjectKey, api_version: str, ours: dict[str, Any] | None) -> bool:
        """Read-modify-write one status; True if a PUT was made."""
        kind = KINDS[key.kind]
        group, version = parse_api_version(api_version)
        if group != kind.group or not version:
            version = kind.versions[0]
        for _ in range(CONFLICT_RETRIES):
            try:
                current = self._get(kind.group, kind.plural, version, key)
            except Exception as exc:
                if status_code(exc) == 404:
                    return False  # deleted meanwhile
                raise
            status = merge_status(current.get("status"), ours, self.controller_name)
            if status == (current.get("status") or {}):
                return False
            body = {**current, "status": status}
            try:
                self._put(kind.group, kind.plural, version, key, body)
            except Exception as exc:
                if status_code(exc) == 409:
                    log.debug("status of %s: conflict, reading again", key)
                    continue
                if status_code(exc) == 404:
                    return False
                raise
            self.writes += 1
            log.debug("wrote the status of %s", key)
            return True
        raise RuntimeError(f"still conflicting after {CONFLICT_RETRIES} attempts")

    def _get(self, group: str, plural: str, version: str, key: ObjectKey) -> dict[str, Any]:
        if key.namespace:
            return cast(dict[str, Any], self.custom.get_namespaced_custom_object_status(
                group, version, key.namespace, plural, key.name,
                _request_timeout=REQUEST_TIMEOUT))
        return cast(dict[str, Any], self.custom.get_cluster_custom_object_status(
            group, version, plural, key.name, _request_timeout=REQUEST_TIMEOUT))

    def _put(self, group: str, plural: str, version: str, key: ObjectKey,
             body: dict[str, Any]) -> None:
        if key.namespace:
            self.custom.replace_namespaced_custom_object_status(
                group, version, key.namespace, plural, key.name, body,
                _request_timeout=REQUEST_TIMEOUT)
        else:
            self.custom.replace_cluster_custom_object_status(
                group, version, plural, key.name, body, _request_timeout=REQUEST_TIMEOUT)
