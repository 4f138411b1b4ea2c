"""One request and its response, whatever the protocol: routing, filters, tries against
backends, relay, timeouts, metrics and the access log.

An ``Exchange`` talks to its client through a ``DownstreamStream`` and to a backend
through an ``UpstreamStream`` (``kgw_l7.streams``; today HTTP/1.1 on both sides,
``kgw_l7.proxy`` and ``kgw_l7.upstream``), and imports no protocol module. It is created
for each request head by the client side, which feeds it the request body
(``on_request_body``/``on_request_end``) and tells it when the client is gone
(``on_client_lost``) or slow (``on_downstream_pause``); the backend side delivers
response events (``on_upstream_events``). Body bytes never go through a coroutine:
request body chunks go straight to the upstream stream and response body chunks straight
to the client's, with reading paused on one side while the other side's writes are.

Its state is two phases, one per direction, changed only by the tables below.

Error mapping (Gateway API conformance, Envoy behaviour): no route 404; a rule without
usable backends 500 (``Rule.direct_status``/``Backend.error_status``); a backend without
ready endpoints 503; a backend that cannot be connected to or answers garbage 502; a
connection reset before the response head 503 (as Envoy, and as the retry conformance
test expects); a timeout 504; a Host that belongs to another certificate than the
connection's SNI 421. Error bodies are generic: what failed in detail (the backend's
address, the system error) goes to the log and the access log's response_code_details,
never to the client.

gRPC calls (HTTP/2, ``content-type: application/grpc`` or ``application/grpc+...``) are
told kgw's errors the way gRPC clients read them, as Envoy maps them: HTTP 200 with
``grpc-status`` and ``grpc-message`` in a trailers-only response (no route 12
UNIMPLEMENTED, no healthy backend or a failed connect 14 UNAVAILABLE, a timeout 4
DEADLINE_EXCEEDED; ``_GRPC_STATUS``). A call's ``grpc-timeout`` is its request timeout
(the shorter of it and the route's); one that passes after the response started ends the
call with grpc-status 4 in its trailers (``deadline_trailers``). Its deadline is what
bounds a call: the worker's default response timeout and the client stream's idle
timeout (``sweep``) do not apply to it, so a long-lived stream -- a watch that is silent
for minutes, a bidi call whose client sends nothing -- lasts until its deadline, the
route's timeouts, or either end ends it.

Load balancing: the backend is chosen once per request (``CompiledRule.pick_backend``),
the endpoint once per try (``CompiledBackend.pick``, with the request's consistent-hash
key when the backend hashes); a retry prefers an endpoint the request has not tried yet.
A backend whose balancer counts requests in flight or failures (least request, outlier
detection), or that has a circuit breaker, does not take the fast path: each try reports
its outcome (``one_try``). Over a circuit breaker's limit, a request is answered 503 with
flag UO at once and not retried; a retry beyond the retry limit is not made. Retries
wait ``Retry.backoff`` doubled per retry (at most 10 times it), plus up to a quarter of
it at random, so that clients failed together do not retry together.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
import uuid
from typing import Any

from kgw_l7.balance import LOCAL_FAILURE, OK, SERVER_ERROR
from kgw_l7.breaker import CONNECTIONS, NAMES, PENDING, REQUESTS, RETRIES, Breaker
from kgw_l7 import authcall
from kgw_l7.auth import Denial, claim_key, new_request
from kgw_l7.context import ListenerState, WorkerContext
from kgw_l7.problems import PROBLEMS
from kgw_l7.proxyproto import encode_v2
from kgw_l7.ratelimit import LocalLimit
from kgw_l7.session import SessionPolicy
from kgw_l7.h1 import usual_spelling
from kgw_l7.events import (
    HOP_BY_HOP, Body, EndOfMessage, Event, Rejected, RequestHead, ResponseHead, Upgraded,
    parse_connection_tokens,
)
from kgw_l7.extauth import Request as ExtAuthRequest
from kgw_l7.router import (CompiledBackend, CompiledPolicy, CompiledRoute, CompiledRule,
                           split_target)
from kgw_l7.streams import (
    DownstreamStream, OutRequest, UpstreamError, UpstreamOwner, UpstreamStream, out_request,
)
from kgw_l7.tracing import retraced, traced_headers

try:
    import cython
except ImportError:
    from kgw_l7 import _cython as cython

if not cython.compiled:  # (compiled: C constants, cimported in exchange.pxd)
    from kgw_l7.streams import PAUSE_BODY, PAUSE_UPSTREAM

# ---------------------------------------------------------------------------------------
# The phases
#
# Rule 1: an exchange's state is two phases, one per direction, and each changes only
# through its table below (``Exchange._request_to``, ``Exchange._response_to``). An event
# not listed in the row of the current phase is a bug: it raises PhaseError. An event
# listed as leading back to the same phase happens there and changes nothing.
#
# Rule 2: the tables know nothing of HTTP/1.1 or HTTP/2. What a phase means on the wire
# is the streams' business (kgw_l7.streams).
#
# The request side: what the client has sent, and where its body goes.
#
#   BUFFERING   body bytes are kept (not routed yet, between tries, connecting)
#   STREAMING   an upstream has the head: body bytes go to it as they come
#   DISCARDING  the response ended first: body bytes are read and dropped until the end
#   RECEIVED    the whole request has arrived (and went to the upstream that has it)
#   LOST        the client went away (or broke framing) before the exchange ended
#
# The response side: what the client has been sent.
#
#   QUEUED      not started: behind a pipelined request, or being routed
#   AWAITING    forwarded: a try connects, sends, or waits for the backend's head
#   SENDING     committed: the backend's head went to the client, its body follows
#               (no retry from here)
#   RELAYED     the backend's whole response went out: its stream may be reused
#   ANSWERED    kgw's own whole response went out (a local answer, or an error instead
#               of the backend's): any upstream stream still attached is ended
#   DONE        finished: counted, logged, the upstream stream released or ended
#   RELEASED    handed back to the client side (``DownstreamStream.exchange_done``),
#               once the request side is RECEIVED, DISCARDING's end came, or it is LOST
#
# Phases are numbered in the order written: the response side only moves forward
# (``resp >= SENDING``: committed), and on the request side, ``req < RECEIVED``: the
# request is still being read.
# ---------------------------------------------------------------------------------------

if not cython.compiled:  # (compiled: C enums from exchange.pxd, the same names and values)
    RequestPhase = enum.IntEnum("RequestPhase", [
        ("BUFFERING", 0), ("STREAMING", 1), ("DISCARDING", 2), ("RECEIVED", 3), ("LOST", 4)])
    BUFFERING, STREAMING, DISCARDING, RECEIVED, LOST = RequestPhase
    #: What happens to the request side.
    RequestEvent = enum.IntEnum("RequestEvent", [
        ("SEND", 0),     # an upstream takes the request (head and body so far sent to it)
        ("DETACH", 1),   # the upstream is let go (its try is over)
        ("END", 2),      # the request's end arrived
        ("DISCARD", 3),  # the response is finished: the rest of the body is not wanted
        ("LOSE", 4)])    # the client went away
    SEND, DETACH, END, DISCARD, LOSE = RequestEvent

    ResponsePhase = enum.IntEnum("ResponsePhase", [
        ("QUEUED", 0), ("AWAITING", 1), ("SENDING", 2), ("RELAYED", 3), ("ANSWERED", 4),
        ("DONE", 5), ("RELEASED", 6)])
    QUEUED, AWAITING, SENDING, RELAYED, ANSWERED, DONE, RELEASED = ResponsePhase
    #: What happens to the response side.
    ResponseEvent = enum.IntEnum("ResponseEvent", [
        ("FORWARD", 0),   # routed to a backend: tries start
        ("RESPOND", 1),   # a whole response of kgw's own is sent
        ("COMMIT", 2),    # the backend's response head is sent
        ("COMPLETE", 3),  # the backend's response end is sent
        ("FINISH", 4),    # counted and logged; the upstream stream released or ended
        ("RELEASE", 5)])  # handed back to the client side
    FORWARD, RESPOND, COMMIT, COMPLETE, FINISH, RELEASE = ResponseEvent

REQUEST_TRANSITIONS: dict[int, dict[int, int]] = {
    BUFFERING: {SEND: STREAMING, DETACH: BUFFERING, END: RECEIVED, DISCARD: DISCARDING,
                LOSE: LOST},
    STREAMING: {DETACH: BUFFERING, END: RECEIVED, LOSE: LOST},
    DISCARDING: {END: RECEIVED, LOSE: LOST},
    RECEIVED: {SEND: RECEIVED, DETACH: RECEIVED, DISCARD: RECEIVED, LOSE: LOST},
    LOST: {DETACH: LOST, END: LOST, DISCARD: LOST, LOSE: LOST},
}

RESPONSE_TRANSITIONS: dict[int, dict[int, int]] = {
    QUEUED: {FORWARD: AWAITING, RESPOND: ANSWERED},
    AWAITING: {RESPOND: ANSWERED, COMMIT: SENDING, FINISH: DONE},
    SENDING: {COMPLETE: RELAYED, FINISH: DONE},
    RELAYED: {FINISH: DONE},
    ANSWERED: {FINISH: DONE},
    DONE: {RELEASE: RELEASED},
    RELEASED: {},
}


class PhaseError(RuntimeError):
    """An event the phase tables do not allow in the current phase (a bug in kgw)."""


def _flatten(table: dict[int, dict[int, int]]) -> bytes:
    """The table as bytes indexed by phase * 8 + event (255: not allowed), which is what
    the transitions read (compiled, a byte read from a C array)."""
    flat = bytearray([255] * (8 * len(table)))
    for phase, row in table.items():
        for event, after in row.items():
            assert 0 <= event < 8 and after in table
            flat[phase * 8 + event] = after
    return bytes(flat)


_REQUEST_NEXT = _flatten(REQUEST_TRANSITIONS)
_RESPONSE_NEXT = _flatten(RESPONSE_TRANSITIONS)


def _phase_error(side: str, phases: Any, events: Any, phase: int, event: int) -> PhaseError:
    return PhaseError(f"{side} side: {events(event).name} is not allowed in phase "
                      f"{phases(phase).name}")

log = logging.getLogger("kgw.l7.exchange")

#: Request body bytes buffered before reading from the client pauses (aiohttp and
#: nginx's proxy buffers are in the same range).
BODY_HIGH_WATER = 256 * 1024
#: Body bytes kept to replay a request (retries, mirrors); larger bodies are streamed once.
RETAIN_LIMIT = 1024 * 1024

_EMPTY: tuple[Any, ...] = ()
#: Request headers the proxy never copies as they are.
_REQUEST_SPECIAL = HOP_BY_HOP | {b"expect", b"content-length", b"x-forwarded-for",
                                 b"x-forwarded-proto", b"x-request-id", b"http2-settings"}
#: Request headers that keep a client's header block from going upstream as received.
_REBUILD_HEAD = _REQUEST_SPECIAL - {b"content-length"}


#: kgw's error statuses as gRPC status codes for gRPC calls (Envoy's
#: Grpc::Utility::httpToGrpcStatus, with a timeout DEADLINE_EXCEEDED); others UNKNOWN (2).
#: (kgw's own 429 is a rate limit of its policy: RESOURCE_EXHAUSTED, as Envoy's local
#: rate limit answers gRPC; a backend's 429 is relayed as it is.)
_GRPC_STATUS = {400: 13, 401: 16, 403: 7, 404: 12, 429: 8, 502: 14, 503: 14, 504: 4}
#: grpc-timeout units in seconds (gRPC over HTTP/2: TimeoutValue TimeoutUnit).
_GRPC_UNITS = {72: 3600.0, 77: 60.0, 83: 1.0, 109: 1e-3, 117: 1e-6, 110: 1e-9}  # H M S m u n


def grpc_timeout(value: bytes) -> float | None:
    """Seconds of a ``grpc-timeout`` value (at most 8 digits and a unit), None if it is
    not one (ignored, as Envoy ignores it)."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _GRPC_UNITS.get(value[-1])
    return int(value[:-1]) * unit if unit is not None else None


