"""What ``kgw run`` and ``kgw agent`` share: serving both data planes, from start-up to the
drain (``serve_planes``); each adds only its source and what it runs beside the planes.

Start-up, in this order: the node's addresses; the L4 plane opened first (with pins in
place it takes their lock, so a second instance on the same pins stops before starting
anything); the L7 workers; the supervisor and its admin API; the command's companions
(the agent's Lease and its public metrics server). Then the configuration loop runs until
a signal (``controller.signals``) or its failure.

Shutdown, in this order: the companions stop (the agent hands its Lease back at once);
``/readyz`` turns not ready, the listeners accepting for ``--drain-delay`` after SIGTERM
(none after SIGINT); the source closes; the L7 listeners close and the requests in flight
get ``--drain-timeout``; the admin API closes (it answered "shutting down" until then),
then the companions; the L4 plane closes last, left attached and pinned for the next
instance to adopt.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from controller import signals
from controller.gwaddress import NodeView
from controller.node import discover_addresses
from controller.source import Source
from controller.supervisor import StatusWriter, Supervisor, serve_admin
from controller.ingress.convert import Listening
from controller.translate import Options
from kgw_cli.env import Environment, ExitStatus
from kgw_cli.eventloop import run_async
from kgw_l4.acceptor import KEEPALIVE_IDLE
from kgw_l7.logformat import DEFAULT_REDACT
from kgw_l7.otlplogs import OtlpLogsError
from kgw_l7.tracing_config import TracingConfigError

log = logging.getLogger("kgw")


class CannotServe(Exception):
    """A flag the planes refuse (a node address that is not IPv4, a negative backlog, an
    unknown interface) or a mode this host cannot run: one line saying which."""


def split_list(value: str | None) -> tuple[str, ...]:
    """A comma-separated flag (``--node-address``, ``--l4-interfaces``) as its items."""
    return tuple(a for a in (value or "").split(",") if a)


@dataclass(frozen=True)
class PlaneOptions:
    """The flags of ``kgw run`` and ``kgw agent`` that say how the planes serve
    (``controller.cli``'s serving arguments, declared once for both)."""

    admin_address: str
    workers: int | None
    access_log: str | None
    l4_mode: str
    #: None: every interface that is up, except loopback.
    l4_interfaces: tuple[str, ...] | None
    l4_pin_dir: str
    l4_splice_backlog: int
    #: --node-address: the addresses Gateway status reports (else discovered), and the
    #: SNAT source of the kernel plane (else each backend's route decides).
    node_address: tuple[str, ...]
    drain_delay: float
    drain_timeout: float
    response_timeout: float
    ignore_client_abort: bool
    #: The access log's lines (kgw_l7.logformat), which, and what they never show.
    access_log_format: str = "json"
    access_log_min_status: int = 0
    access_log_sample: float = 1.0
    access_log_redact: tuple[str, ...] = DEFAULT_REDACT
    #: Tracing (kgw_l7.tracing): the collector and the sampled share, else the OTEL_* variables.
    tracing_endpoint: str | None = None
    tracing_sample: float | None = None
    #: Where Ingresses are served (--ingress-http-port, --ingress-https-port).
    ingress_ports: tuple[int, int] = (80, 443)
    #: --l4-tcp-keepalive (kgw_l4.acceptor.set_keepalive)
    l4_tcp_keepalive: int = KEEPALIVE_IDLE

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PlaneOptions:
        return cls(admin_address=args.admin_address, workers=args.workers,
                   access_log=args.access_log,
                   l4_mode=args.l4_mode, l4_interfaces=split_list(args.l4_interfaces) or None,
                   l4_pin_dir=args.l4_pin_dir, l4_splice_backlog=args.l4_splice_backlog,
                   l4_tcp_keepalive=args.l4_tcp_keepalive,
                   node_address=split_list(args.node_address),
                   drain_delay=args.drain_delay, drain_timeout=args.drain_timeout,
                   response_timeout=args.response_timeout,
                   ignore_client_abort=args.ignore_client_abort,
                   access_log_format=args.access_log_format,
                   access_log_min_status=args.access_log_filter,
                   access_log_sample=args.access_log_sample,
                   access_log_redact=tuple(h.strip().lower()
                                           for h in split_list(args.access_log_redact)),
                   tracing_endpoint=args.tracing_endpoint, tracing_sample=args.tracing_sample,
                   ingress_ports=(args.ingress_http_port, args.ingress_https_port))


class Companion(Protocol):
    """What a command runs beside the planes (the agent's Lease, its metrics server)."""

    async def start(self, sup: Supervisor) -> None:
        """Once the planes and the admin API serve."""

    async def stop(self) -> None:
        """Shutting down begins: before the drain."""

    async def close(self) -> None:
        """The L7 plane and the admin API are closed; the L4 plane closes next."""


def node_addresses(options: PlaneOptions, fallback: str | None = None) -> tuple[str, ...]:
    """--node-address, else ``fallback`` (the agent's $NODE_IP), else discovered.
    Blocking: pyroute2 runs an event loop of its own, so call it in a thread."""
    return options.node_address or split_list(fallback) or discover_addresses()


def run_serving(env: Environment, serve: Coroutine[Any, Any, ExitStatus]) -> ExitStatus:
    """Run a serving command's event loop until it stops. An OSError (an address in use, a
    pin directory another instance holds) or a flag the planes refuse is one line, not a
    traceback."""
    try:
        return run_async(serve)
    except (OSError, CannotServe) as exc:
        env.err(f"error: {exc}")
        return ExitStatus.ERROR


def start_logging(args: argparse.Namespace, env: Environment) -> None:
    logging.basicConfig(level=args.log_level.upper(), stream=env.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def serve_planes(options: PlaneOptions, source: Source, *, node_fallback: str | None = None,
                       status_writer: StatusWriter | None = None,
                       companions: Sequence[Companion] = (), node_view: bool = False) -> ExitStatus:
    """Serve both planes from ``source`` until SIGTERM/SIGINT (see the module docstring
    for the order of things); ERROR when the configuration loop failed. ``node_view``:
    Gateway spec.addresses are checked against this node (controller/gwaddress.py), as
    where one kgw serves every Gateway."""
    from kgw_l4.loader import BpfUnavailable
    from kgw_l4.plane import open_plane, sizes_with_splice_backlog
    from kgw_l4.snat import fixed_source
    from kgw_l7.plane import L7Plane

    nodes = await asyncio.to_thread(node_addresses, options, node_fallback)
    # Gateway status reports the node addresses; the kernel plane NATs each backend from the
    # source of the route to it (kgw_l4.snat), unless --node-address names one for all.
    try:
        l4 = await open_plane(options.l4_mode, interfaces=options.l4_interfaces,
                              node_address=fixed_source(options.node_address),
                              pin_dir=options.l4_pin_dir,
                              sizes=sizes_with_splice_backlog(options.l4_splice_backlog),
                              keepalive=options.l4_tcp_keepalive)
    # open_plane's word for a bad argument, a mode it cannot run
    except (ValueError, BpfUnavailable) as exc:
        raise CannotServe(str(exc)) from exc
    try:
        l7 = L7Plane(workers=options.workers, access_log=options.access_log,
                     access_log_format=options.access_log_format,
                     access_log_min_status=options.access_log_min_status,
                     access_log_sample=options.access_log_sample,
                     access_log_redact=options.access_log_redact,
                     drain_timeout=options.drain_timeout,
                     response_timeout=options.response_timeout,
                     ignore_client_abort=options.ignore_client_abort,
                     tracing_endpoint=options.tracing_endpoint,
                     tracing_sample=options.tracing_sample)
    # a bad OTEL_* variable or OTLP access log endpoint: one line, no worker started
    except (TracingConfigError, OtlpLogsError) as exc:
        raise CannotServe(str(exc)) from exc
    flow_log = None
    if options.access_log != "off":  # L4 flow events: the same log, format and filters
        from kgw_l4.flowlog import FlowLog

        flow_log = FlowLog(options.access_log, options.access_log_format,
                           options.access_log_redact, options.access_log_min_status,
                           options.access_log_sample)
        l4.set_flow_log(flow_log)
        flow_log.start()
    await l7.start()
    sup = Supervisor(source, options=Options(node_addresses=nodes,
                                             ingress=Listening(*options.ingress_ports)),
                     l7=l7, l4=l4,
                     status_writer=status_writer, node=NodeView() if node_view else None)
    admin = await serve_admin(sup, options.admin_address)
    for companion in companions:
        await companion.start(sup)
    log.info("admin API on http://%s (l4 mode: %s)", options.admin_address, l4.mode)

    stop = asyncio.Event()
    received: list[int] = []

    def on_stop(sig: int) -> None:
        received.append(sig)
        stop.set()

    signals.install(asyncio.get_running_loop(), on_stop, source.rescan)
    runner = asyncio.create_task(sup.run())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    status = ExitStatus.SUCCESS
    if runner in done and runner.exception() is not None:
        log.error("configuration loop failed: %r", runner.exception())
        status = ExitStatus.ERROR
    log.info("shutting down")
    for companion in companions:
        await companion.stop()
    # SIGTERM (Kubernetes, systemd): not ready first, accepting for --drain-delay; Ctrl-C: no delay.
    await sup.drain(options.drain_delay if received[:1] == [signal.SIGTERM] else 0.0)
    await source.close()
    runner.cancel()
    stopper.cancel()
    await l7.close(drain_timeout=options.drain_timeout)
    await admin.close()
    for companion in companions:
        await companion.close()
    await l4.close()
    if flow_log is not None:
        await flow_log.close()
    return status
