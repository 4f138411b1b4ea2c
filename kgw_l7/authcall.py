"""One call to an external authorization service (``kgw_l7.extauth`` says what is asked and
what the answer means).

The call goes over the worker's own upstream pool, like a request to any backend: HTTP/1.1
(or HTTP/2 when the service's Backend says so) for the HTTP protocol, HTTP/2 for gRPC
(``Authorization/Check`` is a unary call: one HEADERS, one DATA, trailers back). That
keeps the service's connections pooled and reused per worker, in the worker's own event
loop, with the same TLS, limits and metrics as backends, and adds no second HTTP/2 stack
(grpcio's aio runs its own completion queue beside the loop, and each call would cross
into its C core and back).
"""

from __future__ import annotations

import asyncio
from typing import Any

from kgw_l7.events import Body, EndOfMessage, Event, Rejected, ResponseHead, Upgraded
from kgw_l7.extauth import (
    GRPC_PATH, MAX_ANSWER, AuthError, Decision, Request, Settings, grpc_check, grpc_decision,
    http_check, http_decision,
)
from kgw_l7.streams import UpstreamError, UpstreamOwner, UpstreamStream, out_request


class _Answer(UpstreamOwner):
    """Owner of the call's upstream stream: keeps the answer (its body bounded)."""

    __slots__ = ("done", "head", "chunks", "size", "trailers", "error", "timed_out")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[bool] = loop.create_future()
        self.head: ResponseHead | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.trailers: tuple[tuple[bytes, bytes], ...] = ()
        self.error = ""
        self.timed_out = False

    def expire(self) -> None:
        """The call's deadline passed before its answer ended."""
        if not self.done.done():
            self.timed_out = True
            self.done.set_result(False)

    def _end(self, ok: bool, error: str = "") -> None:
        if not self.done.done():
            self.error = error
            self.done.set_result(ok)

    def on_upstream_events(self, up: UpstreamStream, events: list[Event]) -> None:
        for ev in events:
            t = type(ev)
            if t is ResponseHead:
                self.head = ev  # type: ignore[assignment]
            elif t is Body:
                data: bytes = ev.data  # type: ignore[union-attr]
                self.size += len(data)
                if self.size > MAX_ANSWER:
                    self._end(False, "answer larger than %d bytes" % MAX_ANSWER)
                else:
                    self.chunks.append(data)
            elif t is EndOfMessage:
                self.trailers = ev.trailers  # type: ignore[union-attr]
                self._end(self.head is not None, "no answer head")
            elif t is Rejected or t is Upgraded:
                self._end(False, "malformed answer")

    def on_upstream_lost(self, up: UpstreamStream) -> None:
        self._end(False, "connection lost before the answer ended")

    def on_upstream_pause(self, paused: bool) -> None:
        pass


async def check(ctx: Any, s: Settings, r: Request) -> Decision:
    """Ask the service about ``r``: its decision, or ``s.on_error`` when it gives none
    within ``s.timeout``. Cancelled (the client went away), the call is cut.

    The timeout is one timer on the answer's future (``_Answer.expire``), not an
    ``asyncio.timeout`` block: that costs a Timeout object, a task lookup and two
    reschedules per call. Only a call that must connect first awaits under a timeout."""
    try:
        return await _call(ctx, s, r, ctx.loop.time() + s.timeout)
    except TimeoutError:
        return s.on_error("%s: timeout (%gs)" % (s.name, s.timeout))
    except (AuthError, UpstreamError, OSError) as exc:
        return s.on_error("%s: %s" % (s.name, str(exc) or type(exc).__name__))


async def _call(ctx: Any, s: Settings, r: Request, deadline: float) -> Decision:
    backend = s.backend
    endpoint = backend.pick()
    if endpoint is None:
        raise AuthError("no ready endpoint")
    if s.grpc:
        message = grpc_check(s, r)
        headers = [(b"host", r.authority or b"authz"), (b"content-type", b"application/grpc"),
                   (b"te", b"trailers"), (b"content-length", b"%d" % len(message))]
        out = out_request(b"POST", GRPC_PATH, headers, None, "length")
        body = message
    else:
        method, target, headers = http_check(s, r)
        out = out_request(method, target, headers, None, "length")
        body = r.body
    loop = ctx.loop
    up = ctx.pool.take_idle(endpoint[0], endpoint[1], backend, ctx.now)
    if up is None:
        async with asyncio.timeout_at(deadline):
            up = await ctx.pool.acquire(endpoint[0], endpoint[1], backend, ctx.now)
    answer = _Answer(loop)
    timer = loop.call_at(deadline, answer.expire)
    ok = False
    try:
        up.send_request(answer, out, [body] if body else [], True, ())
        ok = await answer.done
    finally:
        timer.cancel()
        if ok:
            ctx.pool.release(up, ctx.now)
        else:
            up.abort()  # (also when cancelled or timed out: the call is over)
    head = answer.head
    if answer.timed_out:
        raise TimeoutError
    if not ok or head is None:
        raise AuthError(answer.error)
    data = b"".join(answer.chunks)
    if s.grpc:
        return grpc_decision(s, head.status, head.headers, data, answer.trailers)
    return http_decision(s, head.status, head.headers, data)
