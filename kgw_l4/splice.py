"""Sockmap splice: a userspace acceptor that lets the kernel move the bytes.

For each frontend connection: accept, pick a backend (same Maglev table as the
userspace proxy), connect, record each socket's peer in kgw_splice_peer, insert both
sockets into kgw_sockhash; bpf/sockmap.c then redirects every skb to the peer socket.
Userspace watches for the ends, with its own epoll set registered for EPOLLRDHUP (never
EPOLLIN: bytes reach userspace only when a direction is held, below):

  peer EOF on X (TCP saw the FIN)           -> wait until Y has had every byte X
      received acknowledged (tcpi_bytes_acked), then shutdown(Y, SHUT_WR)
  both directions shut down, or an error    -> remove from the maps, close both

This is also the transport TLS passthrough reuses (``Splicer.splice``).

Backpressure (KGW_SPLICE_BACKLOG_MAX, `--l4-splice-backlog`, 1024 skbs by default; 0 turns
it off): an SK_SKB redirect consumes the skb at once (the receive window reopens)
and queues it on the peer's psock for a kernel worker; that queue has no bound of its
own, so a client sending faster than the backend reads (or a slow-reading client of a
download) would make the gateway hold the difference. bpf/sockmap.c therefore *holds* a
direction whose destination has more than KGW_SPLICE_BACKLOG_MAX skbs queued: the
verdict passes its skbs to the source socket's own queue, where they stay charged to its
receive buffer, so TCP closes the window and the sender waits. A ring buffer event
(kgw_splice_evt) starts ``_relay``:

  1. copy the held bytes from source to destination, with flow control (the source is
     read only as fast as the destination accepts); before writing each piece, wait
     until the destination has taken in every byte redirected to it so far
     (bytes_acked + SIOCOUTQ against kgw_splice_peer.redirected, ``_drained``): the
     kernel worker is done with every byte ahead of the piece, which cannot overtake
     one of them;
  2. once nothing more is waiting, publish how much it has taken (kgw_splice_hold:
     bytes read and written) and check, after taking the source socket's lock, that it
     is every byte the verdict held (kgw_splice_peer.passed); if not, more were held
     meanwhile, so go on copying. The verdict holds every skb while the two differ, so
     nothing can overtake a held byte, and redirects resume exactly when they agree.

Why the wait comes before every write and not once per relay: between the publication
in 2 and the check, the verdict may find nothing owed, redirect more skbs (~50 GRO skbs
were seen while the agent was preempted there), then hold again; the check then says go
on, and the bytes held after those redirects would be written while the redirected
ones were still queued for the kernel worker (a 3.3 MB shift in the stream of
vm_tests' slow backend now and then under load; tests/l4/test_splice_relay.py plays
that interleaving). Ordering is guaranteed, not made likely: a held byte
becomes readable only after the verdict that held it has returned, so every redirect
ahead of it in the stream (an earlier verdict on the same socket, serialised by its
lock) is in kgw_splice_peer.redirected when the agent reads the counts after reading
the byte; and no redirect can come after it before it is written (it is owed until
then). Waiting for the destination to have taken in ``redirected`` plus what the agent
wrote therefore orders it after everything the kernel sent ahead of it. The wait costs
one map lookup per piece read (RELAY_CHUNK) when nothing was redirected since the last.

A slow reader thus costs a bounded amount of gateway memory per direction (about
KGW_SPLICE_BACKLOG_MAX skbs plus the sockets' buffers), and the direction goes back to
the kernel once the reader keeps up again. The price: while a sender outruns its
receiver, part of the stream is copied here (bench/results/l4.md). The limit: an skb
held while the source's own psock still queues bytes of the other direction (both
directions stuck at once: a client that keeps sending and reads nothing) waits on that
queue, uncharged, so the window stays open; past KGW_SPLICE_OVERFLOW_MAX skbs there
the verdict drops and asks for a reset (SPLICE_EVT_OVERFLOW), and the connection is
reset with a log line. Without the psock offsets in the kernel's BTF the program is
built without holds and warns (kgw_l4/kernel_btf.py).

The same hold covers a FIN that comes while the two sockets are being inserted
(``splice_now``): the verdict runs on the backend socket before the client socket is in
the sockhash, and its bytes (a greeting) can only be held; the half-close then copies
them before it passes the FIN on (``_half_close_soon`` looks for held bytes before it
waits for acknowledgements, which held bytes never get). Without holds (no BTF offsets,
or ``--l4-splice-backlog 0``) they are dropped (counter SPLICE_DROP) and that client
times out.

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
import errno
import fcntl
import functools
import logging
import select
import socket
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kgw_l7.proxyaccept import read_header
from kgw_l7.proxyproto import ProxyProtocolError

from . import abi
from .abi import SPLICE_EVT_HOLD, SPLICE_EVT_OVERFLOW, SpliceEvent, SplicePeer
from .acceptor import KEEPALIVE_IDLE, Acceptor
from .config import Frontend, L4Config
from .metrics import BackendStats, FrontendStats, Tally, endpoint_groups, live_view
from .userspace import (
    PROXY_HEADER_TIMEOUT, Conn, backend_stats, connect_backend, copy, frontend_stats,
    kept_tally, proxy_refused, repick, select_frontends,
)

if TYPE_CHECKING:
    from .flowlog import FlowLog

log = logging.getLogger("kgw.l4.splice")

SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
#: Send buffer of a spliced socket (the kernel doubles it). The sockmap backlog worker
#: stops writing into a socket once half its send buffer is in use and retries one
#: jiffy later (4 ms at HZ=250): with the autotuned 4 MB the link idled between
#: retries. 8 MB measured 10-12 Gbit/s instead of ~4.5 on the bench topology.
SPLICE_SNDBUF = 8 * 1024 * 1024
#: SO_RCVLOWAT while the two sockets are being inserted: bytes arriving in between
#: should not reach the verdict before the peer is in the sockhash (it would have to
#: hold them for the agent to copy). A FIN still does (``splice_now``).
INSERT_RCVLOWAT = 16 * 1024
_TCP_INFO_LEN = 232
_OFF_BYTES_ACKED = 120
_OFF_BYTES_RECEIVED = 128
ACK_POLL = 0.002
#: polling backs off to this while nothing moves
POLL_MAX = 0.1
#: a wait for the peer (acknowledgements, a held direction's queue) gives up after this
#: long without progress: a reader that stops for good must not pin a connection forever
STALL_MAX = 300.0
RELAY_CHUNK = 1024 * 1024


def tcp_bytes(sock: socket.socket) -> tuple[int, int]:
    """(bytes_acked, bytes_received) from TCP_INFO."""
    return tcp_info(sock)[1:]


_BYTES = struct.Struct("<QQ")
assert _OFF_BYTES_RECEIVED == _OFF_BYTES_ACKED + 8


def tcp_info(sock: socket.socket) -> tuple[int, int, int]:
    """(TCP state, bytes_acked, bytes_received) from one TCP_INFO read."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    if len(raw) < _OFF_BYTES_RECEIVED + 8:
        raise OSError(errno.ENOTSUP, "TCP_INFO without bytes_acked/bytes_received")
    return (raw[0], *_BYTES.unpack_from(raw, _OFF_BYTES_ACKED))


