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
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import pickle
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
from kgw_l7.stats import AccessLog, WorkerStats
from kgw_l7.tls import ContextKey, TLSContexts, dispatch_context
from kgw_l7.upstream import Pool

log = logging.getLogger("kgw.l7.worker")

#: Accept queue length per listener socket (nginx uses 511 by default on Linux).
BACKLOG = 1024


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


class WorkerContext:
    """Everything a worker's connections share."""

    __slots__ = ("loop", "options", "stats", "tls", "pool", "access_log", "max_connections",
                 "conns", "listeners", "errors", "cache", "now", "stopping", "_tasks",
                 "_sweeper", "_interval", "clock")

    def __init__(self, loop: asyncio.AbstractEventLoop, options: WorkerOptions) -> None:
        self.loop = loop
        #: loop.time, bound once (read twice per request).
        self.clock = loop.time
        self.options = options
        self.stats = WorkerStats()
        self.tls = TLSContexts()
        self.pool = Pool(self.tls)
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
                                       options.idle_timeout / 4))
        self._sweep()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a fire-and-forget task (mirrors, drains), keeping a reference to it."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
                    conn.sweep(now, opts.idle_timeout, opts.header_timeout)
                except Exception:  # one connection's failure stays its own
                    log.exception("timeout check failed for a connection")
                    conn.close()
            self.pool.sweep(now)
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
                st.record = listener
                st.router = routers[listener.name]
                st.certs = certs
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
            ssl_ctx = dispatch_context(lambda: st.certs, record.client_validation)
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):  # meant for the supervisor (controller/signals.py)
        signal.signal(sig, signal.SIG_IGN)
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

    loop.add_signal_handler(signal.SIGTERM, lambda: inbox.put_nowait(
        ("close", None, options.drain_timeout)))
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
        elif kind == "close":
            await ctx.close(msg[2])
            await reply(seq, "closed")
            break
    receiver.cancel()
    writer.close()
