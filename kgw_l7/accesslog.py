"""The access log: one line per request, formatted from what the exchange holds, written
in batches by a thread of its own.

``Formatter`` is compiled once from a parsed format (``kgw_l7.logformat``) into parallel
lists of operator codes and pre-encoded literals; a line is a pass over them appending
bytes to a list and one join -- no dict, no json.dumps, no str round trip per request.
Values come from the client (path, headers) and are escaped, whatever bytes they hold:
in ``json`` a string is JSON-escaped, each byte >= 0x80 as its Latin-1 code point
(``\\u00e9``: lossless, the line stays ASCII and valid JSON whatever the input); in
``text`` as nginx does (``\\"``, ``\\\\``, ``\\xHH`` for control and non-ASCII bytes), so a
line is always one line.

``AccessLog`` keeps lines in a chunk; the chunk goes to the writer thread when it
reaches ``CHUNK`` bytes, on the worker's periodic timer (at most 1 s later) and at
shutdown (``close``: the rest is written before the worker exits, within a time
limit). The event loop never writes: a slow disk or a blocked pipe stalls only the
thread, and chunks waiting for it are bounded (``MAX_PENDING`` bytes); past that, lines
are dropped and counted (``dropped["buffer_full"]``, ``kgw_access_log_dropped_total``).
A write error (the path cannot be opened, the disk is full) is logged once until writes
succeed again, counted (``write_errors``), and its lines counted as dropped
(``"write_error"``); the proxy keeps serving.

Lines from several workers go to one file opened with O_APPEND, each write holding
whole lines; to a pipe (stdout under a container runtime) writes hold at most
PIPE_BUF bytes, so lines from several workers never interleave.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import stat
import sys
import threading
import time
from typing import Any

from kgw_l7.events import RequestHead
from kgw_l7.logformat import LogFormat
from kgw_l7.otlplogs import OtlpLogSink, is_otlp, logs_url

try:
    import cython
except ImportError:
    from kgw_l7 import _cython as cython

if not cython.compiled:  # (compiled: C constants from accesslog.pxd, the same values)
    from kgw_l7.logformat import (
        AUTHORITY, BYTES_RECEIVED, BYTES_SENT, DOWNSTREAM_REMOTE_ADDRESS,
        DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, DURATION, HEADER, LISTENER, LITERAL, METHOD,
        PATH, PROTOCOL, REDACTED, REQUEST_ID, RESPONSE_CODE, RESPONSE_CODE_DETAILS,
        RESPONSE_FLAGS, ROUTE_NAME, START_TIME, UPSTREAM_HOST,
    )

log = logging.getLogger("kgw.l7.accesslog")

#: A chunk goes to the writer at this size.
CHUNK = 64 * 1024
#: Bytes handed to the writer and not written yet, at most (then lines are dropped).
MAX_PENDING = 4 * 1024 * 1024
#: Largest write to a pipe: PIPE_BUF, what the kernel keeps whole among writers.
PIPE_WRITE = 4096
#: Buffers per writev call (the kernel's UIO_MAXIOV).
IOV_MAX = 1024
#: How long ``close`` waits for the writer to finish.
CLOSE_TIMEOUT = 5.0

_NUMBERS = tuple(b"%d" % i for i in range(1024))
_MILLIS = tuple(b".%03dZ" % i for i in range(1000))
_HEX = tuple(b"%02x" % i for i in range(256))
_JSON_SHORT = {0x22: b'\\"', 0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t",
               0x08: b"\\b", 0x0C: b"\\f"}


if not cython.compiled:  # (compiled: a C function, accesslog.pxd)
    def _join(parts: list[bytes], n: int) -> bytes:
        """The first ``n`` parts, joined."""
        return b"".join(parts if n == len(parts) else parts[:n])


def _number(n: int) -> bytes:
    if 0 <= n < 1024:
        return _NUMBERS[n]
    return b"%d" % n


#: 1 for a byte that goes into a line as it is, in json and in text alike (printable
#: ASCII but the quote and the backslash): one load a byte where four compares were.
_CLEAN = bytes(0 if c < 0x20 or c == 0x22 or c == 0x5C or c >= 0x7F else 1
               for c in range(256))


def json_clean(v: bytes) -> bool:
    """True when ``v`` goes into a JSON string as it is (the fast path: most values)."""
    t = _CLEAN  # (compiled: an unsigned char pointer into the table, accesslog.pxd)
    # A loop, not all(): compiled, c is a C unsigned char.
    for c in v:  # noqa: SIM110
        if not t[c]:
            return False
    return True


def json_escape(v: bytes) -> bytes:
    """``v`` as the inside of a JSON string (bytes as Latin-1 code points)."""
    if json_clean(v):
        return v
    out = bytearray()
    for c in v:
        if c < 0x20 or c == 0x22 or c == 0x5C or c >= 0x7F:
            short = _JSON_SHORT.get(c)
            if short is not None:
                out += short
            else:
                out += b"\\u00"
                out += _HEX[c]
        else:
            out.append(c)
    return bytes(out)


def text_clean(v: bytes) -> bool:
    """True when ``v`` goes into a text line as it is (the same bytes as for json)."""
    t = _CLEAN
    for c in v:  # noqa: SIM110
        if not t[c]:
            return False
    return True


def text_escape(v: bytes) -> bytes:
    """``v`` for a text line, as nginx escapes: ``\\"``, ``\\\\``, ``\\xHH``."""
    if text_clean(v):
        return v
    out = bytearray()
    for c in v:
        if c == 0x22 or c == 0x5C:
            out.append(0x5C)
            out.append(c)
        elif c < 0x20 or c >= 0x7F:
            out += b"\\x"
            out += _HEX[c]
        else:
            out.append(c)
    return bytes(out)


