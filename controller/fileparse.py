"""Reading one configuration file: its YAML documents, each identified, defaulted and
validated as the API server would. And a child process that does it under a budget.

Reading is pure (the file's bytes in, documents out) and most of what ``kgw run`` spends
on a large file (PyYAML, defaulting, validation: pure Python). On the supervisor's event
loop a large or hostile file would stop the admin API, the watcher and reloads for as
long as it takes, and could end the process with a MemoryError. ``kgw run`` therefore
reads files in a child process (:class:`ParserProcess`) with an address-space limit and
a time limit per file; a file over either is refused with a line that says so (the
previous objects of the file keep serving), the child is replaced, and the supervisor
never waits for it without a timeout. One-shot commands (``kgw validate``, ``kgw
translate``) read in their own process (:func:`read_file`): nothing else waits on them.

The child streams one frame per document, so the supervisor unpickles a document at a
time between other work; documents the caller already has (same text, by digest) come
back without data and are not checked again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pickle
import struct
import sys
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from controller.objects import KINDS, ObjectKey, parse_api_version
from controller.schema import apply_defaults, validate
from controller.source import Problem
from controller.yamlload import MAX_FILE_BYTES, DocumentError, load_documents

log = logging.getLogger("kgw.files")

#: The child's address-space limit (RLIMIT_AS). Measured: the interpreter with the schema
#: maps ~100 MB; reading a maximum-size file of 26,000 routes peaks at 50 MB resident
#: (documents are sent as they are read), a maximum-size single document at ~190 MB mapped.
MEMORY_BUDGET = 512 * 1024 * 1024
#: How long reading one file may take in the child (a maximum-size file of routes takes
#: about 5 s on one core of the test machine; reads are one file at a time).
TIME_BUDGET = 30.0
#: Starting the child (an interpreter importing the schema): generous, as under load.
START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Checked:
    """What checking one document gave: reusable while the document's text is unchanged."""

    key: ObjectKey | None
    obj: dict[str, Any] | None
    errors: Sequence[Problem]  # with origin "" (the line is filled in by the caller)


@dataclass(frozen=True, slots=True)
class Doc:
    line: int  # 1-based line of the document's first node
    digest: bytes  # of the document's text: identifies an unchanged document
    #: None when the caller said it has this digest's result already.
    checked: Checked | None


@dataclass(frozen=True, slots=True)
class Failure:
    """The file as a whole could not be read: its previous objects keep serving."""

    line: int
    message: str
    #: Not the file's fault (the reader process died): read it again at the next rescan.
    retry: bool = False


def digest(source: str) -> bytes:
    return hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def check_document(data: Any) -> Checked:
    """Identify, default and validate one document. Never raises."""
    if not isinstance(data, dict):
        return Checked(None, None, [
            Problem("", f"a document must be a mapping (an object), not {type(data).__name__}")])
    kind_name, api = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind_name, str) or not kind_name:
        return Checked(None, None, [Problem("", "required", field="kind")])
    anon = ObjectKey(kind_name, "", "")
    if not isinstance(api, str) or not api:
        return Checked(None, None, [Problem("", "required", anon, "apiVersion")])
    kind = KINDS.get(kind_name)
    if kind is None:
        known = ", ".join(sorted(KINDS))
        return Checked(None, None, [
            Problem("", f"unknown kind {kind_name[:64]!r} (kgw reads: {known})", field="kind")])
    group, version = parse_api_version(api)
    if group != kind.group or version not in kind.versions:
        served = ", ".join(f"{kind.group + '/' if kind.group else ''}{v}" for v in kind.versions)
        return Checked(None, None, [
            Problem("", f"{api[:64]!r} is not served (served: {served})", anon, "apiVersion")])
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        return Checked(None, None, [Problem("", "must be an object with a name", anon, "metadata")])
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return Checked(None, None, [Problem("", "required, a string", anon, "metadata.name")])
    ns = meta.get("namespace")
    if kind.namespaced:
        if ns is None or ns == "":
            ns = "default"
        if not isinstance(ns, str):
            return Checked(None, None,
                           [Problem("", "must be a string", anon, "metadata.namespace")])
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
    except Exception as exc:  # validation must not crash the reader, whatever the input
        log.exception("internal error validating %s", key)
        return Checked(key, None, [Problem("", f"internal error while validating: {exc!r}", key)])
    if errors:
        return Checked(key, None, [Problem("", e.message, key, e.path) for e in errors])
    return Checked(key, obj, [])