TCP_CLOSE = 7


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def _queued(sock: socket.socket) -> int:
    """Bytes in the socket's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def _outq(sock: socket.socket) -> int:
    """Bytes in the socket's send queue, sent or not, not acknowledged (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def _at_once(counter: Callable[[], int], queue: Callable[[], int]) -> tuple[int, int]:
    """(counter(), queue()) as of one moment. They come from separate calls, and a
    packet in between moves bytes from the queue into the counter: the pair is read
    again until the counter did not move across the queue's reading."""
    before = counter()
    while True:
        q = queue()
        after = counter()
        if after == before:
            return before, q
        before = after


def taken_in(sock: socket.socket) -> int:
    """Bytes written into the socket so far: acknowledged plus still queued.

    Read queued-then-acknowledged in separate calls, an ACK in between counted its
    bytes twice and the sum ran ahead of what had been written: a held direction then
    started copying while the kernel worker still had redirected bytes to write (about
    1 full-duplex run in 40 skipped ~130 KB). Hence ``_at_once``."""
    acked, queued = _at_once(lambda: tcp_bytes(sock)[0], lambda: _outq(sock))
    return acked + queued


def received_before(sock: socket.socket) -> int:
    """Bytes the socket received that are not in its receive queue: taken by userspace
    before a splice; the rest is left for the verdict. (A greeting from a backend that
    speaks first, arriving between the two readings, once made this 12 bytes too small:
    the half-close then waited for 12 bytes that were never coming. Hence ``_at_once``.)"""
    received, queued = _at_once(lambda: tcp_bytes(sock)[1], lambda: _queued(sock))
    return received - queued


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


