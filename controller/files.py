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
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.fileparse import Checked, Doc, Failure, ParserProcess, read_file
from controller.objects import ObjectKey
from controller.source import Batch, Event, EventType, Problem, Source

log = logging.getLogger("kgw.files")

SUFFIXES = (".yaml", ".yml", ".json")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
#: Seconds between full rescans (fingerprints only; unchanged files are not re-read).
RESCAN_INTERVAL = 30.0
#: How often the watched directory is checked for having been moved or deleted (inotify
#: goes on watching the old inode and says nothing), and for being back.
DIR_CHECK_INTERVAL = 0.25
#: When the directory is back: wait for its content to stop changing (a copy in progress),
#: at most this long, before reading it.
SETTLE_MAX = 5.0
#: Files that vanished: how long to wait for their directory to vanish too before their
#: objects are withdrawn (``rm -rf`` deletes the files first).
DELETE_GRACE = 0.25
#: After re-arming the watcher: when to read the whole directory (the watch is in place by then).
REARM_RESCAN_DELAY = 0.1
_STOP = object()
#: What _plan says about one file.
_READ, _GONE, _SAME = "read", "gone", "same"


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory at ``path``; None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def is_config_file(path: Path) -> bool:
    name = path.name
    return name.endswith(SUFFIXES) and not name.startswith((".", "#")) and not name.endswith("~")


@dataclass
class _Defined:
    """One object as the last successful read of its file defined it."""

    line: int
    obj: dict[str, Any]  # defaulted, without server-owned metadata


@dataclass
class _FileState:
    fingerprint: tuple[int, int, int] | None = None  # (mtime_ns, size, inode)
    objects: dict[ObjectKey, _Defined] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: (line, digest) of each document of the last successful read.
    docs: list[tuple[int, bytes]] = field(default_factory=list)
    #: Document digest -> result of checking it, from the last successful read.
    checked: dict[bytes, Checked] = field(default_factory=dict)