def read_docs(path: Path, skip: Container[bytes] = ()) -> Iterator[Doc]:
    """The documents of one file, in order. Raises DocumentError (bad YAML, too large)
    or OSError. ``skip``: digests the caller has results for (their data is not built)."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    seen: dict[str, bytes] = {}

    def known(source: str) -> bool:
        seen[source] = digest(source)
        return seen[source] in skip

    for doc in load_documents(data, skip=known):
        d = seen.pop(doc.source, None) or digest(doc.source)
        seen.clear()
        yield Doc(doc.line, d, None if doc.data is None else check_document(doc.data))


def read_file(path: Path, skip: Container[bytes] = ()) -> list[Doc] | Failure:
    """All documents of one file, or why the file cannot be read (in this process)."""
    try:
        return list(read_docs(path, skip))
    except DocumentError as exc:
        return Failure(exc.line, exc.message)
    except OSError as exc:
        return Failure(0, f"cannot read: {exc.strerror or exc}")


# -- the child process ---------------------------------------------------------------------

_LEN = struct.Struct("!I")


def _send(out: BinaryIO, value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LEN.pack(len(data)) + data)


def _recv(inp: BinaryIO) -> Any:
    head = inp.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError
    (n,) = _LEN.unpack(head)
    return pickle.loads(inp.read(n))


def child_main(argv: Sequence[str]) -> int:
    """``python -m controller.fileparse MEMORY_BYTES``: read files asked for on stdin.

    Request: (path, digests to skip). Reply: ("doc", Doc) per document, then ("end",
    None) or ("fail", Failure). After a MemoryError it replies ("fail-exit", Failure) and
    exits: the parent starts a fresh child for the next file.
    """
    import resource
    import signal

    # Signals sent to the whole process group are the supervisor's to act on (it stops
    # this child when it stops): controller/signals.py.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    limit = int(argv[0]) if argv else MEMORY_BUDGET
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    inp, out = sys.stdin.buffer, os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # frames only on our copy of stdout
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s kgw-fileparse %(levelname)s %(name)s: %(message)s")
    _send(out, ("ready", None))  # imports done: the parent's time budget starts per file
    out.flush()
    while True:
        try:
            path, skip = _recv(inp)
        except EOFError:
            return 0  # the supervisor is gone
        try:
            for doc in read_docs(Path(path), skip):
                _send(out, ("doc", doc))
            _send(out, ("end", None))
        except DocumentError as exc:
            _send(out, ("fail", Failure(exc.line, exc.message)))
        except OSError as exc:
            _send(out, ("fail", Failure(0, f"cannot read: {exc.strerror or exc}")))
        except MemoryError:
            _send(out, ("fail-exit",
                        Failure(0, f"needs more than {limit // (1024 * 1024)} MiB of memory to "
                                   "read; refused")))
            out.flush()
            return 1
        except RecursionError:
            _send(out, ("fail", Failure(0, "nests too deeply to read; refused")))
        out.flush()


async def _read_frame(stream: asyncio.StreamReader) -> tuple[str, Any]:
    """One (what, value) frame the child sent."""
    (n,) = _LEN.unpack(await stream.readexactly(_LEN.size))
    return pickle.loads(await stream.readexactly(n))


class ParserProcess:
    """The supervisor's side: one child at a time, started when first needed."""

    def __init__(self, memory: int = MEMORY_BUDGET, timeout: float = TIME_BUDGET) -> None:
        self.memory = memory
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self.started = 0  # children started (tests, and /metrics some day)

    async def _start(self) -> asyncio.subprocess.Process:
        """The running child, or a new one once it said it is ready: starting an
        interpreter (slow under load) is bounded by START_TIMEOUT, not by a file's budget."""
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await asyncio.wait_for(asyncio.create_subprocess_exec(
                sys.executable, "-m", "controller.fileparse", str(self.memory),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=1024 * 1024), START_TIMEOUT)
            self.started += 1
            assert self._proc.stdout is not None
            what, _ = await asyncio.wait_for(_read_frame(self._proc.stdout), START_TIMEOUT)
            if what != "ready":
                raise RuntimeError(f"the file reader process said {what!r} before 'ready'")
        return self._proc

    async def read(self, path: Path, skip: frozenset[bytes]) -> list[Doc] | Failure:
        """Read ``path`` in the child; never raises, never waits past the time budget (once
        the child is running)."""
        try:
            proc = await self._start()
        except Exception as exc:  # did not start, or not in time: again at the next rescan
            await self._kill()
            log.error("the file reader process did not start (%r); trying again", exc)
            return Failure(0, f"the file reader process did not start ({exc!r}); trying again "
                              "at the next rescan", retry=True)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._read(proc, path, skip)
        except TimeoutError:
            await self._kill()
            return Failure(0, f"reading took longer than {self.timeout:g}s; refused")
        except Exception as exc:  # the child died, or sent what we cannot read: a new one next time
            code = self._proc.returncode if self._proc is not None else None
            await self._kill()
            why = f"exit status {code}" if code is not None else repr(exc)
            log.error("the file reader process failed reading %s (%s); starting a new one", path,
                      why)
            return Failure(0,
                           f"the file reader process failed on this file ({why}); trying again at "
                           "the next rescan", retry=True)

    async def _read(self, proc: asyncio.subprocess.Process, path: Path,
                    skip: frozenset[bytes]) -> list[Doc] | Failure:
        assert proc.stdin is not None and proc.stdout is not None
        data = pickle.dumps((str(path), skip), protocol=pickle.HIGHEST_PROTOCOL)
        proc.stdin.write(_LEN.pack(len(data)) + data)
        await proc.stdin.drain()
        docs: list[Doc] = []
        while True:
            what, value = await _read_frame(proc.stdout)
            if what == "doc":
                docs.append(value)
            elif what == "end":
                return docs
            else:
                if what == "fail-exit":  # the child is exiting (after a MemoryError)
                    await self._kill()
                return value

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            log.error("the file reader process %s did not exit after SIGKILL", proc.pid)

    async def close(self) -> None:
        await self._kill()


if __name__ == "__main__":
    # Run the module's own copy (not __main__'s): what the child pickles must name
    # controller.fileparse classes for the parent to unpickle them.
    from controller import fileparse

    raise SystemExit(fileparse.child_main(sys.argv[1:]))
