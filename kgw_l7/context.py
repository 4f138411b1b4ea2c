"""What a worker's connections share: ``WorkerContext`` and ``ListenerState``.

Imported by every per-request module and importing none of them (only the pool, the
counters and the TLS contexts it holds): the connections and exchanges reach the
worker's state through it, and the process around it (``kgw_l7.worker``) fills it.

File descriptors: the worker raises its soft RLIMIT_NOFILE to the hard limit
(``kgw_l7.worker.raise_fd_limit``), counts what its connections hold, and refuses new
client connections (and new backend connections) before the limit is reached rather
than fail in accept(); running short is logged, counted
(``kgw_l7_rejected_connections_total{reason="descriptors"}``) and reported to the
supervisor's readiness (``health``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import time
from collections.abc import Coroutine
from typing import Any

from kgw_l7.channel import WorkerOptions
from kgw_l7.ratelimit import table_full
from kgw_l7.router import ListenerRouter, RouterCache
from kgw_l7.accesslog import AccessLog, Formatter, LogSettings
from kgw_l7.globallimit import GlobalLimiter
from kgw_l7.tracing import SpanExport, Tracer
from kgw_l7.tracing import from_settings as tracing_from_settings
from kgw_l7.logformat import parse_format
from kgw_l7.stats import LogLimiter, WorkerStats
from kgw_l7.tls import CertStore, TLSContexts
from kgw_l7.upstream import Pool

log = logging.getLogger("kgw.l7.worker")

#: File descriptors kept for everything but connections (the event loop, log files, the
#: supervisor channel, certificates being loaded, libuv's own reserve).
FD_RESERVE = 32
#: How long running short of file descriptors is reported after it last happened.
FD_SHORT_REPORT = 3.0


class ListenerState:
    """What a worker knows about one listener; ``router`` and ``certs`` are swapped in
    place by a new config, so open connections see the new routes on their next request."""

    __slots__ = ("name", "record", "router", "scheme", "port", "certs", "conns", "server",
                 "sock", "gateway", "header_timeout", "log", "proxy_mode", "tracer")

    def __init__(self, name: str, record: Any, router: ListenerRouter,
                 certs: CertStore | None) -> None:
        self.name = name
        #: The Gateway whose routes this listener serves when there is exactly one (else
        #: ""): what requests refused before routing are counted under.
        self.gateway = listener_gateway(record)
        self.record = record
        self.router = router
        self.scheme = b"https" if record.protocol == "HTTPS" else b"http"
        self.port = record.port
        self.certs = certs
        #: The client connections accepted on it (kgw_l7.proxy.DownstreamConn).
        self.conns: set[Any] = set()
        self.server: asyncio.AbstractServer | None = None
        self.sock: Any = None
        #: A TrafficPolicy's requestHeaderTimeout for this socket (0: the worker's).
        self.header_timeout = policy_header_timeout(record)
        #: A TrafficPolicy's accessLog settings for this socket (None: the worker's);
        #: set by the worker (WorkerContext.listener_log), which knows the defaults.
        self.log: LogSettings | None = None
        #: The Tracer of its requests: a TrafficPolicy's tracing or the worker's default
        #: (None: no tracing); set by the worker (WorkerContext.listener_tracer).
        self.tracer: Tracer | None = None
        #: 0, or connections start with a PROXY protocol header: 1 required, 2 optional
        #: (kgw_l7.proxy.PROXY_REQUIRED / PROXY_OPTIONAL).
        self.proxy_mode = proxy_mode(record)

    def update(self, record: Any, router: ListenerRouter, certs: CertStore | None) -> None:
        """A new config for the same socket: open connections see it on their next
        request."""
        self.record = record
        self.router = router
        self.certs = certs
        self.gateway = listener_gateway(record)
        self.header_timeout = policy_header_timeout(record)
        self.proxy_mode = proxy_mode(record)


def policy_header_timeout(record: Any) -> float:
    policy = record.policy
    timeout = policy.request_header_timeout if policy is not None else None
    return float(timeout) if timeout else 0.0


def proxy_mode(record: Any) -> int:
    """The listener's PROXY protocol mode (ListenerState.proxy_mode) from its policy."""
    policy = record.policy
    pp = policy.proxy_protocol if policy is not None else None
    if pp is None:
        return 0
    return 2 if pp.optional else 1


def listener_gateway(record: Any) -> str:
    """The one Gateway whose routes a listener record serves, or "" (none, or several
    Gateways sharing the address and port)."""
    gateways = {route.rule.gateway for vh in record.virtual_hosts for route in vh.routes}
    return gateways.pop() if len(gateways) == 1 else ""