@dataclass
class _Live:
    obj: dict[str, Any]  # as served: defaulted, with server-owned metadata
    spec: dict[str, Any]  # the object without metadata/status, to detect generation bumps
    generation: int


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FileSource(Source):
    """Reads ``directory`` (recursively) and, when watching, every later change to it.

    The directory is named by its absolute path, taken once: the watcher reports absolute
    paths, and a relative ``-c`` would otherwise name each file twice (two "files"
    defining the same objects). When watching, files are read in a child process
    (controller.fileparse) so that the event loop never waits on a large file. A
    directory that disappears (moved, deleted, unmounted) is a problem of the source, not
    an empty configuration: everything keeps serving until it is back, and the watcher is
    re-armed on the new directory then.
    """

    def __init__(self, directory: str | os.PathLike[str], *, watch: bool = True,
                 debounce_ms: int = 10, clock: Callable[[], float] = time.monotonic,
                 parser: ParserProcess | None = None) -> None:
        self.directory = Path(os.path.abspath(directory))
        self.watch = watch
        self.debounce_ms = debounce_ms
        self._clock = clock
        self._parser = parser if parser is not None or not watch else ParserProcess()
        self._files: dict[Path, _FileState] = {}
        self._owner: dict[ObjectKey, Path] = {}
        self._waiting: dict[ObjectKey, set[Path]] = {}  # duplicates to retry when freed
        self._live: dict[ObjectKey, _Live] = {}
        self._rv = 0
        self._dir_problem: Problem | None = None
        self._dir_missing_since: float | None = None
        self._loop_problem: Problem | None = None
        self._stop = asyncio.Event()

    # -- public ----------------------------------------------------------------

    def load(self) -> Batch:
        """Read the whole directory (in this process) and return what changed since the last
        read."""
        noticed = self._clock()
        plan = self._plan(None, force=False)
        if plan is None:
            return self._batch([], noticed)
        reads = {path: read_file(path, self._skip(path)) for path, (what, _) in plan.items()
                 if what == _READ}
        return self._apply(plan, reads, noticed)

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
            yield await self._process_safely(None, self._clock(), force=False)
            next_rescan = loop.time() + 0.5
            while not self._stop.is_set():
                try:
                    item = await asyncio.wait_for(self._queue.get(),
                                                  max(0.0, next_rescan - loop.time()))
                except TimeoutError:
                    item = (self._clock(), None, False)
                if item is _STOP:
                    break
                noticed, paths, force = item
                while not self._queue.empty():  # merge what piled up meanwhile
                    more = self._queue.get_nowait()
                    if more is _STOP:
                        self._stop.set()
                        break
                    paths = None if paths is None or more[1] is None else paths | more[1]
                    force = force or more[2]
                if paths is None:
                    next_rescan = loop.time() + RESCAN_INTERVAL
                before = self._last_problems
                batch = await self._process_safely(paths, noticed, force)
                if batch.events or batch.problems != before:
                    yield batch
        finally:
            watcher.cancel()
            if self._parser is not None:
                await self._parser.close()

    def rescan(self) -> bool:
        """Re-read every file now, changed or not (SIGHUP). False when not watching."""
        if self._queue is None or self._stop.is_set():
            return False
        log.info("re-reading every file of %s", self.directory)
        self._queue.put_nowait((self._clock(), None, True))
        return True

    async def _process_safely(self, paths: set[Path] | None, noticed: float, force: bool) -> Batch:
        """One batch; whatever goes wrong is logged and reported, and the source goes on."""
        try:
            self._loop_problem = None
            return await self._process(paths, noticed, force)
        except Exception as exc:  # a bug, or MemoryError: keep every object, say so
            log.exception("reading %s failed; keeping the last good objects", self.directory)
            self._loop_problem = Problem(str(self.directory),
                                         f"reading the directory failed ({exc!r}); "
                                         "serving the last good configuration")
            return self._batch([], noticed)

    async def _process(self, paths: set[Path] | None, noticed: float, force: bool) -> Batch:
        ident = _identity(self.directory)
        plan = self._plan(paths, force)
        if plan is None:
            return self._batch([], noticed)
        if any(what == _GONE and path in self._files for path, (what, _) in plan.items()):
            # `rm -rf` deletes the files before the directory: files that vanished may be
            # the directory going away. Withdraw their objects only if it is still here.
            await asyncio.sleep(DELETE_GRACE)
            # gone or replaced: the watcher reads it when back
            if _identity(self.directory) != ident:
                self._plan(set(), force)  # (says so if it is missing)
                return self._batch([], noticed)
        reads: dict[Path, list[Doc] | Failure] = {}
        for path, (what, _) in plan.items():
            if what == _READ:
                assert self._parser is not None
                reads[path] = await self._parser.read(path, self._skip(path))
        # Merging tens of thousands of objects takes a while: in a thread, so the admin API
        # answers meanwhile (only this task changes the source's state).
        return await asyncio.to_thread(self._apply, plan, reads, noticed)

    async def _watch(self, queue: asyncio.Queue[Any]) -> None:
        """Watch the directory; when it goes away, wait for it and watch the new one."""
        import watchfiles  # imported here: only the watching mode needs it

        loop = asyncio.get_running_loop()
        rearmed = False
        while not self._stop.is_set():
            ident = _identity(self.directory)
            if ident is None:
                queue.put_nowait((self._clock(), None, False))  # reports the missing directory
                await self._until_back()
                rearmed = True
                continue
            gone = asyncio.Event()
            stop = asyncio.Event()
            monitor = asyncio.create_task(self._monitor(ident, gone, stop))
            if rearmed:  # read the directory as it is now, once the new watch is in place
                loop.call_later(REARM_RESCAN_DELAY, queue.put_nowait, (self._clock(), None, False))
            rearmed = True
            changes_of = watchfiles.awatch(self.directory, debounce=self.debounce_ms, step=10,
                                           stop_event=stop, recursive=True)
            try:
                async for changes in changes_of:
                    paths: set[Path] | None = {Path(p) for _, p in changes}
                    if self.directory in (paths or ()):
                        # The directory itself was deleted or moved (a new one may already
                        # be there, even with the old inode number): watch it afresh.
                        gone.set()
                        break
                    if any(not is_config_file(p) or not p.is_relative_to(self.directory)
                           for p in paths or ()):
                        paths = None  # a directory came or went, a rename, a path not ours: rescan
                    queue.put_nowait((self._clock(), paths, False))
            except (OSError, RuntimeError) as exc:  # the directory vanished, inotify limits…
                if _identity(self.directory) == ident:
                    log.warning("watching %s failed (%s); retrying in 1s", self.directory, exc)
                    try:
                        await asyncio.wait_for(self._stop.wait(), 1.0)
                    except TimeoutError:
                        pass
                queue.put_nowait((self._clock(), None, False))
            finally:
                stop.set()
                monitor.cancel()
                await changes_of.aclose()
            if gone.is_set():
                log.warning("%s was moved, deleted or replaced: keeping the last good objects "
                            "until it is back", self.directory)
                queue.put_nowait((self._clock(), None, False))  # reports a missing directory
                await self._until_back()

    async def _monitor(self, ident: tuple[int, int], gone: asyncio.Event,
                       stop: asyncio.Event) -> None:
        """Stop the watch when the directory is no longer the one watched: inotify keeps
        watching the old inode (moved or deleted) and says nothing more."""
        while not self._stop.is_set():
            if _identity(self.directory) != ident:
                gone.set()
                break
            try:
                await asyncio.wait_for(self._stop.wait(), DIR_CHECK_INTERVAL)
            except TimeoutError:
                pass
        stop.set()

    async def _until_back(self) -> None:
        """Wait for the directory to exist again, then for its content to settle (a copy
        in progress), at most SETTLE_MAX seconds."""
        while not self._stop.is_set() and _identity(self.directory) is None:
            try:
                await asyncio.wait_for(self._stop.wait(), DIR_CHECK_INTERVAL)
            except TimeoutError:
                pass
        deadline = time.monotonic() + SETTLE_MAX
        before = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            now = await asyncio.to_thread(self._tree_signature)
            if now == before:
                break
            before = now
            try:
                await asyncio.wait_for(self._stop.wait(), DIR_CHECK_INTERVAL)
            except TimeoutError:
                pass
        log.info("%s is back: watching it again", self.directory)

    def _tree_signature(self) -> tuple:
        scanned = self._scan()
        if scanned is None:
            return ()
        out = []
        for p in scanned:
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((p, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    _last_problems: tuple[Problem, ...] = ()
    _queue: asyncio.Queue[Any] | None = None

    async def close(self) -> None:
        self._stop.set()
        if self._queue is not None:
            self._queue.put_nowait(_STOP)
        if self._parser is not None:
            await self._parser.close()

    def problems(self) -> tuple[Problem, ...]:
        probs: list[Problem] = [p for p in (self._dir_problem, self._loop_problem) if p is not None]
        for path in sorted(self._files):
            probs.extend(self._files[path].problems)
        return tuple(probs)

    def health(self) -> str:
        parts = []
        if self._dir_problem is not None:
            since = ""
            if self._dir_missing_since is not None:
                since = f" for {self._clock() - self._dir_missing_since:.0f}s"
            parts.append(f"{self._dir_problem.origin}: {self._dir_problem.message}{since}")
        if self._loop_problem is not None:
            parts.append(str(self._loop_problem))
        return "; ".join(parts)

    def origin(self, key: ObjectKey) -> str:
        owner = self._owner.get(key)
        state = self._files.get(owner) if owner is not None else None
        d = state.objects.get(key) if state is not None else None
        return f"{self._rel(owner)}:{d.line}" if owner is not None and d is not None else ""

    # -- reading ---------------------------------------------------------------

    def _scan(self) -> list[Path] | None:
        """Every config file under the directory; None when the directory cannot be listed."""
        failed: list[OSError] = []

        def onerror(exc: OSError) -> None:
            failed.append(exc)

        found: list[Path] = []
        for root, dirs, files in os.walk(self.directory, onerror=onerror):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(Path(root) / f for f in sorted(files) if is_config_file(Path(f)))
        if any(getattr(e, "filename", None) in (str(self.directory), self.directory)
               for e in failed) \
                or not self.directory.is_dir():
            return None
        return found

    def _plan(self, paths: set[Path] | None, force: bool) -> dict[Path, tuple[str, Any]] | None:
        """Which files to look at (all of them when ``paths`` is None), and for each what
        to do: (_READ, fingerprint), (_GONE, None) or (_SAME, None). A file that exists but
        cannot be looked at is read (and the read says why it failed): only a file that is
        not there any more is gone.

        None when the directory itself is missing: then nothing changes."""
        if not self.directory.is_dir():
            if self._dir_missing_since is None:
                self._dir_missing_since = self._clock()
                log.error("%s is missing: serving the last good configuration until it is back",
                          self.directory)
            self._dir_problem = Problem(str(self.directory),
                                        "the configuration directory is missing (moved, "
                                        "deleted or not a directory); serving the last "
                                        "good configuration")
            return None
        if paths is None:
            scanned = self._scan()
            if scanned is None:
                self._dir_problem = Problem(str(self.directory),
                                            "cannot list the configuration directory; "
                                            "serving the last good configuration")
                return None
            paths = set(scanned) | set(self._files)
        if self._dir_missing_since is not None:
            log.info("%s is back", self.directory)
        self._dir_problem, self._dir_missing_since = None, None
        plan: dict[Path, tuple[str, Any]] = {}
        for path in sorted(paths):
            state = self._files.get(path)
            try:
                st = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                plan[path] = (_GONE, None)
                continue
            except OSError:
                st = None
            if st is not None and not (stat.S_ISREG(st.st_mode) and is_config_file(path)):
                plan[path] = (_GONE, None)  # not a config file (any more)
                continue
            fp = (st.st_mtime_ns, st.st_size, st.st_ino) if st is not None else (-1, -1, -1)
            changed = state is None or state.fingerprint != fp or force
            plan[path] = (_READ, fp) if changed else (_SAME, None)
        return plan

    def _skip(self, path: Path) -> frozenset[bytes]:
        state = self._files.get(path)
        return frozenset(state.checked) if state is not None else frozenset()

    def _apply(self, plan: dict[Path, tuple[str, Any]],
               reads: dict[Path, list[Doc] | Failure], noticed: float) -> Batch:
        todo: list[tuple[Path, bool]] = [(p, False) for p in sorted(plan)]
        seen: set[Path] = set()
        touched: set[ObjectKey] = set()
        while todo:
            path, retry = todo.pop(0)
            if path in seen and not retry:
                continue
            seen.add(path)
            if retry:  # a duplicate elsewhere may now take over a freed name: its last read
                state = self._files.get(path)
                freed = self._merge(path, state, state.docs,
                                    touched) if state is not None else set()
            elif path in reads:
                freed = self._read_into(path, plan[path][1], reads[path], touched)
            elif plan[path][0] == _GONE and path in self._files:
                state = self._files.pop(path)
                touched.update(state.objects)
                freed = self._release(path, set(state.objects))
            else:
                freed = set()
            for key in sorted(freed):
                todo.extend((p, True) for p in sorted(self._waiting.pop(key, ())))
        return self._batch(self._sync_live(touched), noticed)

    def _batch(self, events: list[Event], noticed: float) -> Batch:
        problems = self.problems()
        self._last_problems = problems
        return Batch(tuple(events), problems, noticed)

    def _read_into(self, path: Path, fingerprint: tuple[int, int, int] | None,
                   result: list[Doc] | Failure, touched: set[ObjectKey]) -> set[ObjectKey]:
        """Take one file's new read; return the keys it stopped owning."""
        state = self._files.get(path)
        if state is None:
            state = self._files[path] = _FileState()
        state.fingerprint = fingerprint
        rel = self._rel(path)
        if isinstance(result, Failure):
            # Mid-edit, broken or too costly: keep every object this file served, say where.
            if result.retry:
                state.fingerprint = None  # read it again at the next rescan
            origin = f"{rel}:{result.line}" if result.line else rel
            keeping = " (keeping this file's previous objects)" if state.objects else ""
            state.problems = [Problem(origin, result.message + keeping)]
            return set()
        previous = state.checked
        state.checked = {}
        docs = []
        for doc in result:
            checked = doc.checked if doc.checked is not None else previous.get(doc.digest)
            if checked is None:  # cannot happen: the reader skips only digests we sent
                checked = Checked(None, None,
                                  [Problem("", "internal error: document result missing")])
            state.checked[doc.digest] = checked
            docs.append((doc.line, doc.digest))
        state.docs = docs
        return self._merge(path, state, docs, touched)

    def _merge(self, path: Path, state: _FileState, docs: list[tuple[int, bytes]],
               touched: set[ObjectKey]) -> set[ObjectKey]:
        """The objects of one file from its documents' results: ownership, duplicates,
        last good versions kept; return the keys it stopped owning."""
        rel = self._rel(path)
        problems: list[Problem] = []
        new: dict[ObjectKey, _Defined] = {}
        for line, d in docs:
            origin = f"{rel}:{line}"
            checked = state.checked[d]
            key, obj = checked.key, checked.obj
            errs = [Problem(origin, e.message, e.key, e.field) for e in checked.errors]
            if key is not None and key in new:
                errs = [
                    Problem(origin, f"duplicate: already defined at {rel}:{new[key].line}", key)]
            elif key is not None and self._owner.get(key, path) != path:
                other = self._owner[key]
                errs = [Problem(origin, f"duplicate: already defined in {self._rel(other)}", key)]
                self._waiting.setdefault(key, set()).add(path)
            if errs:
                problems.extend(errs)
                prev = state.objects.get(key) if key is not None else None
                if prev is not None and key is not None and key not in new \
                        and self._owner.get(key) == path:
                    new[key] = prev  # keep serving the last good version
                    problems[-1] = Problem(errs[-1].origin,
                                           errs[-1].message + " (previous version kept)",
                                           errs[-1].key, errs[-1].field)
                continue
            assert key is not None and obj is not None
            new[key] = _Defined(line, obj)
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
            old = self._live.pop(key)
            self._rv += 1
            gone = {**old.obj,
                    "metadata": {**old.obj["metadata"], "resourceVersion": str(self._rv)}}
            events.append(Event(EventType.DELETED, key, gone, str(self._rv), old.generation))
        for key in sorted(k for k, v in wanted.items() if v is not None):
            obj = wanted[key]
            assert obj is not None
            live = self._live.get(key)
            spec = _strip(obj)
            if live is not None:
                old_meta = {k: v for k, v in live.obj["metadata"].items()
                            if k not in ("resourceVersion", "generation", "creationTimestamp",
                                         "uid")}
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
                obj = d.obj if d is not None else {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": ns}}
            labels = dict(obj["metadata"].get("labels") or {})
            if labels.get(NAMESPACE_NAME_LABEL) != ns:
                labels[NAMESPACE_NAME_LABEL] = ns
                obj = {**obj, "metadata": {**obj["metadata"], "labels": labels}}
            wanted[key] = obj

    def _rel(self, path: Path) -> str:
        try:
            return str(
                path.relative_to(self.directory.parent if self.directory.name else self.directory))
        except ValueError:
            return str(path)
