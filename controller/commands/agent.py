"""``kgw agent``: the in-cluster twin of ``kgw run`` (one per node, as a DaemonSet).

Same supervisor, same data planes; the source is the API server, and status goes back
to it from whichever agent holds the Lease. Every agent serves traffic from its own
watch, so losing the API server (or the Lease) never stops traffic: the data planes keep
the last good configuration and ``/readyz`` says what is wrong.

SIGTERM: hand the Lease back, turn /readyz not ready while still accepting for
``--drain-delay``, stop watching, drain L7 connections (``--drain-timeout``), and close the
kernel plane without unpinning it, so the next pod on this node adopts the programs and
maps and established L4 flows continue.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from typing import Any

from controller import signals
from controller.kube.client import make_api_client
from controller.kube.leader import LeaderElector
from controller.kube.source import KubeOptions, KubeSource
from controller.kube.status_writer import KubeStatusWriter
from controller.node import discover_addresses
from controller.supervisor import Supervisor, serve_admin
from kgw_cli.env import Environment, ExitStatus
from kgw_cli.eventloop import run_async

log = logging.getLogger("kgw")

#: Admin pages safe to expose beyond the node (no configuration, no keys).
PUBLIC_PAGES = ("/healthz", "/readyz", "/metrics")


def default_identity() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


def default_lease_namespace() -> str:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:  # the service account's namespace, in a pod
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "kgw-system"
    except OSError:
        return "kgw-system"


def node_addresses(flag: str | None) -> tuple[str, ...]:
    """--node-address, else NODE_IP (downward API: status.hostIP), else discovered."""
    if flag:
        return tuple(a for a in flag.split(",") if a)
    if os.environ.get("NODE_IP"):
        return tuple(a for a in os.environ["NODE_IP"].split(",") if a)
    return discover_addresses()


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    logging.basicConfig(level=args.log_level.upper(), stream=env.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        api = make_api_client(args.kubeconfig)
    except Exception as exc:
        env.err(f"error: no Kubernetes configuration (in-cluster or kubeconfig): {exc}")
        return ExitStatus.ERROR
    try:
        return run_async(_serve(args, api))
    except OSError as exc:
        env.err(f"error: {exc}")
        return ExitStatus.ERROR


async def _serve(args: argparse.Namespace, api: Any) -> ExitStatus:
    from kgw_l4.plane import open_plane, sizes_with_splice_backlog
    from kgw_l4.snat import fixed_source
    from kgw_l7.plane import L7Plane

    from controller.translate import Options

    nodes = await asyncio.to_thread(node_addresses, args.node_address)  # pyroute2 runs its own loop
    source = KubeSource(api, KubeOptions(namespace_selector=args.namespace_selector or ""))
    writer_box: list[KubeStatusWriter] = []
    elector = LeaderElector(api, args.lease_namespace or default_lease_namespace(), args.lease_name,
                            args.identity or default_identity(),
                            on_started=lambda: writer_box[0].write_all(),
                            on_stopped=lambda: writer_box[0].drop())
    writer = KubeStatusWriter(api, is_leader=lambda: elector.is_leader)
    writer_box.append(writer)

    interfaces = args.l4_interfaces.split(",") if args.l4_interfaces else None
    # Gateway status reports the node addresses; the kernel plane NATs each backend from the
    # source of the route to it, unless --node-address names one IPv4 address for all.
    snat = fixed_source(a for a in (args.node_address or "").split(",") if a)
    # First: with pins in place it takes their lock (a second agent on the node stops here).
    l4 = await open_plane(args.l4_mode, interfaces=interfaces, node_address=snat, pin_dir=args.l4_pin_dir,
                          sizes=sizes_with_splice_backlog(args.l4_splice_backlog))
    l7 = L7Plane(workers=args.workers, access_log=args.access_log, drain_timeout=args.drain_timeout,
                 response_timeout=args.response_timeout, ignore_client_abort=args.ignore_client_abort)
    await l7.start()
    sup = Supervisor(source, options=Options(node_addresses=nodes), l7=l7, l4=l4, status_writer=writer)
    admin = await serve_admin(sup, args.admin_address)
    public = None
    if args.metrics_address:
        public = sup.admin()
        public.routes = {p: h for p, h in public.routes.items() if p in PUBLIC_PAGES}
        host, _, port = args.metrics_address.rpartition(":")
        await public.start(host.strip("[]") or "0.0.0.0", int(port))
    log.info("kgw agent %s: admin API on http://%s, metrics on %s (l4 mode: %s)", elector.identity,
             args.admin_address, args.metrics_address or "-", l4.mode)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[int] = []
    signals.install(loop, lambda sig: (received.append(sig), stop.set()), source.rescan)
    runner = asyncio.create_task(sup.run())
    background = [asyncio.create_task(elector.run()), asyncio.create_task(writer.run())]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    status = ExitStatus.SUCCESS
    if runner in done and runner.exception() is not None:
        log.error("configuration loop failed: %r", runner.exception())
        status = ExitStatus.ERROR
    log.info("shutting down: releasing the lease, draining connections; the kernel data plane stays pinned")
    await elector.stop(release=True)
    await sup.drain(args.drain_delay if received[:1] == [signal.SIGTERM] else 0.0)
    await source.close()
    for task in (runner, stopper, *background):
        task.cancel()
    await l7.close(drain_timeout=args.drain_timeout)
    await admin.close()
    if public is not None:
        await public.close()
    await l4.close()
    return status