class WorkerContext:
    """Everything a worker's connections share.

    ``conns`` holds the client connections; the periodic sweep calls their
    ``sweep(now, idle_timeout, header_timeout, response_timeout)`` (and ``close()`` if
    that fails) with their ``listener``'s header timeout if a policy set one, ``drain``
    sets their ``closing``.
    """

    __slots__ = ("loop", "options", "stats", "tls", "pool", "access_log", "max_connections",
                 "conns", "listeners", "errors", "cache", "now", "stopping", "_tasks",
                 "_sweeper", "_interval", "clock", "limiter", "fd_limit", "fd_base",
                 "fd_short_at", "draining", "ignore_client_abort", "tracer", "global_limiter",
                 "_log_settings", "_tracers", "_exports")

    def __init__(self, loop: asyncio.AbstractEventLoop, options: WorkerOptions) -> None:
        self.loop = loop
        #: loop.time, bound once (read twice per request).
        self.clock = loop.time
        self.options = options
        self.stats = WorkerStats()
        self.tls = TLSContexts()
        self.pool = Pool(self.tls, options.max_upstream_connections, self.room_for_upstream,
                         self.stats)
        self.limiter = LogLimiter(log)
        self.fd_limit = _fd_limit()
        #: Descriptors open before any connection (stdio, the loop, the access log...).
        self.fd_base = _open_descriptors()
        self.fd_short_at = 0.0
        #: Shutting down: responses say Connection: close (listeners still accept).
        self.draining = False
        self.ignore_client_abort = options.ignore_client_abort
        #: (The format was checked by the supervisor before any worker started.)
        self.access_log = None if options.access_log == "off" else AccessLog(
            options.access_log, parse_format(options.access_log_format,
                                             options.access_log_redact),
            options.access_log_min_status, options.access_log_sample)
        #: AccessLogPolicy -> its LogSettings (listener_log).
        self._log_settings: dict[Any, LogSettings] = {}
        #: None: tracing is off (no endpoint configured).
        self.tracer = tracing_from_settings(options.tracing_endpoint, options.tracing_sample)
        #: TracingPolicy -> its Tracer; (OTLP protocol, traces URL) -> its SpanExport (one
        #: per distinct endpoint, shared by the default tracer and the policies naming it).
        self._tracers: dict[Any, Tracer] = {}
        self._exports: dict[tuple[str, str], SpanExport] = {}
        if self.tracer is not None:
            self.tracer.start()
            export = self.tracer.export
            self._exports[(export.protocol, export.endpoint)] = export
        #: The global rate limits' Redis connections and counters (idle until a rule has one).
        self.global_limiter = GlobalLimiter()
        self.max_connections = options.max_connections
        self.conns: set[Any] = set()
        self.listeners: dict[str, ListenerState] = {}
        self.errors: dict[str, str] = {}
        self.cache = RouterCache(options.workers)
        self.now = loop.time()
        self.stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._interval = self.sweep_interval()
        self._sweep()

    def sweep_interval(self) -> float:
        """How often the periodic timer runs: a quarter of the shortest timeout it checks
        (a listener's policy may shorten the header timeout), between 50 ms and 1 s."""
        options = self.options
        header = min([options.header_timeout] + [st.header_timeout for st in
                                                 self.listeners.values() if st.header_timeout])
        return max(0.05, min(1.0, header / 4, options.idle_timeout / 4,
                             options.response_timeout / 4 or 1.0))

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

    def tls_failed(self, listener: ListenerState, reason: str, detail: str) -> None:
        """A failed TLS handshake (kgw_l7.tls.dispatch_context): counted by reason with
        its listener, logged (at most every few seconds per listener and reason) and
        written to the access log (status 0, flag DTF; the peer's address is not known
        at that point)."""
        self.stats.tls_refused(listener.name, reason)
        if reason in ("unknown_server_name", "no_server_name"):
            what = f"no certificate for {detail}" if reason == "unknown_server_name" else \
                "the client sent no server name and no certificate serves every name"
            self.limiter.warning(("sni", listener.name), "listener %s: TLS "
                                 "handshake refused with the unrecognized_name alert: %s",
                                 listener.name, what)
        else:
            self.limiter.warning(("tls", listener.name, reason), "listener %s: TLS "
                                 "handshake failed (%s): %s", listener.name, reason, detail)
        if self.access_log is not None:
            self.access_log.log(time.time(), None, 0, 0, 0, 0.0, None, None, b"", "DTF",
                                listener.name, f"tls {reason}: {detail}", b"", listener.log)

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
        connection (listeners keep accepting until they are closed)."""
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
                    conn.sweep(now, opts.idle_timeout,
                               conn.listener.header_timeout or opts.header_timeout,
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

    def snapshot(self) -> dict[str, Any]:
        """The worker's counters for the supervisor (kgw_l7.metrics); the access log's
        lines so far go to its writer first."""
        snap = self.stats.snapshot()
        snap["rate_limit_table_full"] = table_full()
        snap["listener_connections"] = {name: len(st.conns) for name, st in self.listeners.items()}
        if self.access_log is not None:
            self.access_log.flush()
            snap.update(self.access_log.counters())
        if self._exports:
            dropped: dict[str, int] = {}
            exported = 0
            for export in self._exports.values():
                for reason, n in export.dropped.items():
                    dropped[reason] = dropped.get(reason, 0) + n
                exported += export.exported
            snap["tracing_spans_dropped"] = dropped
            snap["tracing_spans_exported"] = exported
        snap.update(self.global_limiter.snapshot())
        return snap

    async def access_log_written(self, timeout: float = 1.0) -> None:
        """Until the access log's lines so far are written (or ``timeout``): a metrics
        scrape sees the lines of the requests it counts. The loop goes on meanwhile."""
        log = self.access_log
        if log is None:
            return
        log.flush()
        deadline = self.loop.time() + timeout
        while log.unwritten() and self.loop.time() < deadline:
            await asyncio.sleep(0.005)

    def access_refused(self, listener: ListenerState, status: int, flags: str,
                       details: str, remote: bytes) -> None:
        """Something refused before a request head existed (a malformed request, a
        failed TLS handshake): counted with its listener and written to the access log."""
        self.stats.request(listener.name, listener.gateway, "", "", status, 0.0)
        if self.access_log is not None:
            self.access_log.log(time.time(), None, status, 0, 0, 0.0, None, None, b"", flags,
                                listener.name, details, remote, listener.log)

    def listener_log(self, record: Any) -> LogSettings | None:
        """A listener's own access log settings from its policy (None: the worker's, or
        no access log). One formatter per distinct setting, reused across configs."""
        policy = record.policy.access_log if record.policy is not None else None
        if policy is None or self.access_log is None:
            return None
        settings = self._log_settings.get(policy)
        if settings is None:
            opts = self.options
            base = self.access_log
            formatter = base.formatter
            if policy.format is not None and policy.format != opts.access_log_format:
                formatter = Formatter(parse_format(policy.format, opts.access_log_redact))
            if len(self._log_settings) > 256:  # (settings come from the config)
                self._log_settings.clear()
            settings = self._log_settings[policy] = LogSettings(
                formatter,
                policy.min_status if policy.min_status is not None else base.min_status,
                policy.sample if policy.sample is not None else base.sample,
                policy.disabled)
        return settings

    def listener_tracer(self, record: Any) -> Tracer | None:
        """The Tracer of a listener's requests: its TrafficPolicy ``tracing`` (one Tracer
        per distinct setting, reused across configs; ``disabled``: None), else the
        worker's default (the command line's; None when tracing is off)."""
        policy = record.policy.tracing if record.policy is not None else None
        if policy is None:
            return self.tracer
        if policy.disabled or not policy.endpoint:
            return None
        tracer = self._tracers.get(policy)
        if tracer is None:
            key = (policy.protocol, policy.endpoint)
            export = self._exports.get(key)
            if export is None:
                timeout = self.tracer.export.timeout if self.tracer is not None else 10.0
                export = self._exports[key] = SpanExport(policy.endpoint, timeout,
                                                         protocol=policy.protocol)
            tracer = self._tracers[policy] = Tracer(
                policy.endpoint, "parentbased_traceidratio", policy.ratio, export.timeout,
                service_name=policy.service_name, resource=policy.resource, tags=policy.tags,
                export=export)
            tracer.start()
        return tracer

    def retain_tracers(self) -> None:
        """After a config: forget the tracers no listener uses, and stop the exports no
        tracer uses (their queued spans are sent first, within a second)."""
        used = {st.tracer for st in self.listeners.values() if st.tracer is not None}
        self._tracers = {p: t for p, t in self._tracers.items() if t in used}
        keep = {t.export for t in used}
        if self.tracer is not None:
            keep.add(self.tracer.export)
        for url, export in list(self._exports.items()):
            if export not in keep:
                del self._exports[url]
                export.close(0.0)

    def close(self) -> None:
        """The worker stops: idle backend connections, the timer and the access log."""
        self.pool.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.access_log is not None:
            self.access_log.close()
        for export in self._exports.values():
            export.close()
        if self.global_limiter.servers() and self.loop.is_running():
            self.spawn(self.global_limiter.close())


def _fd_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32