def grpc_message(text: bytes) -> bytes:
    """``grpc-message``: percent-encoded outside printable ASCII (and '%' itself)."""
    return b"".join(bytes((c,)) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c
                    for c in text)


class _NoTimeout:
    """``async with`` that does nothing: cheaper than asyncio.timeout(None) on the hot
    path (no Timeout object, no loop bookkeeping)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> bool:
        return False


_NO_TIMEOUT = _NoTimeout()


class _RequestIds:
    """X-Request-Id values: a random UUID-shaped prefix per worker and a counter, unique
    without calling uuid4() (os.urandom) for every request.

    The counter's last two hex digits come from a table and the rest is formatted once
    per 256 ids: a %-format per request cost more than the rest of the id handling."""

    __slots__ = ("_fmt", "_n", "_high")

    def __init__(self) -> None:
        # The prefix is hex digits and dashes: safe inside a %-format.
        self._fmt = str(uuid.uuid4())[:24].encode() + b"%010x"
        self._n = 0
        self._high = self._fmt % 0

    def next(self) -> bytes:
        self._n = n = (self._n + 1) & 0xFFFFFFFFFFFF
        low = n & 0xFF
        if low == 0:
            self._high = self._fmt % (n >> 8)
        return self._high + _HEX_BYTE[low]


#: b"00" .. b"ff"
_HEX_BYTE = tuple(b"%02x" % i for i in range(256))
_REQUEST_IDS = _RequestIds()


class _Retry(Exception):
    """The try failed in a way another try may fix. ``body`` is what the client is told
    if no try succeeds, with the access log's ``flags``; the reason (str) is for the
    logs."""

    def __init__(self, status: int, reason: str, body: bytes | None = None,
                 flags: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.body = body if body is not None else reason.encode() + b"\n"
        self.flags = flags or ("UT" if status == 504 else "UF" if status == 503 else "UR")


class _Overflow(_Retry):
    """A circuit breaker's limit: answered at once, never retried."""


#: Client bodies of upstream failures, by UpstreamError.kind and status.
_CONNECT_ERROR = b"upstream connect error\n"
_CONNECT_TIMEOUT = b"upstream connect timeout\n"
_OVERFLOW = b"upstream overflow\n"
_BAD_RESPONSE = b"invalid upstream response\n"
_TIMEOUT = b"upstream request timeout\n"
#: How a gRPC call whose deadline passed mid-response ends (``deadline_trailers``).
_DEADLINE_TRAILERS = ((b"grpc-status", b"4"), (b"grpc-message", b"Deadline Exceeded"))


def retry_delay(base: float, attempt: int) -> float:
    """The wait before retry ``attempt`` (1, 2, ...): ``base`` doubled per retry, at most
    10 x base (Envoy's default max interval), plus up to 25% jitter."""
    return min(base * (1 << min(attempt - 1, 10)), 10 * base) * (1.0 + 0.25 * random.random())


def _upstream_error(exc: UpstreamError) -> _Retry:
    if exc.kind != "connect":
        return _Retry(exc.status, str(exc), _OVERFLOW, "UO")
    return _Retry(exc.status, str(exc), _CONNECT_TIMEOUT if exc.status == 504 else _CONNECT_ERROR)


