"""The two sides of an exchange, as interfaces: its client (``DownstreamStream``) and its
backend (``UpstreamStream``).

``kgw_l7.exchange.Exchange`` serves one request whatever the protocols: it routes,
filters, tries backends, relays the response, times out and counts through these
interfaces only. Today they are implemented for HTTP/1.1 on both sides:

* ``kgw_l7.proxy.DownstreamConn`` -- a client connection is the stream of the request it
  is answering (one at a time, pipelined requests queue behind it);
* ``kgw_l7.upstream.UpstreamConn`` -- a pooled backend connection is the stream of the
  request it carries.

An HTTP/2 implementation adds one stream object per HTTP/2 stream on each side and
nothing in the exchange (docs/l7.md says how). Events flow into the exchange through its
methods (``on_request_body``, ``on_request_end`` -- not for a request whose head says it
has no body --, ``on_client_lost``, ``on_downstream_pause`` and ``sweep`` from the client
side; ``UpstreamOwner``'s from the backend side), and out through the methods below.
Nothing here blocks: a stream that cannot take more says so (``write_paused``,
``on_upstream_pause``) and the other side stops reading.

Compiled (``streams.pxd``), the interfaces are extension types whose methods are
``cpdef``: the implementations subclass them, and the exchange's calls through fields
typed with the interface are C calls through the type's vtable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import cython
except ImportError:
    from kgw_l7 import _cython as cython

if TYPE_CHECKING:
    import ssl

if not cython.compiled:  # (compiled, these are C constants: streams.pxd)
    #: Reasons the exchange pauses reading the request from its client (bits: reading
    #: resumes when none is left): the body buffered so far is large enough, or the
    #: backend does not take more.
    PAUSE_BODY, PAUSE_UPSTREAM = 1, 2


class UpstreamError(Exception):
    """A try failed before a response started. ``status`` is what the client gets;
    ``kind`` is "connect" (no connection), "endpoint_limit" or "descriptors" (not even
    tried: the endpoint's connection limit, or the worker is out of file descriptors)."""

    def __init__(self, reason: str, status: int = 502, kind: str = "connect") -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind


class OutRequest:
    """The request an exchange sends upstream, the same for every try and mirror.

    ``method``, ``target`` and ``headers`` (after filters, with X-Forwarded-*, Host and
    the framing field: Content-Length, or Transfer-Encoding chunked when ``body`` is
    "chunked", the length unknown) are what an HTTP/2 upstream sends. ``raw`` is the
    HTTP/1.1 head ready to write: the client's own head plus the proxy's lines when
    nothing in it changes (then ``headers`` is None, which the router allows only for
    HTTP/1.1 backends: ``CompiledRule.head_suffix_for``), or encoded once from
    ``headers`` by the first HTTP/1.1 upstream that sends it."""

    __slots__ = ("method", "target", "headers", "raw", "body")
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]] | None
    raw: bytes | None
    body: str


def out_request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]] | None,
                raw: bytes | None, body: str) -> OutRequest:
    """An ``OutRequest`` (compiled, a C call that fills the fields in place)."""
    out = OutRequest.__new__(OutRequest)
    out.method = method
    out.target = target
    out.headers = headers
    out.raw = raw
    out.body = body
    return out


class UpstreamOwner:
    """Who receives what an upstream stream delivers: an exchange, or a mirror's sink
    that reads and drops the response."""

    __slots__ = ()

    def on_upstream_events(self, up: UpstreamStream, events: list[Any]) -> None:
        """Response events (kgw_l7.events: ResponseHead, Body, EndOfMessage, Rejected,
        Upgraded), in order."""
        raise NotImplementedError

    def on_upstream_lost(self, up: UpstreamStream) -> None:
        """The stream ended before its response did (connection lost, stream reset)."""
        raise NotImplementedError

    def on_upstream_pause(self, paused: bool) -> None:
        """The backend does not take more request bytes now (``paused``), or again."""
        raise NotImplementedError


