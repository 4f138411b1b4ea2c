"""Back-pressure between the two sides of an exchange, driven without sockets.

A full client buffer stops reading from the backend, and a full backend buffer stops
reading from the client. Whatever paused a connection must be undone when the exchange
ends, however it ends: a pooled backend connection that stays paused never delivers the
next response on it, and a client connection that stays paused never sends its next
request (both hang until the client gives up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from kgw_l7.channel import WorkerOptions
from kgw_l7.config import (Backend, Endpoint, L7Config, Listener, PathMatch, Route,
                           RouteMatch, Rule, VirtualHost)
from kgw_l7.context import ListenerState, WorkerContext
from kgw_l7.proxy import DownstreamConn
from kgw_l7.router import CompiledBackend
from kgw_l7.upstream import UpstreamConn

BACKEND = ("127.0.0.1", 9)
#: What the pool is asked for: an HTTP/1.1 backend in clear text.
PLAIN = CompiledBackend(Backend("t/b:80"))


class Transport:
    """The transport calls the protocols make, with reading state and a write buffer
    that reports itself full (``pause_writing``) once ``high`` bytes are written."""

    def __init__(self, protocol: Any, high: int | None = None) -> None:
        self.protocol = protocol
        self.high = high
        self.out: list[bytes] = []
        self.reading = True
        self.write_paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out.append(data)
        if self.high is not None and len(data) > self.high and not self.write_paused:
            self.write_paused = True
            self.protocol.pause_writing()

    def drained(self) -> None:
        self.write_paused = False
        self.protocol.resume_writing()

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


@pytest.fixture
def ctx() -> Iterator[WorkerContext]:
    loop = asyncio.new_event_loop()
    yield WorkerContext(loop, WorkerOptions(access_log="off"))
    loop.close()


def client_of(ctx: WorkerContext, high: int | None = None) -> tuple[DownstreamConn, Transport]:
    rule = Rule("t/r/0", "t/r", "t/gw",
                backends=(Backend("t/b:80", endpoints=(Endpoint(*BACKEND),)),))
    config = L7Config((Listener("l", "127.0.0.1", 8080, virtual_hosts=(
        VirtualHost("*", (Route(RouteMatch(path=PathMatch("PathPrefix", "/")), rule),)),)),), 1)
    listener = ListenerState("l", config.listeners[0], ctx.cache.build(config)["l"], None)
    conn = DownstreamConn(ctx, listener)
    client = Transport(conn, high)
    conn.connection_made(client)  # type: ignore[arg-type]
    return conn, client


def pooled_backend(ctx: WorkerContext, high: int | None = None) -> tuple[UpstreamConn, Transport]:
    up = UpstreamConn(BACKEND + (None,))
    backend = Transport(up, high)
    up.connection_made(backend)  # type: ignore[arg-type]
    ctx.pool.release(up, ctx.now)
    return up, backend


GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_backend_paused_by_a_full_client_reads_again_once_pooled(ctx):
    """The client's buffer fills while the last bytes of a response are relayed: the
    backend connection is paused and the exchange ends in the same call. Back in the
    pool it reads again, and the next request on it gets its response."""
    conn, client = client_of(ctx, high=100)
    up, backend = pooled_backend(ctx)
    conn.data_received(GET)
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + b"a" * 500
    up.data_received(big)
    assert client.out[-1] == big and client.write_paused
    assert backend.reading, "a paused connection went back to the pool"
    assert ctx.pool.take_idle(*BACKEND, PLAIN, ctx.now) is up
    ctx.pool.release(up, ctx.now)
    client.drained()
    conn.data_received(GET)
    assert backend.out[-1].startswith(b"GET /x HTTP/1.1\r\n")
    up.data_received(OK)
    assert client.out[-1] == OK


def test_client_paused_by_a_full_backend_reads_again_after_an_early_response(ctx):
    """The backend's buffer fills while a request body streams to it, so the client
    connection stops being read; the backend answers before the body's end. The rest of
    the body is read (and discarded) and the next request on the connection is served."""
    conn, client = client_of(ctx)
    up, backend = pooled_backend(ctx, high=10)
    conn.data_received(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345")
    assert backend.write_paused and not client.reading
    up.data_received(OK)
    assert client.out[-1] == OK
    assert client.reading, "the client connection stays paused: the body's end never comes"
    conn.data_received(b"67890")  # the rest of the body, discarded
    fresh, fresh_backend = pooled_backend(ctx)
    conn.data_received(GET)
    assert fresh_backend.out[-1].startswith(b"GET /x HTTP/1.1\r\n")
    fresh.data_received(OK)
    assert client.out[-1] == OK
