"""Active health checking, once per node: the L7 plane (the supervisor side) runs one
``HealthChecker`` for every worker, and pushes its verdicts to them (``L7Plane``:
a set of unhealthy endpoints, which each worker's ``kgw_l7.balance.HealthBook`` applies).
Checking once per node, not once per worker, keeps the probes a backend receives
independent of the worker count.

Probes (``HealthCheck.type``):

* TCP -- a connection opens within the timeout: a bare non-blocking connect of the
  target's own socket, watched by the checker's own epoll (one loop wake-up for every
  probe ready at once), answered (SYN-ACK), then reset before the handshake's last ACK,
  and the socket kept for the next probe (``_TcpCheck``). Towards a hostname or over
  TLS, a task per target opens the connection with asyncio instead (and closes it).
* HTTP -- ``GET path`` with the configured Host answers an expected status (parsed with
  httptools); the connection is kept alive between checks, so a check usually costs one
  write and one read, not a handshake.
* GRPC -- ``grpc.health.v1.Health/Check`` for the configured service over HTTP/2 (the
  h2 library) answers ``SERVING`` with grpc-status 0; the connection is kept too.

Thresholds (``Verdict``): an endpoint starts healthy (a new endpoint is not held back
while nothing is known of it); ``unhealthy_threshold`` failures in a row make it
unhealthy, ``healthy_threshold`` successes in a row healthy again. Each check waits
``interval`` plus up to ``jitter`` at random, and the first one is spread over one
interval, so a thousand endpoints are not probed in one burst. Starts and timeouts are
kept by one ``_Ticker`` per checker (a heap and one loop timer, rounded up to ``TICK``), not
a timer per check: the checks due in the same ``TICK`` start in one wake-up, each up to
``TICK`` later than its exact time.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import heapq
import ipaddress
import logging
import math
import os
import random
import resource
import select
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import httptools

from kgw_l7.config import Backend, HealthCheck, L7Config, with_rule_policy

log = logging.getLogger("kgw.l7.healthcheck")

#: (backend name, address, port)
Key = tuple[str, str, int]

#: A response larger than this fails the check (a health endpoint answers briefly).
MAX_RESPONSE = 64 * 1024
#: grpc.health.v1 HealthCheckResponse.ServingStatus SERVING.
GRPC_SERVING = 1
#: Granularity of check starts and timeouts (seconds): what batches the due checks. 20 ms:
#: a wake-up per slot is most of what a TCP check costs beyond its system calls, and a
#: check every second or so does not mind starting up to 20 ms late.
TICK = 0.02


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint of one backend, and how to check it."""

    backend: str
    address: str
    port: int
    check: HealthCheck
    #: Speak TLS to it (a backend with BackendTLSPolicy): the server name sent, if any.
    tls_hostname: str | None = None
    tls_ca: str = ""

    @property
    def key(self) -> Key:
        return (self.backend, self.address, self.port)


def targets(config: L7Config) -> dict[Key, Target]:
    """Every endpoint of every backend with an active health check in ``config``."""
    out: dict[Key, Target] = {}

    def add(b: Backend) -> None:
        hc = b.health_check
        if hc is None:
            return
        for ep in b.endpoints:
            t = Target(b.name, ep.address, ep.port, hc,
                       b.tls.hostname if b.tls is not None else None,
                       b.tls.ca_pem if b.tls is not None else "")
            out.setdefault(t.key, t)

    for lis in config.listeners:
        for vh in lis.virtual_hosts:
            for route in vh.routes:
                for b in route.rule.backends:
                    add(with_rule_policy(b, route.rule.policy))
    return out


