"""The L7 data plane as the supervisor sees it: N worker processes fed config snapshots.

Usage (the controller's supervisor)::

    plane = L7Plane(workers=2, access_log="off")
    await plane.start()
    await plane.apply(config)        # returns once every worker serves ``config``
    text = await plane.metrics()     # Prometheus exposition, summed over workers
    plane.listener_errors()          # {"0.0.0.0:80": "cannot listen on ...: ..."}
    await plane.close()

Workers are separate processes (``python -m kgw_l7 worker``: no fork of a supervisor
that may run threads), each with its own uvloop, sharing listening ports through
SO_REUSEPORT. Each worker is spoken to over a socketpair carrying pickled frozen config
records (``kgw_l7.channel``: this module imports none of the per-request ones). A worker
that dies is restarted and given the latest config, after a delay that doubles with each
crash (0.2 s to 5 s) and starts over once a worker has run for
``healthy_after`` seconds. Its counters are not lost with it: the plane collects every
worker's counters every ``COLLECT_INTERVAL`` seconds (and on each scrape) and keeps
those of the workers that exited, so the summed totals never go backwards.

``health()`` says why the plane does not serve every configured listener (no worker
running, a listener that could not be opened or stopped accepting, a worker out of file
descriptors); the supervisor's ``/readyz`` reports it.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable
from typing import Any

from kgw_l7 import session, snapshot
from kgw_l7.channel import (MAX_CONNECTIONS_PER_ENDPOINT, WorkerOptions, encode_frame,
                            encode_options, read_frame)
from kgw_l7.config import L7Config
from kgw_l7.healthcheck import HealthChecker
from kgw_l7.logformat import DEFAULT_REDACT, parse_format
from kgw_l7.metrics import render, retire
from kgw_l7.otlplogs import is_otlp, logs_url
from kgw_l7.problems import Key, merge
from kgw_l7.ratetable import create_table_fd
from kgw_l7.tracing_config import resolve as resolve_tracing

log = logging.getLogger("kgw.l7.plane")

_WILDCARDS = ("0.0.0.0", "::", "")

#: How long a worker may take to start (import, event loop) or to answer a request.
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 30.0
#: How long /readyz waits for a worker's health before using the last one it gave.
HEALTH_TIMEOUT = 1.0
#: How often the workers' counters are collected (what a worker that dies loses at most).
COLLECT_INTERVAL = 5.0
#: How often the workers are asked for their runtime problems (kgw_l7.problems): how long
#: a policy's status may lag behind a Redis or JWKS URL going bad or coming back.
PROBLEMS_INTERVAL = 1.0


class _Worker:
    """The supervisor's handle on one worker process: a request/response channel."""

    def __init__(self, plane: L7Plane, index: int) -> None:
        self.plane = plane
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pending: dict[Any, asyncio.Future[Any]] = {}
        self.seq = itertools.count(1)
        self.alive = False
        #: The worker reported ready at least once (only such workers are restarted).
        self.ready = False
        self.restarts = 0
        #: loop.time() when the process last started.
        self.started_at = 0.0
        #: The last counters snapshot it sent, and the last health it reported.
        self.snapshot: dict[str, Any] | None = None
        self.health: list[str] = []
        self._reader_task: asyncio.Task[None] | None = None
        #: The config this worker last acknowledged: deltas are computed against it.
        self.config: L7Config | None = None

    async def apply(self, config: L7Config, refused: dict[str, str]) -> Any:
        """Send ``config`` as a delta against what this worker holds (full if unsure)."""
        result = await self.request("apply", snapshot.diff(self.config, config), refused)
        if result[0] == "stale":  # it does not hold what we thought: send everything
            self.config = None
            result = await self.request("apply", snapshot.diff(None, config), refused)
        if result[0] == "ok":
            self.config = config
        return result

    async def start(self) -> None:
        self.config = None  # a new process holds nothing
        #: Until it says ready, its death is start()'s failure to report, not a crash for
        #: the supervisor to restart (which would race the restart loop already running).
        self.ready = False
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair()
        options = encode_options(self.plane.options)
        ready = loop.create_future()
        self.pending = {"ready": ready}
        try:
            table = self.plane.rate_table()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kgw_l7", "worker", "--fd", str(child.fileno()),
                "--index", str(self.index), "--options", options,
                "--rate-table-fd", str(table),
                pass_fds=(child.fileno(), table),
                env=_worker_env(self.plane.session_key, self.plane.hash_seed))
        finally:
            child.close()
        reader, self.writer = await asyncio.open_connection(sock=parent)
        self.alive = True
        self.started_at = loop.time()
        self.snapshot = None
        self.health = []
        self._reader_task = loop.create_task(self._receive(reader))
        await asyncio.wait_for(ready, START_TIMEOUT)
        self.ready = True

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                seq, payload = await read_frame(reader)
                fut = self.pending.pop(seq, None)
                if fut is not None and not fut.done():
                    fut.set_result(payload)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        self.alive = False
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"L7 worker {self.index} exited"))
        self.pending.clear()
        self.plane._worker_lost(self)

    async def request(self, kind: str, *args: Any, timeout: float = REQUEST_TIMEOUT) -> Any:
        if not self.alive or self.writer is None:
            raise ConnectionError(f"L7 worker {self.index} is not running")
        loop = asyncio.get_running_loop()
        seq = next(self.seq)
        fut = loop.create_future()
        self.pending[seq] = fut
        self.writer.write(encode_frame((kind, seq, *args)))
        await self.writer.drain()
        return await asyncio.wait_for(fut, timeout)

    async def stop(self, timeout: float) -> None:
        if self.process is not None:
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.writer is not None:
            self.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