class Formatter:
    """A format compiled for one worker: ``line(...)`` is one log line as bytes.

    ``ops`` holds one operator code per step (bytes: a C char each, compiled) and
    ``args`` its header name or literal text. For json, each field's prefix comes in
    four versions (``lits``: whether the field before was a string, whose closing quote
    it then starts with, and whether this one is, whose opening quote it ends with), so
    a field is two parts of the line whatever its value: about half as many parts to
    join as with the quotes apart."""

    __slots__ = ("json", "ops", "slots", "args", "lits", "ends", "_sec", "_stamp", "_names",
                 "_protocols")

    def __init__(self, fmt: LogFormat) -> None:
        self.json = fmt.kind == "json"
        codes: list[int] = []
        args: list[bytes] = []
        lits: list[bytes] = []
        if self.json:
            first = True
            for code, arg in fmt.ops:
                name, _, header = arg.partition("\0")
                prefix = ('{"' if first else ',"').encode() + name.encode() + b'":'
                lits.extend((prefix, prefix + b'"', b'"' + prefix, b'"' + prefix + b'"'))
                codes.append(code)
                args.append(header.encode())
                first = False
        else:
            for code, arg in fmt.ops:
                codes.append(code)
                args.append(arg.encode("utf-8"))
        self.ops = bytes(codes)
        #: Parts in a line: two per json field and the end; one per text operator.
        self.slots = 2 * len(codes) + 1 if self.json else len(codes)
        self.args = args
        self.lits = lits
        self.ends = (b"}\n", b'"}\n')
        self._sec = -1
        self._stamp = b""
        #: Names from the config (listeners, routes, endpoints) -> their bytes, escaped.
        self._names: dict[Any, bytes] = {}
        self._protocols: dict[bytes, bytes] = {}

    def stamp(self, start: float) -> bytes:
        """``start`` as 2026-12-06T23:15:20.123Z (the second's text made once)."""
        sec = int(start)
        if sec != self._sec:
            self._sec = sec
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
        ms = int((start - sec) * 1000)
        return self._stamp + _MILLIS[ms if ms < 1000 else 999]

    def _name(self, key: Any) -> bytes:
        b = self._names.get(key)
        if b is None:
            if len(self._names) > 4096:  # (names come from the config; bounded anyway)
                self._names.clear()
            if type(key) is tuple:
                raw = ("%s:%d" % key).encode("utf-8", "replace")
            else:
                raw = str(key).encode("utf-8", "replace")
            b = self._names[key] = json_escape(raw) if self.json else text_escape(raw)
        return b

    def line(self, start: float, head: RequestHead | None, status: int, received: int,
             sent: int, duration: float, upstream: Any, route: Any, request_id: bytes,
             flags: Any, listener: Any, details: Any, remote: bytes) -> bytes:
        """One line. ``head`` is None for what was refused before a request head was
        read; ``upstream`` an (address, port) or None; ``route``, ``details`` str or None;
        ``flags`` Envoy's response flags ("" for none); ``remote`` b"address:port"."""
        ops = self.ops
        args = self.args
        lits = self.lits
        is_json = self.json
        # The parts, by index in a list made at its size (no appends, no regrowth).
        parts: list[bytes] = [b""] * self.slots
        j = 0
        prev = 0  # (json: the field before was a string)
        i = -1
        for code in ops:  # (compiled: a C loop over the bytes)
            i += 1
            if code == LITERAL:  # (text only)
                parts[j] = args[i]
                j += 1
                continue
            # The value: raw bytes (escaped below), bytes ready to go (a name from the
            # config, escaped once and cached), a number, or missing (None).
            raw = None
            done = None
            number = False
            if code == START_TIME:
                done = self.stamp(start)
            elif code == METHOD:
                if head is not None and head.method:
                    raw = head.method
            elif code == PATH:
                if head is not None and head.target:
                    raw = head.target
            elif code == PROTOCOL:
                if head is not None and head.version:
                    done = self._protocols.get(head.version)
                    if done is None:
                        done = b"HTTP/" + text_escape(head.version)
                        if len(self._protocols) < 16:
                            self._protocols[head.version] = done
            elif code == RESPONSE_CODE:
                done = _number(status)
                number = True
            elif code == RESPONSE_FLAGS:
                done = self._name(flags) if flags else b"-"
            elif code == RESPONSE_CODE_DETAILS:
                if details is not None:
                    raw = str(details).encode("utf-8", "replace")
            elif code == LISTENER:
                done = self._name(listener) if listener else b""
            elif code == BYTES_RECEIVED:
                done = _number(received)
                number = True
            elif code == BYTES_SENT:
                done = _number(sent)
                number = True
            elif code == DURATION:
                done = _number(int(duration * 1000))
                number = True
            elif code == UPSTREAM_HOST:
                if upstream is not None:
                    done = self._name(upstream)
            elif code == REQUEST_ID:
                raw = request_id
            elif code == AUTHORITY:
                raw = head.authority if head is not None else b""
            elif code == ROUTE_NAME:
                if route is not None:
                    done = self._name(route)
            elif code == DOWNSTREAM_REMOTE_ADDRESS:
                if remote:
                    raw = remote
            elif code == DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT:
                if remote:
                    raw = remote[:remote.rfind(b":")].strip(b"[]")
            elif code in (HEADER, REDACTED):
                if head is not None:
                    name = args[i]
                    for h in head.headers:
                        if h[0] == name:
                            raw = h[1] if code == HEADER else b"[redacted]"
                            break
            if raw is not None:
                done = json_escape(raw) if is_json else text_escape(raw)
            if not is_json:
                parts[j] = done if done else b"-"
                j += 1
            elif done is None or number:
                parts[j] = lits[4 * i + 2 * prev]
                parts[j + 1] = b"null" if done is None else done
                j += 2
                prev = 0
            else:
                parts[j] = lits[4 * i + 2 * prev + 1]
                parts[j + 1] = done
                j += 2
                prev = 1
        if is_json:
            parts[j] = self.ends[prev]
            j += 1
        return _join(parts, j)


