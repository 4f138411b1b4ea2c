"""Connections to backends: a keep-alive pool per endpoint and the HTTP/1.1 client side.

The ``Pool`` is the one place that chooses the protocol, from the backend's
(``CompiledBackend.h2``, from the Service port's appProtocol): HTTP/1.1 connections
(``UpstreamConn``, one request at a time, kept alive) or streams on a shared HTTP/2
connection (``kgw_l7.upstream_h2``: one per endpoint, another when the backend's stream
limit is reached). Over TLS an HTTP/2 backend is offered ALPN ``h2, http/1.1`` and served
in whichever it picks.

``UpstreamConn`` only moves bytes: it is the ``UpstreamStream`` (``kgw_l7.streams``) of the
request it carries, writes that request (chunked when its length is unknown), feeds a
``ResponseReader`` and hands the events to whoever currently owns the connection (an
``Exchange``, ``kgw_l7.exchange``, or a mirror's discarding sink). Ownership changes only
at request boundaries; a connection that ends an exchange in an unknown state is closed,
never pooled.

Bounds: a connect takes at most ``CONNECT_TIMEOUT``; a worker keeps at most
``max_per_endpoint`` connections (idle, busy or connecting) to one endpoint, and opens
none when the worker is short of file descriptors (``Pool.room``): a try that would need
one more is refused at once (503, "upstream overflow"), never queued, so a backend that
hangs holds a bounded number of sockets.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kgw_l7.config import UpstreamTLS
from kgw_l7.h1 import ResponseReader, encode_chunk, encode_last_chunk, encode_request_head
from kgw_l7.streams import OutRequest, UpstreamError, UpstreamOwner, UpstreamStream
from kgw_l7.tls import TLSContexts
from kgw_l7.upstream_h2 import H2Conn, H2Stream

if TYPE_CHECKING:
    from typing import Protocol

    class TunnelEnd(Protocol):
        """Where a tunnel's backend bytes go: the client's transport, or what wraps it
        (``kgw_l7.proxy``'s byte counter)."""

        def write(self, data: bytes) -> None: ...
        def write_eof(self) -> None: ...
        def close(self) -> None: ...

log = logging.getLogger("kgw.l7.upstream")

#: Idle connections kept per endpoint (nginx's keepalive directive is per worker too).
MAX_IDLE_PER_ENDPOINT = 128
#: An idle pooled connection is closed after this long (backends commonly time out idle
#: keep-alive connections after 60-75 s; closing first avoids racing their close).
IDLE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0


class UpstreamConn(UpstreamStream):
    """An asyncio.Protocol (duck-typed: compiled as an extension type) for one backend
    connection, and the ``UpstreamStream`` of the request it carries."""

    __slots__ = ("transport", "reader", "key", "closed", "idle_since", "tunnel",
                 "write_paused", "pool", "counted", "chunked")

    def __init__(self, key: tuple[Any, ...], pool: Pool | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.owner: UpstreamOwner | None = None
        self.lost_reason = ""
        self.key = key
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        #: Set once a 101 response switched protocols: raw bytes go to this transport.
        self.tunnel: TunnelEnd | None = None
        self.write_paused = False
        #: Reading was paused (the client cannot take more): see pause_reading.
        self.read_paused = False
        #: The pool that counts this connection against its endpoint's limit; ``counted``
        #: once it does (the count is given back when the connection is lost).
        self.pool = pool
        self.counted = False
        #: Reads so far. The worker's periodic sweep compares it with what it saw
        #: (``Exchange.sweep``) to time out a backend that stops answering, without a
        #: timer per request.
        self.reads = 0
        #: The request's body goes out in chunks (its length is unknown).
        self.chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    # -- UpstreamStream -----------------------------------------------------------------
    def send_request(self, owner: UpstreamOwner, out: OutRequest, chunks: list[bytes],
                     end: bool, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.owner = owner
        head = out.raw
        if head is None:  # (encoded once, for every try and mirror)
            # headers is None only in an OutRequest whose raw head is given
            head = out.raw = encode_request_head(out.method, out.target,
                                                 out.headers)  # type: ignore[arg-type]
        self.reader.expect(out.method == b"HEAD")
        chunked = self.chunked = out.body == "chunked"
        t = self.transport
        if t is None:
            return
        if not chunks and not (end and chunked):
            t.write(head)
            return
        parts = [head]
        if chunked:
            parts.extend([encode_chunk(c) for c in chunks])
            if end:
                parts.append(encode_last_chunk(trailers))
        else:
            parts.extend(chunks)
        t.write(b"".join(parts))

    def send_body(self, data: bytes) -> None:
        if self.transport is not None and data:  # (an empty chunk would end the body)
            self.transport.write(encode_chunk(data) if self.chunked else data)

    def send_end(self, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        if self.chunked and self.transport is not None:
            self.transport.write(encode_last_chunk(trailers))

    def stale(self) -> bool:
        return self.reused and not self.reader.got_head

    def reusable(self) -> bool:
        return not self.closed and self.reader.reusable and not self.reader.in_message

    def response_as_received(self) -> bytes | None:
        return self.reader.whole

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        owner = self.owner
        if owner is None:  # bytes while idle: the backend broke framing, drop it
            self.close()
            return
        events = self.reader.feed(data)
        if events:
            owner.on_upstream_events(self, events)

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            try:
                self.tunnel.write_eof()
            except (OSError, RuntimeError, AttributeError, NotImplementedError):
                self.tunnel.close()
            return True
        owner = self.owner
        events = self.reader.eof()
        if owner is not None and events:
            owner.on_upstream_events(self, events)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reader.reusable = False
        if self.counted:
            self.counted = False
            self.pool.count(self.key, -1)  # type: ignore[union-attr]
        if self.tunnel is not None:
            self.tunnel.close()
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.on_upstream_lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.owner is not None:
            self.owner.on_upstream_pause(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.owner is not None:
            self.owner.on_upstream_pause(False)

    def pause_reading(self) -> None:
        """Stop reading from the backend while the client's buffer is full. Kept track of
        here so that whoever ends the exchange can undo it (Pool.release does): a pooled
        connection that is not read never delivers its next response."""
        if self.transport is not None and not self.read_paused:
            self.read_paused = True
            try:
                self.transport.pause_reading()
            except RuntimeError:  # closing
                pass

    def resume_reading(self) -> None:
        if self.transport is not None and self.read_paused:
            self.read_paused = False
            try:
                self.transport.resume_reading()
            except RuntimeError:  # closing
                pass

    def close(self) -> None:
        self.closed = True
        self.reader.reusable = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.reader.reusable = False
        if self.transport is not None:
            self.transport.abort()


def _san_ok(cert: dict[str, Any], names: tuple[str, ...]) -> bool:
    """Does the certificate carry one of ``names`` (DNS names, or URIs such as SPIFFE IDs)?"""
    sans = cert.get("subjectAltName", ())
    uris = {v for k, v in sans if k == "URI"}
    dns = [v.lower() for k, v in sans if k == "DNS"]
    for want in names:
        if ":" in want:  # a URI SAN compares exactly
            if want in uris:
                return True
            continue
        want = want.lower()
        for have in dns:
            if have == want or (have.startswith("*.") and want.endswith(have[1:])
                                and want.count(".") == have.count(".")):
                return True
    return False


class _AlpnChoice:
    """The protocol of a TLS connection to an HTTP/2 backend until its handshake is
    done: then the backend's ALPN choice makes it an ``H2Conn`` (h2) or an
    ``UpstreamConn`` (anything else), which takes the transport over."""

    def __init__(self, key: tuple[Any, ...], pool: Pool) -> None:
        self.key = key
        self.pool = pool
        self.chosen: Any = None

    def connection_made(self, transport: Any) -> None:
        sslobj = transport.get_extra_info("ssl_object")
        alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
        if alpn == "h2":
            conn: Any = H2Conn(self.key, self.pool, b"https")
        else:
            conn = UpstreamConn(self.key, self.pool)
        self.chosen = conn
        transport.set_protocol(conn)
        conn.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.chosen is not None:
            self.chosen.connection_lost(exc)

    def data_received(self, data: bytes) -> None:  # (never: set_protocol came first)
        self.chosen.data_received(data)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


async def _connected(loop: asyncio.AbstractEventLoop, address: str, port: int,
                     header: bytes) -> socket.socket:
    """A socket connected to (address, port) that has sent ``header`` (a few dozen bytes:
    they fit the fresh socket's send buffer at once)."""
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                         socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, (address, port))
        await loop.sock_sendall(sock, header)
    except BaseException:
        sock.close()
        raise
    return sock


class Pool:
    """Idle keep-alive connections per (address, port, TLS settings), LIFO, the HTTP/2
    connections per endpoint, and the count of open connections per endpoint (see the
    module docstring)."""

    __slots__ = ("_idle", "_tls", "_open", "open_total", "max_per_endpoint", "room", "_h2",
                 "_h2_opening", "stats", "corked", "held")

    def __init__(self, tls: TLSContexts, max_per_endpoint: int,
                 room: Callable[[], bool] | None = None, stats: Any = None) -> None:
        #: The worker's counters (kgw_l7.stats.WorkerStats): new connections' connect time.
        self.stats = stats
        self._idle: dict[tuple[Any, ...], list[UpstreamConn]] = {}
        self._tls = tls
        #: (address, port) -> connections open or being opened.
        self._open: dict[tuple[str, int], int] = {}
        self.open_total = 0
        self.max_per_endpoint = max_per_endpoint
        #: Is there a file descriptor to spare for one more connection? (the worker's)
        self.room = room
        #: (address, port, TLS settings) -> HTTP/2 connections taking new streams (one
        #: usually; more when one is at the backend's stream limit).
        self._h2: dict[tuple[Any, ...], list[H2Conn]] = {}
        #: The HTTP/2 connect in progress per key: concurrent requests wait for it
        #: instead of each opening a connection.
        self._h2_opening: dict[tuple[Any, ...], asyncio.Future[Any]] = {}
        #: A client's HTTP/2 read is being handled (``cork``): the HTTP/2 backend
        #: connections it sends requests on write once it is done (``held``), so the
        #: requests of one read go to a backend in one write, not one each.
        self.corked = False
        self.held: list[H2Conn] = []

    def cork(self) -> bool:
        """Hold HTTP/2 backend writes until ``uncork``; False if already held (the caller
        then does not uncork)."""
        if self.corked:
            return False
        self.corked = True
        return True

    def uncork(self) -> None:
        """Write what the connections held."""
        self.corked = False
        if self.held:
            held, self.held = self.held, []
            for conn in held:
                conn.held = False
                conn.write_out()

    def count(self, key: tuple[Any, ...], delta: int) -> None:
        endpoint = (key[0], key[1])
        n = self._open.get(endpoint, 0) + delta
        if n > 0:
            self._open[endpoint] = n
        else:
            self._open.pop(endpoint, None)
        self.open_total += delta

    def open_to(self, endpoints: tuple[tuple[str, int], ...]) -> int:
        """Connections open or being opened to any of ``endpoints`` (a backend's)."""
        opened = self._open
        return sum(opened.get(ep, 0) for ep in endpoints)

    def take_idle(self, address: str, port: int, backend: Any,
                  now: float) -> UpstreamStream | None:
        """An upstream stream to the endpoint without waiting, if there is one: a stream
        on an HTTP/2 connection with room, or an idle pooled HTTP/1.1 connection."""
        tls = backend.tls
        if backend.h2:
            conns = self._h2.get((address, port, tls))
            if conns:
                for h in conns:
                    if h.has_room():
                        return h.new_stream()
            if tls is None:
                return None  # (h2c: never HTTP/1.1)
        idle = self._idle.get((address, port, tls))
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_TIMEOUT:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def acquire(self, address: str, port: int, backend: Any,
                      now: float) -> UpstreamStream:
        up = self.take_idle(address, port, backend, now)
        if up is not None:
            return up
        tls = backend.tls
        began = time.monotonic()
        if backend.h2:
            up = await self.h2_stream((address, port, tls), address, port, tls)
        else:
            up = await self.connect((address, port, tls), address, port, tls)
        if self.stats is not None:
            self.stats.connected(backend.name, time.monotonic() - began)
        return up

    async def acquire_proxied(self, address: str, port: int, backend: Any, now: float,
                              header: bytes) -> UpstreamStream:
        """A stream on a connection that began with ``header`` (a PROXY protocol header
        naming the client, kgw_l7.proxyproto): such a connection speaks for one client
        only, so it is pooled (and, HTTP/2, shared between streams) under a key that
        holds the header -- the same client connection's next requests reuse it."""
        tls = backend.tls
        key = (address, port, tls, header)
        if backend.h2:
            for h in self._h2.get(key, ()):
                if h.has_room():
                    return h.new_stream()
            if tls is None:
                return await self.h2_stream(key, address, port, tls, header)
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_TIMEOUT:
                conn.reused = True
                return conn
            conn.close()
        if backend.h2:
            return await self.h2_stream(key, address, port, tls, header)
        return await self.connect(key, address, port, tls, False, header)

    async def h2_stream(self, key: tuple[Any, ...], address: str, port: int,
                        tls: UpstreamTLS | None, header: bytes = b"") -> UpstreamStream:
        """A stream on a new HTTP/2 connection (shared with the requests that wait for
        it), or the HTTP/1.1 connection a TLS backend chose instead."""
        for _ in range(3):
            opening = self._h2_opening.get(key)
            if opening is None:
                break
            conn = await asyncio.shield(opening)  # (bounded: CONNECT_TIMEOUT)
            if type(conn) is H2Conn and conn.has_room():
                return conn.new_stream()
            for conn in self._h2.get(key, ()):
                if conn.has_room():
                    return conn.new_stream()
        fut = self._h2_opening[key] = asyncio.get_running_loop().create_future()
        try:
            conn = await self.connect(key, address, port, tls, True, header)
        except BaseException as exc:
            if isinstance(exc, UpstreamError):  # the waiters' answer too
                fut.set_exception(exc)
                fut.exception()  # (retrieved: nobody may be waiting)
            else:  # (this request was cancelled, not the others: they try again)
                fut.set_result(None)
            raise
        finally:
            if self._h2_opening.get(key) is fut:
                del self._h2_opening[key]
        fut.set_result(conn)
        if type(conn) is not H2Conn:
            return conn  # (ALPN: the backend speaks HTTP/1.1)
        self._h2.setdefault(key, []).append(conn)
        return conn.new_stream()

    def forget_h2(self, conn: H2Conn) -> None:
        """``conn`` takes no new stream (GOAWAY, lost, retired)."""
        conns = self._h2.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._h2[conn.key]

    async def connect(self, key: tuple[Any, ...], address: str, port: int,
                      tls: UpstreamTLS | None, h2: bool = False, header: bytes = b"") -> Any:
        """A new connection (``header`` first, before TLS or HTTP/2's preface: a PROXY
        protocol header)."""
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if tls is not None:
            ctx = self._tls.upstream(tls, h2)
            if ctx is None:
                raise UpstreamError("backend TLS settings unusable", 502)
        if self._open.get((address, port), 0) >= self.max_per_endpoint:
            raise UpstreamError(f"{self.max_per_endpoint} connections to {address}:{port} "
                                f"already open (the per-endpoint limit)", 503,
                                "endpoint_limit")
        if self.room is not None and not self.room():
            raise UpstreamError(f"no file descriptor to spare for a connection to "
                                f"{address}:{port}", 503, "descriptors")
        if not h2:
            def factory() -> Any:
                return UpstreamConn(key, self)
        elif tls is None:
            def factory() -> Any:
                return H2Conn(key, self)
        else:
            def factory() -> Any:
                return _AlpnChoice(key, self)
        self.count(key, 1)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                hostname = tls.hostname if tls is not None else None
                if header:
                    sock = await _connected(loop, address, port, header)
                    _, conn = await loop.create_connection(factory, sock=sock, ssl=ctx,
                                                           server_hostname=hostname)
                else:
                    _, conn = await loop.create_connection(factory, address, port, ssl=ctx,
                                                           server_hostname=hostname)
        except BaseException as exc:
            self.count(key, -1)
            if isinstance(exc, TimeoutError):
                raise UpstreamError(f"connect to {address}:{port} timed out", 504) from None
            if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
                raise UpstreamError(f"connect to {address}:{port} failed: {exc}", 503,
                                    "descriptors") from None
            if isinstance(exc, (OSError, ssl.SSLError)):
                raise UpstreamError(f"connect to {address}:{port} failed: {exc}",
                                    502) from None
            raise
        if type(conn) is _AlpnChoice:
            conn = conn.chosen
        # From here the connection gives its count back when it is lost; if that already
        # happened (before this coroutine resumed), give it back now.
        conn.counted = True
        if conn.closed:
            conn.counted = False
            self.count(key, -1)
            raise UpstreamError(f"connection to {address}:{port} closed at once", 502)
        if tls is not None and tls.subject_alt_names:
            sslobj = conn.transport.get_extra_info("ssl_object") if conn.transport else None
            cert = sslobj.getpeercert() if sslobj is not None else None
            # Gateway API: with subjectAltNames set, the hostname is for SNI only and
            # must not be what authenticates the backend.
            if not cert or not _san_ok(cert, tls.subject_alt_names):
                conn.abort()
                raise UpstreamError("backend certificate names do not match", 502)
        return conn

    def release(self, up: UpstreamStream, now: float) -> None:
        """Give an upstream stream back after a complete exchange: an HTTP/1.1
        connection is kept (closed if not reusable), an HTTP/2 stream is over."""
        if type(up) is H2Stream:
            st: H2Stream = up
            st.owner = None
            st.give_back(now)
            return
        conn: UpstreamConn = up  # type: ignore[assignment]
        conn.owner = None
        if not conn.reusable():
            conn.close()
            return
        idle = self._idle.get(conn.key)
        if idle is None:  # (setdefault would build a throwaway list on every release)
            idle = self._idle[conn.key] = []
        if len(idle) >= MAX_IDLE_PER_ENDPOINT:
            conn.close()
            return
        if conn.read_paused:  # paused for the last client: idle, it must notice a close
            conn.resume_reading()
        conn.idle_since = now
        idle.append(conn)

    def sweep(self, now: float) -> None:
        """Close connections idle for too long (called by the worker's periodic timer)."""
        for key, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if conn.closed:
                    continue
                if now - conn.idle_since > IDLE_TIMEOUT:
                    conn.close()
                else:
                    keep.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        for conns in list(self._h2.values()):
            for h in list(conns):
                if h.taken == 0 and now - h.idle_since > IDLE_TIMEOUT:
                    self.forget_h2(h)
                    h.close()

    def retain(self, endpoints: set[tuple[str, int]]) -> None:
        """Close idle connections to endpoints no longer in the config (HTTP/2 ones once
        their streams are done)."""
        for key in list(self._idle):
            if (key[0], key[1]) not in endpoints:
                for conn in self._idle.pop(key):
                    conn.close()
        for key in list(self._h2):
            if (key[0], key[1]) not in endpoints:
                for h in self._h2.pop(key):
                    h.goaway = True
                    if h.taken == 0:
                        h.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for conns in list(self._h2.values()):
            for h in conns:
                # (as idle HTTP/1.1 connections: streams in flight finish first)
                h.goaway = True
                if h.taken == 0:
                    h.close()
        self._h2.clear()

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())
