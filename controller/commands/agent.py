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
import socket
from typing import Any

from controller.kube.client import make_api_client
from controller.kube.leader import LeaderElector
from controller.kube.source import KubeOptions, KubeSource
from controller.kube.status_writer import KubeStatusWriter
from controller.serve import Companion, PlaneOptions, run_serving, serve_planes, start_logging
from controller.supervisor import Supervisor
from kgw_cli.env import Environment, ExitStatus

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


class StatusLease:
    """Status is written by whichever agent holds the Lease: elect, write while leading,
    and hand the Lease back at once when shutting down (the next agent need not wait for
    it to expire)."""

    def __init__(self, elector: LeaderElector, writer: KubeStatusWriter) -> None:
        self.elector, self.writer = elector, writer
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, sup: Supervisor) -> None:
        self._tasks = [asyncio.create_task(self.elector.run()),
                       asyncio.create_task(self.writer.run())]

    async def stop(self) -> None:
        log.info("releasing the lease %s/%s", self.elector.namespace, self.elector.name)
        await self.elector.stop(release=True)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()


class PublicPages:
    """``--metrics-address``: the admin API's health and metrics pages alone, for probes and
    scrapers beyond the node (the full admin API stays on loopback)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._server: Any = None

    async def start(self, sup: Supervisor) -> None:
        server = sup.admin()
        server.routes = {p: h for p, h in server.routes.items() if p in PUBLIC_PAGES}
        host, _, port = self.address.rpartition(":")
        await server.start(host.strip("[]") or "0.0.0.0", int(port))
        self._server = server
        log.info("%s on http://%s", ", ".join(PUBLIC_PAGES), self.address)

    async def stop(self) -> None:
        pass  # /readyz keeps answering "not ready: shutting down" through the drain

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    start_logging(args, env)
    try:
        api = make_api_client(args.kubeconfig)
    except Exception as exc:
        env.err(f"error: no Kubernetes configuration (in-cluster or kubeconfig): {exc}")
        return ExitStatus.ERROR
    return run_serving(env, _serve(args, api))


async def _serve(args: argparse.Namespace, api: Any) -> ExitStatus:
    source = KubeSource(api, KubeOptions(namespace_selector=args.namespace_selector or ""))
    writer_box: list[KubeStatusWriter] = []
    elector = LeaderElector(api, args.lease_namespace or default_lease_namespace(), args.lease_name,
                            args.identity or default_identity(),
                            on_started=lambda: writer_box[0].write_all(),
                            on_stopped=lambda: writer_box[0].drop())
    writer = KubeStatusWriter(api, is_leader=lambda: elector.is_leader)
    writer_box.append(writer)
    companions: list[Companion] = [StatusLease(elector, writer)]
    if args.metrics_address:
        companions.append(PublicPages(args.metrics_address))
    log.info("kgw agent %s: status written while holding the lease %s/%s", elector.identity,
             elector.namespace, elector.name)
    # Gateway status reports --node-address, else NODE_IP (the downward API's status.hostIP).
    return await serve_planes(PlaneOptions.from_args(args), source,
                              node_fallback=os.environ.get("NODE_IP"),
                              status_writer=writer, companions=companions)