class Verdict:
    """Thresholds over a series of probe results (pure: no clock, no I/O)."""

    __slots__ = ("healthy", "streak", "checks", "failures", "last_error")

    def __init__(self) -> None:
        self.healthy = True
        #: Results in a row that disagree with ``healthy``.
        self.streak = 0
        self.checks = 0
        self.failures = 0
        self.last_error = ""

    def record(self, ok: bool, check: HealthCheck, error: str = "") -> bool:
        """Add one probe result; True when the verdict changed."""
        self.checks += 1
        if not ok:
            self.failures += 1
            self.last_error = error
        if ok == self.healthy:
            self.streak = 0
            return False
        self.streak += 1
        needed = check.healthy_threshold if ok else check.unhealthy_threshold
        if self.streak < max(1, needed):
            return False
        self.healthy = ok
        self.streak = 0
        return True


class ProbeFailed(Exception):
    """A check failed: the message says how (logged when the verdict changes)."""


class _Probe:
    """A target's kept connection and the probe that uses it."""

    __slots__ = ("target", "reader", "writer", "h2")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.h2: h2.connection.H2Connection | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.h2 = None

    async def _connect(self, alpn: str | None = None) -> None:
        t = self.target
        ctx = None
        if t.tls_hostname is not None:
            ctx = ssl.create_default_context(cadata=t.tls_ca or None)
            if alpn:
                ctx.set_alpn_protocols([alpn])
        self.reader, self.writer = await asyncio.open_connection(
            t.address, t.port, ssl=ctx, server_hostname=t.tls_hostname)

    async def run(self) -> None:
        """One check (raises ProbeFailed, OSError or TimeoutError when it fails)."""
        kind = self.target.check.type
        if kind == "TCP":
            await self._connect()
            self.close()
        elif kind == "HTTP":
            await self._http()
        else:
            await self._grpc()

    async def _http(self) -> None:
        t = self.target
        hc = t.check
        if self.writer is None or self.writer.is_closing():
            await self._connect()
        host = hc.host or (t.address if ":" not in t.address else f"[{t.address}]")
        self.writer.write(  # type: ignore[union-attr]
            f"GET {hc.path} HTTP/1.1\r\nHost: {host}\r\n"
            f"User-Agent: kgw-health-check\r\nAccept: */*\r\n\r\n".encode("latin-1"))
        result = _Response()
        parser = result.parser = httptools.HttpResponseParser(result)
        size = 0
        while not result.complete:
            data = await self.reader.read(65536)  # type: ignore[union-attr]
            if not data:
                raise ProbeFailed("connection closed before the response ended")
            size += len(data)
            if size > MAX_RESPONSE:
                raise ProbeFailed(f"response larger than {MAX_RESPONSE} bytes")
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise ProbeFailed(f"not an HTTP response: {exc}") from None
        status = parser.get_status_code()
        if not result.keep_alive:
            self.close()
        if not any(lo <= status <= hi for lo, hi in hc.expected_statuses):
            raise ProbeFailed(f"status {status}")

    async def _grpc(self) -> None:
        t = self.target
        if self.h2 is None or self.writer is None or self.writer.is_closing():
            self.close()
            await self._connect("h2")
            self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
                client_side=True, header_encoding=None))
            self.h2.initiate_connection()
        conn = self.h2
        sid = conn.get_next_available_stream_id()
        service = t.check.grpc_service.encode()
        message = b"\x0a" + _varint(len(service)) + service if service else b""
        conn.send_headers(sid, [
            (b":method", b"POST"), (b":scheme", b"https" if t.tls_hostname else b"http"),
            (b":path", b"/grpc.health.v1.Health/Check"),
            (b":authority", f"{t.address}:{t.port}".encode()),
            (b"content-type", b"application/grpc"), (b"te", b"trailers"),
            (b"user-agent", b"kgw-health-check")])
        conn.send_data(sid, b"\x00" + len(message).to_bytes(4, "big") + message,
                       end_stream=True)
        self.writer.write(conn.data_to_send())  # type: ignore[union-attr]
        body = b""
        grpc_status = None
        ended = False
        while not ended:
            data = await self.reader.read(65536)  # type: ignore[union-attr]
            if not data:
                self.close()
                raise ProbeFailed("connection closed before the response ended")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                    if len(body) > MAX_RESPONSE:
                        self.close()
                        raise ProbeFailed(f"response larger than {MAX_RESPONSE} bytes")
                elif isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)) \
                        and ev.stream_id == sid:
                    for n, v in ev.headers:
                        if n == b"grpc-status":
                            grpc_status = int(v)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ended = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise ProbeFailed(f"stream reset ({ev.error_code})")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.close()
                    raise ProbeFailed("connection closed (GOAWAY)")
            out = conn.data_to_send()
            if out:
                self.writer.write(out)  # type: ignore[union-attr]
        if grpc_status != 0:
            raise ProbeFailed(f"grpc-status {grpc_status}")
        if grpc_serving_status(body) != GRPC_SERVING:
            raise ProbeFailed(f"serving status {grpc_serving_status(body)}")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def grpc_serving_status(body: bytes) -> int | None:
    """HealthCheckResponse.status from one length-prefixed gRPC message (field 1, a
    varint; an absent field is 0, UNKNOWN); None when the message is malformed."""
    if len(body) < 5 or body[0] != 0:
        return None
    size = int.from_bytes(body[1:5], "big")
    msg = body[5:5 + size]
    if len(msg) != size:
        return None
    i = 0
    status = 0
    while i < len(msg):
        tag = msg[i]
        i += 1
        value = 0
        shift = 0
        while True:
            if i >= len(msg):
                return None
            b = msg[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if tag == 0x08:
            status = value
        elif tag & 7 == 2:  # a length-delimited field we do not know: skip it
            i += value
        elif tag & 7 != 0:
            return None
    return status


class _Response:
    """httptools callbacks: keep-alive (known once the head is parsed) and the end."""

    __slots__ = ("complete", "keep_alive", "parser")

    def __init__(self) -> None:
        self.complete = False
        self.keep_alive = False
        self.parser: Any = None

    def on_headers_complete(self) -> None:
        # (asked here: llhttp forgets it once the message is complete)
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete = True


class _Ticker:
    """Every check's next start and timeout, on one loop timer.

    Starts go in slots of ``TICK`` (a dict of slot -> callbacks, a heap of the slot
    numbers; a start is never early, up to ``TICK`` late): the checks due in one slot run
    in one wake-up. Timeouts are kept per timeout value in a dict in order of deadline
    (a check started later ends later): starting a check is an insert, finishing it a
    delete, and one sweep per timeout value is due at the earliest deadline. A timer per
    check cost a loop wake-up, a TimerHandle and a cancel for each start and each timeout
    -- most of a check's CPU."""

    __slots__ = ("_loop", "_slots", "_heap", "_handle", "_armed", "_firing", "_deadlines",
                 "_sweeps")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, list[Callable[[], None]]] = {}
        self._heap: list[int] = []
        self._handle: asyncio.TimerHandle | None = None
        #: The slot the timer is armed for (None: not armed).
        self._armed: int | None = None
        #: The slot being run (0: none): what is added meanwhile goes to a later one.
        self._firing = 0
        #: timeout -> {check in flight: its deadline}, earliest first
        self._deadlines: dict[float, dict[Any, float]] = {}
        #: timeout -> its sweep, when one is due
        self._sweeps: dict[float, Callable[[], None]] = {}

    def after(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` ``delay`` seconds from now (up to ``TICK`` later). Not
        cancellable: a stopped check's start returns at once."""
        self._at(math.ceil((self._loop.time() + delay) / TICK), callback)

    def _at(self, slot: int, callback: Callable[[], None]) -> None:
        slot = max(slot, self._firing + 1)
        callbacks = self._slots.get(slot)
        if callbacks is not None:
            callbacks.append(callback)
            return
        self._slots[slot] = [callback]
        heapq.heappush(self._heap, slot)
        if not self._firing and (self._armed is None or slot < self._armed):
            self._arm(slot)

    def watch(self, check: Any, timeout: float) -> None:
        """``check.expire()`` in ``timeout`` seconds (up to ``TICK`` later) unless it is
        ``forget``-ten first."""
        group = self._deadlines.get(timeout)
        if group is None:
            group = self._deadlines[timeout] = {}
        group[check] = self._loop.time() + timeout
        if timeout not in self._sweeps:
            self._sweeps[timeout] = sweep = functools.partial(self._sweep, timeout)
            self.after(timeout, sweep)

    def forget(self, check: Any, timeout: float) -> bool:
        """Stop the timeout of ``check``; False when none was running (it expired)."""
        group = self._deadlines.get(timeout)
        return group is not None and group.pop(check, None) is not None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._armed = None
        self._slots.clear()
        self._heap.clear()
        self._deadlines.clear()
        self._sweeps.clear()

    def _arm(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = slot
        self._handle = self._loop.call_at(slot * TICK, self._fire)

    def _fire(self) -> None:
        self._handle = None
        # (the loop's timer may fire a little before the slot's time: the slot is due)
        limit = max(self._armed or 0, math.floor(self._loop.time() / TICK))
        self._armed = None
        heap, slots = self._heap, self._slots
        try:
            while heap and heap[0] <= limit:
                self._firing = heapq.heappop(heap)
                for callback in slots.pop(self._firing):
                    try:
                        callback()
                    except Exception:  # (one check's bug must not stop the others)
                        log.exception("health check callback failed")
        finally:
            self._firing = 0
        if heap:
            self._arm(heap[0])

    def _sweep(self, timeout: float) -> None:
        del self._sweeps[timeout]
        group = self._deadlines.get(timeout)
        if not group:
            return
        # (run in slot ``_firing``: what that slot rounds up to is due)
        cutoff = self._firing * TICK
        expired = []
        for check, deadline in group.items():
            if deadline > cutoff:
                self._sweeps[timeout] = sweep = functools.partial(self._sweep, timeout)
                self._at(math.ceil(deadline / TICK), sweep)
                break
            expired.append(check)
        for check in expired:
            del group[check]
            try:
                check.expire()
            except Exception:  # (the other expired checks still expire)
                log.exception("health check timeout failed")


class _ConnectPoller:
    """The TCP checks' sockets, watched by an epoll of the checker's own whose descriptor
    is one reader on the loop: every probe that connected (or failed) since the last
    wake-up is handled in one callback, and a socket is registered once, for all its
    probes -- no transport, protocol, future or loop watcher per probe."""

    __slots__ = ("_loop", "_epoll", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._waiting: dict[int, _TcpCheck] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)

    def watch(self, fd: int, check: _TcpCheck) -> None:
        """Report the end of ``fd``'s connect in progress, once (EPOLLONESHOT: the
        socket's dissolve and its idle, hung-up state are not reported -- one event
        per probe); registered on its first probe, re-armed on the next."""
        if fd in self._waiting:
            self._epoll.modify(fd, _ONCE)
        else:
            self._epoll.register(fd, _ONCE)
            self._waiting[fd] = check

    def forget(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed: closing removes it from the epoll)."""
        self._waiting.pop(fd, None)

    def close(self) -> None:
        self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
        self._waiting.clear()

    def _ready(self) -> None:
        waiting = self._waiting
        for fd, events in self._epoll.poll(0):
            check = waiting.get(fd)
            if check is not None:
                check.connected(events & _FAILED)


#: epoll events of a connect that failed (its error is then asked for with SO_ERROR).
_FAILED = select.EPOLLERR | select.EPOLLHUP
_ONCE = select.EPOLLOUT | select.EPOLLONESHOT


def _sockaddr(address: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]] | None:
    """The family and socket address of an IP literal; None for a hostname."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version == 6:
        return socket.AF_INET6, (address, port, 0, 0)
    return socket.AF_INET, (address, port)


def next_delay(hc: HealthCheck) -> float:
    """Seconds from one check's result to the next check: the interval plus up to
    ``jitter`` at random."""
    return hc.interval + (random.random() * hc.jitter if hc.jitter else 0.0)


class _Scheduled:
    """What the ticker-driven checks share: start on the ticker, report a result and
    schedule the next check (subclasses set ``checker``, ``target`` and ``stopped`` and
    define ``start``)."""

    __slots__ = ()
    checker: HealthChecker
    target: Target
    stopped: bool

    def start(self) -> None:
        raise NotImplementedError

    def schedule(self, delay: float) -> None:
        if not self.stopped:
            self.checker.ticker.after(delay, self.start)

    def _next(self, ok: bool, error: str = "") -> None:
        self.checker.result(self.target, ok, error)
        self.schedule(next_delay(self.target.check))


class _TcpCheck(_Scheduled):
    """The TCP check of one target, without a task: the ticker starts it and bounds its
    wait, a non-blocking connect is watched by the checker's ``_ConnectPoller``, and a
    connected probe is dissolved at once with ``connect(AF_UNSPEC)`` (``_disconnect``).

    On the wire a probe is SYN, SYN-ACK, RST (haproxy too ends its checks with an RST,
    and tcp-shaker checks just this way): the socket has TCP_DEFER_ACCEPT, which makes
    Linux delay the handshake's last ACK (as when data is about to follow), and the
    dissolve resets the connection before that ACK is due. The SYN-ACK is the answer
    that counts (a listener whose accept queue is full drops the SYN: the probe times
    out); the backend's kernel never makes a connection of it, its application never
    accepts one, and neither side keeps a TIME_WAIT.

    One socket per target for its lifetime, registered once with the poller: a probe is
    ``connect``, an ``epoll_ctl`` re-arming it, ``connect(AF_UNSPEC)`` and
    ``getsockopt(SO_ERROR)`` (the disconnect leaves ECONNRESET pending, which would fail
    the next probe at once), not ``socket``, ``epoll_ctl`` and ``close`` with a socket, a
    file and an epoll entry made and freed each time (bench/results/resilience.md has the
    measurements)."""

    __slots__ = ("checker", "target", "family", "sockaddr", "sock", "busy", "stopped")

    def __init__(self, checker: HealthChecker, target: Target,
                 family: socket.AddressFamily, sockaddr: tuple[Any, ...]) -> None:
        self.checker = checker
        self.target = target
        self.family = family
        self.sockaddr = sockaddr
        #: The target's socket, once a probe has run (registered with the poller).
        self.sock: socket.socket | None = None
        #: A probe in flight (its timeout watched by the ticker).
        self.busy = False
        self.stopped = False

    def start(self) -> None:
        if self.stopped:
            return
        sock = self.sock
        if sock is None:
            try:
                sock = self.sock = socket.socket(self.family,
                                                 socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                # (a deferred handshake ACK: see the class's docstring)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
            except OSError as exc:
                self._abandon()
                self._next(False, str(exc))
                return
        err = sock.connect_ex(self.sockaddr)
        if err != errno.EINPROGRESS:
            self._end(err)
            return
        try:
            self.checker.poller.watch(sock.fileno(), self)
        except OSError as exc:  # (epoll_ctl: out of memory or watches)
            self._abandon()
            self._next(False, str(exc))
            return
        self.busy = True
        self.checker.ticker.watch(self, self.target.check.timeout)

    def connected(self, failed: int) -> None:
        """The connect finished: the poller saw the socket writable (``failed`` 0) or an
        error (only then is SO_ERROR asked for)."""
        if not self.busy:
            return  # (a probe that expired or was stopped meanwhile)
        self.busy = False
        self.checker.ticker.forget(self, self.target.check.timeout)
        err = 0
        if failed:
            err = self.sock.getsockopt(  # type: ignore[union-attr]
                socket.SOL_SOCKET, socket.SO_ERROR) or errno.ECONNRESET
        self._end(err)

    def expire(self) -> None:
        """The ticker's timeout (it forgot this check already)."""
        self.busy = False
        self._end(-1)

    def _end(self, err: int) -> None:
        """Dissolve the probe's connection and report it: ``err`` 0 (connected), an
        errno, or -1 (no answer in time)."""
        if not _disconnect(self.sock):  # (then a new socket for the next probe)
            self._abandon()
        if err == 0:
            self._next(True)
        elif err < 0:
            self._next(False, f"no answer within {self.target.check.timeout:g}s")
        else:
            self._next(False, f"[Errno {err}] {os.strerror(err)}")

    def stop(self) -> None:
        self.stopped = True
        if self.busy:
            self.busy = False
            self.checker.ticker.forget(self, self.target.check.timeout)
        self._abandon()

    def _abandon(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            self.checker.poller.forget(sock.fileno())
            sock.close()


#: libc's ``connect``, called with an int and a buffer: no argtypes, no errno kept (a
#: failed dissolve only drops the socket) -- the cheapest ctypes call.
_connect = ctypes.CDLL(None).connect
#: A ``struct sockaddr`` of family AF_UNSPEC (0), which ``connect`` takes as "dissolve";
#: Python's ``socket.connect`` only takes addresses of the socket's own family.
_UNSPEC = ctypes.create_string_buffer(16)


def _disconnect(sock: socket.socket | None) -> bool:
    """Dissolve ``sock``'s connection (an RST if it was established, nothing on the
    wire if it was still connecting) and clear the error that leaves pending, so the
    socket can connect again; False when it cannot be reused."""
    if sock is None or _connect(sock.fileno(), _UNSPEC, 16) != 0:
        return False
    try:
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError:
        return False
    return True


class _HttpCheck(_Scheduled, asyncio.Protocol):
    """The HTTP check of one target without a task: the checker's ticker starts each
    check and bounds its wait, the response arrives in ``data_received`` (parsed by
    httptools, one parser per connection). A check on a kept connection is one write of
    the request formatted once, one read, a slot entry and a deadline entry -- what makes
    1000 endpoints a second cheap (bench/l7/healthcheck_cost.py)."""

    def __init__(self, checker: HealthChecker, target: Target) -> None:
        self.checker = checker
        self.target = target
        hc = target.check
        host = hc.host or (target.address if ":" not in target.address
                           else f"[{target.address}]")
        self.request = (f"GET {hc.path} HTTP/1.1\r\nHost: {host}\r\n"
                        f"User-Agent: kgw-health-check\r\nAccept: */*\r\n\r\n"
                        ).encode("latin-1")
        self.transport: asyncio.Transport | None = None
        self.parser: Any = None
        self.complete = False
        self.keep_alive = False
        self.size = 0
        #: A check in progress (its timeout watched by the ticker).
        self.busy = False
        self.connecting: asyncio.Task[None] | None = None
        self.stopped = False

    # -- scheduling ---------------------------------------------------------------------

    def start(self) -> None:
        if self.stopped:
            return
        self.busy = True
        self.checker.ticker.watch(self, self.target.check.timeout)
        if self.transport is not None and not self.transport.is_closing():
            try:
                self._send()
                return
            except RuntimeError:  # (uvloop: closed by the peer, not yet told to us)
                self.close()
        self.connecting = asyncio.get_running_loop().create_task(self._connect())

    def stop(self) -> None:
        self.stopped = True
        if self.busy:
            self.busy = False
            self.checker.ticker.forget(self, self.target.check.timeout)
        if self.connecting is not None:
            self.connecting.cancel()
        self.close()

    async def _connect(self) -> None:
        t = self.target
        ctx = None
        if t.tls_hostname is not None:
            ctx = ssl.create_default_context(cadata=t.tls_ca or None)
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: self, t.address, t.port, ssl=ctx, server_hostname=t.tls_hostname)
        except (OSError, ssl.SSLError) as exc:
            self.done(False, str(exc) or type(exc).__name__)
            return
        finally:
            self.connecting = None
        if self.busy:
            try:
                self._send()
            except RuntimeError:
                self.done(False, "connection closed at once")

    def _send(self) -> None:
        self.complete = False
        self.size = 0
        self.transport.write(self.request)  # type: ignore[union-attr]

    def expire(self) -> None:
        """The ticker's timeout (it forgot this check already)."""
        self.busy = False
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self.close()
        self._next(False, f"no answer within {self.target.check.timeout:g}s")

    def done(self, ok: bool, error: str = "") -> None:
        if not self.busy:
            return  # (expired already)
        self.busy = False
        self.checker.ticker.forget(self, self.target.check.timeout)
        if not ok:
            self.close()
        self._next(ok, error)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.parser = None

    # -- asyncio.Protocol, httptools callbacks -----------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpResponseParser(self)

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.parser is None:
            self.close()  # (bytes nobody asked for)
            return
        self.size += len(data)
        if self.size > MAX_RESPONSE:
            self.done(False, f"response larger than {MAX_RESPONSE} bytes")
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.done(False, f"not an HTTP response: {exc}")
            return
        if not self.complete:
            return
        status = self.parser.get_status_code()
        if not self.keep_alive:
            self.close()
        for lo, hi in self.target.check.expected_statuses:
            if lo <= status <= hi:
                self.done(True)
                return
        self.done(False, f"status {status}")

    def on_headers_complete(self) -> None:
        # (asked here: llhttp forgets it once the message is complete)
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.parser = None
        if self.busy and self.connecting is None:
            self.done(False, "connection closed before the response ended")


class HealthChecker:
    """Checks every target of the current config; calls ``on_change`` whenever the set
    of unhealthy endpoints changes."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self._targets: dict[Key, Target] = {}
        #: Per target: its callback-driven check (HTTP; TCP to an IP address without TLS)
        #: or its task (GRPC, and TCP to a hostname or over TLS).
        self._tasks: dict[Key, asyncio.Task[None] | _HttpCheck | _TcpCheck] = {}
        self._verdicts: dict[Key, Verdict] = {}
        #: The callback-driven checks' starts and timeouts, and TCP connects in flight
        #: (made on the event loop that first needs them).
        self._ticker: _Ticker | None = None
        self._poller: _ConnectPoller | None = None

    @property
    def ticker(self) -> _Ticker:
        if self._ticker is None:
            self._ticker = _Ticker(asyncio.get_running_loop())
        return self._ticker

    @property
    def poller(self) -> _ConnectPoller:
        if self._poller is None:
            self._poller = _ConnectPoller(asyncio.get_running_loop())
        return self._poller

    def update(self, config: L7Config) -> None:
        """Check what ``config`` asks for (``set_targets``)."""
        self.set_targets(targets(config))

    def set_targets(self, wanted: dict[Key, Target]) -> None:
        """Check ``wanted``: new targets start, removed ones stop, a target whose check
        changed starts over (with its verdict kept). The L4 plane (kgw_l4.health) gives
        its own targets here: one prober for both planes."""
        _room_for(len(wanted))
        changed = False
        for key in list(self._tasks):
            if wanted.get(key) != self._targets.get(key):
                _stop(self._tasks.pop(key))
                if key not in wanted:
                    self._targets.pop(key, None)
                    if not self._verdicts.pop(key).healthy:
                        changed = True
        loop = asyncio.get_running_loop()
        for key, t in wanted.items():
            if key not in self._tasks:
                self._targets[key] = t
                self._verdicts.setdefault(key, Verdict())
                check = self._check(t)
                if check is None:
                    self._tasks[key] = loop.create_task(self._run(t))
                else:
                    check.schedule(random.random() * t.check.interval)
                    self._tasks[key] = check
        if changed:
            self.on_change()

    def _check(self, t: Target) -> _HttpCheck | _TcpCheck | None:
        """The callback-driven check of ``t``, or None when it needs a task (``_run``)."""
        if t.check.type == "HTTP":
            return _HttpCheck(self, t)
        if t.check.type == "TCP" and t.tls_hostname is None:
            where = _sockaddr(t.address, t.port)
            if where is not None:
                return _TcpCheck(self, t, *where)
        return None

    def unhealthy(self) -> frozenset[Key]:
        return frozenset(k for k, v in self._verdicts.items() if not v.healthy)

    def view(self) -> list[dict[str, Any]]:
        """One entry per checked endpoint (config dump, ``kgw status``)."""
        return [{"backend": k[0], "endpoint": f"{k[1]}:{k[2]}", "type": self._targets[k].check.type,
                 "healthy": v.healthy, "checks": v.checks, "failures": v.failures,
                 "last_error": v.last_error}
                for k, v in sorted(self._verdicts.items()) if k in self._targets]

    def metrics(self) -> str:
        """Prometheus exposition of the verdicts and check counts."""
        lines = ["# HELP kgw_l7_endpoint_healthy Active health check verdict (1 healthy).",
                 "# TYPE kgw_l7_endpoint_healthy gauge"]
        for k, v in sorted(self._verdicts.items()):
            lines.append(f'kgw_l7_endpoint_healthy{{backend="{_esc(k[0])}",'
                         f'endpoint="{k[1]}:{k[2]}"}} {int(v.healthy)}')
        lines += ["# HELP kgw_l7_health_checks_total Active health checks made, by result.",
                  "# TYPE kgw_l7_health_checks_total counter"]
        for k, v in sorted(self._verdicts.items()):
            for result, n in (("success", v.checks - v.failures), ("failure", v.failures)):
                lines.append(f'kgw_l7_health_checks_total{{backend="{_esc(k[0])}",'
                             f'endpoint="{k[1]}:{k[2]}",result="{result}"}} {n}')
        return "\n".join(lines) + "\n"

    async def close(self) -> None:
        tasks = [t for t in self._tasks.values() if isinstance(t, asyncio.Task)]
        for t in self._tasks.values():
            _stop(t)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._ticker is not None:
            self._ticker.close()
            self._ticker = None
        if self._poller is not None:
            self._poller.close()
            self._poller = None

    def result(self, t: Target, ok: bool, error: str) -> None:
        """One check's result: the verdict, and the workers told when it changes."""
        verdict = self._verdicts.get(t.key)
        if verdict is None or self._targets.get(t.key) is not t:
            return  # (a target no longer checked)
        if verdict.record(ok, t.check, error):
            hc = t.check
            if ok:
                log.info("backend %s: endpoint %s:%d passes its %s health check",
                         t.backend, t.address, t.port, hc.type)
            else:
                log.warning("backend %s: endpoint %s:%d fails its %s health check "
                            "(%s): unhealthy", t.backend, t.address, t.port, hc.type, error)
            self.on_change()

    async def _run(self, t: Target) -> None:
        """GRPC checks, and TCP checks to a hostname or over TLS: a task per target."""
        hc = t.check
        probe = _Probe(t)
        try:
            await asyncio.sleep(random.random() * hc.interval)
            while True:
                try:
                    async with asyncio.timeout(hc.timeout):
                        await probe.run()
                    ok, error = True, ""
                except (ProbeFailed, OSError, ssl.SSLError, h2.exceptions.H2Error) as exc:
                    ok, error = False, str(exc) or type(exc).__name__
                    probe.close()
                except TimeoutError:
                    ok, error = False, f"no answer within {hc.timeout:g}s"
                    probe.close()
                self.result(t, ok, error)
                await asyncio.sleep(next_delay(hc))
        finally:
            probe.close()


def _room_for(connections: int) -> None:
    """HTTP and gRPC checks keep a connection per endpoint, in the supervisor's process:
    raise its soft RLIMIT_NOFILE towards the hard limit when they would not fit with
    room to spare (the workers do the same for theirs)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 1024
    if want > soft and soft != hard:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(want, soft))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("health checks: cannot raise RLIMIT_NOFILE to %d: %s", target, exc)


def _stop(check: asyncio.Task[None] | _HttpCheck | _TcpCheck) -> None:
    if isinstance(check, asyncio.Task):
        check.cancel()
    else:
        check.stop()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


__all__ = ["HealthChecker", "ProbeFailed", "Target", "Verdict", "grpc_serving_status",
           "targets"]
