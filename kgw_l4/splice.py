"""Sockmap splice: a userspace acceptor that lets the kernel move the bytes.

For each frontend connection: accept, pick a backend (same Maglev table as the
userspace proxy), connect, record each socket's peer in kgw_splice_peer, insert both
sockets into kgw_sockhash; bpf/sockmap.c then redirects every skb to the peer socket.
Userspace only watches for the ends, with its own epoll set registered for EPOLLRDHUP
(never EPOLLIN: the data never reaches userspace):

  peer EOF on X (TCP saw the FIN)           -> wait until Y has had every byte X
      received acknowledged (tcpi_bytes_acked), then shutdown(Y, SHUT_WR)
  both directions shut down, or an error    -> remove from the maps, close both

This is also the transport TLS passthrough reuses (``Splicer.splice``).

Known kernel limit (6.x): an SK_SKB egress redirect has no backpressure. The verdict
consumes the skb (the receive window reopens at once) and queues it on the peer's psock
for a worker that writes it into the peer's send buffer; that queue is not bounded. A
client that sends faster than the backend reads makes the gateway hold the difference
in kernel memory (bench/results/l4.md has the measurement).

Retransmissions (6.x kernels): TCP queues a segment that repeats bytes the socket
already has, but also carries new ones, whole (tcp_data_queue's "partial packet",
tcp_ofo_queue), and leaves readers to skip to copied_seq; tcp_read_skb(), which feeds the
verdict program, hands over whole skbs without looking. Redirected as they were, the old
bytes reached the peer a second time: about 1 in 100 runs of vm_tests/test_splice.py
duplicated one 65160-byte skb. bpf/sockmap.c pops the old head (counter SPLICE_TRIM),
with struct offsets from the kernel's BTF (kgw_l4/kernel_btf.py);
vm_tests/test_splice.py replays such segments by hand. The end-of-splice check
(``_check_delivery``) stays: it logs an error for a connection whose one side sent more
than arrived on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import logging
import select
import socket
import struct
import termios
from dataclasses import dataclass, field

from .acceptor import Acceptor
from .config import L4Config
from .userspace import connect, select_frontends

log = logging.getLogger("kgw.l4.splice")

BPF_SK_SKB_STREAM_VERDICT = 5
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
#: Send buffer of a spliced socket (the kernel doubles it). The sockmap backlog worker
#: stops writing into a socket once half its send buffer is in use and retries one
#: jiffy later (4 ms at HZ=250): with the autotuned 4 MB the link idled between
#: retries. 8 MB measured 10-12 Gbit/s instead of ~4.5 on the bench topology.
SPLICE_SNDBUF = 8 * 1024 * 1024
#: SO_RCVLOWAT while the two sockets are being inserted: bytes arriving in between
#: must not reach the verdict before the peer is in the sockhash (it would drop them).
INSERT_RCVLOWAT = 16 * 1024
_TCP_INFO_LEN = 232
_OFF_BYTES_ACKED = 120
_OFF_BYTES_RECEIVED = 128
ACK_POLL = 0.002
ACK_WAIT_MAX = 60.0


def tcp_bytes(sock: socket.socket) -> tuple[int, int]:
    """(bytes_acked, bytes_received) from TCP_INFO."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    if len(raw) < _OFF_BYTES_RECEIVED + 8:
        raise OSError(errno.ENOTSUP, "TCP_INFO without bytes_acked/bytes_received")
    return (struct.unpack_from("<Q", raw, _OFF_BYTES_ACKED)[0],
            struct.unpack_from("<Q", raw, _OFF_BYTES_RECEIVED)[0])


