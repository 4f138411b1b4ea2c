"""Tracing: W3C trace context to backends, and OpenTelemetry spans exported over OTLP
(HTTP/protobuf or gRPC).

Every request gets a trace context when tracing is on: the client's ``traceparent`` when
it is valid (its sampled flag is followed: parent-based sampling), else a new trace
(a malformed ``traceparent`` is ignored, and its ``tracestate`` with it, as W3C Trace
Context says). Backends receive ``traceparent`` naming the try's client span as parent,
sampled or not, so the traces of services behind kgw stay whole.

A sampled request becomes a server span (OTel HTTP semantic conventions) with a client
span per try against a backend endpoint; retries are events of the server span. The
request path only records what the exchange already holds into a ``Trace`` (a few
fields, no SDK object): building the SDK's ``ReadableSpan`` objects costs tens of
microseconds each, so it is done in the export thread, which hands them to the SDK's
OTLP exporter (HTTP/protobuf or gRPC) in batches. The queue between the two is bounded; a span
that finds it full is dropped and counted (``kgw_tracing_spans_dropped_total``), and so
are the spans of a batch the collector did not take: a collector that is down, hangs or
answers 500 costs the requests nothing, and is said once in the log (and once when it
recovers), never per request.

Configuration is the standard ``OTEL_*`` environment (the endpoint, protocol, sampler,
service name, resource attributes, exporter timeout and headers), with ``--tracing-endpoint``
and ``--tracing-sample`` taking precedence. No endpoint: tracing is off, nothing of the
SDK is imported and the exchange's hooks are a None test.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

from kgw_l7.streams import OutRequest, out_request
from kgw_l7.tracing_config import GRPC, HTTP_PROTOBUF, resolve

try:
    import cython
except ImportError:
    from kgw_l7 import _cython as cython

log = logging.getLogger("kgw.l7.tracing")

#: Spans kept waiting for the export thread (OTEL_BSP_MAX_QUEUE_SIZE's default).
MAX_QUEUE = 2048
#: Spans per export request (OTEL_BSP_MAX_EXPORT_BATCH_SIZE's default).
BATCH = 512
#: Seconds between exports (OTEL_BSP_SCHEDULE_DELAY's default, 5 s, is long for a proxy
#: whose operators look at a request they just made).
SCHEDULE_DELAY = 1.0

_HEX = frozenset(b"0123456789abcdef")
#: Methods the HTTP semantic conventions name; others are reported as "_OTHER".
_KNOWN_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT",
                            b"OPTIONS", b"TRACE", b"PATCH"))


def parse_traceparent(value: bytes) -> tuple[bytes, bytes, bool] | None:
    """(trace id, parent span id, sampled) of a ``traceparent`` value, the ids in lower case
    hex as they appear in it (32 and 16 characters), or None when it is
    malformed (W3C Trace Context §3.2: version 00 is exactly 55 characters; a later
    version may append fields after a dash; ff, all-zero ids and upper case are
    invalid)."""
    v = value.strip(b" \t")
    if len(v) < 55 or v[2:3] != b"-" or v[35:36] != b"-" or v[52:53] != b"-":
        return None
    version = v[:2]
    if version == b"00":
        if len(v) != 55:
            return None
    elif version == b"ff" or (len(v) > 55 and v[55:56] != b"-"):
        return None
    if not (_HEX.issuperset(version) and _HEX.issuperset(v[3:35])
            and _HEX.issuperset(v[36:52]) and _HEX.issuperset(v[53:55])):
        return None
    trace_id = v[3:35]
    span_id = v[36:52]
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, bool(int(v[53:55], 16) & 1)


def _span_id() -> bytes:
    """A random non-zero span id in hex (an all-zero id is invalid)."""
    v = _random64()
    while v == 0:
        v = _random64()
    return _hex16(v)


if not cython.compiled:  # (compiled: C functions filling the bytes, tracing.pxd)
    def _hex16(v: int) -> bytes:
        """A 64-bit id in lower case hex (16 characters)."""
        return b"%016x" % v

    def _traceparent(hi: int, lo: int, span: int, sampled: bool) -> bytes:
        """The ``traceparent`` value of a trace id (``hi``, ``lo``: its two 64-bit
        halves) and a parent span id, as numbers."""
        return b"00-%016x%016x-%016x-%s" % (hi, lo, span, b"01" if sampled else b"00")


_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_state = 0


def _reseed() -> None:
    """The id generator's state from the system's random source: at import, and in a
    forked child (workers must not share a sequence)."""
    global _state
    _state = int.from_bytes(os.urandom(8), "little")


def _random64() -> int:
    """The next id from the worker's generator (SplitMix64: every 64-bit value once per
    2**64 calls; seeded from os.urandom). Compiled, C integer arithmetic: three of these
    cost less than one call of ``random.getrandbits``. Ids need to be unique and
    unguessable by chance, not secret (the W3C trace context's ids are sent in the clear);
    Python's Mersenne Twister, used before, was no less predictable."""
    global _state
    _state = (_state + _GOLDEN) & _M64
    z = _state
    z = ((z ^ (z >> 30)) * _MIX1) & _M64
    z = ((z ^ (z >> 27)) * _MIX2) & _M64
    return z ^ (z >> 31)


_reseed()
os.register_at_fork(after_in_child=_reseed)


def valid_ids(hi: int, lo: int, span: int) -> bool:
    """Not all zeros (W3C Trace Context: an all-zero trace id or span id is invalid)."""
    return (hi != 0 or lo != 0) and span != 0


def _new_trace(tracer: Tracer, had: bool) -> Trace:
    """A trace kgw starts: three random 64-bit numbers (no all-zero id), the sampling
    decision a compare of the trace id's low half with the tracer's bound, and the
    ``traceparent`` line formatted once, the ids sliced from it. (Compiled, the numbers
    are C integers and the line is written by a C function: a per-request cost that
    every request pays, sampled or not.)"""
    hi = _random64()
    lo = _random64()
    span = _random64()
    while not valid_ids(hi, lo, span):
        hi = _random64()
        lo = _random64()
        span = _random64()
    sampled = tracer._always
    if sampled is None:
        bound = tracer._bound_int
        sampled = lo < bound
    tp = _traceparent(hi, lo, span, sampled)
    return _make(tp[3:35], b"", sampled, None, had, tp[36:52], tracer, tp)


def _make(trace_id: bytes, parent_id: bytes, sampled: bool, tracestate: bytes | None,
          had: bool, try_span: bytes, tracer: Any, tp: bytes) -> Trace:
    """``Trace(...)`` without the Python-level constructor call, ``tp`` its line made
    already (what ``Trace.__init__`` sets, field for field)."""
    tr = Trace.__new__(Trace)
    tr.trace_id = trace_id
    tr.parent_id = parent_id
    tr.span_id = _span_id() if sampled else b""
    tr.sampled = sampled
    tr.tracestate = tracestate
    tr.had_context = had
    tr.start = time.time_ns() if sampled else 0
    tr.tries = [] if sampled else None
    tr.retries = None
    tr.try_span = try_span
    tr.line = tp
    tr.ntries = 0
    tr.tracer = tracer
    return tr


def line(trace_id: bytes, span_id: bytes, sampled: bool) -> bytes:
    """The ``traceparent`` value naming ``span_id`` as the parent."""
    return b"".join((b"00-", trace_id, b"-", span_id, b"-01" if sampled else b"-00"))


_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
#: Request fields that carry trace context.
_CONTEXT = frozenset((b"traceparent", b"tracestate"))


class Trace:
    """One request's trace context and, when sampled, what its spans will say: the ids
    as lower case hex (what ``traceparent`` carries: the request path never converts
    them; the export thread does), times in ns since the epoch, the tries as
    ``[span_id, start, end, host, port, status, error, resend]`` lists, retries as
    ``(time, attempt, reason)``."""

    __slots__ = ("trace_id", "parent_id", "span_id", "sampled", "tracestate", "had_context",
                 "start", "tries", "retries", "try_span", "line", "ntries", "tracer")

    def __init__(self, trace_id: bytes, parent_id: bytes, sampled: bool,
                 tracestate: bytes | None, had_context: bool, try_span: bytes,
                 tracer: Any) -> None:
        self.trace_id = trace_id
        #: The client's span (b"": kgw started the trace).
        self.parent_id = parent_id
        #: The server span's id (an unsampled request has no span).
        self.span_id = _span_id() if sampled else b""
        self.sampled = sampled
        self.tracestate = tracestate
        #: The client sent traceparent or tracestate (its head must then be rebuilt).
        self.had_context = had_context
        self.start = time.time_ns() if sampled else 0
        self.tries: list[list[Any]] | None = [] if sampled else None
        self.retries: list[tuple[int, int, str]] | None = None
        #: The span id backends are told is their parent: the next (or current) try's.
        self.try_span = try_span
        self.line = b"".join((b"00-", trace_id, b"-", try_span,
                              b"-01" if sampled else b"-00"))
        self.ntries = 0
        #: The Tracer it began with (the listener's: a Gateway policy's or the default).
        self.tracer = tracer

    def traceparent(self) -> bytes:
        return line(self.trace_id, self.try_span, self.sampled)

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [(b"traceparent", self.line)]
        if self.tracestate:
            out.append((b"tracestate", self.tracestate))
        return out


class SpanExport:
    """The export side of tracing for one collector endpoint: the bounded queue of finished
    requests, the thread that turns them into SDK spans and the SDK's OTLP exporter that
    sends them in batches (``protocol``: "http/protobuf" or "grpc"). Every tracer exporting
    to the same endpoint with the same protocol (the command line's and each Gateway
    policy's naming it) shares one."""

    def __init__(self, endpoint: str, timeout: float, max_queue: int = MAX_QUEUE,
                 batch: int = BATCH, delay: float = SCHEDULE_DELAY,
                 protocol: str = HTTP_PROTOBUF) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.protocol = protocol
        self.max_queue = max_queue
        self.batch = batch
        self.delay = delay
        self.queue: deque[tuple[Any, ...]] = deque()
        #: Spans queued and taken by the export thread, ever: each written by one thread
        #: only (their difference bounds the queue without a lock).
        self.spans_in = 0
        self.spans_out = 0
        self._wake = threading.Event()
        self._stop = False
        self.dropped = {"queue_full": 0, "export_failed": 0}
        self.exported = 0
        self._failing = False
        self._thread: threading.Thread | None = None
        self._exporter: Any = None

    def put(self, n: int, item: tuple[Any, ...]) -> None:
        """Queue a finished request's ``n`` spans (dropped and counted when full)."""
        if self.spans_in - self.spans_out + n > self.max_queue:
            self.dropped["queue_full"] += n
            return
        self.spans_in += n
        q = self.queue
        q.append(item)
        if len(q) == self.batch:  # (once per batch: Event.set takes a lock)
            self._wake.set()

    def counters(self) -> dict[str, Any]:
        return {"tracing_spans_dropped": dict(self.dropped),
                "tracing_spans_exported": self.exported}

    def start(self) -> None:
        """Import the SDK and start the export thread (once)."""
        if self._thread is not None:
            return
        self._exporter = _exporter(self.protocol, self.endpoint, self.timeout)
        self._thread = threading.Thread(target=self._run, name="kgw-tracing", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        """Export what is queued (within ``timeout``) and stop the thread."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._exporter is not None:
            try:
                self._exporter.shutdown()
            except Exception:
                pass

    def _run(self) -> None:
        while True:
            self._wake.wait(self.delay)
            self._wake.clear()
            stop = self._stop
            q = self.queue
            while q:
                items: list[tuple[Any, ...]] = []
                while q and len(items) < self.batch:
                    items.append(q.popleft())
                self._export(items)
                if self._stop and not stop:
                    break
            if stop:
                return

    def _export(self, items: list[tuple[Any, ...]]) -> None:
        self.spans_out += sum(1 + len(item[1].tries) for item in items)
        try:
            spans = [s for item in items for s in item[0]._spans(item[1:])]
        except Exception:
            log.exception("tracing: could not build spans")
            return
        try:
            from opentelemetry.sdk.trace.export import SpanExportResult
            ok = self._exporter.export(spans) == SpanExportResult.SUCCESS
            error = "the collector refused or did not answer"
        except Exception as exc:
            ok = False
            error = str(exc)
        if ok:
            self.exported += len(spans)
            if self._failing:
                self._failing = False
                log.warning("tracing: exporting to %s works again", self.endpoint)
            return
        self.dropped["export_failed"] += len(spans)
        if not self._failing:
            self._failing = True
            log.warning("tracing: export to %s failed (%s); spans are dropped and counted "
                        "in kgw_tracing_spans_dropped_total until it works again",
                        self.endpoint, error)


def _exporter(protocol: str, endpoint: str, timeout: float) -> Any:
    """The SDK's OTLP span exporter for ``protocol``. Over gRPC an http:// address is a
    plaintext channel, https:// TLS with the system's CA certificates (the exporter's own
    reading of the scheme); its retries of an unavailable collector stay within
    ``timeout``, in the export thread."""
    # The exporters log every failed batch; kgw says it once (``SpanExport._export``).
    if protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        for name in ("opentelemetry.exporter.otlp.proto.grpc.exporter",
                     "opentelemetry.exporter.otlp.proto.grpc"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"),
                            timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter") \
        .setLevel(logging.CRITICAL)
    logging.getLogger("opentelemetry.exporter.otlp.proto.http").setLevel(logging.CRITICAL)
    return OTLPSpanExporter(endpoint=endpoint, timeout=timeout)


class Tracer:
    """Trace contexts for one set of settings (the command line's, or a Gateway policy's):
    the sampler, the resource its spans are exported under, the span attributes taken from
    requests, and the ``SpanExport`` its finished requests are queued to."""

    def __init__(self, endpoint: str, sampler: str, ratio: float, timeout: float,
                 max_queue: int = MAX_QUEUE, batch: int = BATCH,
                 delay: float = SCHEDULE_DELAY, *, service_name: str | None = None,
                 resource: tuple[tuple[str, str], ...] = (), tags: tuple[Any, ...] = (),
                 export: SpanExport | None = None, protocol: str = HTTP_PROTOBUF) -> None:
        self.endpoint = endpoint
        self.sampler = sampler
        self.ratio = ratio
        #: A trace is sampled when the low 64 bits of its id are below ratio * 2**64:
        #: compared as 16 lower case hex digits (the order of the numbers).
        self._bound_int = min(int(ratio * (1 << 64)), (1 << 64) - 1)
        self._bound = b"%016x" % self._bound_int
        #: A valid incoming context's sampled flag decides (parentbased_*).
        self._follow = sampler.startswith("parentbased_")
        #: The decision for new traces when it does not depend on the trace id.
        self._always = True if sampler.endswith("always_on") else \
            False if sampler.endswith("always_off") else None
        if self._always is None and (ratio >= 1.0 or ratio <= 0.0):
            self._always = ratio >= 1.0
        self.export = export if export is not None else SpanExport(
            endpoint, timeout, max_queue, batch, delay, protocol)
        self._queue = self.export.queue
        self.service_name = service_name
        self.resource_attrs = resource
        #: kgw_l7.config.SpanTag records: attributes of the server span.
        self.tags = tags
        self._resource: Any = None

    # -- the request path ---------------------------------------------------------------
    def begin(self, headers: tuple[tuple[bytes, bytes], ...]) -> Trace:
        """The request's trace context, from its traceparent/tracestate when valid."""
        tp = None
        ts = None
        had = False
        context = _CONTEXT
        for h in headers:
            if h[0] in context:  # (one set lookup per field on the common path)
                had = True
                if h[0] == b"traceparent":
                    # (two: bad; False marks it, the "if tp" below takes only a tuple)
                    tp = False if tp is not None else parse_traceparent(  # type: ignore[assignment]
                        h[1])
                else:
                    ts = h[1] if ts is None else ts + b"," + h[1]
        if tp:
            trace_id, parent, flag = tp
            return Trace(trace_id, parent, flag if self._follow else self._new(trace_id), ts,
                         had, _span_id(), self)
        return _new_trace(self, had)

    def _new(self, trace_id: bytes) -> bool:
        """Whether a trace kgw starts (or, not parent-based, any trace) is sampled."""
        always = self._always
        if always is not None:
            return always
        return trace_id[16:] < self._bound

    def _decide(self, trace_id: bytes, parent_sampled: bool | None) -> bool:
        if parent_sampled is not None and self._follow:
            return parent_sampled
        return self._new(trace_id)

    def begin_try(self, tr: Trace, host: str, port: int) -> bytes | None:
        """A try against an endpoint starts. Returns the traceparent value the request
        was prepared with when this try needs another (a second try: its own span)."""
        changed = None
        if tr.ntries:
            changed = tr.line
            tr.try_span = _span_id()
            tr.line = tr.traceparent()
        tries = tr.tries
        if tries is not None:
            if tries and tries[-1][2] == 0:
                self.end_try(tr, 0, "superseded")
            tries.append([tr.try_span, time.time_ns(), 0, host, port, 0, None, tr.ntries])
        tr.ntries += 1
        return changed

    def end_try(self, tr: Trace, status: int, error: str | None, now: int = 0) -> None:
        tries = tr.tries
        if tries and tries[-1][2] == 0:
            t = tries[-1]
            t[2] = now or time.time_ns()
            t[5] = status
            t[6] = error

    def retry(self, tr: Trace, attempt: int, reason: str) -> None:
        if tr.sampled:
            if tr.retries is None:
                tr.retries = []
            tr.retries.append((time.time_ns(), attempt, reason))

    def end(self, tr: Trace, method: bytes, target: bytes, route: str | None, status: int,
            client: bytes, host: bytes, scheme: bytes, version: bytes,
            error: str | None, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """The request is over: its spans are queued for the export thread (sampled)."""
        if not tr.sampled:
            return
        end = time.time_ns()
        if tr.tries and tr.tries[-1][2] == 0:
            self.end_try(tr, status, error if status >= 500 or not status else None, end)
        tags = self._tag_values(headers) if self.tags else None
        self.export.put(1 + len(tr.tries),  # type: ignore[arg-type]
                        (self, tr, end, method, target, route, status, client, host, scheme,
                         version, error, tags))

    def _tag_values(self, headers: tuple[tuple[bytes, bytes], ...]) -> dict[str, str]:
        """The custom span attributes of a sampled request (first field of a name)."""
        out: dict[str, str] = {}
        for tag in self.tags:
            if tag.header is None:
                if tag.value is not None:
                    out[tag.name] = tag.value
                continue
            name = tag.header.encode("latin-1")
            for h in headers:
                if h[0] == name:
                    out[tag.name] = h[1].decode("latin-1")
                    break
            else:
                if tag.value is not None:
                    out[tag.name] = tag.value
        return out

    # -- the worker's side --------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        return self.export.counters()

    def start(self) -> None:
        """Import the SDK, build the resource and start the export thread (once)."""
        from opentelemetry.sdk.resources import Resource

        attrs: dict[str, Any] = dict(self.resource_attrs)
        if self.service_name:
            attrs["service.name"] = self.service_name
        elif not os.environ.get("OTEL_SERVICE_NAME"):
            attrs.setdefault("service.name", "kgw")
        self._resource = Resource.create(attrs)
        self.export.start()

    def close(self, timeout: float = 1.0) -> None:
        """Export what is queued (within ``timeout``) and stop the thread."""
        self.export.close(timeout)

    def _spans(self, item: tuple[Any, ...]) -> list[Any]:
        """The SDK spans of one finished request (the export thread)."""
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import (
            SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState,
        )

        (tr, end, method, target, route, status, client, host, scheme, version,
         error, tags) = item
        scope = InstrumentationScope("kgw")
        flags = TraceFlags(TraceFlags.SAMPLED)
        state = TraceState()
        if tr.tracestate:
            try:
                state = TraceState.from_header([tr.tracestate.decode("latin-1")])
            except Exception:
                state = TraceState()
        trace_id = int(tr.trace_id, 16)
        ctx = SpanContext(trace_id, int(tr.span_id, 16), False, flags, state)
        parent = (SpanContext(trace_id, int(tr.parent_id, 16), True, flags, state)
                  if tr.parent_id else None)
        m = method.decode("latin-1")
        known = method in _KNOWN_METHODS
        path = target.split(b"?", 1)[0].decode("latin-1")
        host_s = host.decode("latin-1")
        port = None
        if host_s.startswith("["):
            h, _, rest = host_s[1:].partition("]")
            host_s, port = h, rest[1:] or None
        elif host_s.count(":") == 1:
            host_s, port = host_s.split(":")
        attrs: dict[str, Any] = {
            "http.request.method": m if known else "_OTHER",
            "url.path": path,
            "url.scheme": scheme.decode("latin-1"),
            "client.address": client.decode("latin-1"),
            "network.protocol.version": version.decode("latin-1"),
        }
        if not known:
            attrs["http.request.method_original"] = m
        if host_s:
            attrs["server.address"] = host_s
        if port and port.isdigit():
            attrs["server.port"] = int(port)
        if route:
            attrs["http.route"] = route
        if status:
            attrs["http.response.status_code"] = status
        err_type = None
        if status >= 500:
            err_type = str(status)
        elif not status:
            err_type = "incomplete"
        if err_type:
            attrs["error.type"] = err_type
        for k, v in (tags or {}).items():  # (never in place of a convention's attribute)
            attrs.setdefault(k, v)
        events = [Event("retry", {"http.request.resend_count": attempt, "kgw.retry.reason":
                                  reason}, ts) for ts, attempt, reason in tr.retries or ()]
        name = f"{m if known else 'HTTP'} {route}" if route else (m if known else "HTTP")
        out = [ReadableSpan(
            name=name, context=ctx, parent=parent, resource=self._resource,
            attributes=attrs, events=events, kind=SpanKind.SERVER,
            status=Status(StatusCode.ERROR, error) if err_type else Status(StatusCode.UNSET),
            start_time=tr.start, end_time=end, instrumentation_scope=scope)]
        for span_id, start, stop, ep_host, ep_port, t_status, t_error, resend in tr.tries:
            a: dict[str, Any] = {"http.request.method": attrs["http.request.method"],
                                 "server.address": ep_host, "server.port": ep_port,
                                 "network.peer.address": ep_host, "url.path": path}
            if resend:
                a["http.request.resend_count"] = resend
            answered, t_type = _try_outcome(t_status, t_error)
            if answered:
                a["http.response.status_code"] = t_status
            if t_type:
                a["error.type"] = t_type
            out.append(ReadableSpan(
                name=attrs["http.request.method"] if known else "HTTP",
                context=SpanContext(trace_id, int(span_id, 16), False, flags, state),
                parent=ctx,
                resource=self._resource, attributes=a, kind=SpanKind.CLIENT,
                status=Status(StatusCode.ERROR, t_error) if t_type else Status(StatusCode.UNSET),
                start_time=start, end_time=stop or end, instrumentation_scope=scope))
        return out


def _try_outcome(status: int, error: str | None) -> tuple[bool, str | None]:
    """(the backend answered, error.type) of a try: its status when it answered (an
    error from 400 on), else a low-cardinality word for why not (the detail goes to the
    span status' description)."""
    if error is None or error.startswith("retriable status"):
        return bool(status), (str(status) if status >= 400 else None)
    e = error.lower()
    if "timeout" in e:
        return False, "timeout"
    if "connect" in e:
        return False, "connect_error"
    if "reset" in e:
        return False, "connection_reset"
    if e == "superseded":
        return False, "superseded"
    return False, "_OTHER"


def from_settings(endpoint: str | None, sample: float | None) -> Tracer | None:
    """The worker's tracer (kgw_l7.tracing_config.resolve); None: tracing is off."""
    settings = resolve(endpoint, sample)
    if settings is None:
        return None
    return Tracer(settings.url, settings.sampler, settings.ratio, settings.timeout,
                  protocol=settings.protocol)


def traced_headers(headers: list[tuple[bytes, bytes]], tr: Trace) -> list[tuple[bytes, bytes]]:
    """The upstream fields with the client's trace context replaced by the try's."""
    out = [h for h in headers if h[0] != b"traceparent" and h[0] != b"tracestate"]
    out.extend(tr.headers())
    return out


def retraced(out: OutRequest, old: bytes, new: bytes) -> OutRequest:
    """The request for another try: the same, with that try's traceparent value (a new
    ``OutRequest``: an HTTP/1.1 upstream keeps the head it encoded in ``raw``)."""
    if out.headers is None:
        return out_request(out.method, out.target, None,
                           out.raw.replace(old, new, 1), out.body)  # type: ignore[union-attr]
    headers = [(n, new) if n == b"traceparent" and v == old else (n, v) for n, v in out.headers]
    return out_request(out.method, out.target, headers, None, out.body)