class LogSettings:
    """One listener's own settings (a Gateway's TrafficPolicy ``accessLog``): the
    formatter of its format, its filter and sampling, or ``off``. Lines still go to the
    worker's one writer and sink."""

    __slots__ = ("formatter", "min_status", "sample", "off")

    def __init__(self, formatter: Formatter, min_status: int, sample: float,
                 off: bool = False) -> None:
        self.formatter = formatter
        self.min_status = min_status
        self.sample = sample
        self.off = off


class AccessLog:
    """The worker's access log (see the module docstring): ``log`` per request,
    ``flush`` from the periodic timer, ``close`` at shutdown."""

    __slots__ = ("formatter", "min_status", "sample", "target", "_chunk", "_lines",
                 "_size", "_pending", "_pending_bytes", "_cond", "_thread", "_closed",
                 "_fd", "_pipe", "_failing", "dropped", "write_errors", "lines", "_full",
                 "_sink", "name", "counter")

    def __init__(self, target: str | None, fmt: LogFormat, min_status: int = 0,
                 sample: float = 1.0, name: str = "access log",
                 counter: str = "kgw_access_log_dropped_total", open_now: bool = True) -> None:
        """``name``, ``counter``: what its messages call it and where they say its lost
        lines are counted; ``open_now`` False: the target is opened by the first write
        (a writer that may never write says nothing about it until then)."""
        self.name = name
        self.counter = counter
        self.formatter = Formatter(fmt)
        self.min_status = min_status
        self.sample = sample
        #: None: stdout; "otlp[:URL]": a collector (kgw_l7.otlplogs); else a file path
        #: (opened by the writer, retried after errors).
        self.target = target
        #: The OTLP sink, when ``target`` names one (built here: a bad endpoint raises
        #: OtlpLogsError before the worker serves).
        self._sink: Any = None
        if target is not None and is_otlp(target):
            self._sink = OtlpLogSink(logs_url(target), fmt.kind == "json")
        self._chunk: list[bytes] = []
        self._lines = 0
        self._size = 0
        self._pending: collections.deque[tuple[list[bytes], int, int]] = collections.deque()
        self._pending_bytes = 0
        self._cond = threading.Condition()
        self._closed = False
        self._fd = -1
        self._pipe = False
        #: An error is being reported: the next successful write says it is over.
        self._failing = ""
        self._full = False
        #: reason ("buffer_full", "write_error") -> lines lost.
        self.dropped: dict[str, int] = {}
        self.write_errors = 0
        #: Lines written.
        self.lines = 0
        if open_now:
            try:  # now, so that a path that cannot be written is said at start-up
                self._open()
            except OSError as exc:
                self._failed(exc)
        self._thread = threading.Thread(target=self._run, name="kgw-access-log", daemon=True)
        self._thread.start()

    def log(self, start: float, head: RequestHead | None, status: int, received: int,
            sent: int, duration: float, upstream: Any, route: Any, request_id: bytes,
            flags: Any, listener: Any, details: Any, remote: bytes,
            settings: LogSettings | None = None) -> None:
        """One request (see ``Formatter.line``), unless filtered out or sampled away;
        ``settings``: the listener's own (None: the worker's)."""
        formatter = self.formatter
        min_status = self.min_status
        sample = self.sample
        if settings is not None:
            if settings.off:
                return
            formatter = settings.formatter
            min_status = settings.min_status
            sample = settings.sample
        if status < min_status:
            return
        if sample < 1.0 and random.random() >= sample:
            return
        line = formatter.line(start, head, status, received, sent, duration, upstream,
                              route, request_id, flags, listener, details, remote)
        self._chunk.append(line)
        self._lines += 1
        self._size += len(line)
        if self._size >= CHUNK:
            self.flush()

    def append(self, line: bytes) -> None:
        """A line formatted elsewhere (the L4 plane's flow events, ``kgw_l4.flowlog``),
        past any filter."""
        self._chunk.append(line)
        self._lines += 1
        self._size += len(line)
        if self._size >= CHUNK:
            self.flush()

    def flush(self) -> None:
        """Hand the lines so far to the writer (never waits for it)."""
        if not self._chunk:
            return
        chunk, lines, size = self._chunk, self._lines, self._size
        self._chunk, self._lines, self._size = [], 0, 0
        with self._cond:
            if self._pending_bytes + size > MAX_PENDING or self._closed:
                self.dropped["buffer_full"] = self.dropped.get("buffer_full", 0) + lines
                if not self._full:
                    self._full = True
                    log.warning("%s: the writer is behind by %d bytes (a slow disk "
                                "or a blocked pipe); lines are dropped and counted in "
                                "%s until it catches up",
                                self.name, self._pending_bytes, self.counter)
                return
            self._pending.append((chunk, lines, size))
            self._pending_bytes += size
            self._cond.notify()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is left (waiting at most ``timeout``) and stop the writer."""
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: %d bytes not written within %.0f s at shutdown",
                        self.name, self._pending_bytes, timeout)

    def unwritten(self) -> int:
        """Bytes handed to the writer and not written (nor failed) yet."""
        return self._pending_bytes

    def counters(self) -> dict[str, Any]:
        """For the worker's metrics snapshot."""
        return {"access_log_dropped": dict(self.dropped),
                "access_log_write_errors": self.write_errors}

    # -- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait(1.0)
                if not self._pending:
                    break  # closed, all written
                chunk, lines, size = self._pending.popleft()
            try:
                self._write(chunk)
                self.lines += lines
                if self._failing:
                    log.warning("%s: writing again (after: %s)", self.name, self._failing)
                    self._failing = ""
            except OSError as exc:
                self.write_errors += 1
                with self._cond:
                    self.dropped["write_error"] = self.dropped.get("write_error", 0) + lines
                self._failed(exc)
                if self.target is not None and self._fd >= 0:
                    self._reopen_later()
            with self._cond:
                self._pending_bytes -= size
                if self._full and self._pending_bytes < MAX_PENDING // 2:
                    self._full = False
        if self._sink is not None:
            self._sink.close()
        elif self.target is not None and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _failed(self, exc: OSError) -> None:
        """Said once, until a write succeeds again."""
        if not self._failing:
            self._failing = str(exc)
            log.error("%s: cannot write to %s: %s; lines are dropped and counted "
                      "(%s) until writes succeed",
                      self.name, self.target or "stdout", exc, self.counter)

    def _reopen_later(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._fd = -1

    def _open(self) -> int:
        if self._sink is not None:
            return -1
        if self._fd < 0:
            if self.target is None:
                try:
                    sys.stdout.flush()  # anything print()ed first
                except (OSError, ValueError):
                    pass
                self._fd = sys.stdout.fileno()
            else:
                self._fd = os.open(self.target,
                                   os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            mode = os.fstat(self._fd).st_mode
            self._pipe = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        return self._fd

    def _write(self, chunk: list[bytes]) -> None:
        """The lines: to a file joined in one write (O_APPEND keeps it whole among
        workers), to a pipe with writev, at most PIPE_WRITE bytes of whole lines a call;
        to a collector, one export."""
        if self._sink is not None:
            self._sink.write(chunk)
            return
        fd = self._open()
        if not self._pipe:  # (a file: one buffer, one write; writev exports one per line)
            _write_all(fd, _join(chunk, len(chunk)))
            return
        part: list[bytes] = []
        size = 0
        limit = PIPE_WRITE
        for line in chunk:
            if part and (size + len(line) > limit or len(part) == IOV_MAX):
                _writev_all(fd, part, size)
                part, size = [], 0
            part.append(line)
            size += len(line)
        if part:
            _writev_all(fd, part, size)


def _writev_all(fd: int, lines: list[bytes], size: int) -> None:
    n = os.writev(fd, lines)
    if n < size:  # (a partial write: the rest, as one buffer)
        _write_all(fd, b"".join(lines)[n:])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