def tune(sock: socket.socket) -> None:
    """Send buffer for the backlog worker (see SPLICE_SNDBUF); SO_SNDBUFFORCE needs
    CAP_NET_ADMIN, which loading BPF already implies; else wmem_max caps it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SPLICE_SNDBUF)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SPLICE_SNDBUF)


#: socket errors that mean the peer has gone (reset the connection, or stopped reading)
_PEER_ENDED = (errno.ECONNRESET, errno.EPIPE)

SO_COOKIE = getattr(socket, "SO_COOKIE", 57)  # Linux's value; Python 3.11 has no name for it


def sock_cookie(sock: socket.socket) -> int:
    """The socket's cookie: the key of both splice maps (bpf/sockmap.c says why not the
    address and ports)."""
    return struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]


@dataclass(eq=False)
class _Way:
    """One direction of a spliced connection: what arrives on src goes out of dst."""
    src: socket.socket
    dst: socket.socket
    cookie: int  # src's
    read: int = 0  # held bytes userspace read from src
    written: int = 0  # bytes userspace wrote into dst
    #: kgw_splice_peer.redirected when dst was last seen to have taken in every
    #: redirected byte (``_drained``)
    drained: int = 0
    relay: asyncio.Task | None = None  # copying a held direction (module docstring)
    released: bool = False  # kgw_splice_hold has an entry for src (``_release``)


@dataclass(eq=False)
class _Conn:
    a: socket.socket  # client side
    b: socket.socket  # backend side
    cookies: tuple[int, int]  # (a's, b's): their keys in the splice maps
    ways: dict[int, _Way] = field(default_factory=dict)  # src fd -> direction
    #: fd -> taken_in() at splice: bytes written before it count neither as redirected
    #: nor as acknowledged splice bytes
    base_taken: dict[int, int] = field(default_factory=dict)
    #: fd -> bytes received before the splice that are not left for the verdict (read
    #: by userspace earlier, e.g. a peeked-and-consumed ClientHello).
    base_received: dict[int, int] = field(default_factory=dict)
    eof: set[int] = field(default_factory=set)  # fds whose peer sent FIN
    #: (fd, for writing) -> future, registered with the event loop by ``_ready``
    watched: dict[tuple[int, bool], asyncio.Future] = field(default_factory=dict)
    shut: set[int] = field(default_factory=set)  # fds we shut down for writing
    closed: bool = False
    #: the frontend's and the backend endpoint's counters (SpliceProxy), if any: the
    #: connection's bytes are added to them when it closes, read live until then
    tallies: tuple[Tally | None, Tally | None] = (None, None)
    #: told (client to backend, backend to client) bytes when the connection closes
    on_close: Callable[[int, int], None] | None = None

    def other(self, fd: int) -> socket.socket:
        return self.b if fd == self.a.fileno() else self.a


class Splicer:
    """Owns the sockmap program, its maps, and the epoll set of spliced sockets."""

    def __init__(self, loader) -> None:
        loader.load("sockmap")
        #: cookie -> socket; cookie -> kgw_splice_peer; cookie -> bytes taken from a hold
        self.sockhash = loader.table("sockmap", "kgw_sockhash")
        self.peers = loader.table("sockmap", "kgw_splice_peer")
        self.taken = loader.table("sockmap", "kgw_splice_hold")
        self.overflow_max = loader.sizes["KGW_SPLICE_OVERFLOW_MAX"]
        #: the verdict can hold directions (backpressure on); else nothing is ever held
        self.holds = loader.sizes["KGW_SPLICE_BACKLOG_MAX"] > 0
        self._events_fd, self._consume_events = loader.ring_buffer(
            "sockmap", "kgw_splice_evt", self._on_event)
        # Verdict only, no stream parser: the kernel hands the verdict whole skbs off
        # the receive queue (tcp_read_skb), without strparser's clone per skb. An
        # earlier version lost data this way; the cause was the bare-FIN skb, which
        # bpf/sockmap.c now frees instead of passing (see there).
        loader.attach_verdict("sockmap", self.sockhash)
        self._ep = select.epoll()
        self._conns: dict[int, _Conn] = {}
        self._by_cookie: dict[int, tuple[_Conn, _Way]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -------------------------------------------------------------- maps

    def _counts(self, cookie: int) -> SplicePeer:
        """The socket's kgw_splice_peer entry (its byte counts)."""
        raw = self.peers.lookup(abi.u64(cookie))
        if raw is None:
            raise OSError(errno.ENOENT, "spliced socket missing from kgw_splice_peer")
        return SplicePeer.from_buffer_copy(raw)

    def _forget(self, cookie: int) -> None:
        """Remove a socket from the three maps (whatever it is in)."""
        key = abi.u64(cookie)
        for m in (self.sockhash, self.peers, self.taken):
            m.delete(key)

    def spliced(self) -> list[dict]:
        """Every spliced connection, for inspect: its peers and, per direction ("up":
        client to backend, "down": back), the bytes the kernel redirected, the bytes the
        agent copied while the direction was held, and whether it is held now."""
        out = []
        for c in {id(c): c for c in self._conns.values()}.values():
            try:
                row: dict = {"client": "%s:%d" % c.a.getpeername()[:2],
                             "backend": "%s:%d" % c.b.getpeername()[:2]}
                for name, sock in (("up", c.a), ("down", c.b)):
                    way = c.ways[sock.fileno()]
                    row[f"{name}_redirected"] = self._counts(way.cookie).redirected
                    row[f"{name}_copied"] = way.written
                    row[f"{name}_held"] = way.relay is not None and not way.relay.done()
            except OSError:
                continue
            out.append(row)
        return out

    # -------------------------------------------------------------- splice

    async def splice(self, a: socket.socket, b: socket.socket, fe: Tally | None = None,
                     be: Tally | None = None,
                     on_close: Callable[[int, int], None] | None = None) -> None:
        """``splice_now`` from a coroutine."""
        self.splice_now(a, b, fe, be, on_close)

    def splice_now(self, a: socket.socket, b: socket.socket, fe: Tally | None = None,
                   be: Tally | None = None,
                   on_close: Callable[[int, int], None] | None = None, *,
                   untouched: bool = False, tuned: bool = False) -> None:
        """Hand two connected sockets to the kernel (a: the client's, b: the backend's),
        from the event loop's thread. Returns at once; the sockets are closed by the
        splicer when both directions are done. ``fe``/``be``: counters of the frontend
        and backend endpoint (bytes each way and connections open); ``on_close``: told
        the bytes each way when it closes (the flow log). ``untouched``: the caller has
        read nothing from either socket (peeking is not reading) and written nothing
        into them, so the bytes taken before the splice are known without asking (see
        below); ``tuned``: both already have the splice send buffer (``tune``; an
        accepted socket inherits its listener's)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            loop.add_reader(self._ep.fileno(), self._on_events)
            loop.add_reader(self._events_fd, self._consume_events)
        ka, kb = sock_cookie(a), sock_cookie(b)
        conn = _Conn(a, b, (ka, kb), tallies=(fe, be), on_close=on_close)
        conn.ways = {a.fileno(): _Way(a, b, ka), b.fileno(): _Way(b, a, kb)}
        if not tuned:
            for s in (a, b):
                tune(s)
        for s in (a, b):
            if untouched:
                # Nothing written: nothing queued to send, so what it has taken in is
                # what was acknowledged (the SYN's sequence number, as it happens);
                # nothing read: every byte received is still queued for the verdict.
                conn.base_taken[s.fileno()] = tcp_bytes(s)[0]
                conn.base_received[s.fileno()] = 0
            else:
                conn.base_taken[s.fileno()] = taken_in(s)
                conn.base_received[s.fileno()] = received_before(s)
        # b goes into the sockhash first: bytes arriving on a socket in the sockhash
        # whose peer is not yet there cannot be redirected, so b's are held back
        # meanwhile (below its SO_RCVLOWAT no data_ready, hence no verdict) and a,
        # inserted last, needs no such care. A FIN is not held back (tcp_data_ready
        # calls data_ready once the socket is done, whatever its SO_RCVLOWAT): a
        # backend that speaks and closes at once can run the verdict on b with its
        # greeting before a is in (1 connection in a few hundred of vm_tests' "whoami").
        # The verdict holds such skbs; the agent copies them like any held bytes.
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, INSERT_RCVLOWAT)
        try:
            self.peers.update(abi.u64(ka), abi.splice_peer_val(kb))
            self.peers.update(abi.u64(kb), abi.splice_peer_val(ka))
            self.sockhash.update(abi.u64(kb), abi.sockhash_val(b.fileno()))
            self.sockhash.update(abi.u64(ka), abi.sockhash_val(a.fileno()))
        except OSError:
            for k in (ka, kb):
                self._forget(k)
            with contextlib.suppress(OSError):  # (the caller may copy it in userspace)
                b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            raise
        for s in (a, b):
            self._conns[s.fileno()] = conn
            way = conn.ways[s.fileno()]
            self._by_cookie[way.cookie] = (conn, way)
            self._ep.register(s.fileno(), select.EPOLLRDHUP)
            # Bytes queued before the insert (the peeked ClientHello, or b's held back
            # by INSERT_RCVLOWAT during it) reach the verdict program only on the next
            # data_ready; setting SO_RCVLOWAT runs it now (tcp_set_rcvlowat).
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        if fe is not None:
            fe.active += 1

    def _bytes(self, conn: _Conn) -> tuple[int, int]:
        """(client to backend, backend to client) so far: what the kernel redirected
        plus what the agent copied, each way."""
        out = []
        for sock in (conn.a, conn.b):
            way = conn.ways[sock.fileno()]
            try:
                redirected = self._counts(way.cookie).redirected
            except OSError:
                redirected = 0
            out.append(redirected + way.written)
        return out[0], out[1]

    def open_bytes(self) -> list[tuple[Tally | None, Tally | None, int, int]]:
        """Each open connection's counters and its bytes each way so far (one map
        lookup per socket: read at scrape time, nothing per packet)."""
        out = []
        for c in {id(c): c for c in self._conns.values()}.values():
            if not c.closed and c.tallies != (None, None):
                out.append((*c.tallies, *self._bytes(c)))
        return out

    def _spawn(self, coro) -> asyncio.Task:
        assert self._loop is not None  # (set by the first splice)
        t = self._loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _on_events(self) -> None:
        for fd, ev in self._ep.poll(0):
            conn = self._conns.get(fd)
            if conn is None or conn.closed:
                continue
            if ev & select.EPOLLERR:
                sock = conn.a if fd == conn.a.fileno() else conn.b
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                # A peer's reset is how many clients end (TLS ones with the server's
                # close_notify unread): not worth a line per connection.
                log.log(logging.DEBUG if err in _PEER_ENDED else logging.INFO,
                        "splice: socket error on %s side: %s",
                        "client" if sock is conn.a else "backend", errno.errorcode.get(err, err))
                self._close(conn, abort=True)
                continue
            if ev & select.EPOLLRDHUP and fd not in conn.eof:
                conn.eof.add(fd)
                with contextlib.suppress(OSError):
                    self._ep.modify(fd, 0)  # only ERR/HUP from now on
                self._half_close_soon(conn, fd, ACK_POLL, -1, 0.0)
                if conn.closed:
                    continue
            if ev & select.EPOLLHUP:
                # Both directions of this socket are shut: nothing more to hear from
                # it (HUP is level-triggered; staying registered would spin).
                with contextlib.suppress(OSError):
                    self._ep.unregister(fd)

    # -------------------------------------------------------------- holds

    def _on_event(self, record: bytes) -> None:
        """A ring buffer record from the verdict (struct kgw_splice_event)."""
        try:
            e = SpliceEvent.from_buffer_copy(record)
            found = self._by_cookie.get(e.cookie)
            if found is None:  # closed meanwhile
                self.taken.delete(abi.u64(e.cookie))
            elif e.kind == SPLICE_EVT_HOLD:
                self._start_relay(*found)
            elif e.kind == SPLICE_EVT_OVERFLOW:
                conn, way = found
                if conn.tallies[0] is not None:
                    conn.tallies[0].drop("overflow_reset")
                side = "client" if way.src is conn.a else "backend"
                log.warning("splice: connection reset: the %s kept sending while it read "
                            "nothing (both directions stuck, more than %d skbs queued)",
                            side, self.overflow_max)
                self._close(conn, abort=True)
        except Exception:  # called from C (the ring buffer): never let it unwind there
            log.exception("splice: cannot act on a held direction")

    def _start_relay(self, conn: _Conn, way: _Way) -> None:
        if conn.closed or way.src.fileno() in conn.eof:
            return  # the half-close copies what is held
        if way.relay is None or way.relay.done():
            way.relay = self._spawn(self._relay(conn, way))
            way.relay.add_done_callback(lambda t: self._task_done(conn, t))

    def _task_done(self, conn: _Conn, task: asyncio.Task) -> None:
        if task.cancelled() or conn.closed:
            return
        e = task.exception()
        if e is not None:
            log.warning("splice: copying a held direction failed: %s", e)
            self._close(conn, abort=True)

    async def _wait(self, conn: _Conn, what: str, measure, target: int) -> None:
        """Poll until measure() >= target; give up after STALL_MAX without progress."""
        last, still, delay = -1, 0.0, ACK_POLL
        while (cur := measure()) < target:
            if conn.closed:
                raise OSError(errno.ECONNABORTED, "splice closed")
            if cur != last:
                last, still, delay = cur, 0.0, ACK_POLL
            elif still > STALL_MAX:
                raise TimeoutError(f"{what}: no progress for {STALL_MAX:.0f}s")
            await asyncio.sleep(delay)
            still += delay
            delay = min(delay * 2, POLL_MAX)

    async def _drained(self, conn: _Conn, way: _Way) -> None:
        """Until dst has taken in every byte redirected to it (and everything we wrote):
        the kernel worker is done with this direction. Called after reading held bytes
        and before writing them (module docstring: why that orders them)."""
        redirected = self._counts(way.cookie).redirected
        if redirected == way.drained:
            return  # dst took in that many already, and every byte we wrote since
        base = conn.base_taken[way.dst.fileno()]
        await self._wait(conn, "redirected bytes", lambda: taken_in(way.dst) - base,
                         redirected + way.written)
        way.drained = redirected

    def _release(self, way: _Way) -> bool:
        """Publish what we have taken (read and written: the verdict holds every skb
        while the bytes it held are more); True if that is all of them, so the
        direction is the kernel's again, False if more were held meanwhile."""
        self.taken.update(abi.u64(way.cookie), abi.u64(way.written))
        way.released = True
        tcp_bytes(way.src)  # takes src's lock: a verdict running on it has finished
        return self._counts(way.cookie).passed == way.read

    async def _relay(self, conn: _Conn, way: _Way, to_eof: bool = False) -> None:
        """Copy a held direction until it has caught up (module docstring), or, with
        ``to_eof``, until src's end of stream (the half-close)."""
        buf = bytearray(RELAY_CHUNK)
        view = memoryview(buf)
        waited = 0.0
        while not conn.closed:
            try:
                n = way.src.recv_into(buf, RELAY_CHUNK, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                if not to_eof and self._release(way):
                    return
                await self._ready(conn, way.src, writing=False)
                continue
            if not n:  # (after src's FIN no skb reaches the verdict: nothing to publish)
                if not to_eof or self._counts(way.cookie).passed <= way.read:
                    return
                # EOF, yet a held skb is still on its way to src's queue (queued
                # behind bytes the other direction sends out of src)
                if waited > STALL_MAX:
                    raise TimeoutError("held bytes did not arrive")
                await asyncio.sleep(ACK_POLL)
                waited += ACK_POLL
                continue
            way.read += n
            await self._drained(conn, way)
            sent = 0
            while sent < n:
                try:
                    sent += way.dst.send(view[sent:n], socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    await self._ready(conn, way.dst, writing=True)
            way.written += n

    def _ready(self, conn: _Conn, sock: socket.socket, writing: bool) -> asyncio.Future:
        """A future done when sock is readable (writable). Registered with the event loop
        until then; ``_close`` unregisters what is left before it closes the fds (a
        later removal could hit a new socket that reuses the number) and cancels it."""
        loop = self._loop
        assert loop is not None
        fd = sock.fileno()
        fut = loop.create_future()
        add, remove = (loop.add_writer, loop.remove_writer) if writing else \
            (loop.add_reader, loop.remove_reader)

        def ready() -> None:
            remove(fd)
            conn.watched.pop((fd, writing), None)
            if not fut.done():
                fut.set_result(None)

        add(fd, ready)
        conn.watched[(fd, writing)] = fut
        return fut

    # -------------------------------------------------------------- ends

    def _half_close_soon(self, conn: _Conn, fd: int, delay: float, last: int,
                         still: float) -> None:
        """``_half_close`` without a task while nothing but acknowledgements is awaited
        (no held bytes to copy, src not closed under us): the usual end of a short
        connection. Until dst has acknowledged every byte src received it checks again
        from a timer, backing off like ``_wait`` (``last``: the count seen before,
        ``still``: for how long it has not moved); anything else goes to the task."""
        if conn.closed:
            return
        way = conn.ways[fd]
        if way.relay is not None:
            self._spawn(self._half_close(conn, fd))
            return
        src, dst = way.src, way.dst
        try:
            state, _, received = tcp_info(src)
            if state == TCP_CLOSE:
                self._spawn(self._half_close(conn, fd))
                return
            if self.holds and self._counts(way.cookie).passed > way.read:
                # Held bytes to copy first; until they are, dst cannot acknowledge them.
                self._spawn(self._half_close(conn, fd))
                return
            acked = tcp_bytes(dst)[0] - conn.base_taken[dst.fileno()]
            if acked < received - 1 - conn.base_received[fd]:  # (the FIN counts one)
                if acked != last:
                    last, still, delay = acked, 0.0, ACK_POLL
                elif still > STALL_MAX:
                    raise TimeoutError(f"acknowledgements: no progress for {STALL_MAX:.0f}s")
                assert self._loop is not None
                self._loop.call_later(delay, self._half_close_soon, conn, fd,
                                      min(delay * 2, POLL_MAX), last, still + delay)
                return
            dst.shutdown(socket.SHUT_WR)
        except (OSError, TimeoutError) as e:
            if getattr(e, "errno", None) not in _PEER_ENDED + (errno.ENOTCONN,):
                log.warning("splice half-close failed: %s", e)
            self._close(conn, abort=True)
            return
        conn.shut.add(dst.fileno())
        if len(conn.shut) == 2:
            self._close(conn)

    async def _half_close(self, conn: _Conn, fd: int) -> None:
        """src sent FIN: forward it to dst once every byte src received is acked there.

        Bytes that did not go through the verdict are copied first (``_relay``): held
        ones, and those left in src's receive queue when src already left
        TCP_CLOSE_WAIT for TCP_CLOSE (we had shut its write side, so its FIN completed
        the close): the kernel then unhashes it and drops it from the sockmap at once,
        and data that arrived with the FIN is never redirected."""
        if conn.closed:
            return
        way = conn.ways[fd]
        src, dst = way.src, way.dst
        try:
            # bytes_received counts the FIN's sequence number too: the data is one less.
            received = tcp_bytes(src)[1] - 1 - conn.base_received[fd]
            if way.relay is not None:
                await way.relay
            if tcp_state(src) == TCP_CLOSE or \
                    (self.holds and self._counts(way.cookie).passed > way.read):
                await self._relay(conn, way, to_eof=True)
            base = conn.base_taken[dst.fileno()]
            await self._wait(conn, "acknowledgements", lambda: tcp_bytes(dst)[0] - base, received)
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
        if not abort:
            self._check_delivery(conn)
        fe, be = conn.tallies
        if fe is not None or be is not None or conn.on_close is not None:
            up, down = self._bytes(conn)
            if conn.on_close is not None:
                try:
                    conn.on_close(up, down)
                except Exception:  # noqa: BLE001 — a log line must not leak the sockets
                    log.exception("splice: flow close callback failed")
            for t in (fe, be):
                if t is not None:
                    t.bytes[0] += up
                    t.bytes[1] += down
            if fe is not None:
                fe.active -= 1
        conn.closed = True
        for way in conn.ways.values():
            if way.relay is not None and not way.relay.done():
                way.relay.cancel()
        if self._loop is not None:  # (and whoever waits, e.g. a half-close, is cancelled)
            for (fd, writing), fut in conn.watched.items():
                (self._loop.remove_writer if writing else self._loop.remove_reader)(fd)
                fut.cancel()
            conn.watched.clear()
        # Closing a socket takes it out of the epoll set (the kernel does it when the
        # last reference goes); kgw_splice_hold has an entry only for a direction that
        # was ever held.
        for s, cookie in zip((conn.a, conn.b), conn.cookies):
            fd = s.fileno()
            key = abi.u64(cookie)
            self.sockhash.delete(key)
            self.peers.delete(key)
            if conn.ways[fd].released:
                self.taken.delete(key)
            self._by_cookie.pop(cookie, None)
            self._conns.pop(fd, None)
            if abort:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()

    def _check_delivery(self, conn: _Conn) -> None:
        """After a clean end: each side must have sent exactly what arrived on the other.
        More means the kernel delivered some bytes twice (module docstring,
        "Retransmissions"): say so, since the peers' data is then corrupt."""
        try:
            info = {s: tcp_info(s) for s in (conn.a, conn.b)}
        except OSError:
            return
        for src, dst in ((conn.a, conn.b), (conn.b, conn.a)):
            try:
                arrived = info[src][2] - conn.base_received[src.fileno()]
                delivered = info[dst][1] - conn.base_taken[dst.fileno()]
            except KeyError:
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
            self._loop.remove_reader(self._events_fd)
        self._ep.close()


class SpliceProxy(Acceptor):
    """L4 frontends served by accept + connect + sockmap splice.

    Counters (kgw_l4.metrics, the same families as the other modes): per frontend and
    backend endpoint, connections given a backend and those dropped by reason, counted
    here per connection; bytes each way from the splice maps (the kernel's redirected
    bytes plus the agent's copies), added up when a connection closes and read for the
    open ones at scrape time, so the bytes cost nothing per packet. No packet counts:
    the bytes move as skbs of any size."""

    def __init__(self, splicer: Splicer, *, keepalive: int = KEEPALIVE_IDLE) -> None:
        super().__init__(keepalive=keepalive)
        self.splicer = splicer
        self._picks: dict[tuple[str, int], object] = {}
        self.errors: dict[str, str] = {}
        #: (address, port) -> the frontend served there, and its counters
        self._frontends: dict[tuple[str, int], tuple[Frontend, Tally]] = {}
        #: backend endpoint -> its counters; endpoint -> its backendRef groups
        self._backends: dict[tuple[str, int], Tally] = {}
        self._groups: dict[str, set[str]] = {}
        #: Flow events (kgw_l4.flowlog), when the access log is on.
        self.flow_log: FlowLog | None = None
        #: endpoints failing their health check (kgw_l4.health)
        self.down: frozenset[tuple[str, str, int]] = frozenset()

    async def set_health(self, down: frozenset[tuple[str, str, int]]) -> None:
        """New connections avoid the endpoints ``down`` from now on."""
        self.down = down
        await repick(self._picks, self._frontends, down)

    async def apply(self, config: L4Config) -> None:
        wanted, picks, errors = select_frontends(config,
                                                 unsupported="cannot be spliced (use tc or xdp)",
                                                 down=self.down)
        self._picks.update(picks)
        self._frontends = {key: (fe, kept_tally(self._frontends.get(key), fe))
                           for key, fe in wanted.items()}
        self._groups = endpoint_groups(wanted.values())
        self._backends = {ep: self._backends.get(ep) or Tally()
                          for p in picks.values() for ep in p.endpoints}
        errors.update(self.listen({key: fe.name for key, fe in wanted.items()}))
        self.errors = errors

    async def serve(self, key: tuple[str, int], c: socket.socket) -> None:
        pick = self._picks.get(key)
        fe, tally = self._frontends.get(key) or (None, Tally())
        peer = c.getpeername()[:2]
        local = c.getsockname()[:2]
        be = pick.choose(peer, local) if pick else None  # type: ignore[attr-defined]
        flog = self.flow_log
        name, route = (fe.name, fe.route) if fe is not None else (f"{key[0]}:{key[1]}", "")
        if fe is not None and fe.proxy_protocol:
            # (taken off the socket, peeked: what follows stays for the kernel to forward)
            try:
                header = await asyncio.wait_for(
                    read_header(c, fe.proxy_protocol == "optional"), PROXY_HEADER_TIMEOUT)
            except (TimeoutError, ProxyProtocolError, OSError) as e:
                proxy_refused(tally, name, e)
                if flog is not None:
                    flog.refused(name, route, peer, "DPE")
                c.close()
                return
            if header is not None and header.source is not None:
                peer, local = header.source, header.destination or local
        if be is None:
            tally.drop("no_backend")
            if flog is not None:
                flog.refused(name, route, peer, "UH")
            c.close()
            return
        try:
            b = await connect_backend(
                be, (peer, local) if fe is not None and fe.backend_proxy_protocol else None)
        except (TimeoutError, OSError) as e:
            log.info("backend %s:%d unreachable: %s", be[0], be[1], e)
            tally.drop("backend_unreachable")
            if flog is not None:
                flog.refused(name, route, peer, "UF", be)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            return
        be_tally = self._backends.get(be)
        on_close = None
        if flog is not None:
            on_close = functools.partial(flog.closed, flog.opened(name, route, peer, be))
        tally.flows += 1
        if be_tally is not None:
            be_tally.flows += 1
        try:
            # (neither socket was read or written here)
            self.splicer.splice_now(c, b, tally, be_tally, on_close, untouched=True)
            return
        except OSError as e:
            # The sockmap takes only ESTABLISHED sockets: a backend that spoke and closed
            # before this point (a greeting, an error message) is no longer one. Its bytes
            # are queued on b all the same: copy this connection here.
            log.info("splice refused (%s): copying in userspace", e)
        conn = Conn(f"{key[0]}:{key[1]}/TCP", peer, be, tally, be_tally)
        tally.active += 1
        try:
            c.setblocking(False)
            await copy(c, b, conn)
        except OSError as e:
            log.info("copy %s -> %s:%d ended: %s", name, be[0], be[1], e)
        finally:
            tally.active -= 1
            if on_close is not None:
                on_close(conn.bytes[0], conn.bytes[1])

    def stats(self) -> tuple[list[FrontendStats], list[BackendStats]]:
        """The counters of the frontends served now and of their backend endpoints, with
        the open connections' bytes so far."""
        plus = live_view(self.splicer.open_bytes())
        fes = [frontend_stats(fe, "TCP", plus(t)) for fe, t in self._frontends.values()]
        bes = [backend_stats(ep, plus(t), self._groups) for ep, t in self._backends.items()]
        return fes, bes

    async def close(self) -> None:
        self.close_listeners()
