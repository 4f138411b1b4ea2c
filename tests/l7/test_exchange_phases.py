"""The exchange's lifecycle (kgw_l7.exchange): two phases changed only through their
tables, and an exchange served through any client stream (kgw_l7.streams), not only
HTTP/1.1's -- driven here without sockets, through a stream that records what the
exchange asks of it, as an HTTP/2 stream would be asked."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest

import kgw_l7
from kgw_l7.config import (Backend, Endpoint, Filters, L7Config, Listener, Mirror, PathMatch,
                           Route, RouteMatch, Rule, VirtualHost)
from kgw_l7.context import ListenerState, WorkerContext
from kgw_l7.events import request_head
from kgw_l7.exchange import (REQUEST_TRANSITIONS, RESPONSE_TRANSITIONS, Exchange, PhaseError,
                             RequestEvent, RequestPhase, ResponseEvent, ResponsePhase)
from kgw_l7.streams import PAUSE_UPSTREAM, DownstreamStream
from tests.helpers import ROOT

from .test_flow_control import BACKEND, PLAIN, Transport, client_of, ctx, pooled_backend  # noqa: F401

Req, Resp = RequestPhase, ResponsePhase


# -- the tables ---------------------------------------------------------------------------

@pytest.mark.parametrize("table,phases,events", [
    (REQUEST_TRANSITIONS, RequestPhase, RequestEvent),
    (RESPONSE_TRANSITIONS, ResponsePhase, ResponseEvent),
], ids=["request", "response"])
def test_each_table_has_a_row_per_phase_and_only_known_events(table, phases, events):
    assert set(table) == set(phases)
    for row in table.values():
        assert set(row) <= set(events)
        assert set(row.values()) <= set(phases)


def reachable(table: dict[int, dict[int, int]], start: int) -> set[int]:
    seen, todo = {start}, [start]
    while todo:
        for after in table[todo.pop()].values():
            if after not in seen:
                seen.add(after)
                todo.append(after)
    return seen


def test_every_phase_leads_to_the_end():
    """A request is always read to its end or given up; a response always gets back to
    the client side; the response side never moves back."""
    for phase in RequestPhase:
        assert Req.LOST in reachable(REQUEST_TRANSITIONS, phase)
        if phase != Req.LOST:
            assert Req.RECEIVED in reachable(REQUEST_TRANSITIONS, phase)
    for phase in ResponsePhase:
        assert Resp.RELEASED in reachable(RESPONSE_TRANSITIONS, phase)
        assert all(after >= phase for after in RESPONSE_TRANSITIONS[phase].values())
    assert RESPONSE_TRANSITIONS[Resp.RELEASED] == {}


def test_the_compiled_enums_are_the_sources():
    """exchange.pxd declares the phases and events again (C constants): the same names
    and values as exchange.py's, or the compiled and interpreted proxies differ."""
    if not kgw_l7.build_is_fresh():
        pytest.skip("no fresh compiled build (scripts/build_ext.py)")
    code = ("import json, kgw_l7.exchange as x; print(json.dumps([[(m.name, int(m)) for m in e]"
            " for e in (x.RequestPhase, x.RequestEvent, x.ResponsePhase, x.ResponseEvent)]))")
    seen = []
    for flag in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, text=True,
                             capture_output=True, env={**os.environ, "KGW_NO_EXTENSIONS": flag})
        seen.append(json.loads(out.stdout))
    assert seen[0] == seen[1]


# -- an exchange through a client stream that is not HTTP/1.1 ------------------------------

class Stream(DownstreamStream):
    """A client stream that cannot carry HTTP/1.1 bytes (as an HTTP/2 stream): it records
    what the exchange asks of it."""

    def __init__(self, listener: ListenerState) -> None:
        self.listener = listener
        self.peer = b"192.0.2.7"
        self.ssl_context = None
        self.forwarded = b"\r\nx-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\n"
        self.closing = False
        self.write_paused = False
        self.sent: list[tuple[Any, ...]] = []
        self.paused: set[int] = set()
        self.done: list[Exchange] = []

    def send_response(self, status, headers, body, data, end, trailers, close):
        self.sent.append(("response", status, list(headers), body, list(data), end))
        return False

    def send_raw(self, data):
        return False

    def send_body(self, data):
        self.sent.append(("body", data))

    def send_end(self, trailers):
        self.sent.append(("end", trailers))

    def send_continue(self):
        self.sent.append(("continue",))

    def pause(self, reason):
        self.paused.add(reason)

    def resume(self, reason):
        self.paused.discard(reason)

    def abort(self):
        self.sent.append(("abort",))

    def exchange_done(self, ex):
        self.done.append(ex)

    def start_tunnel(self, up, data):
        return False


