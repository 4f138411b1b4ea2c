"""L4 flow events in the access log: a line when a proxied TCP, TLS or UDP flow opens
(its backend connected, or its first datagram sent) and one when it closes, with the
bytes each way and its duration; a flow refused before it had a backend gets a single
line with a response flag.

The agent's userspace paths write them (the userspace TCP and UDP proxies, the splice
acceptor, TLS passthrough and termination); flows the TC/XDP programs forward never reach
userspace and are seen in ``kgw-inspect flows`` instead. The lines go where the L7
workers' lines go (``--access-log``: stdout, a file, OTLP), in the same format, through
the same buffered writer (``kgw_l7.accesslog.AccessLog``: batched, bounded, never
blocking the loop; lines lost are counted in ``kgw_l4_flow_log_dropped_total``).

In the line: ``response_code`` is 0 (no HTTP), ``response_code_details`` says the event
(``flow_open``, ``flow_close``, ``flow_refused``), ``listener`` the Gateway listener
(namespace/gateway/listener), ``route_name`` the route, ``downstream_remote_address``
the client, ``upstream_host`` the backend endpoint, ``bytes_received`` the bytes from the
client and ``bytes_sent`` those to it; ``response_flags`` as Envoy's TCP proxy sets
them: ``UH`` no backend endpoint, ``NR`` no route (an SNI no TLS route matches), ``UF``
the backend could not be reached, ``DTF`` the client's TLS handshake failed (a
terminating TLS listener), ``DPE`` the connection's PROXY protocol header was missing
or malformed (a TLS port that takes one), ``-`` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from kgw_l7.accesslog import AccessLog
from kgw_l7.logformat import DEFAULT_REDACT, parse_format

#: How often the buffered lines go to the writer (as the L7 workers' timer).
FLUSH_EVERY = 1.0

Addr = tuple[str, int]


def _remote(client: Addr | None) -> bytes:
    if not client:
        return b""
    host = client[0]
    return (f"[{host}]:{client[1]}" if ":" in host else f"{host}:{client[1]}").encode()


class Flow:
    """One open flow, as logged when it opened."""

    __slots__ = ("listener", "route", "client", "backend", "start", "began")

    def __init__(self, listener: str, route: str, client: Addr, backend: Addr) -> None:
        self.listener = listener
        self.route = route
        self.client = client
        self.backend = backend
        self.start = time.time()
        self.began = time.monotonic()


class FlowLog:
    """The agent's flow events (module docstring). ``target``, ``fmt``: as
    ``--access-log`` and ``--access-log-format``; ``min_status`` > 0 (an errors-only
    filter) keeps only refused flows."""

    def __init__(self, target: str | None, fmt: str = "json",
                 redact: tuple[str, ...] = DEFAULT_REDACT, min_status: int = 0,
                 sample: float = 1.0) -> None:
        self.log = AccessLog(target, parse_format(fmt, redact), min_status, sample,
                             name="access log (L4 flows)",
                             counter="kgw_l4_flow_log_dropped_total", open_now=False)
        self.only_refused = min_status > 0
        self._timer: asyncio.Task | None = None

    # -- events ---------------------------------------------------------------------------
    def opened(self, listener: str, route: str, client: Addr, backend: Addr) -> Flow:
        """A flow has its backend: its open line, and the record its close needs."""
        flow = Flow(listener, route, client, backend)
        if not self.only_refused:
            self._line(flow.start, 0, 0, 0.0, backend, route, "", listener, "flow_open",
                       client)
        return flow

    def closed(self, flow: Flow, received: int, sent: int) -> None:
        """``flow`` ended; ``received`` bytes came from the client, ``sent`` went to it."""
        if not self.only_refused:
            self._line(flow.start, received, sent, time.monotonic() - flow.began, flow.backend,
                       flow.route, "", flow.listener, "flow_close", flow.client)

    def refused(self, listener: str, route: str, client: Addr | None, flags: str,
                backend: Addr | None = None) -> None:
        """A flow that never had a backend (``flags``: UH, NR, UF, DTF, DPE)."""
        self._line(time.time(), 0, 0, 0.0, backend, route or None, flags, listener,
                   "flow_refused", client)

    def _line(self, start: float, received: int, sent: int, duration: float,
              upstream: Addr | None, route: str | None, flags: str, listener: str,
              details: str, client: Addr | None) -> None:
        log = self.log
        if log.sample < 1.0 and details != "flow_refused" and random.random() >= log.sample:
            return
        log.append(log.formatter.line(start, None, 0, received, sent, duration, upstream,
                                      route or None, b"", flags, listener, details,
                                      _remote(client)))

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """The flush timer, on the running loop."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._flush_every())

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            self.log.flush()

    async def close(self) -> None:
        """Write what is left (bounded by the access log's close timeout)."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        await asyncio.to_thread(self.log.close)

    # -- metrics --------------------------------------------------------------------------
    def metrics(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return generate_latest(registry)


class _Collector:
    def __init__(self, flow_log: FlowLog) -> None:
        self.flow_log = flow_log

    def collect(self) -> Iterator[Metric]:
        log = self.flow_log.log
        dropped = CounterMetricFamily(
            "kgw_l4_flow_log_dropped", "L4 flow log lines lost (buffer_full: the writer could "
            "not keep up; write_error: a write or an export failed)", labels=["reason"])
        for reason in ("buffer_full", "write_error"):
            dropped.add_metric([reason], log.dropped.get(reason, 0))
        yield dropped
        yield CounterMetricFamily("kgw_l4_flow_log_lines", "L4 flow log lines written",
                                  value=log.lines)
