"""One request and its response: routing, filters, tries against backends, relay.

An ``Exchange`` is created by ``DownstreamConn`` (``kgw_l7.proxy``) for each request
head. Body bytes never go through a coroutine: request body chunks are written straight
to the upstream transport and response body chunks straight to the client transport,
with reading paused on one side while the other side's writes are paused.

Error mapping (Gateway API conformance, Envoy behaviour): no route 404; a rule without
usable backends 500 (``Rule.direct_status``/``Backend.error_status``); a backend without
ready endpoints 503; a backend that cannot be connected to or answers garbage 502; a
connection reset before the response head 503 (as Envoy, and as the retry conformance
test expects); a timeout 504; a Host that belongs to another certificate than the
connection's SNI 421. Error bodies are generic: what failed in detail (the backend's
address, the system error) goes to the log and the access log's response_code_details,
never to the client.

Load balancing: the backend is chosen once per request (``CompiledRule.pick_backend``),
the endpoint once per try; a retry prefers an endpoint the request has not tried yet.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from typing import Any

from kgw_l7.context import WorkerContext
from kgw_l7.events import Body, EndOfMessage, Event, Rejected, RequestHead, ResponseHead, Upgraded
from kgw_l7.h1 import (
    HOP_BY_HOP, encode_chunk, encode_last_chunk, encode_request_head, encode_response_head,
    parse_connection_tokens, simple_response,
)
from kgw_l7.router import CompiledBackend, CompiledRoute, CompiledRule, split_target
from kgw_l7.streams import DownstreamStream
from kgw_l7.upstream import UpstreamConn, UpstreamError

try:
    import cython
except ImportError:
    from kgw_l7 import _cython as cython

if not cython.compiled:  # (compiled: C constants, cimported in exchange.pxd)
    from kgw_l7.streams import PAUSE_BODY, PAUSE_UPSTREAM

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


#: Client bodies of upstream failures, by UpstreamError.kind and status.
_CONNECT_ERROR = b"upstream connect error\n"
_CONNECT_TIMEOUT = b"upstream connect timeout\n"
_OVERFLOW = b"upstream overflow\n"
_BAD_RESPONSE = b"invalid upstream response\n"
_TIMEOUT = b"upstream request timeout\n"


def _upstream_error(exc: UpstreamError) -> _Retry:
    if exc.kind != "connect":
        return _Retry(exc.status, str(exc), _OVERFLOW, "UO")
    return _Retry(exc.status, str(exc), _CONNECT_TIMEOUT if exc.status == 504 else _CONNECT_ERROR)


class Exchange:
    """One request and its response.

    Lifecycle (each step only moves forward):

    1. created when the request head is parsed; request body events may already
       arrive (``body_buf``, or straight to the upstream once ``streaming``);
    2. ``start()``: routed; answered locally (``respond``) or sent to a backend on the
       fast path (``fast``) or in a task (``run`` -> ``forward`` -> ``tries``);
    3. ``committed``: the response head went to the client (no retry after this);
    4. ``finish()``: counted and logged, upstream pooled or closed, then
       ``DownstreamConn.exchange_done`` once the request body has been fully read
       (``released``), which starts the next pipelined request or closes.
    """

    __slots__ = ("conn", "head", "ctx", "start_time", "wall_start", "body_buf", "buf_size",
                 "retained", "received", "request_done", "trailers", "upstream",
                 "streaming", "chunked_up", "head_fut", "done_fut", "early", "committed",
                 "down_chunked", "close_after", "status", "sent", "rule", "backend_name",
                 "upstream_host", "flags", "resp_extra", "resp_ops", "task", "client_lost",
                 "request_id", "body_waiters", "resp_body", "finished", "up_done", "released", "fast",
                 "detail")

    def __init__(self, ctx: WorkerContext, conn: DownstreamStream, head: RequestHead) -> None:
        # (The fields are read back below rather than the arguments: compiled, the
        # fields are typed and the arguments are not.)
        self.conn = conn
        self.head = head
        self.ctx = ctx
        self.start_time = 0.0
        self.wall_start = 0.0
        self.body_buf: list[bytes] = []
        self.buf_size = 0
        self.retained: list[bytes] | None = None
        self.received = 0
        self.request_done = self.head.body == "none"
        self.trailers: tuple[tuple[bytes, bytes], ...] = ()
        self.upstream: UpstreamConn | None = None
        self.streaming = False
        self.chunked_up = self.head.body == "chunked"
        self.head_fut: asyncio.Future[ResponseHead] | None = None
        self.done_fut: asyncio.Future[None] | None = None
        self.early: list[Event] | None = None
        self.committed = False
        self.down_chunked = False
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
        self.task: asyncio.Task[None] | None = None
        self.client_lost = False
        self.request_id = b""
        self.body_waiters: list[asyncio.Future[None]] | None = None
        self.resp_body = "none"
        #: The response is complete; request body bytes still arriving are discarded.
        self.finished = False
        #: The current upstream connection delivered a complete response.
        self.up_done = False
        #: exchange_done() ran for this exchange.
        self.released = False
        #: (rule, backend, request head) while served on the synchronous fast path.
        self.fast: tuple[CompiledRule, CompiledBackend, bytes] | None = None
        #: Why the response is an error, when the client was told less (access log).
        self.detail: str | None = None

    # -- request body, called by DownstreamConn -----------------------------------------
    def on_request_body(self, data: bytes) -> None:
        n = len(data)
        self.received += n
        retained = self.retained
        if retained is not None:
            if self.received > RETAIN_LIMIT:
                self.retained = None
            else:
                retained.append(data)
        if self.streaming:
            up = self.upstream
            if up is not None and up.transport is not None:
                up.transport.write(encode_chunk(data) if self.chunked_up else data)
            return
        if self.finished:
            return  # response finished, the rest of the body is discarded
        self.body_buf.append(data)
        self.buf_size += n
        if self.buf_size > BODY_HIGH_WATER:
            self.conn.pause(PAUSE_BODY)

    def on_request_end(self, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.request_done = True
        self.trailers = trailers
        if self.streaming and self.chunked_up:
            up = self.upstream
            if up is not None and up.transport is not None:
                up.transport.write(encode_last_chunk(trailers))
        waiters, self.body_waiters = self.body_waiters, None
        if waiters:
            for w in waiters:
                if not w.done():
                    w.set_result(None)
        if self.finished:
            # The response went out before the body was read to its end.
            self.conn.exchange_done(self)

    def on_client_lost(self) -> None:
        self.client_lost = True
        self.close_after = True
        up = self.upstream
        if up is not None:
            up.abort()
        if self.task is not None and not self.task.done() and not self.committed:
            self.task.cancel()
        elif self.done_fut is not None and not self.done_fut.done():
            self.done_fut.set_result(None)
        waiters, self.body_waiters = self.body_waiters, None
        for w in waiters or ():
            if not w.done():
                w.cancel()
        if self.fast is not None and self.start_time:
            self.finish()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Route the request and serve it.

        Local answers (404, redirects, CORS preflights, direct statuses) complete right
        here. A forwarded request takes the *fast path* when its rule has no timeouts and
        no retries and a pooled connection to the chosen endpoint is idle: it is written
        at once and the response is relayed from the upstream protocol's callbacks, with
        no task and no future. Everything else runs in a task (``run``).
        """
        ctx = self.ctx
        self.start_time = ctx.clock()
        if ctx.access_log is not None:
            self.wall_start = time.time()
        endpoint = None
        try:
            plan = self.route()
            if plan is None:
                self.finish()
                return
            rule, backend, request_head = plan
            if rule.no_deadline and not self.head.upgrade:
                endpoint = backend.pick()
                if endpoint is None:
                    self.respond(503, b"no healthy upstream\n")
                    self.finish()
                    return
                up = ctx.pool.take_idle(endpoint[0], endpoint[1], backend.tls, ctx.now)
                if up is not None:
                    self.fast = plan
                    self.upstream_host = endpoint
                    self.send(up, request_head, True)
                    return
        except Exception:
            log.exception("request failed")
            if not self.committed:
                self.respond(500, b"internal error\n")
            self.close_after = True
            self.finish()
            return
        # The endpoint picked above (if any) is the first try's: picking again would
        # skew the round robin for every request that misses the pool.
        self.task = ctx.loop.create_task(self.run(rule, backend, request_head, endpoint))

    async def run(self, rule: CompiledRule, backend: CompiledBackend,
                  request_head: bytes, endpoint: tuple[str, int] | None = None) -> None:
        try:
            await self.forward(rule, backend, request_head, endpoint)
        except asyncio.CancelledError:
            if not self.client_lost:
                raise
        except Exception:
            log.exception("request failed")
            if not self.committed:
                self.respond(500, b"internal error\n")
            else:
                self.close_after = True
        finally:
            self.finish()

    def _fast_failed(self, status: int, reason: str) -> None:
        """The fast path's connection failed before a response started."""
        up = self.detach()
        plan, self.fast = self.fast, None
        if up is not None:
            up.abort()
        assert plan is not None
        if up is not None and up.reused and not self.received and self.request_done \
                and not self.client_lost:
            # A pooled connection the backend had already closed: the request never
            # reached it. Go through the regular path (fresh connection, same endpoint).
            self.task = self.ctx.loop.create_task(self.run(*plan, self.upstream_host))
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
        if self.finished:
            return
        self.finished = True
        ctx = self.ctx
        up = self.detach()
        if up is not None:
            if self.client_lost or not self.request_done or not self.up_done:
                up.abort()
            else:
                ctx.pool.release(up, ctx.now)
        if self.resp_body == "close" and not self.down_chunked:
            self.close_after = True
        if self.head.upgrade and self.conn.tunnel is None:
            self.close_after = True  # the request reader stopped at the Upgrade
        duration = ctx.clock() - self.start_time
        rule = self.rule
        status = self.status or (499 if self.client_lost else 0)
        if self.client_lost and not self.flags:
            self.flags = "DC"  # (Envoy's flag: the client connection went away)
        listener = self.conn.listener
        if rule is not None:
            ctx.stats.request(listener.name, rule.gateway, rule.route, self.backend_name,
                              status, duration)
        else:
            ctx.stats.request(listener.name, listener.gateway, "", "", status, duration)
        if ctx.access_log is not None:
            head = self.head
            xff = ua = None
            for n, v in head.headers:
                if n == b"user-agent":
                    ua = v
                elif n == b"x-forwarded-for":
                    xff = v
            ctx.access_log.log(
                self.wall_start, head.method, head.target, head.version, status,
                self.received, self.sent, duration,
                "%s:%d" % self.upstream_host if self.upstream_host else None, head.authority,
                rule.name if rule is not None else None, self.request_id, xff, ua,
                self.flags, listener.name, self.detail)
        if not self.request_done and not self.client_lost and not self.close_after:
            # Wait for the rest of the request body (discarded), then move on.
            self.conn.resume(PAUSE_BODY)
            self.body_buf = []
            return
        self.conn.exchange_done(self)

    # -- local responses ----------------------------------------------------------------
    def respond(self, status: int, body: bytes = b"",
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.committed = True
        if not self.request_done and self.received + self.buf_size > BODY_HIGH_WATER:
            self.close_after = True  # don't read a large unwanted body
        data = simple_response(status, body, close=self.close_after or self.conn.closing,
                               extra=extra or ())
        if body and self.head.method == b"HEAD":
            data = data[:-len(body)]  # same headers, no body
        else:
            self.sent += len(body)
        self.conn.write(data)

    # -- the request --------------------------------------------------------------------
    def route(self) -> tuple[CompiledRule, CompiledBackend, bytes] | None:
        """Pick the route and apply everything that can answer locally; returns what to
        forward (rule, backend, encoded request head), or None when answered."""
        conn = self.conn
        head = self.head
        listener = conn.listener
        router = listener.router
        if listener.certs is not None and listener.certs.misdirected(conn.ssl_context,
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
        redirect = filters.redirect
        if redirect is not None:
            loc = redirect.location(listener.scheme, head.host, listener.port, path, query,
                                    route.matched_prefix)
            self.respond(redirect.status, b"", [(b"location", loc)])
            return None
        if rule.direct_status is not None:
            self.respond(rule.direct_status, b"")
            return None
        backend = rule.pick_backend()
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
        return rule, backend, self.prepare(route, rule, backend, path, query)

    def upstream_headers(self, route: CompiledRoute, rule: CompiledRule,
                         backend: CompiledBackend) -> list[tuple[bytes, bytes]]:
        head = self.head
        conn = self.conn
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
                continue  # hop-by-hop, framing (rebuilt below), x-forwarded-proto
            out.append(h)
        if listed:  # headers named in Connection are hop-by-hop too
            tokens = parse_connection_tokens(head.headers)
            out = [h for h in out if h[0] not in tokens]
        if rid is None:
            rid = _REQUEST_IDS.next()
            out.append((b"x-request-id", rid))
        self.request_id = rid
        out.append((b"x-forwarded-for", xff + b", " + conn.peer if xff else conn.peer))
        out.append((b"x-forwarded-proto", conn.listener.scheme))
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

    def head_as_received(self, suffix: bytes) -> bytes | None:
        """The client's own request line and header block plus the proxy's lines
        (X-Request-Id, X-Forwarded-For/-Proto, then ``suffix``), when nothing in it needs
        rebuilding: same fields as upstream_headers() would send, in the client's order and
        case (as nginx forwards them). None when the head must be rebuilt."""
        head = self.head
        raw = head.raw
        if raw is None or head.version != b"1.1" or not head.authority \
                or not raw.startswith(head.method):  # (llhttp skips empty lines before it)
            return None
        for h in head.headers:
            if h[0] in _REBUILD_HEAD:
                return None
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            return None
        self.request_id = rid = _REQUEST_IDS.next()
        return b"".join((raw[:end + 2], b"x-request-id: ", rid, self.conn.forwarded, suffix,
                         b"\r\n"))

    def prepare(self, route: CompiledRoute, rule: CompiledRule, backend: CompiledBackend,
                path: bytes, query: bytes) -> bytes:
        """The upstream request head; starts mirrors and sends 100 Continue."""
        head = self.head
        ctx = self.ctx
        filters = rule.filters
        target = head.target
        bf = backend.filters
        rewrite = filters.rewrite_path
        if bf is not None and bf.rewrite_path is not None:
            rewrite = bf.rewrite_path  # the BackendRef's own rewrite is the more specific
        same_target = False
        if rewrite is not None:
            new_path = rewrite.apply(path, route.matched_prefix)
            target = new_path + b"?" + query if query else new_path
        elif target[:1] != b"/" and target != b"*":
            target = path + b"?" + query if query else path  # absolute-form -> origin-form
        else:
            same_target = True
        suffix = rule.head_suffix_for.get(backend) if same_target else None
        request_head = self.head_as_received(suffix) if suffix is not None else None
        if request_head is None:
            headers = self.upstream_headers(route, rule, backend)
            request_head = encode_request_head(head.method, target, headers)
        self.resp_ops = rule.resp_ops_for.get(backend, _EMPTY)
        if rule.needs_body_copy and self.received <= RETAIN_LIMIT:
            self.retained = list(self.body_buf)  # nothing was sent yet: this is all of it
        mirrors = filters.mirrors
        if bf is not None and bf.mirrors:
            mirrors = mirrors + bf.mirrors
        if mirrors:
            for mb, percent in mirrors:
                if percent >= 100 or random.random() * 100 < percent:
                    ctx.spawn(self.mirror(mb, request_head))
        if head.expect_continue and self.received == 0 and not self.request_done:
            self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return request_head

    async def forward(self, rule: CompiledRule, backend: CompiledBackend,
                      request_head: bytes, endpoint: tuple[str, int] | None) -> None:
        deadline = None
        if rule.request_timeout:
            deadline = self.start_time + rule.request_timeout
        try:
            async with asyncio.timeout_at(deadline) if deadline else _NO_TIMEOUT:
                await self.tries(rule, backend, request_head, endpoint)
        except TimeoutError:
            self.flags = self.flags or "UT"
            if not self.committed:
                self.detail = "request timeout (%gs)" % rule.request_timeout
                self.respond(504, _TIMEOUT)
            else:
                self.close_after = True
                self.conn.abort()

    async def tries(self, rule: CompiledRule, backend: CompiledBackend,
                    request_head: bytes, endpoint: tuple[str, int] | None) -> None:
        """Up to 1 + retry attempts tries, each on one endpoint (``endpoint`` for the
        first when the caller picked it already)."""
        attempts = 1 + rule.retry_attempts
        # Without a retry policy, one extra try is allowed when a pooled keep-alive
        # connection turns out to be closed by the backend before answering (the
        # request never reached it). With a policy, every try counts.
        stale_retry_left = 0 if rule.retry_attempts else 1
        attempt = 0
        last: _Retry | None = None
        tried: list[tuple[str, int]] = []
        while attempt < attempts:
            if attempt > 0:
                if self.received and (self.retained is None or self.client_lost):
                    break  # the body cannot be replayed
                if rule.retry_backoff:
                    await asyncio.sleep(rule.retry_backoff)
            if endpoint is None:
                endpoint = backend.pick_untried(tried) if tried else backend.pick()
            if endpoint is None:
                self.respond(503, b"no healthy upstream\n")
                return
            try:
                await self.one_try(rule, backend, endpoint, request_head, first=attempt == 0)
            except _Retry as exc:
                last = exc
                up = self.detach()
                if up is not None:
                    stale = up.reused and not self.received and self.request_done \
                            and exc.status == 503 and not up.reader.got_head
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
            return
        assert last is not None
        self.upstream_failed(last.status, str(last), last.body, last.flags)

    async def one_try(self, rule: CompiledRule, backend: CompiledBackend,
                      endpoint: tuple[str, int], request_head: bytes, first: bool) -> None:
        ctx = self.ctx
        loop = ctx.loop
        per_try = rule.backend_timeout
        deadline = loop.time() + per_try if per_try else None
        self.upstream_host = endpoint
        try:
            async with asyncio.timeout_at(deadline) if deadline else _NO_TIMEOUT:
                try:
                    up = await ctx.pool.acquire(endpoint[0], endpoint[1], backend.tls, ctx.now)
                except UpstreamError as exc:
                    if exc.kind == "connect":
                        ctx.stats.connect_failure(backend.name)
                    else:
                        ctx.stats.upstream_overflow(backend.name, exc.kind)
                        if exc.kind == "descriptors":
                            ctx.out_of_descriptors()
                    raise _upstream_error(exc) from None
                if self.client_lost:
                    up.abort()
                    raise asyncio.CancelledError()
                fut = self.head_fut = loop.create_future()
                self.send(up, request_head, first)
                resp = await fut
                if resp.status in rule.retry_codes:
                    raise _Retry(resp.status, "retriable status %d" % resp.status)
                self.commit(resp)
                if self.done_fut is not None:
                    await self.done_fut
        except TimeoutError:
            if self.committed:
                raise
            raise _Retry(504, "backend timeout (%gs)" % per_try, _TIMEOUT) from None

    def detach(self) -> UpstreamConn | None:
        """Let go of the current upstream connection (returned, for the caller to pool or
        abort). The client connection is read again if that connection's full buffer had
        stopped it: nothing else would resume it, and the rest of the request body, or
        the next request, would never be read."""
        up = self.upstream
        self.upstream = None
        self.streaming = False
        self.conn.resume(PAUSE_UPSTREAM)
        return up

    def send(self, up: UpstreamConn, request_head: bytes, first: bool) -> None:
        """Write the request head and the body received so far, in one write."""
        self.upstream = up
        self.up_done = False
        up.owner = self
        up.reader.expect(self.head.method == b"HEAD")
        self.early = None
        t = up.transport
        assert t is not None
        parts = [request_head]
        chunks = self.retained if not first and self.retained is not None else self.body_buf
        if chunks:
            if self.chunked_up:
                parts.extend([encode_chunk(c) for c in chunks])
            else:
                parts.extend(chunks)
        self.body_buf = []
        if self.buf_size:
            self.buf_size = 0
            self.conn.resume(PAUSE_BODY)
        if self.request_done:
            if self.chunked_up:
                parts.append(encode_last_chunk(self.trailers))
        else:
            self.streaming = True
        t.write(b"".join(parts) if len(parts) > 1 else request_head)

    # -- response, driven by UpstreamConn ------------------------------------------------
    def on_upstream_events(self, up: UpstreamConn, events: list[Event]) -> None:
        if up is not self.upstream:
            return
        if self.fast is not None and not self.committed:
            i = 0
            for ev in events:
                i += 1
                t = type(ev)
                if t is ResponseHead:
                    early = self.early = events[i:]
                    for e in early:
                        if type(e) is EndOfMessage:
                            self.up_done = True
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

    def on_upstream_event(self, up: UpstreamConn, ev: Event) -> None:
        if up is not self.upstream:
            return
        t = type(ev)
        if not self.committed:
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
                if t is EndOfMessage:
                    self.up_done = True
            return
        if t is Body:
            data = ev.data  # type: ignore[union-attr]
            self.sent += len(data)
            self.conn.write(encode_chunk(data) if self.down_chunked else data)
        elif t is EndOfMessage:
            self.up_done = True
            if self.down_chunked:
                self.conn.write(encode_last_chunk(ev.trailers))  # type: ignore[union-attr]
            self._done()
        elif t is Rejected:
            # The backend broke off mid-response: the client cannot get a valid
            # response any more; close its connection.
            self.close_after = True
            self.flags = "UPE"
            self.conn.abort()
            self._done()
        elif t is Upgraded:
            self.start_tunnel(up, ev.data)  # type: ignore[union-attr]

    def on_upstream_lost(self, up: UpstreamConn) -> None:
        if up is not self.upstream:
            return
        if self.fast is not None and not self.committed:
            self._fast_failed(503, "upstream reset before response")
            return
        if not self.committed:
            fut = self.head_fut
            if fut is not None and not fut.done():
                # Envoy: "upstream connect error or disconnect/reset before headers"
                fut.set_exception(_Retry(503, "upstream reset before response"))
        elif not self.finished and (self.fast is not None or self.done_fut is not None):
            if up.tunnel is None:
                self.close_after = True
                self.conn.abort()
            self._done()

    def on_upstream_timeout(self, timeout: float) -> None:
        """The backend sent nothing for ``timeout`` seconds while this exchange waited
        for (or relayed) its response: the worker's default response timeout, checked by
        its periodic sweep (``DownstreamConn.sweep``) for rules without timeouts."""
        up = self.upstream
        if up is None or self.finished:
            return
        detail = "no response from the backend for %gs (the default response timeout)" % timeout
        if self.committed:
            # Mid-response: the client cannot get a complete one any more.
            self.flags = "UT"
            self.detail = detail
            up.abort()  # -> on_upstream_lost: the client connection is cut
            return
        if self.fast is not None:
            self.detach()
            self.fast = None
            up.abort()
            self.upstream_failed(504, detail, _TIMEOUT, "UT")
            self.finish()
            return
        fut = self.head_fut
        if fut is not None and not fut.done():
            fut.set_exception(_Retry(504, detail, _TIMEOUT))

    def on_upstream_pause(self, paused: bool) -> None:
        if paused:
            self.conn.pause(PAUSE_UPSTREAM)
        else:
            self.conn.resume(PAUSE_UPSTREAM)

    def _done(self) -> None:
        if self.fast is not None:
            self.finish()
            return
        fut = self.done_fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def commit(self, resp: ResponseHead) -> bool:
        """Send the response head downstream; body events are written as they come.
        Returns True when the response is already complete (or broken off)."""
        head = self.head
        self.committed = True
        self.status = resp.status
        up = self.upstream
        if self.fast is not None and up is not None and up.reader.whole is not None \
                and not self.resp_ops and not self.resp_extra and not self.close_after \
                and not self.conn.closing and head.version == b"1.1":
            # The whole response arrived in one read and needs no change (no filter, same
            # framing, no hop-by-hop field but Connection and Keep-Alive, whose lines the
            # reader cut out): relay the bytes as they came. Field names keep the
            # backend's case here, as nginx does; re-encoded heads are lower-case.
            self.resp_body = resp.body
            self.early = None
            if resp.body == "length":
                self.sent += resp.content_length  # type: ignore[operator]
            self.conn.write(up.reader.whole)
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
        body = resp.body
        self.resp_body = body
        if body == "chunked" or body == "close":
            if head.version == b"1.1":
                self.down_chunked = True
                out.append((b"transfer-encoding", b"chunked"))
            else:
                self.close_after = True
        if resp.status == 101:
            pass
        elif self.close_after or self.conn.closing:
            self.close_after = True
            out.append((b"connection", b"close"))
        elif head.version == b"1.0":
            out.append((b"connection", b"keep-alive"))
        parts = [encode_response_head(resp.status, out)]
        early, self.early = self.early, None
        if body == "none":
            # No body: the EndOfMessage event is already in ``early``.
            self.conn.write(parts[0])
            for ev in early or ():
                if type(ev) is Upgraded:
                    self.start_tunnel(self.upstream, ev.data)  # type: ignore[arg-type,union-attr]
            return True
        # Body bytes that came with the head go out in the same write (one syscall for a
        # small response instead of two).
        complete = False
        chunked = self.down_chunked
        for ev in early or ():
            t = type(ev)
            if t is Body:
                data = ev.data  # type: ignore[union-attr]
                self.sent += len(data)
                parts.append(encode_chunk(data) if chunked else data)
            elif t is EndOfMessage:
                if chunked:
                    parts.append(encode_last_chunk(ev.trailers))  # type: ignore[union-attr]
                complete = True
            elif t is Rejected:
                self.close_after = True
                self.flags = "UPE"
        self.conn.write(b"".join(parts) if len(parts) > 1 else parts[0])
        if complete:
            return True
        if self.flags == "UPE":
            self.conn.abort()
            return True
        if self.fast is None:
            self.done_fut = self.ctx.loop.create_future()
        up = self.upstream
        if self.conn.write_paused and up is not None:
            up.pause_reading()
        return False

    def start_tunnel(self, up: UpstreamConn, data: bytes) -> None:
        """After 101 Switching Protocols both connections become a byte pipe."""
        if self.status != 101 or not self.conn.start_tunnel(up, data):
            up.abort()
            self.close_after = True
            return
        # up.owner stays this exchange: its on_upstream_pause() pauses the client's
        # reading while the backend's socket is full (backpressure in the tunnel).
        self.upstream = None
        self.request_done = True
        # The exchange ends here; the tunnel lives until either side closes.

    # -- mirrors --------------------------------------------------------------------------
    async def mirror(self, backend: CompiledBackend, request_head: bytes) -> None:
        """Send a copy of the request to ``backend`` and ignore the answer."""
        ctx = self.ctx
        endpoint = backend.pick()
        if endpoint is None:
            return
        if not self.request_done:
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
                up = await ctx.pool.acquire(endpoint[0], endpoint[1], backend.tls, ctx.now)
                up.owner = sink
                up.reader.expect(self.head.method == b"HEAD")
                assert up.transport is not None
                up.transport.write(request_head)
                chunks = self.retained or ()
                if self.chunked_up:
                    up.transport.write(b"".join([encode_chunk(c) for c in chunks])
                                       + encode_last_chunk(self.trailers))
                elif chunks:
                    up.transport.write(b"".join(chunks))
                ok = await sink.done
        except (TimeoutError, UpstreamError, OSError):
            ctx.stats.connect_failure(backend.name)
            return
        if ok:
            ctx.pool.release(up, ctx.now)
        else:
            up.abort()


class _Discard:
    """Owner of a mirror's upstream connection: reads the response, keeps nothing."""

    __slots__ = ("done",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[bool] = loop.create_future()

    def on_upstream_events(self, conn: UpstreamConn, events: list[Event]) -> None:
        for ev in events:
            t = type(ev)
            if t is EndOfMessage:
                if not self.done.done():
                    self.done.set_result(True)
            elif t is Rejected or t is Upgraded:
                if not self.done.done():
                    self.done.set_result(False)

    def on_upstream_lost(self, conn: UpstreamConn) -> None:
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


def _header(headers: tuple[tuple[bytes, bytes], ...], name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None
