"""Reading a PROXY protocol header off an accepted socket before anything else reads it:
for TLS, whose handshake the header precedes (kgw_l7 HTTPS listeners, and the L4
plane's TLS ports, which also peek the ClientHello in the socket: kgw_l4.tlspass).

``read_header`` takes exactly the header's bytes out of the socket and leaves what
follows (the ClientHello) unread, so the TLS layer that takes the socket over next
sees a connection that starts with its own first byte. It peeks (MSG_PEEK) and
consumes only what the sans-IO parser (kgw_l7.proxyproto) says the header took. While
the header is incomplete every byte peeked belongs to it (the parser needs bytes past
them), so those are consumed at once: a readable socket is never peeked twice for the
same bytes (no busy loop on a slow sender), and at most ``proxyproto.MAX_HEADER`` bytes
are ever held.

``PreTLSServer`` is an HTTPS listener's accept loop when its connections start with the
header: accept, read the header (bounded in time and in how many connections may be
waiting for one), then hand the socket to the loop's TLS transport with the protocol
built for that header.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from kgw_l7 import proxyproto
from kgw_l7.proxyproto import ProxyHeader, ProxyProtocolError

log = logging.getLogger("kgw.l7.proxyaccept")

#: Connections of one listener whose header is still being read; more are closed
#: at once (each holds a socket: the bound keeps a flood of silent connections from
#: taking every descriptor of the worker).
MAX_PENDING = 1024
#: Connections accepted per readiness of the listening socket before the loop is let
#: run something else (as asyncio's own accept loop does: its backlog argument).
ACCEPT_BATCH = 64
#: How long accepting pauses after accept() failed (out of descriptors, say).
ACCEPT_PAUSE = 1.0


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    fut = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def read_header(sock: socket.socket, optional: bool = False) -> ProxyHeader | None:
    """The PROXY header at the start of non-blocking ``sock``, taken out of it; the
    bytes after it stay unread. None: ``optional`` and the connection does not start
    with one (nothing taken). Raises ProxyProtocolError when the header is malformed,
    missing (not optional), or the connection ends first; the caller bounds the wait."""
    loop = asyncio.get_running_loop()
    held = b""
    while True:
        await _readable(loop, sock.fileno())
        try:
            data = sock.recv(proxyproto.MAX_HEADER - len(held), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            continue
        if not data:
            raise ProxyProtocolError("connection closed before the PROXY protocol header "
                                     "was complete")
        try:
            header = proxyproto.parse(held + data)
        except ProxyProtocolError:
            if optional and not held and not (data.startswith(proxyproto.V1_PREFIX[:1])
                                              or data.startswith(b"\r")):
                return None  # no header at all, which the listener allows
            raise
        if header is None:
            sock.recv(len(data))  # (all of it is the header's: see the module docstring)
            held += data
            continue
        sock.recv(header.size - len(held))
        return header


class PreTLSServer:
    """An accept loop for a TLS listener whose connections start with a PROXY header
    (what ``loop.create_server`` cannot do: its TLS transport reads the socket first).
    Duck-types the part of ``asyncio.AbstractServer`` the worker uses (close,
    is_serving)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 factory: Callable[[ProxyHeader | None], Any], ssl_ctx: Any,
                 timeout: Callable[[], float], optional: Callable[[], bool],
                 refused: Callable[[str, str, Any], None]) -> None:
        """``factory`` builds the protocol for a connection whose header was read (None:
        none, where it is optional); ``timeout`` gives the time allowed for the header
        and again for the TLS handshake; ``optional`` whether connections without a
        header are served (read per connection: a new config changes it in place);
        ``refused(reason, detail, peer)`` counts and logs a connection closed for its
        header (``reason`` a short word: missing, malformed, timeout, overload; ``peer``
        the socket's peer address)."""
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.ssl_ctx = ssl_ctx
        self.timeout = timeout
        self.optional = optional
        self.refused = refused
        self.pending: set[asyncio.Task[None]] = set()
        self._serving = True
        loop.add_reader(sock.fileno(), self._accept)

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        """Stop accepting; connections still sending their header are closed (those
        handed to TLS are the protocol's, drained as any other)."""
        if not self._serving:
            return
        self._serving = False
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for t in list(self.pending):
            t.cancel()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # EMFILE and the like: the socket stays readable, so accepting pauses
                # for a while rather than spin (asyncio's own accept loop does the same)
                log.warning("accept failed: %s; accepting again in %gs", exc, ACCEPT_PAUSE)
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(ACCEPT_PAUSE, self._resume)
                return
            conn.setblocking(False)
            if len(self.pending) >= MAX_PENDING:
                self.refused("overload", f"{MAX_PENDING} connections already waiting for "
                                         "their PROXY protocol header", addr)
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = self.loop.create_task(self._serve(conn, addr))
            self.pending.add(t)
            t.add_done_callback(self.pending.discard)

    def _resume(self) -> None:
        if self._serving:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    async def _serve(self, conn: socket.socket, addr: Any) -> None:
        timeout = self.timeout()
        try:
            async with asyncio.timeout(timeout):
                header = await read_header(conn, self.optional())
        except ProxyProtocolError as exc:
            why = "missing" if str(exc).startswith("no PROXY") else "malformed"
            self.refused(why, f"PROXY protocol: {exc}", addr)
            conn.close()
            return
        except TimeoutError:
            self.refused("timeout", f"PROXY protocol: no complete header within {timeout:g}s",
                         addr)
            conn.close()
            return
        except OSError as exc:  # (reset by the peer)
            log.debug("reading the PROXY header: %s", exc)
            conn.close()
            return
        except asyncio.CancelledError:
            conn.close()
            raise
        protocol = self.factory(header)
        try:
            await self.loop.connect_accepted_socket(
                lambda: protocol, sock=conn, ssl=self.ssl_ctx,
                ssl_handshake_timeout=timeout)
        except (OSError, ValueError) as exc:
            log.debug("TLS after the PROXY header: %s", exc)
            conn.close()
