"""Standalone mode's source: a directory of YAML files, watched.

The directory plays the part of the API server. Each document is defaulted and
validated as the Gateway API CRDs would have the API server do it; what the API server
would reject is refused here with one line naming the file, the object and the field,
and the rest keeps serving. A refused change never takes an object away: the last good
version of an object keeps serving until its replacement is valid (a file caught
mid-edit with a syntax error keeps all of its objects).

Metadata the API server owns is owned here too: ``resourceVersion`` (one counter for
the directory), ``generation`` (bumped when anything but metadata changes),
``creationTimestamp`` and ``uid`` (set when first seen). ``status`` in a file is ignored.
Every namespace an object uses exists, labelled ``kubernetes.io/metadata.name`` as the
API server labels them, whether or not a Namespace document declares it.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

from controller.defaults import apply_defaults
from controller.objects import KINDS, Obj, ObjectKey, parse_api_version
from controller.source import Batch, Event, EventType, Problem, Source
from controller.validation import validate
from controller.yamlload import DocumentError, load_documents

log = logging.getLogger("kgw.files")

SUFFIXES = (".yaml", ".yml", ".json")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
#: Seconds between full rescans (fingerprints only; unchanged files are not re-read).
RESCAN_INTERVAL = 30.0
_STOP = object()


def is_config_file(path: Path) -> bool:
    name = path.name
    return name.endswith(SUFFIXES) and not name.startswith((".", "#")) and not name.endswith("~")


@dataclass
class _Defined:
    """One object as the last successful read of its file defined it."""

    line: int
    obj: dict[str, Any]  # defaulted, without server-owned metadata


@dataclass(frozen=True)
class _Checked:
    """What checking one document's text gave, reusable while the text is unchanged."""

    key: ObjectKey | None
    obj: dict[str, Any] | None
    errors: Sequence[Problem]  # with origin "" (the line is filled in per read)


@dataclass
class _FileState:
    fingerprint: tuple[int, int, int] | None = None  # (mtime_ns, size, inode)
    objects: dict[ObjectKey, _Defined] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: Document text -> result of checking it, from the previous read.
    checked: dict[str, _Checked] = field(default_factory=dict)