TCP_CLOSE = 7


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def _queued(sock: socket.socket) -> int:
    """Bytes in the socket's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def duplicated_bytes(arrived: int, delivered: int) -> int:
    """Bytes a splice direction delivered beyond what arrived for it (0 when none).

    ``arrived`` counts the source's FIN and ``delivered`` the destination's FIN once each
    is acknowledged; a one-byte difference is that sequence number, not data."""
    extra = delivered - arrived
    return extra if extra > 1 else 0


def _drain(sock: socket.socket) -> bytes:
    """What is left in a socket's receive queue (non-blocking)."""
    out = []
    while True:
        try:
            d = sock.recv(256 * 1024, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        if not d:
            break
        out.append(d)
    return b"".join(out)


def _tune(sock: socket.socket) -> None:
    """Send buffer for the backlog worker (see SPLICE_SNDBUF); SO_SNDBUFFORCE needs
    CAP_NET_ADMIN, which loading BPF already implies; else wmem_max caps it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SPLICE_SNDBUF)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SPLICE_SNDBUF)


_u64 = struct.Struct("=Q").pack  # a cookie as the splice maps hold it
SO_COOKIE = getattr(socket, "SO_COOKIE", 57)  # Linux's value; Python 3.11 has no name for it


def sock_cookie(sock: socket.socket) -> int:
    """The socket's cookie: the key of both splice maps (bpf/sockmap.c says why not the
    address and ports)."""
    return struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]


@dataclass(eq=False)
class _Conn:
    a: socket.socket  # client side
    b: socket.socket  # backend side
    cookies: tuple[int, int]  # (a's, b's): their keys in the splice maps
    base_acked: dict[int, int] = field(default_factory=dict)  # fd -> bytes_acked at splice
    #: fd -> bytes received before the splice that are not left for the verdict (read
    #: by userspace earlier, e.g. a peeked-and-consumed ClientHello).
    base_received: dict[int, int] = field(default_factory=dict)
    eof: set[int] = field(default_factory=set)  # fds whose peer sent FIN
    shut: set[int] = field(default_factory=set)  # fds we shut down for writing
    closed: bool = False

    def other(self, fd: int) -> socket.socket:
        return self.b if fd == self.a.fileno() else self.a


class Splicer:
    """Owns the sockmap program, its maps, and the epoll set of spliced sockets."""

    def __init__(self, loader) -> None:
        from bcc import libbcc

        self._lib = libbcc.lib
        prog_fd = loader.load("sockmap")
        self.sockhash_fd = loader.table_fd("sockmap", "kgw_sockhash")
        self.peer_fd = loader.table_fd("sockmap", "kgw_splice_peer")
        # Verdict only, no stream parser: the kernel hands the verdict whole skbs off
        # the receive queue (tcp_read_skb), without strparser's clone per skb. An
        # earlier version lost data this way; the cause was the bare-FIN skb, which
        # bpf/sockmap.c now frees instead of passing (see there).
        if self._lib.bpf_prog_attach(prog_fd, self.sockhash_fd, BPF_SK_SKB_STREAM_VERDICT, 0) != 0:
            raise OSError("cannot attach the sockmap verdict program")
        self._ep = select.epoll()
        self._conns: dict[int, _Conn] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -------------------------------------------------------------- maps

    def _update(self, fd: int, cookie: int, value: bytes) -> None:
        k = ctypes.create_string_buffer(_u64(cookie), 8)
        v = ctypes.create_string_buffer(value, len(value))
        if self._lib.bpf_update_elem(fd, k, v, 0) != 0:
            raise OSError(f"map update failed (fd {fd})")

    def _delete(self, fd: int, cookie: int) -> None:
        k = ctypes.create_string_buffer(_u64(cookie), 8)
        self._lib.bpf_delete_elem(fd, k)

    def spliced(self) -> list[tuple[str, str]]:
        """(client peer, backend peer) of every spliced connection, for inspect."""
        out = []
        for c in {id(c): c for c in self._conns.values()}.values():
            with contextlib.suppress(OSError):
                out.append(("%s:%d" % c.a.getpeername()[:2], "%s:%d" % c.b.getpeername()[:2]))
        return out

    # -------------------------------------------------------------- splice

    async def splice(self, a: socket.socket, b: socket.socket) -> None:
        """Hand two connected sockets to the kernel. Returns at once; the sockets are
        closed by the splicer when both directions are done."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self._ep.fileno(), self._on_events)
        ka, kb = sock_cookie(a), sock_cookie(b)
        conn = _Conn(a, b, (ka, kb))
        for s in (a, b):
            _tune(s)
        for s in (a, b):
            acked, received = tcp_bytes(s)
            conn.base_acked[s.fileno()] = acked
            # (bytes_received first: a byte arriving before FIONREAD can only make the
            # base smaller, never report a duplicate that is not there)
            conn.base_received[s.fileno()] = received - _queued(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, INSERT_RCVLOWAT)
        try:
            self._update(self.peer_fd, ka, _u64(kb))
            self._update(self.peer_fd, kb, _u64(ka))
            self._update(self.sockhash_fd, ka, struct.pack("<I", a.fileno()))
            self._update(self.sockhash_fd, kb, struct.pack("<I", b.fileno()))
        except OSError:
            for k in (ka, kb):
                self._delete(self.sockhash_fd, k)
                self._delete(self.peer_fd, k)
            raise
        for s in (a, b):
            self._conns[s.fileno()] = conn
            self._ep.register(s.fileno(), select.EPOLLRDHUP)
            # Bytes queued before the insert (or held back by INSERT_RCVLOWAT during
            # it) reach the verdict program only on the next data_ready; setting
            # SO_RCVLOWAT runs it now (tcp_set_rcvlowat).
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)

    def _on_events(self) -> None:
        for fd, ev in self._ep.poll(0):
            conn = self._conns.get(fd)
            if conn is None or conn.closed:
                continue
            if ev & select.EPOLLERR:
                sock = conn.a if fd == conn.a.fileno() else conn.b
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                log.info("splice: socket error on %s side: %s", "client" if sock is conn.a else
                         "backend", errno.errorcode.get(err, err))
                self._close(conn, abort=True)
                continue
            if ev & select.EPOLLRDHUP and fd not in conn.eof:
                conn.eof.add(fd)
                with contextlib.suppress(OSError):
                    self._ep.modify(fd, 0)  # only ERR/HUP from now on
                t = asyncio.get_running_loop().create_task(self._half_close(conn, fd))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
            if ev & select.EPOLLHUP:
                # Both directions of this socket are shut: nothing more to hear from
                # it (HUP is level-triggered; staying registered would spin).
                with contextlib.suppress(OSError):
                    self._ep.unregister(fd)

    async def _wait_acked(self, conn: _Conn, dst: socket.socket, target: int) -> None:
        base = conn.base_acked[dst.fileno()]
        waited = 0.0
        while tcp_bytes(dst)[0] - base < target:
            if conn.closed:
                raise OSError(errno.ECONNABORTED, "splice closed")
            await asyncio.sleep(ACK_POLL)
            waited += ACK_POLL
            if waited > ACK_WAIT_MAX:
                raise TimeoutError("peer did not acknowledge the spliced bytes")

    async def _half_close(self, conn: _Conn, fd: int) -> None:
        """src sent FIN: forward it to dst once every byte src received is acked there.

        If src already left TCP_CLOSE_WAIT for TCP_CLOSE (we had shut its write side,
        so its FIN completed the close), the kernel unhashes it and drops it from the
        sockmap at once, and data that arrived with the FIN is never redirected: it
        stays in src's receive queue. We read that remainder and send it ourselves,
        after the redirected bytes before it are acknowledged, so order is kept."""
        if conn.closed:
            return
        src = conn.a if fd == conn.a.fileno() else conn.b
        dst = conn.other(fd)
        try:
            # bytes_received counts the FIN's sequence number too: the data is one less.
            received = tcp_bytes(src)[1] - 1
            rest = b""
            if tcp_state(src) == TCP_CLOSE:
                rest = _drain(src)
            await self._wait_acked(conn, dst, received - len(rest))
            if rest:
                dst.setblocking(True)
                dst.sendall(rest)
                dst.setblocking(False)
                await self._wait_acked(conn, dst, received)
            dst.shutdown(socket.SHUT_WR)
            conn.shut.add(dst.fileno())
        except (OSError, TimeoutError) as e:
            if conn.closed:
                return  # the other side failed first and closed both
            log.warning("splice half-close failed: %s", e)
            self._close(conn, abort=True)
            return
        if len(conn.shut) == 2:
            self._close(conn)

    def _close(self, conn: _Conn, abort: bool = False) -> None:
        if conn.closed:
            return
        conn.closed = True
        if not abort:
            self._check_delivery(conn)
        for s, cookie in zip((conn.a, conn.b), conn.cookies):
            fd = s.fileno()
            self._delete(self.sockhash_fd, cookie)
            self._delete(self.peer_fd, cookie)
            with contextlib.suppress(OSError, ValueError):
                self._ep.unregister(fd)
            self._conns.pop(fd, None)
            if abort:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()

    def _check_delivery(self, conn: _Conn) -> None:
        """After a clean end: each side must have sent exactly what arrived on the other.
        More means the kernel delivered some bytes twice (module docstring,
        "Retransmissions"): say so, since the peers' data is then corrupt."""
        for src, dst in ((conn.a, conn.b), (conn.b, conn.a)):
            try:
                arrived = tcp_bytes(src)[1] - conn.base_received[src.fileno()]
                delivered = tcp_bytes(dst)[0] - conn.base_acked[dst.fileno()]
            except (OSError, KeyError):
                continue
            extra = duplicated_bytes(arrived, delivered)
            if extra:
                log.error("splice: %s -> %s delivered %d bytes more than arrived (%d): "
                          "the stream was corrupted in the kernel",
                          "client" if src is conn.a else "backend",
                          "backend" if src is conn.a else "client", extra, arrived)

    async def close(self) -> None:
        for conn in list({id(c): c for c in self._conns.values()}.values()):
            self._close(conn, abort=True)
        for t in list(self._tasks):
            t.cancel()
        if self._loop is not None:
            self._loop.remove_reader(self._ep.fileno())
        self._ep.close()


class SpliceProxy(Acceptor):
    """L4 frontends served by accept + connect + sockmap splice."""

    def __init__(self, splicer: Splicer) -> None:
        super().__init__()
        self.splicer = splicer
        self._picks: dict[tuple[str, int], object] = {}
        self.errors: dict[str, str] = {}

    async def apply(self, config: L4Config) -> None:
        wanted, picks, errors = select_frontends(config, unsupported="cannot be spliced (use tc or xdp)")
        self._picks.update(picks)
        errors.update(self.listen({key: fe.name for key, fe in wanted.items()}))
        self.errors = errors

    async def serve(self, key: tuple[str, int], c: socket.socket) -> None:
        pick = self._picks.get(key)
        be = pick.choose(c.getpeername()[:2], c.getsockname()[:2]) if pick else None  # type: ignore[attr-defined]
        if be is None:
            c.close()
            return
        try:
            b = await connect(be)
        except (OSError, asyncio.TimeoutError) as e:
            log.info("backend %s:%d unreachable: %s", be[0], be[1], e)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            return
        try:
            await self.splicer.splice(c, b)
        except OSError as e:
            log.warning("splice failed: %s", e)
            c.close()
            b.close()

    async def close(self) -> None:
        self.close_listeners()