def listener_for(ctx: WorkerContext, rule: Rule | None = None) -> ListenerState:
    rule = rule or Rule("t/r/0", "t/r", "t/gw",
                        backends=(Backend("t/b:80", endpoints=(Endpoint(*BACKEND),)),))
    config = L7Config((Listener("l", "127.0.0.1", 8080, virtual_hosts=(
        VirtualHost("*", (Route(RouteMatch(path=PathMatch("PathPrefix", "/")), rule),)),)),), 1)
    return ListenerState("l", config.listeners[0], ctx.cache.build(config)["l"], None)


def head(method: bytes = b"GET", body: str = "none", length: int | None = None,
         headers: tuple[tuple[bytes, bytes], ...] = ()) -> Any:
    """A request head as an HTTP/2 stream would make it: no bytes as received."""
    return request_head(method, b"/x", b"2", ((b"host", b"a"),) + headers, b"a", b"a", True,
                        body, length, False, False, None)


def test_an_exchange_is_served_through_a_stream_that_is_not_http11(ctx):
    stream = Stream(listener_for(ctx))
    up, backend = pooled_backend(ctx)
    ex = Exchange(ctx, stream, head())
    assert (ex.req, ex.resp) == (Req.RECEIVED, Resp.QUEUED)
    ex.start()
    assert (ex.req, ex.resp) == (Req.RECEIVED, Resp.AWAITING) and ex.task is None
    sent = backend.out[-1]
    assert sent.startswith(b"GET /x HTTP/1.1\r\n") and b"x-forwarded-for: 192.0.2.7\r\n" in sent
    up.data_received(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nX-A: 1\r\n"
                     b"Content-Length: 2\r\n\r\nok")
    # The end-to-end fields only (the backend's connection fields are not the client's).
    assert stream.sent == [("response", 200, [(b"x-a", b"1"), (b"content-length", b"2")],
                            "length", [b"ok"], True)]
    assert stream.done == [ex] and (ex.req, ex.resp) == (Req.RECEIVED, Resp.RELEASED)
    assert ctx.pool.take_idle(*BACKEND, PLAIN, ctx.now) is up  # the backend stream is reused