@dataclass
class _Live:
    obj: dict[str, Any]  # as served: defaulted, with server-owned metadata
    spec: dict[str, Any]  # the object without metadata/status, to detect generation bumps
    generation: int


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FileSource(Source):
    """Reads ``directory`` (recursively) and, when watching, every later change to it."""

    def __init__(self, directory: str | os.PathLike[str], *, watch: bool = True,
                 debounce_ms: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.watch = watch
        self.debounce_ms = debounce_ms
        self._clock = clock
        self._files: dict[Path, _FileState] = {}
        self._owner: dict[ObjectKey, Path] = {}
        self._waiting: dict[ObjectKey, set[Path]] = {}  # duplicates to retry when freed
        self._live: dict[ObjectKey, _Live] = {}
        self._rv = 0
        self._dir_problem: Problem | None = None
        self._stop = asyncio.Event()

    # -- public ----------------------------------------------------------------

    def load(self) -> Batch:
        """Read the whole directory and return what changed since the last read."""
        noticed = self._clock()
        paths = set(self._scan()) | set(self._files)
        return self._process(paths, noticed)

    async def batches(self) -> AsyncIterator[Batch]:
        if not self.watch:
            yield self.load()
            return
        # The watcher starts before the first read, and a full (fingerprint-only) rescan
        # follows shortly after: a change made while the watcher was starting is not lost.
        # A periodic rescan covers what inotify can drop (queue overflow).
        self._queue = asyncio.Queue()
        watcher = asyncio.create_task(self._watch(self._queue))
        loop = asyncio.get_running_loop()
        try:
            yield self.load()
            next_rescan = loop.time() + 0.5
            while not self._stop.is_set():
                try:
                    item = await asyncio.wait_for(self._queue.get(), max(0.0, next_rescan - loop.time()))
                except asyncio.TimeoutError:
                    item = (self._clock(), None)
                if item is _STOP:
                    break
                noticed, paths = item
                while not self._queue.empty():  # merge what piled up meanwhile
                    more = self._queue.get_nowait()
                    if more is _STOP:
                        self._stop.set()
                        break
                    paths = None if paths is None or more[1] is None else paths | more[1]
                if paths is None:
                    next_rescan = loop.time() + RESCAN_INTERVAL
                    paths = set(self._scan()) | set(self._files)
                before = self._last_problems
                batch = self._process(paths, noticed)
                if batch.events or batch.problems != before:
                    yield batch
        finally:
            watcher.cancel()

    async def _watch(self, queue: "asyncio.Queue[Any]") -> None:
        import watchfiles  # imported here: only the watching mode needs it

        while not self._stop.is_set():
            try:
                async for changes in watchfiles.awatch(
                    self.directory, debounce=self.debounce_ms, step=10,
                    stop_event=self._stop, recursive=True,
                ):
                    paths: set[Path] | None = {Path(p) for _, p in changes}
                    if any(not is_config_file(p) for p in paths or ()):
                        paths = None  # a directory came or went, or a rename: rescan
                    queue.put_nowait((self._clock(), paths))
            except (OSError, RuntimeError) as exc:  # the directory vanished, inotify limits…
                log.warning("watching %s failed (%s); retrying in 1s", self.directory, exc)
                try:
                    await asyncio.wait_for(self._stop.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
                queue.put_nowait((self._clock(), None))

    _last_problems: tuple[Problem, ...] = ()
    _queue: "asyncio.Queue[Any] | None" = None

    async def close(self) -> None:
        self._stop.set()
        if self._queue is not None:
            self._queue.put_nowait(_STOP)

    def problems(self) -> tuple[Problem, ...]:
        probs: list[Problem] = [self._dir_problem] if self._dir_problem else []
        for path in sorted(self._files):
            probs.extend(self._files[path].problems)
        return tuple(probs)

    # -- reading ---------------------------------------------------------------

    def _scan(self) -> Iterable[Path]:
        if not self.directory.is_dir():
            self._dir_problem = Problem(str(self.directory), "not a directory (or missing); nothing to serve")
            return []
        self._dir_problem = None
        found = []
        for root, dirs, files in os.walk(self.directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(Path(root) / f for f in sorted(files) if is_config_file(Path(f)))
        return found

    def _process(self, paths: Iterable[Path], noticed: float) -> Batch:
        todo: list[tuple[Path, bool]] = [(p, False) for p in sorted(paths)]
        seen: set[Path] = set()
        touched: set[ObjectKey] = set()
        while todo:
            path, force = todo.pop(0)
            if path in seen and not force:
                continue
            seen.add(path)
            freed = self._read_file(path, force, touched)
            for key in sorted(freed):  # a duplicate elsewhere may now take over the freed name
                todo.extend((p, True) for p in sorted(self._waiting.pop(key, ())))
        events = self._sync_live(touched)
        problems = self.problems()
        self._last_problems = problems
        return Batch(tuple(events), problems, noticed)

    def _read_file(self, path: Path, force: bool, touched: set[ObjectKey]) -> set[ObjectKey]:
        """Re-read one file; return the keys it stopped owning.

        Adds to ``touched`` every key whose definition may have changed.
        """
        state = self._files.get(path)
        try:
            st = path.stat()
            exists = path.is_file() and is_config_file(path)
        except OSError:
            exists = False
        if not exists:
            if state is None:
                return set()
            del self._files[path]
            touched.update(state.objects)
            return self._release(path, set(state.objects))

        fingerprint = (st.st_mtime_ns, st.st_size, st.st_ino)
        if state is not None and state.fingerprint == fingerprint and not force:
            return set()
        if state is None:
            state = self._files[path] = _FileState()
        state.fingerprint = fingerprint
        rel = self._rel(path)
        previous = state.checked
        try:
            data = path.read_bytes()
            docs = list(load_documents(data, skip=previous.__contains__))
        except DocumentError as exc:
            # Mid-edit or broken: keep every object this file served, report where.
            state.problems = [Problem(f"{rel}:{exc.line}",
                                      exc.message + (" (keeping this file's previous objects)"
                                                     if state.objects else ""))]
            return set()
        except OSError as exc:
            state.problems = [Problem(rel, f"cannot read: {exc.strerror or exc}")]
            return set()

        problems: list[Problem] = []
        new: dict[ObjectKey, _Defined] = {}
        state.checked = {}
        for doc in docs:
            origin = f"{rel}:{doc.line}"
            checked = previous.get(doc.source) if doc.data is None else None
            if checked is None:
                checked = _Checked(*self._check_document(doc.data))
            state.checked[doc.source] = checked
            key, obj = checked.key, checked.obj
            errs = [Problem(origin, e.message, e.key, e.field) for e in checked.errors]
            if key is not None and key in new:
                errs = [Problem(origin, f"duplicate: already defined at {rel}:{new[key].line}", key)]
            elif key is not None and self._owner.get(key, path) != path:
                other = self._owner[key]
                errs = [Problem(origin, f"duplicate: already defined in {self._rel(other)}", key)]
                self._waiting.setdefault(key, set()).add(path)
            if errs:
                problems.extend(errs)
                prev = state.objects.get(key) if key is not None else None
                if prev is not None and key not in new and self._owner.get(key) == path:
                    new[key] = prev  # keep serving the last good version
                    problems[-1] = Problem(errs[-1].origin, errs[-1].message + " (previous version kept)",
                                           errs[-1].key, errs[-1].field)
                continue
            assert key is not None and obj is not None
            new[key] = _Defined(doc.line, obj)
            self._owner[key] = path
            self._waiting.get(key, set()).discard(path)
        dropped = set(state.objects) - set(new)
        touched.update(state.objects)
        touched.update(new)
        state.objects = new
        state.problems = problems
        return self._release(path, dropped)

    def _release(self, path: Path, keys: set[ObjectKey]) -> set[ObjectKey]:
        freed = set()
        for key in keys:
            if self._owner.get(key) == path:
                del self._owner[key]
                freed.add(key)
        return freed

    def _check_document(self, data: Any
                        ) -> tuple[ObjectKey | None, dict[str, Any] | None, list[Problem]]:
        """Identify, default and validate one document. Never raises.

        Depends on nothing but the document, so the result can be reused while the
        document's text is unchanged. Problems have no origin yet.
        """
        origin = ""
        if not isinstance(data, dict):
            return None, None, [Problem(origin, f"a document must be a mapping (an object), not {type(data).__name__}")]
        kind_name, api = data.get("kind"), data.get("apiVersion")
        if not isinstance(kind_name, str) or not kind_name:
            return None, None, [Problem(origin, "required", field="kind")]
        anon = ObjectKey(kind_name, "", "")
        if not isinstance(api, str) or not api:
            return None, None, [Problem(origin, "required", anon, "apiVersion")]
        kind = KINDS.get(kind_name)
        if kind is None:
            known = ", ".join(sorted(KINDS))
            return None, None, [Problem(origin, f"unknown kind {kind_name!r} (kgw reads: {known})", field="kind")]
        group, version = parse_api_version(api)
        if group != kind.group or version not in kind.versions:
            served = ", ".join(f"{kind.group + '/' if kind.group else ''}{v}" for v in kind.versions)
            return None, None, [Problem(origin, f"{api!r} is not served (served: {served})", anon, "apiVersion")]
        meta = data.get("metadata")
        if not isinstance(meta, dict):
            return None, None, [Problem(origin, "must be an object with a name", anon, "metadata")]
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            return None, None, [Problem(origin, "required, a string", anon, "metadata.name")]
        ns = meta.get("namespace")
        if kind.namespaced:
            if ns is None or ns == "":
                ns = "default"
            if not isinstance(ns, str):
                return None, None, [Problem(origin, "must be a string", anon, "metadata.namespace")]
        else:
            ns = ""
        key = ObjectKey(kind_name, ns, name)
        try:
            obj = apply_defaults(data)
            obj.pop("status", None)
            obj["metadata"] = dict(obj.get("metadata") or {})
            if kind.namespaced:
                obj["metadata"]["namespace"] = ns
            else:
                obj["metadata"].pop("namespace", None)
            errors = validate(obj)
        except Exception as exc:  # validation must not crash the source, whatever the input
            log.exception("internal error validating %s at %s", key, origin)
            return key, None, [Problem(origin, f"internal error while validating: {exc!r}", key)]
        if errors:
            return key, None, [Problem(origin, e.message, key, e.path) for e in errors]
        return key, obj, []

    # -- publishing ------------------------------------------------------------

    def _sync_live(self, touched: set[ObjectKey]) -> list[Event]:
        """Turn the changed definitions into events (only ``touched`` keys are compared)."""
        wanted: dict[ObjectKey, dict[str, Any] | None] = {}
        for key in touched:
            owner = self._owner.get(key)
            d = self._files[owner].objects.get(key) if owner in self._files else None
            wanted[key] = d.obj if d is not None else None
        self._add_namespaces(wanted)

        events: list[Event] = []
        for key in sorted(k for k, v in wanted.items() if v is None and k in self._live):
            live = self._live.pop(key)
            self._rv += 1
            gone = {**live.obj, "metadata": {**live.obj["metadata"], "resourceVersion": str(self._rv)}}
            events.append(Event(EventType.DELETED, key, gone, str(self._rv), live.generation))
        for key in sorted(k for k, v in wanted.items() if v is not None):
            obj = wanted[key]
            assert obj is not None
            live = self._live.get(key)
            spec = _strip(obj)
            if live is not None:
                old_meta = {k: v for k, v in live.obj["metadata"].items()
                            if k not in ("resourceVersion", "generation", "creationTimestamp", "uid")}
                if live.spec == spec and old_meta == obj["metadata"]:
                    continue
            self._rv += 1
            gen = 1 if live is None else live.generation + (live.spec != spec)
            # Objects are never mutated once read (the store and translation only read),
            # so the served object shares everything but its metadata with the definition.
            served = {**obj, "metadata": dict(obj["metadata"])}
            meta = served["metadata"]
            if live is not None:
                meta.setdefault("creationTimestamp", live.obj["metadata"]["creationTimestamp"])
                meta["uid"] = live.obj["metadata"]["uid"]
            else:
                meta.setdefault("creationTimestamp", _now_rfc3339())
                meta["uid"] = str(uuid.uuid4())
            meta["resourceVersion"] = str(self._rv)
            meta["generation"] = gen
            self._live[key] = _Live(served, spec, gen)
            events.append(Event(EventType.ADDED if live is None else EventType.MODIFIED,
                                key, served, str(self._rv), gen))
        return events

    def _add_namespaces(self, wanted: dict[ObjectKey, dict[str, Any] | None]) -> None:
        """Every namespace in use exists, labelled as the API server labels namespaces."""
        used = {k.namespace for k in self._owner if k.namespace}
        declared = {k.name for k in self._owner if k.kind == "Namespace"}
        for key in [k for k in self._live if k.kind == "Namespace"]:
            if key.name not in used and key.name not in declared:
                wanted[key] = None  # no longer used nor declared
        for ns in used | declared:
            key = ObjectKey("Namespace", "", ns)
            if key in wanted and wanted[key] is None and ns not in used:
                continue
            obj = wanted.get(key)
            if obj is None:
                owner = self._owner.get(key)
                d = self._files[owner].objects.get(key) if owner in self._files else None
                obj = d.obj if d is not None else {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            labels = dict(obj["metadata"].get("labels") or {})
            if labels.get(NAMESPACE_NAME_LABEL) != ns:
                labels[NAMESPACE_NAME_LABEL] = ns
                obj = {**obj, "metadata": {**obj["metadata"], "labels": labels}}
            wanted[key] = obj

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.directory.parent if self.directory.name else self.directory))
        except ValueError:
            return str(path)


def load_directory(directory: str | os.PathLike[str]) -> tuple[list[Obj], tuple[Problem, ...]]:
    """One-shot read (for ``kgw validate`` / ``kgw translate``)."""
    src = FileSource(directory, watch=False)
    batch = src.load()
    return [e.obj for e in batch.events if e.type is not EventType.DELETED], batch.problems
