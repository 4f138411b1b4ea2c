"""One L7 worker process: its listeners, connections, pools, and config swaps.

A worker receives ``L7Config`` snapshots from the supervisor (``kgw_l7.plane``) over a
pipe and applies each one without dropping anything:

* listeners whose (address, port, protocol) did not change keep their socket and their
  connections; only their router and certificate store are replaced, so the next request
  on any connection sees the new routes;
* new listeners are bound with SO_REUSEPORT (every worker binds the same address and the
  kernel spreads connections); a bind failure is reported, never fatal;
* removed listeners stop accepting at once and drain: idle connections close, busy ones
  close after their current response, and whatever is left at the deadline is aborted.

Shutting down (the supervisor's "drain", then "close"): first every response says
``Connection: close`` while the listeners still accept, then they stop accepting and the
requests in flight get until the drain deadline. The worker ignores SIGTERM and SIGINT:
the supervisor decides when it stops (a process-group signal from systemd or a terminal
must not close the listeners ahead of that order).

File descriptors: the worker raises its soft RLIMIT_NOFILE to the hard limit, counts
what its connections hold, and refuses new client connections (and new backend
connections) before the limit is reached rather than fail in accept(); running short is
logged, counted (``kgw_l7_rejected_connections_total{reason="descriptors"}``) and
reported to the supervisor's readiness (``health``).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
import os
import pickle
import resource
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any, Coroutine

from kgw_l7 import snapshot
from kgw_l7.config import L7Config, Listener
from kgw_l7.proxy import DownstreamConn, ListenerState
from kgw_l7.router import RouterCache
from kgw_l7.stats import AccessLog, LogLimiter, WorkerStats
from kgw_l7.tls import ContextKey, TLSContexts, dispatch_context
from kgw_l7.upstream import MAX_CONNECTIONS_PER_ENDPOINT, Pool

log = logging.getLogger("kgw.l7.worker")

#: Accept queue length per listener socket (nginx uses 511 by default on Linux).
BACKLOG = 1024
#: File descriptors kept for everything but connections (the event loop, log files, the
#: supervisor channel, certificates being loaded, libuv's own reserve).
FD_RESERVE = 32
#: How long running short of file descriptors is reported after it last happened.
FD_SHORT_REPORT = 3.0


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    access_log: str | None = None  # None = stdout, "off" = disabled, else a file path
    max_connections: int = 10000
    #: Keep-alive connections with no request for this long are closed.
    idle_timeout: float = 60.0
    #: A request header block must arrive within this time (slowloris protection).
    header_timeout: float = 10.0
    drain_timeout: float = 5.0
    log_level: int = logging.INFO
    #: A backend that sends nothing for this long while a response is awaited or being
    #: relayed is given up on (504, or the client connection cut mid-response); routes
    #: with a request or backend timeout use theirs. 0 disables it. (Envoy's default
    #: route timeout is 15 s too.)
    response_timeout: float = 15.0
    #: Keep serving a client that closed its sending side (FIN) instead of abandoning
    #: its request (nginx's proxy_ignore_client_abort).
    ignore_client_abort: bool = False
    #: Connections per backend endpoint per worker; a try beyond it gets 503 at once.
    max_upstream_connections: int = MAX_CONNECTIONS_PER_ENDPOINT


class WorkerContext:
    """Everything a worker's connections share."""

    __slots__ = ("loop", "options", "stats", "tls", "pool", "access_log", "max_connections",
                 "conns", "listeners", "errors", "cache", "now", "stopping", "_tasks",
                 "_sweeper", "_interval", "clock", "limiter", "fd_limit", "fd_base",
                 "fd_short_at", "draining", "ignore_client_abort")

    def __init__(self, loop: asyncio.AbstractEventLoop, options: WorkerOptions) -> None:
        self.loop = loop
        #: loop.time, bound once (read twice per request).
        self.clock = loop.time
        self.options = options
        self.stats = WorkerStats()
        self.tls = TLSContexts()
        self.pool = Pool(self.tls, options.max_upstream_connections, self.room_for_upstream)
        self.limiter = LogLimiter(log)
        self.fd_limit = _fd_limit()
        #: Descriptors open before any connection (stdio, the loop, the access log...).
        self.fd_base = _open_descriptors()
        self.fd_short_at = 0.0
        #: Shutting down: responses say Connection: close (listeners still accept).
        self.draining = False
        self.ignore_client_abort = options.ignore_client_abort
        self.access_log = None if options.access_log == "off" else AccessLog(options.access_log)
        self.max_connections = options.max_connections
        self.conns: set[DownstreamConn] = set()
        self.listeners: dict[str, ListenerState] = {}
        self.errors: dict[str, str] = {}
        self.cache = RouterCache()
        self.now = loop.time()
        self.stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._interval = max(0.05, min(1.0, options.header_timeout / 4,
                                       options.idle_timeout / 4,
                                       options.response_timeout / 4 or 1.0))
        self._sweep()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a fire-and-forget task (mirrors, drains), keeping a reference to it."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- admission and file descriptors -------------------------------------------------
    def descriptors_in_use(self) -> int:
        """File descriptors this worker's listeners and connections hold (an estimate that
        leaves out TLS handshakes in progress; the sweep's probe catches the rest)."""
        return (self.fd_base + len(self.listeners) + self.stats.active_connections
                + self.pool.open_total)

    def admit(self, listener: str) -> bool:
        """May one more client connection be served? A refusal is counted and logged."""
        if self.stopping:
            self.stats.reject_connection("shutting_down")
            return False
        if self.stats.active_connections >= self.max_connections:
            self.stats.reject_connection("limit")
            self.limiter.warning("limit", "listener %s: connection refused: the worker's "
                                 "connection limit (%d) is reached", listener,
                                 self.max_connections)
            return False
        # Room for the connection and the one to its backend.
        if self.descriptors_in_use() + 2 + FD_RESERVE > self.fd_limit:
            self.stats.reject_connection("descriptors")
            self.out_of_descriptors()
            return False
        return True

    def room_for_upstream(self) -> bool:
        if self.descriptors_in_use() + 1 + FD_RESERVE // 2 <= self.fd_limit:
            return True
        self.out_of_descriptors()
        return False

    def out_of_descriptors(self) -> None:
        self.fd_short_at = self.now or 1e-9
        self.limiter.warning("descriptors", "out of file descriptors: about %d in use of %d "
                             "(RLIMIT_NOFILE); new connections are refused until some close",
                             self.descriptors_in_use(), self.fd_limit)

    def sni_refused(self, listener: str, name: str | None) -> None:
        """A TLS handshake refused for its server name (kgw_l7.tls.dispatch_context)."""
        self.stats.tls_refused(listener, "unknown_server_name" if name else "no_server_name")
        what = (f"no certificate for server name {name[:253]!r}" if name else
                "the client sent no server name and no certificate serves every name")
        self.limiter.warning(("sni", listener), "listener %s: TLS handshake refused with "
                             "the unrecognized_name alert: %s", listener, what)

    def health(self) -> list[str]:
        """Why this worker does not serve all it should (empty: it does); /readyz."""
        problems = []
        for name, st in self.listeners.items():
            if st.server is None or not st.server.is_serving():
                problems.append(f"listener {name} is not accepting connections")
        if self.fd_short_at and self.now - self.fd_short_at < FD_SHORT_REPORT:
            problems.append(f"out of file descriptors (about {self.descriptors_in_use()} in "
                            f"use of {self.fd_limit})")
        return problems

    def drain(self) -> None:
        """The gateway is shutting down: from now on every response closes its
        connection (listeners keep accepting until ``close``)."""
        self.draining = True
        for conn in self.conns:
            conn.closing = True

    # -- the periodic timer -------------------------------------------------------------
    def _sweep(self) -> None:
        """One self-rescheduling timer for all timeouts, instead of one per connection.
        It reschedules itself whatever happens: a failure here must not end every
        connection timeout of the worker."""
        self.now = now = self.loop.time()
        opts = self.options
        try:
            for conn in list(self.conns):
                try:
                    conn.sweep(now, opts.idle_timeout, opts.header_timeout,
                               opts.response_timeout)
                except Exception:  # one connection's failure stays its own
                    log.exception("timeout check failed for a connection")
                    conn.close()
            self.pool.sweep(now)
            self.fd_limit = _fd_limit()  # (an operator may change it: prlimit --pid)
            try:  # can this process open one more descriptor? (libuv's accept can't tell)
                os.close(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self.out_of_descriptors()
            if self.access_log is not None:
                self.access_log.flush()
        except Exception:
            log.exception("periodic timeout check failed")
        finally:
            self._sweeper = self.loop.call_later(self._interval, self._sweep)

    # -- configuration ------------------------------------------------------------------
    async def apply(self, config: L7Config,
                    refused: dict[str, str] | None = None) -> dict[str, str]:
        """Serve ``config``; returns listener name -> error for listeners not served.
        ``refused`` names listeners the supervisor found taken by another process."""
        routers = self.cache.build(config)
        refused = refused or {}
        errors: dict[str, str] = {}
        seen: set[str] = set()
        used_certs: set[ContextKey] = set()
        endpoints: set[tuple[str, int]] = set()
        for listener in config.listeners:
            seen.add(listener.name)
            certs = None
            if listener.protocol == "HTTPS":
                validation = listener.client_validation
                certs = self.tls.store(listener.certificates, validation)
                used_certs.update((c.cert_pem, c.key_pem, validation)
                                  for c in listener.certificates)
                if certs.count == 0:
                    log.error("listener %s: no usable certificate; TLS handshakes will fail",
                              listener.name)
            st = self.listeners.get(listener.name)
            if st is not None and _same_socket(st.record, listener):
                st.update(listener, routers[listener.name], certs)
                continue
            if st is not None:
                self._remove_listener(st)
                del self.listeners[listener.name]
            if listener.name in refused:
                errors[listener.name] = refused[listener.name]
                continue
            st = ListenerState(listener.name, listener, routers[listener.name], certs)
            try:
                await self._bind(st)
            except (OSError, OverflowError, ValueError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                msg = f"cannot listen on {listener.address}:{listener.port}: {reason}"
                errors[listener.name] = msg
                # The supervisor logs it once for all workers (L7Plane.apply).
                log.debug("listener %s: %s", listener.name, msg)
                continue
            self.listeners[listener.name] = st
        for name in list(self.listeners):
            if name not in seen:
                self._remove_listener(self.listeners.pop(name))
        for listener in config.listeners:
            for vh in listener.virtual_hosts:
                for route in vh.routes:
                    for b in route.rule.backends:
                        endpoints.update((e.address, e.port) for e in b.endpoints)
                    for m in route.rule.filters.mirrors:
                        endpoints.update((e.address, e.port) for e in m.backend.endpoints)
        self.pool.retain(endpoints)
        self.tls.retain(used_certs)
        self.errors = errors
        self.stats.generation = config.generation
        return errors

    async def _bind(self, st: ListenerState) -> None:
        record = st.record
        ssl_ctx = None
        if record.protocol == "HTTPS":
            # Before the socket exists: an unusable client CA bundle raises ssl.SSLError
            # (an OSError), and the listener is reported, not served without validation.
            ssl_ctx = dispatch_context(lambda: st.certs, record.client_validation,
                                       on_refused=lambda name: self.sni_refused(st.name, name))
        family = socket.AF_INET6 if ":" in record.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((record.address, record.port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except (OSError, OverflowError, ValueError):
            sock.close()
            raise
        st.sock = sock
        st.server = await self.loop.create_server(
            lambda: DownstreamConn(self, st), sock=sock, ssl=ssl_ctx, backlog=BACKLOG,
            ssl_handshake_timeout=self.options.header_timeout if ssl_ctx else None)

    def _remove_listener(self, st: ListenerState, deadline: float | None = None) -> None:
        if st.server is not None:
            st.server.close()
        for conn in list(st.conns):
            conn.drain()
        if st.conns:
            self.spawn(self._drain(st, self.options.drain_timeout if deadline is None
                                   else deadline))

    async def _drain(self, st: ListenerState, timeout: float) -> None:
        end = self.loop.time() + timeout
        while st.conns and self.loop.time() < end:
            await asyncio.sleep(0.05)
        for conn in list(st.conns):
            if conn.transport is not None:
                conn.transport.abort()

    async def close(self, drain_timeout: float) -> None:
        self.stopping = True
        for st in self.listeners.values():
            self._remove_listener(st, drain_timeout)
        end = self.loop.time() + drain_timeout
        while self.conns and self.loop.time() < end:
            await asyncio.sleep(0.05)
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        self.listeners.clear()
        self.pool.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.access_log is not None:
            self.access_log.close()


def _fd_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Go programs do at start): the
    soft default (often 1024) is far below what a proxy holds. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft


def _same_socket(a: Listener, b: Listener) -> bool:
    """A listener keeps its socket unless its address, protocol or client validation
    changed (validation is fixed in the socket's dispatch TLS context, see kgw_l7.tls)."""
    return ((a.address, a.port, a.protocol, a.client_validation)
            == (b.address, b.port, b.protocol, b.client_validation))


# -- the worker process ---------------------------------------------------------------------
#
# Supervisor <-> worker channel: a socketpair inherited by the worker, carrying frames of
# a 4-byte big-endian length and a pickle. Requests are (kind, seq, *args); replies are
# (seq, payload). The worker is started with ``python -m kgw_l7 worker`` rather than
# multiprocessing, so it never re-imports the supervisor's main module.

def encode_frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("!I", len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    size = struct.unpack("!I", await reader.readexactly(4))[0]
    return pickle.loads(await reader.readexactly(size))


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process (started by ``L7Plane``)."""
    import argparse

    import uvloop

    p = argparse.ArgumentParser(prog="kgw-l7-worker")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--options", required=True, help="base64 pickle of WorkerOptions")
    args = p.parse_args(argv)
    options: WorkerOptions = pickle.loads(base64.b64decode(args.options))
    logging.basicConfig(
        level=options.log_level, stream=sys.stderr,
        format=f"%(asctime)s l7-worker-{args.index} %(levelname)s %(name)s: %(message)s")
    # The supervisor decides when we stop (see the module docstring); the others are
    # meant for it too (controller/signals.py).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    limit = raise_fd_limit()
    log.debug("worker %d: RLIMIT_NOFILE %d", args.index, limit)
    sock = socket.socket(fileno=args.fd)
    uvloop.run(_serve(sock, options))
    return 0


async def _serve(sock: socket.socket, options: WorkerOptions) -> None:
    loop = asyncio.get_running_loop()
    ctx = WorkerContext(loop, options)
    reader, writer = await asyncio.open_connection(sock=sock)
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    async def receive() -> None:
        try:
            while True:
                inbox.put_nowait(await read_frame(reader))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            inbox.put_nowait(("close", None, 1.0))  # the supervisor is gone

    receiver = loop.create_task(receive())

    async def reply(seq: Any, payload: Any) -> None:
        if seq is None:
            return
        try:
            writer.write(encode_frame((seq, payload)))
            await writer.drain()
        except (ConnectionError, OSError):
            pass

    await reply("ready", os.getpid())
    held: L7Config | None = None  # the snapshot deltas are applied to
    while True:
        msg = await inbox.get()
        kind, seq = msg[0], msg[1]
        if kind == "apply":
            try:
                config = snapshot.patch(held, msg[2])
            except snapshot.BaseMismatch as exc:
                log.warning("config delta refused (%s); asking for a full snapshot", exc)
                await reply(seq, ("stale", ctx.stats.generation, {}))
                continue
            try:
                errors = await ctx.apply(config, msg[3] if len(msg) > 3 else None)
                held = config
                await reply(seq, ("ok", ctx.stats.generation, errors))
            except Exception as exc:  # a config must never kill the worker
                log.exception("applying config failed")
                await reply(seq, ("error", ctx.stats.generation, {"*": str(exc)}))
        elif kind == "metrics":
            if ctx.access_log is not None:
                ctx.access_log.flush()
            await reply(seq, ctx.stats.snapshot())
        elif kind == "health":
            await reply(seq, ctx.health())
        elif kind == "drain":
            ctx.drain()
            await reply(seq, "draining")
        elif kind == "close":
            await ctx.close(msg[2])
            await reply(seq, "closed")
            break
    receiver.cancel()
    writer.close()