def test_a_request_body_of_unknown_length_streams_with_backpressure(ctx):
    stream = Stream(listener_for(ctx))
    up, backend = pooled_backend(ctx, high=300)
    ex = Exchange(ctx, stream, head(b"POST", "chunked"))
    ex.on_request_body(b"abc")  # before it is routed: kept
    assert ex.req == Req.BUFFERING
    ex.start()
    assert ex.req == Req.STREAMING and not stream.paused
    assert backend.out[-1].endswith(b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
    ex.on_request_body(b"x" * 400)  # more than the backend takes: -> pause_writing
    assert backend.out[-1] == b"190\r\n" + b"x" * 400 + b"\r\n"
    assert stream.paused == {PAUSE_UPSTREAM}  # reading the client's body stops
    backend.drained()
    assert not stream.paused
    ex.on_request_end(((b"x-sum", b"1"),))
    assert ex.req == Req.RECEIVED and backend.out[-1] == b"0\r\nx-sum: 1\r\n\r\n"
    up.data_received(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
    assert stream.sent == [("response", 201, [], "chunked", [b"hi"], False)]
    assert ex.resp == Resp.SENDING
    up.data_received(b"0\r\n\r\n")
    assert stream.sent[1:] == [("end", ())] and ex.resp == Resp.RELEASED


def test_a_slow_client_stream_pauses_the_backend(ctx):
    stream = Stream(listener_for(ctx))
    up, backend = pooled_backend(ctx)
    ex = Exchange(ctx, stream, head())
    ex.start()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    assert ex.resp == Resp.SENDING
    ex.on_downstream_pause(True)
    assert not backend.reading
    ex.on_downstream_pause(False)
    assert backend.reading
    up.data_received(b"56789")
    assert stream.sent[-2:] == [("body", b"56789"), ("end", ())]
    assert ex.resp == Resp.RELEASED


def test_a_client_gone_mid_response_ends_the_backend_stream(ctx):
    stream = Stream(listener_for(ctx))
    up, backend = pooled_backend(ctx)
    ex = Exchange(ctx, stream, head())
    ex.start()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    ex.on_client_lost()
    assert (ex.req, ex.resp) == (Req.LOST, Resp.RELEASED) and stream.done == [ex]
    assert backend.closed and ex.flags == "DC"
    assert ctx.pool.take_idle(*BACKEND, PLAIN, ctx.now) is None


def test_an_event_the_tables_do_not_allow_is_refused(ctx):
    stream = Stream(listener_for(ctx))
    ex = Exchange(ctx, stream, head())
    ex.respond(404, b"no route\n")
    assert ex.resp == Resp.ANSWERED
    with pytest.raises(PhaseError, match="RESPOND is not allowed in phase ANSWERED"):
        ex.respond(500)
    ex.finish()
    assert ex.resp == Resp.RELEASED
    ex.finish()  # (finishing twice is allowed: it does nothing)
    with pytest.raises(PhaseError, match="END is not allowed in phase RECEIVED"):
        ex.on_request_end(())  # a request without a body has no end to come


def test_an_http10_keep_alive_client_is_told_so_by_local_answers_too(ctx):
    """kgw's own responses are framed by the same HTTP/1.1 stream code as relayed ones:
    an HTTP/1.0 keep-alive client gets ``Connection: keep-alive`` from both."""
    conn, client = client_of(ctx)
    conn.listener = listener_for(ctx, Rule("t/r/0", "t/r", "t/gw"))  # no backend: 500
    conn.data_received(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert client.out[-1].startswith(b"HTTP/1.1 500 ")
    assert b"\r\nconnection: keep-alive\r\n" in client.out[-1] and not client.closed
    conn.data_received(b"GET /x HTTP/1.0\r\n\r\n")
    assert b"\r\nconnection: close\r\n" in client.out[-1] and client.closed


def test_bytes_a_backend_sends_past_its_response_never_reach_the_client(ctx):
    """Off the fast path (a rule with a timeout: the exchange runs in a task), the
    response is complete before the task finishes it; what the backend sends meanwhile
    (a second response nobody asked for) must not be relayed into the client's
    connection, where it would pass for the answer to its next request."""
    conn, client = client_of(ctx)
    rule = Rule("t/r/0", "t/r", "t/gw", backend_timeout=5.0,
                backends=(Backend("t/b:80", endpoints=(Endpoint(*BACKEND),)),))
    conn.listener = listener_for(ctx, rule)
    up, backend = pooled_backend(ctx)
    conn.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    ctx.loop.run_until_complete(asyncio.sleep(0))  # the task sends the request
    assert backend.out[-1].startswith(b"GET /x HTTP/1.1\r\n")
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    ctx.loop.run_until_complete(asyncio.sleep(0))  # the task commits the head
    up.data_received(b"ok" + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")
    ctx.loop.run_until_complete(asyncio.sleep(0.01))  # the task finishes the exchange
    assert b"".join(client.out) == (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert backend.closed  # (never pooled: it broke framing)


def test_a_mirror_ends_when_the_client_went_away_before_it_started(ctx):
    """A mirror waits for the request body it copies; if the client is gone by the time
    the mirror's task runs, that body will never come and the mirror must not wait."""
    mirror = Backend("t/m:80", endpoints=(Endpoint("127.0.0.1", 10),))
    rule = Rule("t/r/0", "t/r", "t/gw", filters=Filters(mirrors=(Mirror(mirror),)),
                backends=(Backend("t/b:80", endpoints=(Endpoint(*BACKEND),)),))
    stream = Stream(listener_for(ctx, rule))
    pooled_backend(ctx)
    ex = Exchange(ctx, stream, head(b"POST", "length", 10, ((b"content-length", b"10"),)))
    ex.start()  # spawns the mirror's task
    assert len(ctx._tasks) == 1
    ex.on_client_lost()
    ctx.loop.run_until_complete(asyncio.sleep(0.01))
    assert not ctx._tasks