class _Refuse(Exception):
    """A policy refuses the request after forwarding began (``Exchange.refusal``)."""

    def __init__(self, status: int, body: bytes, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.body = body
        self.detail = detail


class Exchange(UpstreamOwner):
    """One request and its response (the phases: see the tables above).

    Created by the client side when a request head is parsed (request body events may
    arrive at once: ``body_buf``, or straight to the upstream while STREAMING);
    ``start()`` routes it and answers locally (``respond``), forwards it on the *fast
    path* (a pooled upstream stream at hand, no timeout, no retry: written at once and
    relayed from the stream's callbacks, no task, no future), or forwards it in a task
    (``run`` -> ``forward`` -> ``tries``, with timeouts and retries). ``finish()`` counts
    and logs it and releases or ends its upstream stream; it is handed back to the client
    side once its request has been read too.
    """

    __slots__ = ("down", "head", "ctx", "start_time", "wall_start", "body_buf", "buf_size",
                 "retained", "received", "req", "resp", "trailers", "upstream", "out",
                 "backend", "head_fut", "done_fut", "early", "close_after", "status", "sent",
                 "rule", "backend_name", "upstream_host", "flags", "resp_extra", "resp_ops",
                 "task", "request_id", "body_waiters", "detail", "watch_up", "watch_reads",
                 "watch_since", "tunneled", "grpc", "grpc_deadline", "trace", "lb_key",
                 "body_limit", "refusal", "resp_trailers", "session", "pinned", "cookie_path",
                 "auth", "auth_wait", "auth_ops", "auth_body", "continued")
    req: int  # a RequestPhase (compiled, a C int: exchange.pxd)
    resp: int  # a ResponsePhase

    def __init__(self, ctx: WorkerContext, down: DownstreamStream, head: RequestHead) -> None:
        # (The fields are read back below rather than the arguments: compiled, the
        # fields are typed and the arguments are not.)
        self.down = down
        self.head = head
        self.ctx = ctx
        self.req = RECEIVED if self.head.body == "none" else BUFFERING
        self.resp = QUEUED
        self.start_time = 0.0
        self.wall_start = 0.0
        self.body_buf: list[bytes] = []
        self.buf_size = 0
        self.retained: list[bytes] | None = None
        self.received = 0
        self.trailers: tuple[tuple[bytes, bytes], ...] = ()
        self.upstream: UpstreamStream | None = None
        #: What goes upstream (prepare), and to which backend (chosen once per request).
        self.out: OutRequest | None = None
        self.backend: CompiledBackend | None = None
        #: In a task: the backend's response head, then the end of its response.
        self.head_fut: asyncio.Future[ResponseHead] | None = None
        self.done_fut: asyncio.Future[None] | None = None
        #: Events after the response head, until it is committed.
        self.early: list[Event] | None = None
        #: End the client stream after this exchange (HTTP/1.1: close the connection).
        self.close_after = not self.head.keep_alive
        self.status = 0
        self.sent = 0
        self.rule: CompiledRule | None = None
        self.backend_name = ""
        #: The endpoint of the last try; formatted only when an access log is written.
        self.upstream_host: tuple[str, int] | None = None
        self.flags = ""
        self.resp_extra: list[tuple[bytes, bytes]] | None = None
        self.resp_ops: tuple[Any, ...] = _EMPTY
        #: The task of a forwarded request off the fast path (None: the fast path).
        self.task: asyncio.Task[None] | None = None
        self.request_id = b""
        self.body_waiters: list[asyncio.Future[None]] | None = None
        #: Why the response is an error, when the client was told less (access log).
        self.detail: str | None = None
        #: The default response timeout's watch (``sweep``): the upstream stream, its
        #: ``reads`` when last seen moving, and since when.
        self.watch_up: UpstreamStream | None = None
        self.watch_reads = 0
        self.watch_since = 0.0
        #: A 101 made the connection a tunnel: logged when it closes (``tunnel_closed``).
        self.tunneled = False
        #: A gRPC call (``grpc_head``), and its grpc-timeout as a deadline (0: none).
        self.grpc = False
        self.grpc_deadline = 0.0
        #: The request's consistent-hash key for its backend (None: none, or not hashing).
        self.lb_key: bytes | None = None
        #: The committed response can still end with trailers (its body is not framed by
        #: a Content-Length): a gRPC deadline then ends it with grpc-status 4.
        self.resp_trailers = False
        #: The request's trace context (kgw_l7.tracing.Trace; None: tracing is off).
        self.trace: Any = None
        #: Session persistence (a rule with it): the live session the request brought
        #: (kgw_l7.session.Session), the endpoint it pins the first try to, and the
        #: session cookie's Path (the matched route's).
        self.session: Any = None
        self.pinned: tuple[str, int] | None = None
        self.cookie_path = b"/"
        #: The auth checks' upstream header changes (an AuthRequest), or while a check
        #: waits, what ``authenticate`` resumes (a tuple); None: nothing.
        self.auth: Any = None
        #: External authorization: (route, path, query) of a request routed but not yet
        #: prepared (``authorize`` asks first), and the allowing answer's header changes.
        self.auth_wait: tuple[CompiledRoute, bytes, bytes] | None = None
        self.auth_ops: Any = None
        #: Wake ``body_waiters`` once this many body bytes are buffered (0: at the end).
        self.auth_body = 0
        #: 100 Continue was sent already (to get a body for the authorization service).
        self.continued = False
        #: A policy's limit on the request body, checked as it streams (0: none).
        self.body_limit = 0
        #: Why the request is refused once forwarding began (the body grew past
        #: ``body_limit``): the try raises it (``one_try``) and ``forward`` answers it.
        self.refusal: _Refuse | None = None

    # -- the phase tables ---------------------------------------------------------------
    def _request_to(self, event: int) -> None:
        after = _REQUEST_NEXT[self.req * 8 + event]
        if after == 255:
            raise _phase_error("request", RequestPhase, RequestEvent, self.req, event)
        self.req = after

    def _response_to(self, event: int) -> None:
        after = _RESPONSE_NEXT[self.resp * 8 + event]
        if after == 255:
            raise _phase_error("response", ResponsePhase, ResponseEvent, self.resp, event)
        self.resp = after

    # -- from the client side -----------------------------------------------------------
    def on_request_body(self, data: bytes) -> None:
        n = len(data)
        self.received += n
        if self.body_limit and self.received > self.body_limit:
            self.body_too_large()
            return
        retained = self.retained
        if retained is not None:
            if self.received > RETAIN_LIMIT:
                self.retained = None
            else:
                retained.append(data)
        req = self.req
        if req == STREAMING:
            self.upstream.send_body(data)  # type: ignore[union-attr]
            return
        if req != BUFFERING:
            return  # DISCARDING (the response is finished) or LOST
        self.body_buf.append(data)
        self.buf_size += n
        if self.buf_size > BODY_HIGH_WATER:
            self.down.pause(PAUSE_BODY)
        if self.auth_body and self.buf_size >= self.auth_body:
            self.auth_body = 0
            self._wake_body_waiters()

    def body_too_large(self) -> None:
        """The body crossed the rule's ``requestLimits.maxRequestBodySize`` while it
        streamed: nothing more of it goes anywhere; the client gets 413 if its response
        has not started, else its response is cut; the connection closes."""
        if self.refusal is not None:
            return
        self.close_after = True
        self.refusal = _Refuse(413, b"request body too large\n", "request body larger than "
                               "%d bytes (requestLimits.maxRequestBodySize)" % self.body_limit)
        resp = self.resp
        if resp == QUEUED or resp > SENDING:
            return  # not forwarded yet (``police`` checks then), or answered already
        up = self.upstream
        if resp == SENDING:
            self.detail = self.refusal.detail
            if up is not None:
                up.abort()
                self.on_upstream_lost(up)
            return
        if self.task is None:  # the fast path, waiting for the backend's head
            up = self.detach()
            if up is not None:
                up.abort()
            self.answer_refusal()
            self.finish()
            return
        fut = self.head_fut
        if fut is not None and not fut.done():
            fut.set_exception(self.refusal)

    def answer_refusal(self) -> None:
        ref: _Refuse = self.refusal  # type: ignore[assignment]
        self.detail = ref.detail
        self.flags = self.flags or "RL"
        self.respond(ref.status, ref.body)

    def on_request_end(self, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        """The request's end. Never called for a request whose head says it has no body
        (``RequestHead.body == "none"``): that head is the whole request."""
        self.trailers = trailers
        streaming = self.req == STREAMING
        self._request_to(END)
        if streaming:
            self.upstream.send_end(trailers)  # type: ignore[union-attr]
        self._wake_body_waiters()
        if self.resp == DONE:
            # The response went out before the body was read to its end.
            self._release()

    def _wake_body_waiters(self) -> None:
        waiters, self.body_waiters = self.body_waiters, None
        if waiters:
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def on_client_lost(self) -> None:
        self._request_to(LOSE)
        self.close_after = True
        up = self.upstream
        if up is not None:
            up.abort()
        if self.task is not None and not self.task.done() and self.resp < SENDING:
            self.task.cancel()
        elif self.done_fut is not None and not self.done_fut.done():
            self.done_fut.set_result(None)
        waiters, self.body_waiters = self.body_waiters, None
        for w in waiters or ():
            if not w.done():
                w.cancel()
        if self.task is None and (self.resp == AWAITING or self.resp == SENDING):
            self.finish()  # the fast path: nothing else would

    def on_downstream_pause(self, paused: bool) -> None:
        """The client takes no more response bytes now (``paused``), or again: so does
        the backend."""
        up = self.upstream
        if up is not None:
            if paused:
                up.pause_reading()
            else:
                up.resume_reading()

    def sweep(self, now: float, client_idle: float, idle_timeout: float,
              response_timeout: float) -> bool:
        """The exchange's timeouts, checked by its client stream's periodic sweep.
        ``client_idle``: seconds since the client last sent anything. True when the client
        is given up on (its stream is then cut by the caller).

        The default response timeout (rules without timeouts of their own): the backend
        must make progress (a read) at least every ``response_timeout`` once the request
        is complete, except while the client is the one not keeping up (reading from the
        backend paused). A gRPC call has neither: its deadline bounds it."""
        if self.grpc:
            return False
        if self.req != RECEIVED and client_idle > idle_timeout:
            self.on_client_lost()
            return True
        up = self.upstream
        if up is None or self.rule is None or not self.rule.default_timeout \
                or response_timeout <= 0:
            return False
        if self.watch_up is not up or up.reads != self.watch_reads or up.read_paused \
                or self.req != RECEIVED:
            self.watch_up = up
            self.watch_reads = up.reads
            self.watch_since = now
        elif now - self.watch_since > response_timeout:
            self.watch_up = None
            self.on_upstream_timeout(response_timeout)
        return False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Route the request and serve it.

        Local answers (404, redirects, CORS preflights, direct statuses) complete right
        here. A forwarded request takes the *fast path* when its rule has no timeouts and
        no retries and a pooled upstream stream to the chosen endpoint is idle: it is
        written at once and the response is relayed from the stream's callbacks, with no
        task and no future. Everything else runs in a task (``run``).
        """
        ctx = self.ctx
        self.start_time = ctx.clock()
        if ctx.access_log is not None:
            self.wall_start = time.time()
        listener = self.down.listener
        tracer = listener.tracer  # (a C field: listener is a ListenerState, compiled)
        if tracer is not None:
            self.trace = tracer.begin(self.head.headers)
        endpoint = None
        try:
            if self.head.version == b"2":
                self.grpc_head()
            backend = self.route()
            if backend is None:
                if type(self.auth) is tuple:
                    self.task = ctx.loop.create_task(self.authenticate())
                    return
                self.finish()
                return
            rule: CompiledRule = self.rule  # type: ignore[assignment]  # route() set it
            self._response_to(FORWARD)
            if rule.no_deadline and not self.head.upgrade \
                    and not self.grpc_deadline and backend.fast:
                endpoint = self.pinned if self.pinned is not None else backend.pick(self.lb_key)
                if endpoint is None:
                    self.respond(503, b"no healthy upstream\n")
                    self.finish()
                    return
                up = ctx.pool.take_idle(endpoint[0], endpoint[1], backend, ctx.now)
                if up is not None:
                    self.upstream_host = endpoint
                    trace = self.trace
                    if trace is not None:
                        if trace.tries is None and not trace.ntries:
                            # (begin_try's only effect on an unsampled first try, uncalled)
                            trace.ntries = 1
                        else:
                            trace.tracer.begin_try(trace, endpoint[0], endpoint[1])
                    self.send(up, True)
                    return
        except Exception:
            log.exception("request failed")
            if self.resp < SENDING:
                self.respond(500, b"internal error\n")
            self.close_after = True
            self.finish()
            return
        # The endpoint picked above (if any) is the first try's: picking again would
        # skew the round robin for every request that misses the pool.
        self.task = ctx.loop.create_task(
            self.run(endpoint if endpoint is not None else self.pinned))

    def grpc_head(self) -> None:
        """Is the request a gRPC call (``grpc``), with a deadline (``grpc_deadline``)?
        Asked of HTTP/2 requests only: gRPC is HTTP/2."""
        timeout = None
        for n, v in self.head.headers:
            if n == b"content-type":
                v = v.lower()
                self.grpc = v == b"application/grpc" or v.startswith(b"application/grpc+") \
                    or v.startswith(b"application/grpc;")
            elif n == b"grpc-timeout":
                timeout = grpc_timeout(v)
        if self.grpc and timeout is not None:
            self.grpc_deadline = self.start_time + timeout

    async def run(self, endpoint: tuple[str, int] | None = None) -> None:
        try:
            if self.auth_wait is not None and not await self.authorize():
                return
            await self.forward(endpoint)
        except asyncio.CancelledError:
            if self.req != LOST:
                raise
        except Exception:
            log.exception("request failed")
            if self.resp < SENDING:
                self.respond(500, b"internal error\n")
            else:
                self.close_after = True
        finally:
            self.finish()

    async def authenticate(self) -> None:
        """A request whose auth check had to wait (``route`` set ``auth`` to the pipeline,
        the request, the waiting check's index and the route): finish the checks, then
        route and forward it as ``start`` would have."""
        try:
            auth, areq, index, route, path, query = self.auth
            self.auth = None
            verdict = await auth.resume(areq, index)
            if verdict is not None:
                self.deny(verdict)
                return
            if areq.changes:
                self.auth = areq
            if areq.reply:  # (a renewed session cookie: on the response the client gets)
                self.resp_extra = [*self.resp_extra, *areq.reply] if self.resp_extra \
                    else areq.reply
            backend = self.routed(route, route.rule, path, query, areq.claims)
            if backend is None:
                return
            self._response_to(FORWARD)
            if self.auth_wait is not None and not await self.authorize():
                return
            await self.forward(None)
        except asyncio.CancelledError:
            if self.req != LOST:
                raise
        except Exception:
            log.exception("request failed")
            if self.resp < SENDING:
                self.respond(500, b"internal error\n")
            else:
                self.close_after = True
        finally:
            self.finish()

    def deny(self, denial: Denial) -> None:
        """Answer a request an auth check refused (CORS headers kept: a browser script
        then sees the 401 rather than a CORS failure)."""
        self.detail = denial.detail
        self.flags = "UAEX"  # (Envoy's flag for a request its authorization denied)
        extra = denial.headers
        if self.resp_extra:
            extra = extra + self.resp_extra
        self.respond(denial.status, denial.body, extra)

    def _fast_failed(self, status: int, reason: str) -> None:
        """The fast path's upstream stream failed before a response started."""
        up = self.detach()
        if up is not None:
            up.abort()
        if up is not None and up.stale() and not self.received and self.req == RECEIVED:
            # A pooled connection the backend had already closed: the request never
            # reached it. Go through the regular path (fresh connection, same endpoint).
            self.task = self.ctx.loop.create_task(self.run(self.upstream_host))
            return
        self.upstream_failed(status, reason, b"upstream reset before response\n"
                             if status == 503 else _BAD_RESPONSE, "UF" if status == 503 else "UR")
        self.finish()

    def upstream_failed(self, status: int, detail: str, body: bytes, flags: str) -> None:
        """Answer a request no backend answered: a generic body for the client, the detail
        for the access log and (at most every few seconds per backend) the log."""
        self.flags = self.flags or flags
        self.detail = detail
        self.ctx.limiter.warning(("upstream", self.backend_name), "backend %s: %s (%d)",
                                 self.backend_name, detail, status)
        self.respond(status, body)

    def finish(self) -> None:
        """Count and log the exchange, release or end its upstream stream; hand it back to
        the client side unless the rest of the request body is still to be read."""
        if self.resp >= DONE:
            return  # (finished already: the client went away meanwhile, say)
        relayed = self.resp == RELAYED
        self._response_to(FINISH)
        ctx = self.ctx
        up = self.detach()
        if up is not None:
            if relayed and self.req == RECEIVED:
                ctx.pool.release(up, ctx.now)
            else:
                up.abort()
        duration = ctx.clock() - self.start_time
        rule = self.rule
        lost = self.req == LOST
        status = self.status or (499 if lost else 0)
        if lost and not self.flags:
            self.flags = "DC"  # (Envoy's flag: the client connection went away)
        listener = self.down.listener
        if rule is not None:
            ctx.stats.request(listener.name, rule.gateway, rule.route, self.backend_name,
                              status, duration, self.received, self.sent)
        else:
            ctx.stats.request(listener.name, listener.gateway, "", "", status, duration,
                              self.received, self.sent)
        if ctx.access_log is not None and not self.tunneled:
            # (A tunnel's line is written when it closes: ``tunnel_closed``.)
            ctx.access_log.log(
                self.wall_start, self.head, status, self.received, self.sent, duration,
                self.upstream_host, rule.name if rule is not None else None,
                self.request_id, self.flags, listener.name, self.detail, self.down.remote,
                listener.log)
        if self.trace is not None and self.trace.sampled:
            head = self.head
            self.trace.tracer.end(self.trace, head.method, head.target,
                                  rule.name if rule is not None else None, status,
                                  self.down.peer, head.host, listener.scheme, head.version,
                                  self.detail, head.headers)
        if self.req < RECEIVED:
            self._request_to(DISCARD)
            if not self.close_after:
                # Read the rest of the request body (dropped), then move on.
                self.body_buf = []
                self.down.resume(PAUSE_BODY)
                return
        self._release()

    def _release(self) -> None:
        self._response_to(RELEASE)
        self.down.exchange_done(self)

    # -- local responses ----------------------------------------------------------------
    def respond(self, status: int, body: bytes = b"",
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """A whole response of kgw's own (for a gRPC call, an error is a gRPC status)."""
        self._response_to(RESPOND)
        if self.grpc and status >= 400 and status != 421:
            self.respond_grpc(status, body, extra)
            return
        self.status = status
        if self.req < RECEIVED and self.received + self.buf_size > BODY_HIGH_WATER:
            self.close_after = True  # don't read a large unwanted body
        headers = list(extra) if extra else []
        if body and (not extra or _header(tuple(extra), b"content-type") is None):
            headers.append((b"content-type", b"text/plain"))
        headers.append((b"content-length", b"%d" % len(body)))
        data = []
        if body and self.head.method != b"HEAD":  # (HEAD: the same fields, no body)
            data.append(body)
            self.sent += len(body)
        self.down.send_response(status, headers, "length" if body else "none", data, True,
                                _EMPTY, self.close_after)

    def respond_grpc(self, status: int, body: bytes,
                     extra: list[tuple[bytes, bytes]] | None) -> None:
        """kgw's error ``status`` as a gRPC call's: 200 and its grpc-status in a
        trailers-only response (one HEADERS frame that ends the stream). The access log
        has 200, and what kgw would have answered in its details."""
        code = _GRPC_STATUS.get(status, 2)
        if code == 4 and body == _CONNECT_TIMEOUT:
            code = 14  # the backend could not be reached in time: UNAVAILABLE
        text = body.strip() or b"HTTP %d" % status
        self.status = 200
        self.detail = "grpc-status %d (%d %s)%s" % (
            code, status, text.decode("ascii", "replace"),
            ": " + self.detail if self.detail else "")
        headers = list(extra) if extra else []
        headers.append((b"content-type", b"application/grpc"))
        headers.append((b"grpc-status", b"%d" % code))
        headers.append((b"grpc-message", grpc_message(text)))
        self.down.send_response(200, headers, "none", [], True, _EMPTY, self.close_after)

    # -- the request --------------------------------------------------------------------
    def route(self) -> CompiledBackend | None:
        """Pick the route and apply everything that can answer locally; returns the
        backend to forward to (``rule``, ``out`` set), or None when answered."""
        down = self.down
        head = self.head
        listener: ListenerState = down.listener
        router = listener.router
        if listener.certs is not None and listener.certs.misdirected(down.ssl_context,
                                                                        head.host):
            self.flags = "MR"
            self.respond(421, b"misdirected request\n")
            return None
        path, query = split_target(head.target)
        vhost = router.vhost(head.host)
        route = vhost.find(path, head.method, head.headers, query) if vhost else None
        if route is None:
            self.flags = "NR"
            self.respond(404, b"no route\n")
            return None
        rule = route.rule
        self.rule = rule
        if rule.policy is not None and self.police(rule.policy):
            return None
        filters = rule.filters
        cors = filters.cors
        origin = None
        if cors is not None:
            origin = _header(head.headers, b"origin")
            if origin is not None:
                allowed = cors.allows(origin)
                req_method = None
                if head.method == b"OPTIONS":
                    req_method = _header(head.headers, b"access-control-request-method")
                if req_method is not None:
                    # A preflight is answered here, never forwarded; a disallowed
                    # origin gets no CORS headers (the browser then refuses).
                    self.respond(200, b"", cors.preflight_headers(
                        origin, req_method,
                        _header(head.headers, b"access-control-request-headers"))
                        if allowed else None)
                    return None
                if allowed:
                    self.resp_extra = cors.response_headers(origin)
        auth = rule.auth
        claims = None
        if auth is not None:
            areq = new_request(head.method, path, query, head.headers, down.peer)
            verdict = auth.run(areq)
            if verdict is not None:
                if isinstance(verdict, Denial):
                    self.deny(verdict)
                else:  # a check must wait: ``authenticate`` goes on in a task
                    self.auth = (auth, areq, verdict, route, path, query)
                return None
            if areq.changes:
                self.auth = areq
            if areq.reply:
                self.resp_extra = [*self.resp_extra, *areq.reply] if self.resp_extra \
                    else areq.reply
            claims = areq.claims
        return self.routed(route, rule, path, query, claims)

    def routed(self, route: CompiledRoute, rule: CompiledRule, path: bytes,
               query: bytes, claims: dict[str, Any] | None) -> CompiledBackend | None:
        """The rest of ``route``, once the request passed the rule's auth checks
        (``claims``: the verified JWT's, for a limit keyed by a claim)."""
        policy = rule.policy
        if policy is not None:
            rl = policy.local_limit
            if rl is not None and rl.after_auth and self.limited(
                    rl, rl.take_value(claim_key(claims, rl.claim))):
                return None
        head = self.head
        listener: ListenerState = self.down.listener
        filters = rule.filters
        redirect = filters.redirect
        if redirect is not None:
            loc = redirect.location(listener.scheme, head.host, listener.port, path, query,
                                    route.matched_prefix)
            self.respond(redirect.status, b"", [(b"location", loc)])
            return None
        if rule.direct_status is not None:
            self.respond(rule.direct_status, b"")
            return None
        backend = (rule.pick_backend() if rule.session is None
                   else self.resume_session(rule, route))
        if backend is None:
            self.respond(500, b"no backend\n")
            return None
        self.backend_name = backend.name
        if backend.error_status is not None:
            self.respond(backend.error_status, b"")
            return None
        bf = backend.filters
        if bf is not None and bf.redirect is not None:
            loc = bf.redirect.location(listener.scheme, head.host, listener.port, path, query,
                                       route.matched_prefix)
            self.respond(bf.redirect.status, b"", [(b"location", loc)])
            return None
        if not backend.endpoints:
            self.flags = "UH"
            self.respond(503, b"no healthy upstream\n")
            return None
        self.backend = backend
        keys = backend.keys
        if keys is not None:
            self.lb_key = keys.key(head.headers, query, self.down.peer)
        if filters.ext_auth is not None:
            self.auth_wait = (route, path, query)  # prepared once the service allows it
            return backend
        self.prepare(route, rule, backend, path, query)
        return backend

    def resume_session(self, rule: CompiledRule, route: CompiledRoute
                       ) -> CompiledBackend | None:
        """A rule with session persistence: the backend of the session the request
        brought (its endpoint pinned for the first try), else the next one by weight."""
        self.cookie_path = route.cookie_path or b"/"
        policy: SessionPolicy = rule.session  # type: ignore[assignment]  # (the caller's test)
        found = policy.find(self.head.headers, time.time())
        if found is None:
            return rule.pick_backend()
        self.session = found
        self.pinned = found.endpoint
        return found.backend

    def session_field(self, policy: SessionPolicy, endpoint: tuple[str, int]) -> None:
        """The token for the endpoint that answered, when the client needs a new or
        renewed one (kgw_l7.session.SessionPolicy.response_header)."""
        field = policy.response_header(self.session, self.backend, endpoint, self.cookie_path,
                                       time.time())
        if field is not None:
            self.resp_extra = [*self.resp_extra, field] if self.resp_extra else [field]

    async def authorize(self) -> bool:
        """Ask the rule's authorization service (kgw_l7.extauth); True: allowed (the request
        is prepared), False: answered with the denial. Mirrors start, and the backend hears
        of the request, only once it is allowed."""
        route, path, query = self.auth_wait  # type: ignore[misc]
        self.auth_wait = None
        rule: CompiledRule = self.rule  # type: ignore[assignment]
        s = rule.filters.ext_auth
        if s is None:  # (routed() waits only for a rule that has one)
            raise RuntimeError("authorize: the rule has no ext auth")
        head = self.head
        down = self.down
        body = b""
        if s.max_body and self.req < RECEIVED:
            if head.expect_continue and self.received == 0:
                down.send_continue()
                self.continued = True
            if self.buf_size < s.max_body:
                fut = self.ctx.loop.create_future()
                if self.body_waiters is None:
                    self.body_waiters = []
                self.body_waiters.append(fut)
                self.auth_body = s.max_body
                await fut
                self.auth_body = 0
            if self.refusal is not None:  # (a policy's body limit crossed meanwhile)
                self.answer_refusal()
                return False
        if s.max_body and self.body_buf:
            body = b"".join(self.body_buf)[:s.max_body]
        size = head.content_length if head.body == "length" else \
            0 if head.body == "none" else None
        decision = await authcall.check(self.ctx, s, ExtAuthRequest(
            head.method, head.target, head.authority, head.headers, body, size, down.remote,
            down.listener.scheme, head.version, _header(head.headers, b"x-request-id") or b""))
        if decision.failed:
            self.ctx.limiter.warning(("extauth", s.name), "rule %s: %s", rule.name,
                                     decision.reason)
            PROBLEMS.fail("extauth", s.name, decision.reason)
        else:
            PROBLEMS.ok("extauth", s.name)
        if decision.allowed:
            if decision.reason:
                self.detail = decision.reason  # (failed open)
            if decision.changes:
                self.auth_ops = decision
            self.prepare(route, rule, self.backend, path, query)  # type: ignore[arg-type]
            return True
        self.flags = "UAEX"  # (Envoy's flag: denied by the external authorization service)
        self.detail = decision.reason
        extra = list(decision.headers)
        if self.resp_extra:
            extra.extend(self.resp_extra)  # (CORS: a browser script sees the denial)
        self.respond(decision.status, decision.body, extra or None)
        return False

    def police(self, policy: CompiledPolicy) -> bool:
        """The checks of the rule's kgw policy (TrafficPolicy sections); True when one
        answered the request itself."""
        head = self.head
        rl = policy.local_limit
        if rl is not None and not rl.after_auth and self.limited(
                rl, rl.take(head.headers, self.down.peer)):
            return True
        if policy.max_headers and len(head.headers) > policy.max_headers:
            self.detail = "%d request header fields, more than %d " \
                "(requestLimits.maxRequestHeaders)" % (len(head.headers), policy.max_headers)
            self.flags = "RL"
            self.respond(431, b"too many request header fields\n")
            return True
        limit = policy.max_body_size
        if limit:
            length = head.content_length
            if (length is not None and length > limit) or self.received > limit:
                self.detail = "request body larger than %d bytes " \
                    "(requestLimits.maxRequestBodySize)" % limit
                self.flags = "RL"
                self.close_after = True  # (the body is not read)
                self.respond(413, b"request body too large\n")
                return True
            if self.req < RECEIVED:
                self.body_limit = limit
        return False

    def limited(self, rl: LocalLimit, left: int) -> bool:
        """True when ``left`` (``LocalLimit.take``'s) refuses the request: answered 429."""
        if left >= 0:
            return False
        self.ctx.stats.rate_limited_request(self.rule.route, rl.name)  # type: ignore[union-attr]
        self.detail = "local rate limit (%s)" % rl.name
        self.flags = "RL"
        self.respond(429, b"rate limited\n", rl.refusal_headers(-left))
        return True

    async def global_admitted(self, gl: Any) -> bool:
        """The rule's global rate limit (``kgw_l7.globallimit``): one Redis round trip,
        bounded by the limit's timeout. False when it answered the request (429): over
        the limit, or Redis failed and the limit fails closed."""
        d = await gl.check(self.ctx.global_limiter, self.head.headers, self.down.peer)
        if d.allowed:
            return True
        if self.req == LOST:
            return False
        self.ctx.stats.rate_limited_request(self.rule.route, gl.name)  # type: ignore[union-attr]
        self.detail = "global rate limit (%s)" % gl.name if d.source == "redis" else \
            "global rate limit (%s): redis unavailable, failing closed" % gl.name
        self.flags = "RL"
        self.respond(429, b"rate limited\n", gl.refusal_headers(d.reset))
        return False

    def upstream_headers(self, route: CompiledRoute, rule: CompiledRule,
                         backend: CompiledBackend) -> list[tuple[bytes, bytes]]:
        head = self.head
        down = self.down
        out: list[tuple[bytes, bytes]] = []
        xff = None
        rid = None
        listed = False
        special = _REQUEST_SPECIAL
        for h in head.headers:
            n = h[0]
            if n in special:  # one set lookup per header on the common path
                if n == b"x-forwarded-for":
                    xff = h[1] if xff is None else xff + b", " + h[1]
                elif n == b"x-request-id":
                    rid = h[1]
                    out.append(h)
                elif n == b"connection":
                    listed = True
                elif n == b"te" and h[1].strip().lower() == b"trailers":
                    # The one TE value that goes on: gRPC servers refuse calls without it
                    # (and it says the client takes trailers, end to end).
                    out.append((b"te", b"trailers"))
                continue  # hop-by-hop, framing (rebuilt below), x-forwarded-proto
            out.append(h)
        if listed:  # headers named in Connection are hop-by-hop too
            tokens = parse_connection_tokens(head.headers)
            out = [h for h in out if h[0] not in tokens]
        if rid is None:
            rid = _REQUEST_IDS.next()
            out.append((b"x-request-id", rid))
        self.request_id = rid
        out.append((b"x-forwarded-for", xff + b", " + down.peer if xff else down.peer))
        listener: ListenerState = down.listener
        out.append((b"x-forwarded-proto", listener.scheme))
        if head.upgrade:
            up = _header(head.headers, b"upgrade")
            if up is not None and b"h2c" in up.lower():
                up = _without_h2c(up)
            if up:
                out.append((b"connection", b"upgrade"))
                out.append((b"upgrade", up))
        ops = rule.filters.req_ops
        if ops is not None:
            out = ops.apply(out)
        ops = backend.req_ops
        if ops is not None:
            out = ops.apply(out)
        if self.auth is not None:  # what the auth checks establish wins over the filters
            out = self.auth.upstream(out)
        auth = self.auth_ops
        if auth is not None:
            out = auth.apply(out)
        host = rule.filters.rewrite_host
        bf = backend.filters
        if bf is not None and bf.rewrite_host is not None:
            host = bf.rewrite_host
        if host is not None:
            out = [h for h in out if h[0] != b"host"]
            out.append((b"host", host))
        elif not head.authority:
            # HTTP/1.0 without Host: HTTP/1.1 upstream requests need one.
            out.append((b"host", b"%s:%d" % (backend.endpoints[0][0].encode(),
                                             backend.endpoints[0][1])))
        if head.body == "length":
            out.append((b"content-length", b"%d" % head.content_length))  # type: ignore[str-format]
        elif head.body == "chunked":
            out.append((b"transfer-encoding", b"chunked"))
        return out

    def head_as_received(self, suffix: bytes, remove: Any = None) -> bytes | None:
        """The client's own request line and header block plus the proxy's lines
        (X-Request-Id, X-Forwarded-For/-Proto, then ``suffix``), when nothing in it needs
        rebuilding: same fields as upstream_headers() would send, in the client's order and
        case (as nginx forwards them), less the fields named in ``remove`` (an auth check's
        removals: the token not forwarded). None when the head must be rebuilt (or the
        request did not come as HTTP/1.1 bytes: ``raw`` is None)."""
        head = self.head
        raw = head.raw
        if raw is None or head.version != b"1.1" or not head.authority \
                or not raw.startswith(head.method):  # (llhttp skips empty lines before it)
            return None
        headers = head.headers
        if not remove:  # (the plain path)
            for h in headers:
                if h[0] in _REBUILD_HEAD:
                    return None
            end = _find(raw, b"\r\n\r\n", 0, len(raw))
            if end < 0:
                return None
            block = raw[:end + 2]
        else:
            cut = _head_without(raw, head, remove)
            if cut is None:
                return None
            block = cut
        self.request_id = rid = _REQUEST_IDS.next()
        return b"".join((block, b"x-request-id: ", rid, self.down.forwarded, suffix, b"\r\n"))

    def prepare(self, route: CompiledRoute, rule: CompiledRule, backend: CompiledBackend,
                path: bytes, query: bytes) -> None:
        """What goes upstream (``out``); starts mirrors and sends 100 Continue."""
        head = self.head
        ctx = self.ctx
        filters = rule.filters
        target = head.target
        bf = backend.filters
        rewrite = filters.rewrite_path
        if bf is not None and bf.rewrite_path is not None:
            rewrite = bf.rewrite_path  # the BackendRef's own rewrite is the more specific
        same_target = False
        auth_query = self.auth.new_query if self.auth is not None else None
        if auth_query is not None:
            query = auth_query  # (a credential taken out of it)
        if rewrite is not None:
            new_path = rewrite.apply(path, route.matched_prefix)
            target = new_path + b"?" + query if query else new_path
        elif auth_query is not None or (target[:1] != b"/" and target != b"*"):
            target = path + b"?" + query if query else path  # absolute-form -> origin-form
        else:
            same_target = True
        suffix = rule.head_suffix_for.get(backend) if same_target else None
        auth = self.auth
        if suffix is not None and auth is not None:
            suffix = auth.head_suffix(suffix)
        trace = self.trace
        if trace is not None and suffix is not None:
            # traceparent to the backend: a line more, unless the client's must go.
            suffix = None if trace.had_context else suffix + b"traceparent: " + trace.line \
                + b"\r\n"
        raw = self.head_as_received(suffix, auth.remove if auth is not None else None) \
            if suffix is not None else None
        if raw is None:
            headers = self.upstream_headers(route, rule, backend)
            if trace is not None:
                headers = traced_headers(headers, trace)
            out = self.out = out_request(head.method, target, headers, None, head.body)
        else:
            out = self.out = out_request(head.method, target, None, raw, head.body)
        self.resp_ops = rule.resp_ops_for.get(backend, _EMPTY)
        if rule.needs_body_copy and self.received <= RETAIN_LIMIT:
            self.retained = list(self.body_buf)  # nothing was sent yet: this is all of it
        mirrors = filters.mirrors
        if bf is not None and bf.mirrors:
            mirrors = mirrors + bf.mirrors
        if mirrors:
            for mb, percent in mirrors:
                if percent >= 100 or random.random() * 100 < percent:
                    ctx.spawn(self.mirror(mb, out))
        if head.expect_continue and self.received == 0 and self.req < RECEIVED \
                and not self.continued:
            self.down.send_continue()

    async def forward(self, endpoint: tuple[str, int] | None) -> None:
        rule: CompiledRule = self.rule  # type: ignore[assignment]
        policy = rule.policy
        if policy is not None and policy.global_limit is not None \
                and not await self.global_admitted(policy.global_limit):
            return
        deadline = None
        if rule.request_timeout:
            deadline = self.start_time + rule.request_timeout
        if self.grpc_deadline and (deadline is None or self.grpc_deadline < deadline):
            deadline = self.grpc_deadline
        try:
            async with asyncio.timeout_at(deadline) if deadline else _NO_TIMEOUT:
                await self.tries(rule, self.backend, endpoint)  # type: ignore[arg-type]
        except _Refuse:
            up = self.detach() if self.upstream is not None else None
            if up is not None:
                up.abort()
            if self.resp < SENDING:
                self.answer_refusal()
        except TimeoutError:
            self.flags = self.flags or "UT"
            # (a deadline not gRPC's is request_timeout's: set, not None)
            self.detail = "grpc-timeout (%gs)" % (deadline - self.start_time) \
                if deadline == self.grpc_deadline else \
                "request timeout (%gs)" % rule.request_timeout  # type: ignore[str-format]
            if self.resp < SENDING:
                self.respond(504, _TIMEOUT)
            elif self.grpc and self.resp == SENDING and self.resp_trailers:
                self.deadline_trailers()
            else:
                self.close_after = True
                self.down.abort()

    def deadline_trailers(self) -> None:
        """A gRPC call whose deadline passes after its response started ends as gRPC
        says a deadline ends a call (grpc-status 4 DEADLINE_EXCEEDED in the trailers),
        not with a reset, which a client reads as CANCELLED or INTERNAL. The backend's
        stream is cancelled (``finish`` aborts it) and nothing more of it is relayed."""
        up = self.detach()
        if up is not None:
            up.abort()
        self.detail = (self.detail or "deadline") + " after the response started: grpc-status 4"
        self.down.send_end(_DEADLINE_TRAILERS)

    async def tries(self, rule: CompiledRule, backend: CompiledBackend,
                    endpoint: tuple[str, int] | None) -> None:
        """Up to 1 + retry attempts tries, each on one endpoint (``endpoint`` for the
        first when the caller picked it already)."""
        breaker: Breaker | None = backend.breaker
        if breaker is None:
            await self._tries(rule, backend, endpoint, None)
            return
        if not breaker.enter(REQUESTS):
            self.overflow(breaker, REQUESTS)
            return
        try:
            await self._tries(rule, backend, endpoint, breaker)
        finally:
            breaker.leave(REQUESTS)

    def overflow(self, breaker: Breaker, kind: int) -> None:
        """Answer a request over a circuit breaker's limit."""
        name = NAMES[kind]
        self.ctx.stats.upstream_overflow(self.backend_name, name)
        self.upstream_failed(503, "circuit breaker: %s (%d) reached" % (name, breaker.limit(kind)),
                             _OVERFLOW, "UO")

    async def _tries(self, rule: CompiledRule, backend: CompiledBackend,
                     endpoint: tuple[str, int] | None, breaker: Breaker | None) -> None:
        attempts = 1 + rule.retry_attempts
        # Without a retry policy, one extra try is allowed when a pooled keep-alive
        # connection turns out to be closed by the backend before answering (the
        # request never reached it). With a policy, every try counts.
        stale_retry_left = 0 if rule.retry_attempts else 1
        attempt = 0
        last: _Retry | None = None
        tried: list[tuple[str, int]] = []
        retrying = False
        key = self.lb_key
        again = False  # (a try failed and another follows: counted in kgw_l7_retries_total)
        while attempt < attempts:
            if retrying:
                breaker.leave(RETRIES)  # type: ignore[union-attr]  # (set with a breaker)
                retrying = False
            if attempt > 0:
                if self.received and (self.retained is None or self.req == LOST):
                    break  # the body cannot be replayed
                if breaker is not None:
                    if not breaker.enter(RETRIES):
                        self.ctx.stats.upstream_overflow(backend.name, NAMES[RETRIES])
                        break  # the retry limit: the last try's failure is the answer
                    retrying = True
                if rule.retry_backoff:
                    await asyncio.sleep(retry_delay(rule.retry_backoff, attempt))
            if again:
                self.ctx.stats.retry(rule.gateway, rule.route)
            if endpoint is None:
                endpoint = backend.pick_untried(tried, key) if tried else backend.pick(key)
            if endpoint is None:
                if retrying:
                    breaker.leave(RETRIES)  # type: ignore[union-attr]
                self.respond(503, b"no healthy upstream\n")
                return
            trace = self.trace
            if trace is not None:
                # (a trace exists only with a tracer; out is prepared before the tries)
                old = trace.tracer.begin_try(trace, endpoint[0], endpoint[1])
                if old is not None:
                    self.out = retraced(self.out, old, trace.line)  # type: ignore[arg-type]
            try:
                await self.one_try(rule, backend, endpoint, attempt == 0, breaker)
            except _Overflow as exc:
                if retrying:
                    breaker.leave(RETRIES)  # type: ignore[union-attr]
                up = self.detach()
                if up is not None:
                    up.abort()
                self.upstream_failed(exc.status, str(exc), exc.body, exc.flags)
                return
            except _Retry as exc:
                last = exc
                again = True
                if trace is not None:
                    trace.tracer.end_try(trace, exc.status, str(exc))
                    if attempt + 1 < attempts:
                        trace.tracer.retry(trace, attempt + 1, str(exc))
                up = self.detach()
                if up is not None:
                    stale = up.stale() and not self.received and self.req == RECEIVED \
                            and exc.status == 503
                    up.abort()
                    if stale and stale_retry_left:
                        # A pooled connection the backend had closed: not a real try
                        # (the same endpoint again, on a fresh connection).
                        stale_retry_left -= 1
                        continue
                tried.append(endpoint)
                endpoint = None
                attempt += 1
                continue
            if trace is not None:
                trace.tracer.end_try(trace, self.status, None)
            if retrying:
                breaker.leave(RETRIES)  # type: ignore[union-attr]
            return
        if retrying:
            breaker.leave(RETRIES)  # type: ignore[union-attr]
        assert last is not None
        self.upstream_failed(last.status, str(last), last.body, last.flags)

    async def one_try(self, rule: CompiledRule, backend: CompiledBackend,
                      endpoint: tuple[str, int], first: bool,
                      breaker: Breaker | None = None) -> None:
        ctx = self.ctx
        loop = ctx.loop
        per_try = rule.backend_timeout
        deadline = loop.time() + per_try if per_try else None
        self.upstream_host = endpoint
        bal = backend.balancer
        st = bal.begin(endpoint) if bal is not None and bal.tracks else None
        #: What outlier detection learns from this try (-1: nothing, e.g. cancelled).
        outcome = -1
        try:
            async with asyncio.timeout_at(deadline) if deadline else _NO_TIMEOUT:
                try:
                    if rule.proxy_send:
                        up = await ctx.pool.acquire_proxied(endpoint[0], endpoint[1], backend,
                                                            ctx.now, self.proxy_header())
                    elif breaker is None:
                        up = await ctx.pool.acquire(endpoint[0], endpoint[1], backend, ctx.now)
                    else:
                        up = await self.acquire_within(breaker, backend, endpoint)
                except UpstreamError as exc:
                    if exc.kind == "connect":
                        outcome = LOCAL_FAILURE
                        ctx.stats.connect_failure(backend.name)
                    else:
                        ctx.stats.upstream_overflow(backend.name, exc.kind)
                        if exc.kind == "descriptors":
                            ctx.out_of_descriptors()
                    raise _upstream_error(exc) from None
                if self.req == LOST:
                    up.abort()
                    raise asyncio.CancelledError()
                if self.refusal is not None:
                    ctx.pool.release(up, ctx.now)
                    raise self.refusal
                fut = self.head_fut = loop.create_future()
                self.send(up, first)
                try:
                    resp = await fut
                except _Retry:
                    outcome = LOCAL_FAILURE  # reset, or not HTTP
                    raise
                outcome = SERVER_ERROR if resp.status >= 500 else OK
                if resp.status in rule.retry_codes:
                    raise _Retry(resp.status, "retriable status %d" % resp.status)
                self.commit(resp)
                if self.done_fut is not None:
                    await self.done_fut
        except TimeoutError:
            if self.resp >= SENDING:
                raise
            outcome = LOCAL_FAILURE
            # (only per_try's deadline raises it here)
            raise _Retry(504, "backend timeout (%gs)" % per_try,  # type: ignore[str-format]
                         _TIMEOUT) from None
        finally:
            if st is not None and bal.end(st, outcome, loop.time()):  # type: ignore[union-attr]
                ctx.stats.outlier_ejection(backend.name)

    def proxy_header(self) -> bytes:
        """The PROXY protocol v2 header for this request's backend connection: the
        client (as a PROXY header to kgw named it, or the socket's peer) and the address
        it connected to."""
        down = self.down
        host, _, port = down.remote.rpartition(b":")
        source = (host.strip(b"[]").decode(), int(port)) if host else None
        transport = getattr(down, "transport", None)
        if transport is None:  # (an HTTP/2 stream: its connection's)
            transport = down.conn.transport  # type: ignore[attr-defined]
        local = transport.get_extra_info("sockname") if transport is not None else None
        dest = (str(local[0]), int(local[1])) if local else None
        return encode_v2(source, dest)

    async def acquire_within(self, breaker: Breaker, backend: CompiledBackend,
                             endpoint: tuple[str, int]) -> UpstreamStream:
        """An upstream stream for a backend with a circuit breaker: a new connection only
        within max_connections, and waiting for it only within max_pending_requests."""
        pool = self.ctx.pool
        up = pool.take_idle(endpoint[0], endpoint[1], backend, self.ctx.now)
        if up is not None:
            return up
        if pool.open_to(backend.endpoints) >= breaker.limit(CONNECTIONS):
            breaker.overflows[CONNECTIONS] += 1
            self.ctx.stats.upstream_overflow(backend.name, NAMES[CONNECTIONS])
            raise _Overflow(503, "circuit breaker: %s (%d) reached" % (
                NAMES[CONNECTIONS], breaker.limit(CONNECTIONS)), _OVERFLOW, "UO")
        if not breaker.enter(PENDING):
            self.ctx.stats.upstream_overflow(backend.name, NAMES[PENDING])
            raise _Overflow(503, "circuit breaker: %s (%d) reached" % (
                NAMES[PENDING], breaker.limit(PENDING)), _OVERFLOW, "UO")
        try:
            return await pool.acquire(endpoint[0], endpoint[1], backend, self.ctx.now)
        finally:
            breaker.leave(PENDING)

    def detach(self) -> UpstreamStream | None:
        """Let go of the current upstream stream (returned, for the caller to release or
        abort). The client is read again if that stream's full buffer had stopped it:
        nothing else would resume it, and the rest of the request body, or the next
        request, would never be read."""
        up = self.upstream
        self.upstream = None
        self._request_to(DETACH)
        self.down.resume(PAUSE_UPSTREAM)
        return up

    def send(self, up: UpstreamStream, first: bool) -> None:
        """The request to ``up``: its head and the body received so far (the whole body
        kept for a retry's replay, ``retained``), and its end if it came."""
        self.upstream = up
        self.early = None
        chunks = self.retained if not first and self.retained is not None else self.body_buf
        if self.body_buf:
            self.body_buf = []
        if self.buf_size:
            self.buf_size = 0
            self.down.resume(PAUSE_BODY)
        end = self.req == RECEIVED
        self._request_to(SEND)
        up.send_request(self, self.out, chunks, end, self.trailers)  # type: ignore[arg-type]

    # -- the response, from the upstream stream -----------------------------------------
    def on_upstream_events(self, up: UpstreamStream, events: list[Event]) -> None:
        if up is not self.upstream:
            return
        if self.task is None and self.resp == AWAITING:
            # The fast path: the head is committed as it arrives.
            for i, ev in enumerate(events, 1):
                t = type(ev)
                if t is ResponseHead:
                    self.early = events[i:]
                    if self.commit(ev):  # type: ignore[arg-type]
                        self.finish()
                    return
                if t is Rejected:
                    self._fast_failed(502, ev.error.reason)  # type: ignore[union-attr]
                    return
            return
        for ev in events:
            self.on_upstream_event(up, ev)
            if up is not self.upstream:
                return

    def on_upstream_event(self, up: UpstreamStream, ev: Event) -> None:
        t = type(ev)
        resp = self.resp
        if resp == AWAITING:
            if t is ResponseHead:
                fut = self.head_fut
                if fut is not None and not fut.done():
                    fut.set_result(ev)  # type: ignore[arg-type]
                    self.early = []
                return
            if t is Rejected:
                fut = self.head_fut
                if fut is not None and not fut.done():
                    fut.set_exception(_Retry(502, ev.error.reason,  # type: ignore[union-attr]
                                             _BAD_RESPONSE))
                return
            if self.early is not None:
                self.early.append(ev)
            return
        if resp != SENDING:
            return  # (bytes past the response's end: the stream is not reused)
        if t is Body:
            data = ev.data  # type: ignore[union-attr]
            self.sent += len(data)
            self.down.send_body(data)
        elif t is EndOfMessage:
            self.down.send_end(ev.trailers)  # type: ignore[union-attr]
            self._response_to(COMPLETE)
            self._done()
        elif t is Rejected:
            # The backend broke off mid-response: the client cannot get a valid
            # response any more.
            self.close_after = True
            self.flags = "UPE"
            self.down.abort()
            self._done()
        elif t is Upgraded:
            self.start_tunnel(up, ev.data)  # type: ignore[union-attr]

    def on_upstream_lost(self, up: UpstreamStream) -> None:
        if up is not self.upstream:
            return
        resp = self.resp
        why = up.lost_reason
        if why[:11] == "RST_STREAM ":
            self.ctx.stats.http2_reset("backend", why[11:])
        if resp == AWAITING:
            detail = "upstream reset before response"
            if why:
                detail += " (" + why + ")"
            if self.task is None:
                self._fast_failed(503, detail)
                return
            fut = self.head_fut
            if fut is not None and not fut.done():
                # Envoy: "upstream connect error or disconnect/reset before headers"
                fut.set_exception(_Retry(503, detail))
        elif resp == SENDING:
            if not self.flags:
                self.flags = "UR"  # (Envoy's: upstream remote reset)
                self.detail = "upstream reset after response started" + (
                    " (" + why + ")" if why else "")
            self.close_after = True
            self.down.abort()
            self._done()

    def on_upstream_timeout(self, timeout: float) -> None:
        """The backend sent nothing for ``timeout`` seconds while this exchange waited
        for (or relayed) its response: the worker's default response timeout, checked by
        its periodic sweep (``sweep``) for rules without timeouts."""
        up = self.upstream
        if up is None or self.resp > SENDING:
            return
        detail = "no response from the backend for %gs (the default response timeout)" % timeout
        if self.resp == SENDING:
            # Mid-response: the client cannot get a complete one any more.
            self.flags = "UT"
            self.detail = detail
            up.abort()
            # The client is cut off (an HTTP/1.1 connection's abort reports the loss
            # too, later, and finds the exchange over; an HTTP/2 stream's reports none).
            self.on_upstream_lost(up)
            return
        if self.task is None:
            self.detach()
            up.abort()
            self.upstream_failed(504, detail, _TIMEOUT, "UT")
            self.finish()
            return
        fut = self.head_fut
        if fut is not None and not fut.done():
            fut.set_exception(_Retry(504, detail, _TIMEOUT))

    def on_upstream_pause(self, paused: bool) -> None:
        if paused:
            self.down.pause(PAUSE_UPSTREAM)
        else:
            self.down.resume(PAUSE_UPSTREAM)

    def _done(self) -> None:
        """The response is over (whole, or broken off)."""
        if self.task is None:
            self.finish()
            return
        fut = self.done_fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def commit(self, resp: ResponseHead) -> bool:
        """Send the response head downstream with the events that came after it; body
        events are relayed as they come. Returns True when the response is already
        complete (or broken off)."""
        head = self.head
        self._response_to(COMMIT)
        self.status = resp.status
        rule = self.rule
        if rule is not None and rule.session is not None and self.upstream_host is not None:
            self.session_field(rule.session, self.upstream_host)
        up = self.upstream
        if self.task is None and not self.resp_ops and not self.resp_extra \
                and not self.close_after and head.version == b"1.1":
            # The whole response arrived in one read and needs no change (no filter, same
            # framing, no hop-by-hop field but Connection and Keep-Alive, whose lines the
            # reader cut out): relay the bytes as they came, if the client stream can.
            # Field names keep the backend's case here, as nginx does; re-encoded heads
            # are lower-case.
            whole = up.response_as_received()  # type: ignore[union-attr]
            if whole is not None and self.down.send_raw(whole):
                self.early = None
                if resp.body == "length":
                    self.sent += resp.content_length  # type: ignore[operator]
                self._response_to(COMPLETE)
                return True
        rh = resp.headers
        out = [h for h in rh if h[0] not in HOP_BY_HOP]
        if len(out) != len(rh):
            # Rare: hop-by-hop fields (and whatever Connection names) are dropped; a 101
            # keeps Connection and Upgrade. The common response has none: one pass.
            drop = HOP_BY_HOP
            for n, _ in rh:
                if n == b"connection":
                    drop = HOP_BY_HOP | parse_connection_tokens(rh)
                    break
            if resp.status == 101:
                drop = drop - {b"connection", b"upgrade"}
            out = [h for h in rh if h[0] not in drop]
        for ops in self.resp_ops:
            out = ops.apply(out)
        if self.resp_extra:
            out.extend(self.resp_extra)
        # Body bytes (and the end) that came with the head go out with it, in one write
        # where the stream can (one syscall for a small response instead of two).
        early, self.early = self.early, None
        data = []
        end = False
        trailers = _EMPTY
        broken = False
        tunnel = None
        for ev in early or ():
            t = type(ev)
            if t is Upgraded:
                tunnel = ev.data  # type: ignore[union-attr]
            elif end:
                break  # (whatever follows the end is not this response; never relayed)
            elif t is Body:
                d = ev.data  # type: ignore[union-attr]
                self.sent += len(d)
                data.append(d)
            elif t is EndOfMessage:
                end = True
                trailers = ev.trailers  # type: ignore[union-attr]
            elif t is Rejected:
                broken = True
        if resp.body == "none":
            end = True  # (no body: the head is the whole response)
        self.resp_trailers = resp.body == "chunked"
        if self.down.send_response(resp.status, out, resp.body, data, end, trailers,
                                   self.close_after):
            self.close_after = True
        if end:
            self._response_to(COMPLETE)
            if tunnel is not None:
                self.start_tunnel(up, tunnel)  # type: ignore[arg-type]
            return True
        if broken:
            self.close_after = True
            self.flags = "UPE"
            self.down.abort()
            return True
        if self.task is not None:
            self.done_fut = self.ctx.loop.create_future()
        if self.down.write_paused and up is not None:
            up.pause_reading()
        return False

    def start_tunnel(self, up: UpstreamStream, data: bytes) -> None:
        """After 101 Switching Protocols both sides become a byte pipe; the exchange ends
        here and the tunnel lives until either side closes."""
        if self.status != 101 or not self.down.start_tunnel(up, data):
            up.abort()
            self.close_after = True
            return
        # up.owner stays this exchange: its on_upstream_pause() pauses the client's
        # reading while the backend's socket is full (backpressure in the tunnel).
        self.upstream = None
        self.tunneled = True

    def tunnel_closed(self, from_client: int, to_client: int) -> None:
        """The tunnel this exchange opened closed: its access log line, with the bytes
        each way after the heads (a tunnel's bytes are its request's and response's
        bodies) and the time from the request to the close."""
        ctx = self.ctx
        log = ctx.access_log
        if log is None:
            return
        rule = self.rule
        log.log(self.wall_start, self.head, self.status, self.received + from_client,
                self.sent + to_client, ctx.clock() - self.start_time, self.upstream_host,
                rule.name if rule is not None else None, self.request_id, self.flags,
                self.down.listener.name, self.detail, self.down.remote, self.down.listener.log)

    # -- mirrors --------------------------------------------------------------------------
    async def mirror(self, backend: CompiledBackend, out: OutRequest) -> None:
        """Send a copy of the request to ``backend`` and ignore the answer."""
        ctx = self.ctx
        endpoint = backend.pick()
        if endpoint is None:
            return
        if self.req == LOST:
            return
        if self.req < RECEIVED:
            fut = ctx.loop.create_future()
            if self.body_waiters is None:
                self.body_waiters = []
            self.body_waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                return
        if self.received and self.retained is None:
            return  # body too large to copy
        sink = _Discard(ctx.loop)
        try:
            async with asyncio.timeout(30):
                up = await ctx.pool.acquire(endpoint[0], endpoint[1], backend, ctx.now)
                up.send_request(sink, out, self.retained or [], True, self.trailers)
                ok = await sink.done
        except (TimeoutError, UpstreamError, OSError):
            ctx.stats.connect_failure(backend.name)
            return
        if ok:
            ctx.pool.release(up, ctx.now)
        else:
            up.abort()


class _Discard(UpstreamOwner):
    """Owner of a mirror's upstream stream: reads the response, keeps nothing."""

    __slots__ = ("done",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[bool] = loop.create_future()

    def on_upstream_events(self, up: UpstreamStream, events: list[Event]) -> None:
        for ev in events:
            t = type(ev)
            if t is EndOfMessage:
                if not self.done.done():
                    self.done.set_result(True)
            elif t is Rejected or t is Upgraded:
                if not self.done.done():
                    self.done.set_result(False)

    def on_upstream_lost(self, up: UpstreamStream) -> None:
        if not self.done.done():
            self.done.set_result(False)

    def on_upstream_pause(self, paused: bool) -> None:
        pass


def _without_h2c(upgrade: bytes) -> bytes:
    """An Upgrade value without h2c, which is never offered to a backend (see kgw_l7.h1);
    the other protocols are."""
    out = []
    for token in upgrade.split(b","):
        token = token.strip()
        if token and token.lower() != b"h2c":
            out.append(token)
    return b", ".join(out)


if not cython.compiled:  # (compiled: C functions on the bytes' buffers, exchange.pxd)
    def _find(raw: bytes, needle: bytes, start: int, end: int) -> int:
        """``raw.find(needle, start, end)`` (0 <= start)."""
        return raw.find(needle, start, end)

    def _starts(raw: bytes, needle: bytes, at: int) -> bool:
        """``raw.startswith(needle, at)`` (0 <= at)."""
        return raw.startswith(needle, at)

    def _cut(raw: bytes, at: int, end: int, size: int) -> bytes:
        """``raw[:at] + raw[end:size]``."""
        return raw[:at] + raw[end:size]


def _head_without(raw: bytes, head: RequestHead, remove: Any) -> bytes | None:
    """``head_as_received``'s request line and header block less the fields named in
    ``remove``; None when the head must be rebuilt.

    One pass over the fields: none that needs a rebuild; the one to remove if one is (a
    token's, the usual case), and where its line starts when every line is "Name: value"
    as clients write them (_field_cut's first guess); what the header lines take written
    so, less one byte a line at least (no space after the colon), where the search for
    the blank line can start (not through a token)."""
    headers = head.headers
    size = 0
    found = None
    count = 0
    at = 0
    for h in headers:
        n = h[0]
        if n in _REBUILD_HEAD:
            return None
        if n in remove:
            found = h
            count += 1
            at = size
        size += len(n) + len(h[1]) + 4
    size -= len(headers) + 2
    end = _find(raw, b"\r\n\r\n", size if size > 0 else 0, len(raw))
    if end < 0:
        return None
    if count == 1 and found is not None:
        # (the request line: method SP target SP HTTP/1.1 CRLF)
        block = _field_cut(raw, end + 2, found, len(head.method) + len(head.target) + 10 + at)
        if block is not None:
            return block
    block = raw[:end + 2]
    return _without_fields(block, headers, remove) if count else block


def _field_cut(raw: bytes, size: int, field: tuple[bytes, bytes], guess: int = 0
               ) -> bytes | None:
    """``raw[:size]`` (a request line and header lines, each ending CRLF, as llhttp
    accepted them) without the line of ``field``, the only field of its name; None when it
    is not in its name's usual spelling (``_without_fields`` then looks for it).

    The line starts with "CRLF Authorization:" (the name's usual spelling): no value holds
    a CR or LF (llhttp refuses them), so wherever that is found is the field's own line.
    It is looked for at ``guess`` first (where it is when every line before it is
    "Name: value", as clients write them: one comparison), else searched for (no copy of
    the head, which a token is most of); where the line ends its value says, compared in
    place (no search through the token for the CRLF). A line that is not exactly the
    field's is left to ``_without_fields``."""
    n, v = field
    if not v:
        return None
    spelled = usual_spelling(n)
    at = guess
    if at <= 0 or at >= size or not _starts(raw, spelled, at):
        at = _find(raw, spelled, 0, size)
        if at < 0:
            return None
    p = raw  # (compiled: a pointer to its bytes, read in place)
    pos = at + len(spelled)
    while pos < size:
        c = p[pos]
        if c != 32 and c != 9:  # SP, HTAB
            break
        pos += 1
    if pos + len(v) > size or not _starts(raw, v, pos):
        return None
    end = pos + len(v)
    while end < size:
        c = p[end]
        if c != 32 and c != 9:
            break
        end += 1
    if end + 2 > size or p[end] != 13 or p[end + 1] != 10:  # CRLF
        return None
    if end + 2 < size and (p[end + 2] == 32 or p[end + 2] == 9):  # obs-fold after it
        return None
    return _cut(raw, at, end, size)


def _without_fields(block: bytes, headers: tuple[tuple[bytes, bytes], ...],
                    names: Any) -> bytes | None:
    """``block`` (a request line and header lines, each ending CRLF) without the lines of
    the ``headers`` (as parsed, in the block's order) named in ``names``; None when one
    cannot be cut cleanly (an empty value, an obsolete continuation line after it): the
    head is rebuilt from the parsed fields then.

    Each line is found by the start of its value (a search in C with a short needle and
    no copy of the block, which a token is most of: a search for the whole token costs
    more than the rest of the request), then checked to be that field's whole line."""
    at = 0
    for n, v in headers:
        if n not in names:
            continue
        if not v:
            return None
        size = len(n)
        key = v[:16]
        pos = block.find(key, at)
        while True:
            if pos < 0:
                return None
            start = block.rfind(b"\r\n", at, pos)
            end = block.find(b"\r\n", pos + len(v))
            colon = start + 2 + size
            if start >= 0 and end >= 0 and block.startswith(v, pos) \
                    and block[start + 2:colon].lower() == n \
                    and block[colon:colon + 1] == b":" \
                    and not block[colon + 1:pos].strip(b" \t") \
                    and not block[pos + len(v):end].strip(b" \t"):
                break
            pos = block.find(key, pos + 1)
        if block[end + 2:end + 3] in (b" ", b"\t"):
            return None
        block = block[:start] + block[end:]
        at = start
    return block


def _header(headers: tuple[tuple[bytes, bytes], ...], name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None
