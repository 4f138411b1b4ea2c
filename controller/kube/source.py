"""Kubernetes mode's source: list-then-watch the API server, yield the file source's batches.

One reflector thread per kind (the official client is synchronous) lists, then watches
from the list's resourceVersion with bookmarks, resumes from the last resourceVersion
after a dropped connection (with exponential backoff and jitter), and relists on
``410 Gone``. Threads only post what they read; the event loop owns every cache and
turns them into ``Batch``es: the initial state as one batch of ADDED, then changes, with
a relist diffed against what was already published (objects that vanished meanwhile
become DELETED).

Why not the client's ``Watch``/``SharedInformer``: they retry a 410 once with the same
stale version, turn a malformed line into ``None``, deserialise core kinds into models
(kgw keeps the API's dicts), report a relist as a MODIFIED per object and expose no
connection state; kgw needs all four the other way round. The HTTP, auth and line
framing are still the client's (``controller.kube.client``).

Secrets are not watched. kgw reads only the Secrets a Gateway's listeners reference
(``tls.certificateRefs``), each with a GET, again when the set of references changes,
and every ``secret_refresh`` seconds to pick up rotated certificates. The alternative,
a watch per Secret with ``fieldSelector=metadata.name=…``, needs ``list`` and ``watch``
on Secrets in RBAC, which (resourceNames aside, unknowable at install time) lets the
agent enumerate and read every Secret in the cluster; ``get`` alone cannot enumerate.
Certificates rotate days before they expire, so a refresh period of a minute costs
nothing.

Objects arrive already defaulted and validated by the API server: no defaulting here.
``status`` and ``managedFields`` are dropped (translation never reads them; kgw's own
status writes would otherwise come back as changes), and a change to nothing else is
not an event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from controller.kube.client import (REQUEST_TIMEOUT, describe, get_json, lines, open_request,
                                    status_code)
from controller.kube.discovery import Served, discover
from controller.objects import KINDS, Kind, ObjectKey, generation, resource_version
from controller.source import Batch, Event, EventType, Problem, Source

log = logging.getLogger("kgw.kube")

#: Kinds listed and watched (Secrets are fetched one by one, see the module docstring).
WATCHED = tuple(k for k in KINDS.values() if k.kind != "Secret")
SECRET = KINDS["Secret"]
ORIGIN = "kube"


@dataclass(frozen=True)
class KubeOptions:
    #: Label selector for Namespaces; objects in other namespaces are not read.
    namespace_selector: str = ""
    #: Server-side timeout of one watch request; the reflector then resumes.
    watch_timeout: int = 300
    #: Items per list page.
    page_size: int = 500
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: Seconds between re-reads of referenced Secrets (certificate rotation).
    secret_refresh: float = 60.0
    #: Seconds between looks for kinds the server did not serve (a CRD installed later).
    rediscover: float = 60.0


class Backoff:
    """Exponential backoff with jitter; ``reset`` after a success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum, self.attempt = initial, maximum, 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * (2 ** self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class _KindVanished(Exception):
    """The server stopped serving the kind (404 on list/watch: a CRD was deleted)."""


# Messages from reflector threads to the event loop.
@dataclass(frozen=True)
class _Listed:
    kind: str
    items: tuple[dict[str, Any], ...]
    rv: str


@dataclass(frozen=True)
class _Watched:
    kind: str
    type: EventType
    obj: dict[str, Any]


@dataclass(frozen=True)
class _Vanished:
    kind: str
    why: str


def clean(obj: dict[str, Any], served: Served) -> dict[str, Any]:
    """The object as the store holds it: kind/apiVersion set, no status nor managedFields.

    List items of built-in kinds come without kind/apiVersion; watch events carry them.
    """
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    out = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    out["apiVersion"] = served.api_version
    out["kind"] = served.kind.kind
    out["metadata"] = meta
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for resourceVersion (bumped by status writes and no-op updates)."""
    def strip(o: dict[str, Any]) -> dict[str, Any]:
        return {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}}
    return strip(a) == strip(b)


def _key(kind: Kind, obj: dict[str, Any]) -> ObjectKey | None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        return None
    ns = meta.get("namespace") or ""
    if kind.namespaced and not isinstance(ns, str):
        return None
    return ObjectKey(kind.kind, ns if kind.namespaced else "", meta["name"])


class _Reflector(threading.Thread):
    """List, then watch one kind forever; post what it reads to the event loop."""

    def __init__(self, api: client.ApiClient, served: Served, options: KubeOptions,
                 post: Callable[[Any], None], state: _State, stop: threading.Event) -> None:
        super().__init__(name=f"kgw-watch-{served.kind.plural}", daemon=True)
        self.api, self.served, self.options = api, served, options
        self.post, self.state, self.stop_event = post, state, stop
        self.rv: str | None = None
        self._resp: Any = None
        self._backoff = Backoff(options.backoff_initial, options.backoff_max)
        label = options.namespace_selector if served.kind.kind == "Namespace" else ""
        self._selector = [("labelSelector", label)] if label else []

    @property
    def kind(self) -> str:
        return self.served.kind.kind

    def stop(self) -> None:
        resp = self._resp
        if resp is not None:
            try:  # unblock a read in progress (urllib3 >= 2.3)
                resp.shutdown()
            except Exception:
                pass

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                if self.rv is None:
                    self._list()
                started = time.monotonic()
                if not self._watch() and time.monotonic() - started < 1.0:
                    # Closed at once with nothing said: don't hammer the server.
                    if self.stop_event.wait(self._backoff.next()):
                        return
            except _Gone:
                log.info("%s: watch expired (410 Gone); relisting", self.kind)
                self.rv = None
            except _KindVanished as exc:
                self.post(_Vanished(self.kind, str(exc)))
                return
            except Exception as exc:
                if self.stop_event.is_set():
                    return
                delay = self._backoff.next()
                self.state.failed(self.kind, describe(exc))
                log.warning("%s: %s; retrying in %.1fs", self.kind, describe(exc), delay)
                if self.stop_event.wait(delay):
                    return

    def _list(self) -> None:
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            query = [*self._selector, ("limit", self.options.page_size)]
            if cont:
                query.append(("continue", cont))
            try:
                doc = get_json(self.api, self.served.collection(), query)
            except Exception as exc:
                code = status_code(exc)
                if code == 410 and cont:  # the continue token expired: start over
                    items, cont = [], ""
                    continue
                if code in (403, 404):
                    raise _KindVanished(
                        f"{self.kind}: listing {self.served.collection()} failed: "
                        f"{describe(exc)}") from exc
                raise
            meta = doc.get("metadata") or {}
            for item in doc.get("items") or ():
                if isinstance(item, dict):
                    items.append(item)
            cont = meta.get("continue") or ""
            if not cont:
                break
        self.rv = str(meta.get("resourceVersion") or "")
        self.state.ok(self.kind)
        self._backoff.reset()
        self.post(_Listed(self.kind, tuple(items), self.rv))

    def _watch(self) -> bool:
        """Watch until the server ends the stream; return whether it sent anything."""
        query = [*self._selector, ("watch", "true"), ("allowWatchBookmarks", "true"),
                 ("resourceVersion", self.rv or ""), ("timeoutSeconds", self.options.watch_timeout)]
        # Read timeout beyond the server's own: a silent, half-open connection is noticed.
        timeout = (REQUEST_TIMEOUT[0], self.options.watch_timeout + 30)
        try:
            resp = open_request(self.api, "GET", self.served.collection(), query, timeout=timeout)
        except Exception as exc:
            if status_code(exc) == 410:
                raise _Gone() from exc
            if status_code(exc) == 404:
                raise _KindVanished(
                    f"{self.kind}: {self.served.collection()} is no longer served") from exc
            raise
        self._resp = resp
        self.state.ok(self.kind)
        said = False
        try:
            for line in lines(resp):
                if self.stop_event.is_set():
                    return said
                if line:
                    if not said:
                        said = True
                        self._backoff.reset()
                    self._event(line)
        finally:
            self._resp = None
            resp.release_conn()
        return said

    def _event(self, line: str) -> None:
        try:
            ev = json.loads(line)
            etype, obj = ev["type"], ev["object"]
            if not isinstance(obj, dict):
                raise TypeError("object is not a mapping")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: skipping a malformed watch event (%s): %.200s", self.kind, exc, line)
            return
        if etype == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise RuntimeError(
                f"watch error: {obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
        rv = resource_version(obj)
        if etype == "BOOKMARK":
            if rv:
                self.rv = rv
            return
        try:
            type_ = EventType(etype)
        except ValueError:
            log.warning("%s: skipping a watch event of unknown type %r", self.kind, etype)
            return
        if _key(self.served.kind, obj) is None:
            log.warning("%s: skipping a watch event without a usable metadata.name: %.200s",
                        self.kind, line)
            return
        if rv:
            self.rv = rv
        self.post(_Watched(self.kind, type_, obj))


class _State:
    """Connection state of every reflector, for /readyz. Written by threads, read by the loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: dict[str, tuple[str, float]] = {}

    def failed(self, what: str, why: str) -> None:
        with self._lock:
            since = self._errors.get(what, (why, time.time()))[1]
            self._errors[what] = (why, since)

    def ok(self, what: str) -> None:
        with self._lock:
            self._errors.pop(what, None)

    def reason(self) -> str:
        with self._lock:
            if not self._errors:
                return ""
            what, (why, since) = min(self._errors.items(), key=lambda kv: kv[1][1])
            n = len(self._errors)
        ago = time.time() - since
        more = f" (and {n - 1} more)" if n > 1 else ""
        return f"API server: {what}: {why} for {ago:.0f}s{more}"


class KubeSource(Source):
    """The API server's objects as batches, like ``FileSource``'s."""

    def __init__(self, api: client.ApiClient, options: KubeOptions = KubeOptions()) -> None:
        self.api = api
        self.options = options
        self._stop = threading.Event()
        self._state = _State()
        self._queue: asyncio.Queue[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reflectors: dict[str, _Reflector] = {}
        self._served: dict[str, Served] = {}
        self._missing: dict[str, str] = {}
        self._problems: dict[str, Problem] = {}
        # Every object the server sent (all namespaces), and what was published.
        self._cache: dict[ObjectKey, dict[str, Any]] = {}
        self._published: dict[ObjectKey, dict[str, Any]] = {}
        self._secret_refs: set[ObjectKey] = set()
        self._secrets_read_at = 0.0
        self.synced = False

    # -- what the agent asks ---------------------------------------------------------

    def health(self) -> str:
        """Empty when every watch is connected, else why not (for /readyz)."""
        return self._state.reason()

    @property
    def served(self) -> dict[str, str]:
        """Kind -> apiVersion it is read (and its status written) at."""
        return {k: s.api_version for k, s in self._served.items()}

    async def close(self) -> None:
        self._stop.set()
        for r in self._reflectors.values():
            r.stop()
        if self._loop is not None and self._queue is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)

    # -- the stream --------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[Batch]:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        await self._discover(WATCHED, initial=True)
        if self._stop.is_set():
            return
        # The initial state: every served kind listed once, then one batch.
        pending = set(self._served)
        noticed = time.monotonic()
        while pending:
            msg = await self._queue.get()
            if msg is None:
                return
            noticed = time.monotonic()
            self._receive(msg)
            if isinstance(msg, (_Listed, _Vanished)):
                pending.discard(msg.kind)
        await self._sync_secrets(force=True)
        self.synced = True
        yield Batch(tuple(self._diff(set(self._cache) | set(self._published))),
                    self._problem_list(), noticed)

        last_discovery = time.monotonic()
        while not self._stop.is_set():
            timeout = self._next_timer(last_discovery)
            try:
                msg = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                msg = False  # a timer
            if msg is None:
                return
            noticed = time.monotonic()
            before = self._problem_list()
            touched: set[ObjectKey] = set()
            msgs = [msg] if msg is not False else []
            while not self._queue.empty():  # everything already read goes in this batch
                more = self._queue.get_nowait()
                if more is None:
                    return
                msgs.append(more)
            for m in msgs:
                touched |= self._receive(m)
            if self._missing and time.monotonic() - last_discovery >= self.options.rediscover:
                last_discovery = time.monotonic()
                await self._discover([KINDS[k] for k in self._missing], initial=False)
            touched |= await self._sync_secrets(force=False)
            events = self._diff(touched)
            problems = self._problem_list()
            if events or problems != before:
                yield Batch(tuple(events), problems, noticed)

    def _next_timer(self, last_discovery: float) -> float:
        now = time.monotonic()
        due = self._secrets_read_at + self.options.secret_refresh
        if self._missing:
            due = min(due, last_discovery + self.options.rediscover)
        return max(0.05, due - now)

    async def _discover(self, kinds: Iterable[Kind], initial: bool) -> None:
        backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        kinds = list(kinds)
        while not self._stop.is_set():
            try:
                served, missing = await asyncio.to_thread(discover, self.api, kinds)
                self._state.ok("discovery")
                break
            except Exception as exc:
                self._state.failed("discovery", describe(exc))
                if not initial:
                    log.warning("discovery failed: %s; trying again later", describe(exc))
                    return
                delay = backoff.next()
                log.warning("discovery failed: %s; retrying in %.1fs", describe(exc), delay)
                await asyncio.sleep(delay)
        else:
            return
        for name, why in missing.items():
            if name not in self._missing:
                log.warning("%s", why)
            self._missing[name] = why
            self._problems[name] = Problem(ORIGIN, why)
        for name, s in sorted(served.items()):
            self._missing.pop(name, None)
            self._problems.pop(name, None)
            self._served[name] = s
            log.info("reading %s at %s", name, s.api_version)
            self._start(s)

    def _start(self, served: Served) -> None:
        assert self._loop is not None and self._queue is not None
        loop, queue = self._loop, self._queue

        def post(msg: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, msg)
            except RuntimeError:  # the loop is closed: we are shutting down
                self._stop.set()

        r = _Reflector(self.api, served, self.options, post, self._state, self._stop)
        self._reflectors[served.kind.kind] = r
        r.start()

    # -- caches ------------------------------------------------------------------------

    def _receive(self, msg: Any) -> set[ObjectKey]:
        """Apply one reflector message to the cache; return the keys it may have changed."""
        touched: set[ObjectKey] = set()
        if isinstance(msg, (_Listed, _Watched)) and msg.kind not in self._served:
            return touched  # a kind that vanished since
        if isinstance(msg, _Listed):
            served = self._served[msg.kind]
            old = {k for k in self._cache if k.kind == msg.kind}
            for k in old:
                del self._cache[k]
            for item in msg.items:
                key = _key(served.kind, item)
                if key is None:
                    log.warning("%s: skipping a listed object without a usable metadata.name",
                                msg.kind)
                    continue
                self._cache[key] = clean(item, served)
            touched = old | {k for k in self._cache if k.kind == msg.kind}
        elif isinstance(msg, _Watched):
            served = self._served[msg.kind]
            key = _key(served.kind, msg.obj)
            assert key is not None  # checked by the reflector
            if msg.type is EventType.DELETED:
                self._cache.pop(key, None)
            else:
                self._cache[key] = clean(msg.obj, served)
            touched = {key}
        elif isinstance(msg, _Vanished):
            log.warning("%s", msg.why)
            self._reflectors.pop(msg.kind, None)
            self._served.pop(msg.kind, None)
            why = f"{msg.why}; kgw looks again periodically"
            self._missing[msg.kind] = why
            self._problems[msg.kind] = Problem(ORIGIN, why)
            self._state.ok(msg.kind)
            touched = {k for k in self._cache if k.kind == msg.kind}
            for k in touched:
                del self._cache[k]
        if self.options.namespace_selector:
            # A namespace entering or leaving the selection shows or hides its objects.
            for ns in [k.name for k in touched if k.kind == "Namespace"]:
                touched |= {k for k in (*self._cache, *self._published) if k.namespace == ns}
        return touched

    def _visible(self, key: ObjectKey) -> dict[str, Any] | None:
        obj = self._cache.get(key)
        if obj is None:
            return None
        if key.namespace and self.options.namespace_selector and \
                ObjectKey("Namespace", "", key.namespace) not in self._cache:
            return None
        return obj

    def _diff(self, keys: Iterable[ObjectKey]) -> list[Event]:
        events: list[Event] = []
        for key in sorted(set(keys)):
            want, have = self._visible(key), self._published.get(key)
            if want is None and have is not None:
                del self._published[key]
                events.append(
                    Event(EventType.DELETED, key, have, resource_version(have), generation(have)))
            elif want is not None and have is None:
                self._published[key] = want
                events.append(
                    Event(EventType.ADDED, key, want, resource_version(want), generation(want)))
            elif want is not None and have is not None and not _same(want, have):
                self._published[key] = want
                events.append(
                    Event(EventType.MODIFIED, key, want, resource_version(want), generation(want)))
        return events

    def _problem_list(self) -> tuple[Problem, ...]:
        return tuple(self._problems[k] for k in sorted(self._problems))

    # -- secrets -------------------------------------------------------------------------

    def referenced_secrets(self) -> set[ObjectKey]:
        """Secrets the visible Gateways reference, by key."""
        refs: set[ObjectKey] = set()
        for key in [k for k in self._cache if k.kind == "Gateway"]:
            gw = self._visible(key)
            if gw is None:
                continue
            spec = gw.get("spec") or {}
            wanted: list[Any] = []
            for listener in spec.get("listeners") or ():
                if isinstance(listener, dict):
                    wanted.extend(((listener.get("tls") or {}).get("certificateRefs")) or ())
            backend = ((spec.get("tls") or {}).get("backend") or {}).get("clientCertificateRef")
            if backend:
                wanted.append(backend)
            for ref in wanted:
                if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
                    continue
                if (ref.get("group") or "") != "" or (ref.get("kind") or "Secret") != "Secret":
                    continue
                ns = ref.get("namespace") or key.namespace
                if isinstance(ns, str):
                    refs.add(ObjectKey("Secret", ns, ref["name"]))
        return refs

    async def _sync_secrets(self, force: bool) -> set[ObjectKey]:
        """Read newly referenced Secrets (and all of them when the refresh is due)."""
        refs = self.referenced_secrets()
        due = force or time.monotonic() - self._secrets_read_at >= self.options.secret_refresh
        todo = refs if due else refs - self._secret_refs
        touched = {k for k in self._cache if k.kind == "Secret" and k not in refs}
        for k in touched:
            del self._cache[k]
        for k in self._secret_refs - refs:
            self._problems.pop(f"Secret {k.namespace}/{k.name}", None)
        self._secret_refs = refs
        if due:
            self._secrets_read_at = time.monotonic()
        if todo:
            results = await asyncio.gather(
                *(asyncio.to_thread(self._read_secret, k) for k in sorted(todo)))
            for key, (obj, problem) in zip(sorted(todo), results):
                touched.add(key)
                pkey = f"Secret {key.namespace}/{key.name}"
                if problem is not None:
                    self._problems[pkey] = problem
                    continue  # keep the last good copy, if any
                self._problems.pop(pkey, None)
                if obj is None:
                    self._cache.pop(key, None)
                else:
                    self._cache[key] = obj
        return touched

    def _read_secret(self, key: ObjectKey) -> tuple[dict[str, Any] | None, Problem | None]:
        served = Served(SECRET, "v1")
        try:
            obj = get_json(self.api, served.item(key.namespace, key.name))
        except Exception as exc:
            if status_code(exc) == 404:
                return None, None  # translation reports the missing reference
            why = describe(exc)
            log.warning("reading %s: %s", key, why)
            return None, Problem(ORIGIN, f"cannot read a referenced Secret: {why}", key)
        if not isinstance(obj, dict) or _key(SECRET, obj) != key:
            return None, Problem(ORIGIN,
                                 "the API server returned something that is not this Secret", key)
        return clean(obj, served), None
