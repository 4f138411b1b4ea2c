"""Active health checking, once per node: the L7 plane (the supervisor side) runs one
``HealthChecker`` for every worker, and pushes its verdicts to them (``L7Plane``:
a set of unhealthy endpoints, which each worker's ``kgw_l7.balance.HealthBook`` applies).
Checking once per node, not once per worker, keeps the probes a backend receives
independent of the worker count.

Probes (``HealthCheck.type``):

* TCP -- a connection opens within the timeout.
* HTTP -- ``GET path`` with the configured Host answers an expected status (parsed with
  httptools); the connection is kept alive between checks, so a check usually costs one
  write and one read, not a handshake.
* GRPC -- ``grpc.health.v1.Health/Check`` for the configured service over HTTP/2 (the
  h2 library) answers ``SERVING`` with grpc-status 0; the connection is kept too.

Thresholds (``Verdict``): an endpoint starts healthy (a new endpoint is not held back
while nothing is known of it); ``unhealthy_threshold`` failures in a row make it
unhealthy, ``healthy_threshold`` successes in a row healthy again. Each check waits
``interval`` plus up to ``jitter`` at random, and the first one is spread over one
interval, so a thousand endpoints are not probed in one burst.
"""

from __future__ import annotations

import asyncio
import logging
import random
import resource
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


class _HttpCheck(asyncio.Protocol):
    """The HTTP check of one target without a task: a timer starts each check, the
    response arrives in ``data_received`` (parsed by httptools), a timer bounds the wait.
    A check on a kept connection is one write, one read and two timers -- what makes
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
        #: A check in progress (its timeout armed), and the next one's timer.
        self.deadline: asyncio.TimerHandle | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.stopped = False

    # -- scheduling ---------------------------------------------------------------------
    def schedule(self, delay: float) -> None:
        if not self.stopped:
            self.timer = asyncio.get_running_loop().call_later(delay, self.start)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.deadline = loop.call_later(self.target.check.timeout, self.expire)
        if self.transport is not None and not self.transport.is_closing():
            try:
                self._send()
                return
            except RuntimeError:  # (uvloop: closed by the peer, not yet told to us)
                self.transport = None
        self.connecting = loop.create_task(self._connect())

    def stop(self) -> None:
        self.stopped = True
        for h in (self.timer, self.deadline):
            if h is not None:
                h.cancel()
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
        if self.deadline is not None:
            try:
                self._send()
            except RuntimeError:
                self.done(False, "connection closed at once")

    def _send(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.complete = False
        self.size = 0
        self.transport.write(self.request)  # type: ignore[union-attr]

    def expire(self) -> None:
        self.deadline = None
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self.close()
        self.done(False, f"no answer within {self.target.check.timeout:g}s", armed=False)

    def done(self, ok: bool, error: str = "", armed: bool = True) -> None:
        if armed:
            if self.deadline is None:
                return  # (expired already)
            self.deadline.cancel()
            self.deadline = None
        if not ok:
            self.close()
        self.checker.result(self.target, ok, error)
        hc = self.target.check
        self.schedule(hc.interval + (random.random() * hc.jitter if hc.jitter else 0.0))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    # -- asyncio.Protocol, httptools callbacks -----------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.deadline is None or self.parser is None:
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
        parser, self.parser = self.parser, None
        status = parser.get_status_code()
        if not self.keep_alive:
            self.close()
        hc = self.target.check
        for lo, hi in hc.expected_statuses:
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
        if self.deadline is not None and self.connecting is None:
            self.done(False, "connection closed before the response ended")


class HealthChecker:
    """Checks every target of the current config; calls ``on_change`` whenever the set
    of unhealthy endpoints changes."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self._targets: dict[Key, Target] = {}
        #: Per target: its task (TCP, GRPC) or its callback-driven check (HTTP).
        self._tasks: dict[Key, asyncio.Task[None] | _HttpCheck] = {}
        self._verdicts: dict[Key, Verdict] = {}

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
                if t.check.type == "HTTP":
                    check = _HttpCheck(self, t)
                    check.schedule(random.random() * t.check.interval)
                    self._tasks[key] = check
                else:
                    self._tasks[key] = loop.create_task(self._run(t))
        if changed:
            self.on_change()

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
        """TCP and GRPC checks: a task per target."""
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
                await asyncio.sleep(hc.interval + random.random() * hc.jitter)
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


def _stop(check: asyncio.Task[None] | _HttpCheck) -> None:
    if isinstance(check, _HttpCheck):
        check.stop()
    else:
        check.cancel()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


__all__ = ["HealthChecker", "ProbeFailed", "Target", "Verdict", "grpc_serving_status",
           "targets"]