def _worker_env(session_key: str, hash_seed: str) -> dict[str, str]:
    """The worker imports kgw_l7 the way this process did (source checkouts included),
    signs session persistence tokens with the plane's key (kgw_l7.session), and hashes
    with the plane's ``PYTHONHASHSEED``, so a rate limit key finds its bucket in the same
    slot of the shared table from every worker (kgw_l7.ratelimit): in the environment,
    not on the command line that every local user can read."""
    env = dict(os.environ)
    env[session.KEY_ENV] = session_key
    env["PYTHONHASHSEED"] = hash_seed
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class L7Plane:
    def __init__(self, workers: int | None = None, access_log: str | None = None,
                 max_connections_per_worker: int = 10000, idle_timeout: float = 60.0,
                 header_timeout: float = 10.0, drain_timeout: float = 5.0,
                 log_level: int = logging.INFO, response_timeout: float = 15.0,
                 ignore_client_abort: bool = False,
                 max_upstream_connections: int = MAX_CONNECTIONS_PER_ENDPOINT,
                 healthy_after: float = 60.0, restart_delay: float = 0.2,
                 access_log_format: str = "json", access_log_min_status: int = 0,
                 access_log_sample: float = 1.0,
                 access_log_redact: tuple[str, ...] = DEFAULT_REDACT,
                 tracing_endpoint: str | None = None,
                 tracing_sample: float | None = None) -> None:
        self.workers_wanted = workers or os.cpu_count() or 1
        parse_format(access_log_format, access_log_redact)  # (FormatError: before any worker)
        tracing = resolve_tracing(tracing_endpoint, tracing_sample)  # (TracingConfigError too)
        if access_log is not None and is_otlp(access_log):
            url = logs_url(access_log)  # (OtlpLogsError: before any worker)
            log.info("access log: OTLP log records to %s", url)
        if tracing is not None:
            log.info("tracing: spans to %s over %s (sampler %s, ratio %g)", tracing.url,
                     tracing.protocol, tracing.sampler, tracing.ratio)
        self.options = WorkerOptions(
            access_log=access_log, access_log_format=access_log_format,
            access_log_min_status=access_log_min_status, access_log_sample=access_log_sample,
            access_log_redact=access_log_redact, max_connections=max_connections_per_worker,
            idle_timeout=idle_timeout, header_timeout=header_timeout,
            drain_timeout=drain_timeout, log_level=log_level,
            response_timeout=response_timeout, ignore_client_abort=ignore_client_abort,
            max_upstream_connections=max_upstream_connections,
            tracing_endpoint=tracing_endpoint, tracing_sample=tracing_sample,
            workers=self.workers_wanted)
        #: Every worker signs session tokens with it, so a session survives a move to
        #: another worker (and another node or a restart when KGW_SESSION_KEY is set
        #: the same everywhere).
        self.session_key = os.environ.get(session.KEY_ENV) or secrets.token_hex(32)
        #: One hash secret for every worker (a random one unless this process was given
        #: a fixed one: a benchmark's ``PYTHONHASHSEED=0``).
        seed = os.environ.get("PYTHONHASHSEED", "")
        self.hash_seed = seed if seed.isdigit() else str(1 + secrets.randbelow(4294967295))
        #: A worker that ran this long before it died is restarted without delay growth.
        self.healthy_after = healthy_after
        #: The first restart delay (doubling with each crash, up to 5 s).
        self.restart_delay = restart_delay
        #: Counters of the workers that exited (kgw_l7.metrics.retire).
        self._retired: dict[str, Any] | None = None
        #: Workers started again after they exited unexpectedly (kgw_l7_worker_restarts).
        self.worker_restarts = 0
        self._collector: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        #: The workers' runtime problems merged, and who hears when they change (the
        #: supervisor: a status refresh).
        self._problems: dict[Key, str] = {}
        self.on_problems_changed: Callable[[], None] | None = None
        self._workers: list[_Worker] = []
        self._config: L7Config | None = None
        self._errors: dict[str, str] = {}
        self._closing = False
        self._restarts: set[asyncio.Task[Any]] = set()
        #: (address, port) our workers listen on; listeners refused by the probe.
        self._serving: set[tuple[str, int]] = set()
        self._refused: dict[str, str] = {}
        #: Active health checks, once for every worker (kgw_l7.healthcheck); the verdicts
        #: go to the workers as the set of unhealthy endpoints (``_push_health``).
        self.checker = HealthChecker(self._health_changed)
        self._pushing: asyncio.Task[None] | None = None
        #: The node's local rate limit buckets (kgw_l7.ratetable), shared by the workers
        #: (a restarted worker finds them as they were).
        self._rate_table = -1

    def rate_table(self) -> int:
        if self._rate_table < 0:
            self._rate_table = create_table_fd()
        return self._rate_table

    async def start(self) -> None:
        self._workers = [_Worker(self, i) for i in range(self.workers_wanted)]
        await asyncio.gather(*(w.start() for w in self._workers))
        self._collector = asyncio.get_running_loop().create_task(self._collect())
        self._watcher = asyncio.get_running_loop().create_task(self._watch_problems())
        log.info("L7 plane started with %d worker(s)", len(self._workers))

    async def apply(self, config: L7Config) -> None:
        """Push ``config`` to every worker; returns once all of them serve it."""
        if not self._workers:
            raise RuntimeError("L7Plane.apply() before start()")
        self._config = config
        self._refused = refused = self._probe_new_listeners(config)
        results = await asyncio.gather(*(w.apply(config, refused)
                                         for w in self._workers if w.alive),
                                       return_exceptions=True)
        errors: dict[str, str] = dict(refused)
        for res in results:
            if isinstance(res, BaseException):
                log.error("a worker did not apply generation %d: %s", config.generation, res)
                continue
            _status, _gen, errs = res
            for name, msg in errs.items():
                errors.setdefault(name, msg)
        for name, msg in errors.items():
            if self._errors.get(name) != msg:
                log.error("L7 listener %s not serving: %s", name, msg)
        for name in self._errors.keys() - errors.keys():
            log.info("L7 listener %s: no longer failing", name)
        self._errors = errors
        self._serving = {(lis.address, lis.port) for lis in config.listeners
                         if lis.name not in errors}
        self.checker.update(config)

    def _health_changed(self) -> None:
        """A verdict changed: push the unhealthy set to the workers (one push at a time;
        a change during a push is sent by the next)."""
        if self._closing or (self._pushing is not None and not self._pushing.done()):
            return
        self._pushing = asyncio.get_running_loop().create_task(self._push_health())

    async def _push_health(self, only: _Worker | None = None) -> None:
        while not self._closing:
            unhealthy = self.checker.unhealthy()
            workers = [only] if only is not None else [w for w in self._workers if w.alive]
            results = await asyncio.gather(*(w.request("endpoint_health", unhealthy)
                                             for w in workers), return_exceptions=True)
            for w, res in zip(workers, results):
                if isinstance(res, BaseException):
                    log.warning("L7 worker %d did not take the health verdicts: %s",
                                w.index, res)
            if only is not None:
                return
            if self.checker.unhealthy() == unhealthy:
                return

    def endpoint_health(self) -> list[dict[str, Any]]:
        """The active health checks' verdicts."""
        return self.checker.view()

    async def endpoint_state(self) -> dict[str, Any]:
        """Endpoint health for the admin API (``/endpoint_health``, the config dump,
        ``kgw status``): the active checks' verdicts, and each worker's view (outlier
        ejections, requests in flight)."""
        live = [w for w in self._workers if w.alive]
        views = await asyncio.gather(*(w.request("endpoint_state", timeout=HEALTH_TIMEOUT)
                                       for w in live), return_exceptions=True)
        return {"active": self.checker.view(),
                "workers": [{"worker": w.index, "backends": v} if isinstance(v, dict) else
                            {"worker": w.index, "error": str(v) or type(v).__name__}
                            for w, v in zip(live, views)]}

    def _probe_new_listeners(self, config: L7Config) -> dict[str, str]:
        """Listeners whose address another process already listens on.

        Workers bind with SO_REUSEPORT, which the kernel also grants to *another*
        process of the same user that set it (a second kgw, an nginx with
        ``reuseport``): both would then silently share the traffic. So before a new
        (address, port) is handed to the workers, the supervisor tries to bind it
        without SO_REUSEPORT; "address in use" there means someone else has it.
        """
        refused: dict[str, str] = {}
        for lis in config.listeners:
            if (lis.address, lis.port) in self._serving:
                continue  # ours already
            if any(port == lis.port and (addr in _WILDCARDS or lis.address in _WILDCARDS)
                   for addr, port in self._serving):
                continue  # overlaps one of our own sockets: the probe cannot tell
            family = socket.AF_INET6 if ":" in lis.address else socket.AF_INET
            try:
                probe = socket.socket(family, socket.SOCK_STREAM)
            except OSError:
                continue
            try:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((lis.address, lis.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    refused[lis.name] = (f"cannot listen on {lis.address}:{lis.port}: address "
                                         f"already in use by another process")
            except (OverflowError, ValueError):
                pass  # the workers report these with their own message
            finally:
                probe.close()
        return refused

    def listener_errors(self) -> dict[str, str]:
        """Listeners of the last config that could not be opened: name -> message."""
        return dict(self._errors)

    async def metrics(self) -> bytes:
        await self._snapshots()
        return render([w.snapshot for w in self._workers if w.alive and w.snapshot],
                      self._retired, self.worker_restarts) + self.checker.metrics().encode()

    async def _snapshots(self) -> None:
        live = [w for w in self._workers if w.alive]
        snaps = await asyncio.gather(*(w.request("metrics") for w in live),
                                     return_exceptions=True)
        for w, snap in zip(live, snaps):
            if isinstance(snap, dict) and w.alive:
                w.snapshot = snap

    async def _collect(self) -> None:
        while not self._closing:
            await asyncio.sleep(COLLECT_INTERVAL)
            try:
                await self._snapshots()
            except Exception:  # collecting must never stop
                log.exception("collecting L7 worker counters failed")

    def runtime_problems(self) -> dict[Key, str]:
        """What the workers last reported failing with what policies name:
        (kind, name) -> message (kgw_l7.problems)."""
        return dict(self._problems)

    async def _watch_problems(self) -> None:
        while not self._closing:
            await asyncio.sleep(PROBLEMS_INTERVAL)
            try:
                await self._poll_problems()
            except Exception:  # watching must never stop
                log.exception("asking the L7 workers for their problems failed")

    async def _poll_problems(self) -> None:
        """One round: the workers' sets merged; the supervisor told when it changed."""
        live = [w for w in self._workers if w.alive]
        answers = await asyncio.gather(*(w.request("problems", timeout=HEALTH_TIMEOUT)
                                         for w in live), return_exceptions=True)
        if any(not isinstance(a, dict) for a in answers):
            return  # a worker too busy or gone: judge on the next round
        problems = merge([a for a in answers if isinstance(a, dict)])
        if problems == self._problems:
            return
        for key in sorted(problems.keys() - self._problems.keys()):
            log.warning("%s %s failing: %s", key[0], key[1], problems[key])
        for key in sorted(self._problems.keys() - problems.keys()):
            log.info("%s %s: no longer failing", key[0], key[1])
        self._problems = problems
        if self.on_problems_changed is not None:
            self.on_problems_changed()

    async def health(self) -> list[str]:
        """Why a configured listener is not (fully) served, one line each; empty when
        every listener is served by every worker."""
        if self._closing:
            return ["the L7 plane is shutting down"]
        live = [w for w in self._workers if w.alive]
        problems = [f"listener {name} not served: {msg}"
                    for name, msg in sorted(self._errors.items())]
        if not live:
            return ["no L7 worker running", *problems]
        answers = await asyncio.gather(*(w.request("health", timeout=HEALTH_TIMEOUT)
                                         for w in live), return_exceptions=True)
        for w, answer in zip(live, answers):
            if isinstance(answer, list):
                w.health = answer
            # (a worker too busy to answer in time is judged by its last answer)
            problems.extend(f"L7 worker {w.index}: {p}" for p in w.health)
        return problems

    async def drain(self) -> None:
        """Shutting down, first step: every response from now on closes its connection
        (the listeners keep accepting until ``close``)."""
        await asyncio.gather(*(w.request("drain") for w in self._workers if w.alive),
                             return_exceptions=True)

    async def close(self, drain_timeout: float = 5.0) -> None:
        self._closing = True
        await self.checker.close()
        if self._collector is not None:
            self._collector.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        for t in self._restarts:
            t.cancel()
        await asyncio.gather(*(w.request("close", drain_timeout, timeout=drain_timeout + 5)
                               for w in self._workers if w.alive), return_exceptions=True)
        await asyncio.gather(*(w.stop(5.0) for w in self._workers))
        self._workers = []
        if self._rate_table >= 0:
            os.close(self._rate_table)
            self._rate_table = -1

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process is not None and w.alive]

    # -- worker supervision -------------------------------------------------------------
    def _worker_lost(self, w: _Worker) -> None:
        if w.snapshot is not None:
            self._retired = retire(self._retired, w.snapshot)
            w.snapshot = None
        if self._closing or not w.ready:
            return  # closing, or start() is still waiting for it and reports the failure
        loop = asyncio.get_running_loop()
        if loop.time() - w.started_at >= self.healthy_after:
            w.restarts = 0  # it had been fine for a while: not a crash loop
        log.error("L7 worker %d (pid %s) exited; restarting it", w.index,
                  w.process.pid if w.process else "?")
        task = asyncio.get_running_loop().create_task(self._restart(w))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, w: _Worker) -> None:
        """Start the worker again (with a growing delay if it keeps dying) and give it
        the current config."""
        await w.stop(1.0)
        while not self._closing:
            await asyncio.sleep(min(5.0, self.restart_delay * 2 ** min(w.restarts, 5)))
            w.restarts += 1
            try:
                await w.start()
                self.worker_restarts += 1
                if self._config is not None:
                    await w.apply(self._config, self._refused)
                    if self.checker.unhealthy():
                        await self._push_health(w)
                return
            except (OSError, ConnectionError, TimeoutError) as exc:
                log.error("restarting L7 worker %d failed: %s", w.index, exc)
                await w.stop(1.0)
