"""One L7 worker process: its listeners, and the config swaps the supervisor sends.

A worker receives ``L7Config`` snapshots from the supervisor (``kgw_l7.plane``) over
its channel (``kgw_l7.channel``) and applies each one without dropping anything:

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
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import sys
from typing import Any

from kgw_l7 import ratelimit, snapshot
from kgw_l7.channel import WorkerOptions, decode_options, encode_frame, read_frame
from kgw_l7.config import L7Config, Listener
from kgw_l7.context import ListenerState, WorkerContext, proxy_mode
from kgw_l7.problems import PROBLEMS
from kgw_l7.proxy import PROXY_OPTIONAL, DownstreamConn
from kgw_l7.proxyaccept import PreTLSServer
from kgw_l7.proxyproto import ProxyHeader
from kgw_l7.tls import ContextKey, dispatch_context

log = logging.getLogger("kgw.l7.worker")

#: Accept queue length per listener socket (nginx uses 511 by default on Linux).
BACKLOG = 1024


class Worker:
    """The listeners of one worker: bound, updated in place, drained, closed."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    async def apply(self, config: L7Config,
                    refused: dict[str, str] | None = None) -> dict[str, str]:
        """Serve ``config``; returns listener name -> error for listeners not served.
        ``refused`` names listeners the supervisor found taken by another process."""
        ctx = self.ctx
        routers = ctx.cache.build(config)
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
                certs = ctx.tls.store(listener.certificates, validation)
                used_certs.update((c.cert_pem, c.key_pem, validation, c.server_names)
                                  for c in listener.certificates)
                if certs.count == 0:
                    log.error("listener %s: no usable certificate; TLS handshakes will fail",
                              listener.name)
            st = ctx.listeners.get(listener.name)
            if st is not None and _same_socket(st.record, listener):
                st.update(listener, routers[listener.name], certs)
                st.log = ctx.listener_log(listener)
                st.tracer = ctx.listener_tracer(listener)
                continue
            if st is not None:
                self._remove_listener(st)
                del ctx.listeners[listener.name]
            if listener.name in refused:
                errors[listener.name] = refused[listener.name]
                continue
            st = ListenerState(listener.name, listener, routers[listener.name], certs)
            st.log = ctx.listener_log(listener)
            st.tracer = ctx.listener_tracer(listener)
            try:
                await self._bind(st)
            except (OSError, OverflowError, ValueError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                msg = f"cannot listen on {listener.address}:{listener.port}: {reason}"
                errors[listener.name] = msg
                # The supervisor logs it once for all workers (L7Plane.apply).
                log.debug("listener %s: %s", listener.name, msg)
                continue
            ctx.listeners[listener.name] = st
        for name in list(ctx.listeners):
            if name not in seen:
                self._remove_listener(ctx.listeners.pop(name))
        ctx._interval = ctx.sweep_interval()
        ctx.retain_tracers()
        for listener in config.listeners:
            for vh in listener.virtual_hosts:
                for route in vh.routes:
                    for b in route.rule.backends:
                        endpoints.update((e.address, e.port) for e in b.endpoints)
                    for m in route.rule.filters.mirrors:
                        endpoints.update((e.address, e.port) for e in m.backend.endpoints)
        ctx.pool.retain(endpoints)
        ctx.tls.retain(used_certs)
        ctx.errors = errors
        ctx.stats.generation = config.generation
        return errors

    async def _bind(self, st: ListenerState) -> None:
        ctx = self.ctx
        record = st.record
        ssl_ctx = None
        if record.protocol == "HTTPS":
            # Before the socket exists: an unusable client CA bundle raises ssl.SSLError
            # (an OSError), and the listener is reported, not served without validation.
            ssl_ctx = dispatch_context(
                lambda: st.certs, record.client_validation,
                on_failed=lambda why, detail: ctx.tls_failed(st, why, detail))
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

        def protocol() -> asyncio.BaseProtocol:
            # compiled, DownstreamConn is an extension type: it cannot subclass asyncio.Protocol
            return DownstreamConn(ctx, st)  # type: ignore[return-value]

        if ssl_ctx is not None and st.proxy_mode:
            st.server = self._pre_tls_server(st, sock, ssl_ctx)  # type: ignore[assignment]
            return
        st.server = await ctx.loop.create_server(
            protocol, sock=sock, ssl=ssl_ctx, backlog=BACKLOG,
            ssl_handshake_timeout=ctx.options.header_timeout if ssl_ctx else None)

    def _pre_tls_server(self, st: ListenerState, sock: socket.socket,
                        ssl_ctx: Any) -> PreTLSServer:
        """An HTTPS listener whose connections start with a PROXY protocol header: it is
        read before the TLS handshake (kgw_l7.proxyaccept), its client becomes the
        connection's. A connection refused for its header is counted and written to the
        access log like a malformed request (400, flag DPE) and logged once in a while
        per listener and reason."""
        ctx = self.ctx

        def protocol(header: ProxyHeader | None) -> DownstreamConn:
            conn = DownstreamConn(ctx, st)
            if header is not None and header.source is not None:
                conn.proxy_source = header.source
            return conn

        def refused(reason: str, detail: str, peer: Any) -> None:
            remote = b"%s:%d" % (str(peer[0]).encode(), peer[1]) if peer else b""
            ctx.access_refused(st, 400, "DPE", detail, remote)
            ctx.limiter.warning(("proxy", st.name, reason), "listener %s: connection closed: "
                                "%s", st.name, detail)

        return PreTLSServer(
            ctx.loop, sock, protocol, ssl_ctx,
            timeout=lambda: st.header_timeout or ctx.options.header_timeout,
            optional=lambda: st.proxy_mode == PROXY_OPTIONAL, refused=refused)

    def _remove_listener(self, st: ListenerState, deadline: float | None = None) -> None:
        if st.server is not None:
            st.server.close()
        for conn in list(st.conns):
            conn.drain()
        if st.conns:
            self.ctx.spawn(self._drain(st, self.ctx.options.drain_timeout if deadline is None
                                       else deadline))

    async def _drain(self, st: ListenerState, timeout: float) -> None:
        loop = self.ctx.loop
        end = loop.time() + timeout
        while st.conns and loop.time() < end:
            await asyncio.sleep(0.05)
        for conn in list(st.conns):
            conn.abort()

    async def close(self, drain_timeout: float) -> None:
        ctx = self.ctx
        ctx.stopping = True
        for st in ctx.listeners.values():
            self._remove_listener(st, drain_timeout)
        end = ctx.loop.time() + drain_timeout
        while ctx.conns and ctx.loop.time() < end:
            await asyncio.sleep(0.05)
        for conn in list(ctx.conns):
            conn.abort()
        ctx.listeners.clear()
        ctx.close()


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
    changed (validation is fixed in the socket's dispatch TLS context, see kgw_l7.tls),
    or an HTTPS listener starts or stops taking a PROXY protocol header (read by another
    accept loop: kgw_l7.proxyaccept)."""
    return ((a.address, a.port, a.protocol, a.client_validation)
            == (b.address, b.port, b.protocol, b.client_validation)) and (
        a.protocol != "HTTPS" or bool(proxy_mode(a)) == bool(proxy_mode(b)))


# -- the worker process ---------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process (started by ``L7Plane``)."""
    import argparse

    import uvloop

    p = argparse.ArgumentParser(prog="kgw-l7-worker")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--options", required=True, help="WorkerOptions (kgw_l7.channel)")
    p.add_argument("--rate-table-fd", type=int, default=-1,
                   help="the node's rate limit table (kgw_l7.ratetable); -1: a private one")
    args = p.parse_args(argv)
    options = decode_options(args.options)
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
    if args.rate_table_fd >= 0:
        ratelimit.attach(args.rate_table_fd)
    uvloop.run(_serve(sock, options))
    return 0


async def _serve(sock: socket.socket, options: WorkerOptions) -> None:
    loop = asyncio.get_running_loop()
    ctx = WorkerContext(loop, options)
    worker = Worker(ctx)
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
                errors = await worker.apply(config, msg[3] if len(msg) > 3 else None)
                held = config
                await reply(seq, ("ok", ctx.stats.generation, errors))
            except Exception as exc:  # a config must never kill the worker
                log.exception("applying config failed")
                await reply(seq, ("error", ctx.stats.generation, {"*": str(exc)}))
        elif kind == "metrics":
            await ctx.access_log_written()
            await reply(seq, ctx.snapshot())
        elif kind == "health":
            await reply(seq, ctx.health())
        elif kind == "problems":
            await reply(seq, PROBLEMS.view())
        elif kind == "endpoint_health":
            # the active checker's verdicts (kgw_l7.healthcheck): the unhealthy endpoints
            await reply(seq, ctx.cache.book.sync_active(msg[2]))
        elif kind == "endpoint_state":
            await reply(seq, ctx.cache.book.view())
        elif kind == "drain":
            ctx.drain()
            await reply(seq, "draining")
        elif kind == "close":
            await worker.close(msg[2])
            await reply(seq, "closed")
            break
    receiver.cancel()
    writer.close()