class UpstreamStream:
    """One request and its response on a backend connection.

    ``owner`` receives its events; ``reused``: the connection served requests before
    (a failure before any response byte may then be a keep-alive connection the backend
    had closed, ``stale``); ``reads`` counts what arrived from the backend for it and
    ``read_paused`` says it is not being read (the client is slow): the default
    response timeout watches both (``Exchange.sweep``).

    Given back with ``Pool.release`` when its response is complete (kept when
    ``reusable``), or ended with ``abort`` in any other state."""

    __slots__ = ("owner", "reused", "reads", "read_paused", "lost_reason")
    owner: UpstreamOwner | None
    reused: bool
    reads: int
    read_paused: bool
    #: Why the stream was lost, when the protocol says (an HTTP/2 backend's RST_STREAM or
    #: GOAWAY code: "RST_STREAM CANCEL"), for the access log; "" when the connection
    #: just closed.
    lost_reason: str

    def send_request(self, owner: UpstreamOwner, out: OutRequest, chunks: list[bytes],
                     end: bool, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        """Take ``owner``'s request: its head, the body bytes received so far and, if
        ``end``, the end of the body (with ``trailers``), in one write if it can."""
        raise NotImplementedError

    def send_body(self, data: bytes) -> None:
        raise NotImplementedError

    def send_end(self, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        raise NotImplementedError

    def pause_reading(self) -> None:
        """The client does not take more response bytes now: stop reading them."""
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """End the stream now, whatever its state (never reused)."""
        raise NotImplementedError

    def stale(self) -> bool:
        """Lost before any response byte on a connection that served requests before:
        the backend may never have seen the request (a fresh connection may retry it)."""
        raise NotImplementedError

    def reusable(self) -> bool:
        """Can the connection carry another request once this one is released? (Asked
        by ``Pool.release``: not when closed, mid-message, or told to close.)"""
        raise NotImplementedError

    def response_as_received(self) -> bytes | None:
        """The whole response as the last read brought it, when it can be relayed to an
        HTTP/1.1 client unchanged (HTTP/1.1, Content-Length framed, no hop-by-hop field
        left); else None."""
        raise NotImplementedError


class DownstreamStream:
    """The client side of an exchange: where its request came from and its response goes.

    ``listener`` (a ``kgw_l7.context.ListenerState``), ``peer`` (the client's address),
    ``remote`` (its address and port, b"10.0.0.1:51234" or b"[::1]:51234", for the access log),
    ``ssl_context`` (the TLS context of the handshake, None in clear text) and
    ``forwarded`` (the X-Forwarded-For/-Proto lines its requests get when their head goes
    upstream as received) say where the request came from; ``closing``: the stream ends
    after the current response (draining, the client half-closed); ``write_paused``: the
    client does not take more bytes now (the exchange is told, ``on_downstream_pause``).
    """

    __slots__ = ("listener", "peer", "remote", "ssl_context", "forwarded", "closing",
                 "write_paused")
    listener: Any  # a ListenerState: kgw_l7.context is a layer above this one
    peer: bytes
    remote: bytes
    ssl_context: ssl.SSLContext | None
    forwarded: bytes
    closing: bool
    write_paused: bool

    def send_response(self, status: int, headers: list[tuple[bytes, bytes]], body: str,
                      data: list[bytes], end: bool, trailers: tuple[tuple[bytes, bytes], ...],
                      close: bool) -> bool:
        """The response head (``headers``: end-to-end fields only, ``body``: how its body
        is framed, kgw_l7.events.BodyKind), the body bytes that came with it and, if
        ``end``, its end, in one write if it can. ``close``: the exchange wants the
        stream to end with this response. True when it will (the client was told)."""
        raise NotImplementedError

    def send_raw(self, data: bytes) -> bool:
        """A whole HTTP/1.1 response as received from an HTTP/1.1 backend, for an
        HTTP/1.1 request (``UpstreamStream.response_as_received``): written when this
        stream can carry it as it is; False when it cannot (then nothing was sent)."""
        raise NotImplementedError

    def send_body(self, data: bytes) -> None:
        raise NotImplementedError

    def send_end(self, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        raise NotImplementedError

    def send_continue(self) -> None:
        """An interim 100 Continue (the client waits for it before its body)."""
        raise NotImplementedError

    def pause(self, reason: int) -> None:
        """Stop reading the request (its body) for ``reason`` (``PAUSE_*``)."""
        raise NotImplementedError

    def resume(self, reason: int) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """The response cannot be completed: cut the client off (a connection reset, or
        an HTTP/2 stream reset)."""
        raise NotImplementedError

    def exchange_done(self, ex: Any) -> None:
        """``ex`` is over (response sent, request read or given up; ``ex.close_after``
        asks to end the stream): the stream serves its next request, or ends."""
        raise NotImplementedError

    def start_tunnel(self, up: UpstreamStream, data: bytes) -> bool:
        """After a 101 response: the client and ``up`` become a byte pipe, ``data`` (what
        followed the backend's response head) first. False when they cannot."""
        raise NotImplementedError
