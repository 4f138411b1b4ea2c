"""What the L4 plane's active health checks cost the node (issue 20: 1000 endpoints at
1 s intervals within 5% of one core): ``kgw_l4.health.L4Health``, as every L4 plane runs
it, given an L4Config whose backend groups carry a TCP check -- ``--endpoints``
endpoints spread over ``--frontends`` TCP frontends, or over as many TLS routes
(``--kind tls``: the same probes, reached through ``tls_passthrough``) -- and CPU time of
this process over wall time in the steady state (every endpoint healthy), and how often
the event loop went to sleep per check (voluntary context switches: a wake-up each).

A TCP check is a connect and a disconnect per probe (no connection is kept), unlike the
L7 plane's HTTP checks (bench/l7/healthcheck_cost.py, kept-alive). The endpoints are
accepted and closed by a uvloop server in a child process whose CPU is not counted.
Where they are (``--topology``):

* ``loopback`` (the default): distinct loopback addresses (127.0.x.y) on one port. Every
  packet crosses ``lo``, whose receive runs in softirq in the sender's context: the
  server side's kernel work for each probe (the SYN at the listener, the request sock,
  the SYN-ACK, the final ACK making the child and queueing it for accept, the RST at the
  child) is done inside the prober's ``connect`` and charged to the prober (this kernel
  has no IRQ time accounting), which a real, remote backend does on its own machine.
* ``veth``: the endpoints (10.203.128.0/17, served through a local route) in a network
  namespace of their own, behind a veth pair whose two ends receive in threaded NAPI:
  the server side's kernel work runs in the backend end's napi kthread (the "remote
  machine", not counted), and the node's receive of the replies in the node end's
  napi kthread, whose CPU (utime + stime from /proc) IS counted with the prober's. The
  prober runs in a node namespace of its own; both are deleted at the end. Root only.

Usage::

    .venv/bin/python -m bench.l4.healthcheck_cost [--endpoints 1000] [--interval 1]
        [--seconds 20] [--frontends 10] [--kind tcp|tls] [--timeout 1]
        [--topology loopback|veth]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402
from pyroute2 import netns  # noqa: E402

from kgw_l4.config import (  # noqa: E402
    BackendGroup, Endpoint, Frontend, L4Config, SNIRoute, TLSPassthrough,
)
from kgw_l4.health import L4Health  # noqa: E402
from kgw_l7.config import HealthCheck  # noqa: E402


class _Close(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Close, sock=sock)
        await server.serve_forever()
    uvloop.run(main())


def addresses(n: int, topology: str = "loopback") -> list[str]:
    if topology == "veth":
        return [str(VethTopology.ENDPOINTS[1 + i]) for i in range(n)]
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(n)]


@dataclass
class VethTopology:
    """A node namespace and a backend namespace joined by a veth pair whose two ends
    receive in threaded NAPI (GRO on gives a veth NAPI; ``threaded`` moves it from
    softirq into a kthread named ``napi/<dev>-<id>``). The backend answers on every
    address of ``ENDPOINTS`` (a local route: no address per endpoint), which the node
    routes through the pair. Names carry the PID, so runs never collide; ``close``
    deletes both namespaces (and with them the pair), also after a failure."""

    NODE_ADDR = "10.203.0.1"
    BACKEND_ADDR = "10.203.0.2"
    ENDPOINTS = ipaddress.ip_network("10.203.128.0/17")
    tag: str = field(default_factory=lambda: str(os.getpid()))

    def __post_init__(self) -> None:
        self.node, self.backend = f"hcnode{self.tag}", f"hcback{self.tag}"
        # (interface names: at most 15 characters, and unique, to find their kthreads)
        self.node_dev, self.backend_dev = f"hcn{self.tag}", f"hcb{self.tag}"

    def create(self) -> None:
        for ns in (self.node, self.backend):
            _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", self.node_dev, "netns", self.node, "type", "veth",
            "peer", "name", self.backend_dev, "netns", self.backend)
        for ns, dev, addr in ((self.node, self.node_dev, self.NODE_ADDR),
                              (self.backend, self.backend_dev, self.BACKEND_ADDR)):
            _sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            # (a veth hands a packet to its peer's NAPI only when the sender has no TSO
            # or the packet qualifies for UDP GRO: veth_skb_is_eligible_for_gro)
            _sh("nsenter", f"--net=/run/netns/{ns}", "ethtool", "-K", dev, "gro", "on",
                "tso", "off")
            # (/sys/class/net shows the namespace of whoever mounted /sys: ip netns exec
            # mounts the namespace's own)
            _sh("ip", "netns", "exec", ns, "sh", "-c", f"echo 1 > /sys/class/net/{dev}/threaded")
        _sh("ip", "-n", self.backend, "route", "add", "local", str(self.ENDPOINTS), "dev", "lo")
        _sh("ip", "-n", self.node, "route", "add", str(self.ENDPOINTS), "via", self.BACKEND_ADDR)

    def close(self) -> None:
        for ns in (self.node, self.backend):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def napi_threads(self, dev: str) -> list[int]:
        """The PIDs of ``dev``'s napi kthreads (one per receive queue)."""
        out = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
                    if f.read().startswith(f"napi/{dev}-"):
                        out.append(int(pid))
        if not out:
            raise RuntimeError(f"no threaded NAPI on {dev} (veth GRO or threaded not set)")
        return out


def check_topology(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what ``--topology veth`` cannot do, before anything is built."""
    if args.topology != "veth":
        return
    if os.geteuid() != 0:
        p.error("--topology veth needs root (it makes network namespaces)")
    if args.endpoints > VethTopology.ENDPOINTS.num_addresses - 2:
        p.error(f"--topology veth: at most {VethTopology.ENDPOINTS.num_addresses - 2} "
                "endpoints")


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def thread_cpu(pids: list[int]) -> float:
    """User + system seconds of ``pids`` (kthreads: /proc/PID/stat utime + stime)."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def placed(topology: str) -> Iterator[tuple[socket.socket, list[int], list[int]]]:
    """The listening socket of the endpoints' server, the kthreads whose CPU counts with
    the prober's, and the backend side's (reported, not counted); with ``veth``, the
    process is moved into the node namespace."""
    if topology == "loopback":
        yield _listener("0.0.0.0"), [], []
        return
    topo = VethTopology()
    try:
        topo.create()
        netns.setns(topo.backend, flags=0)
        sock = _listener("0.0.0.0")
        netns.setns(topo.node, flags=0)
        yield sock, topo.napi_threads(topo.node_dev), topo.napi_threads(topo.backend_dev)
    finally:
        topo.close()


def _listener(host: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(4096)
    return sock


def config(n: int, frontends: int, port: int, check: HealthCheck, kind: str,
           topology: str = "loopback") -> L4Config:
    """``n`` endpoints over ``frontends`` groups (one per TCP frontend or TLS route)."""
    addrs = addresses(n, topology)
    per = -(-n // frontends)
    groups = [BackendGroup(f"bench/svc{i}:{port}", 1,
                           tuple(Endpoint(a, port) for a in addrs[i * per:(i + 1) * per]), check)
              for i in range(frontends) if addrs[i * per:(i + 1) * per]]
    if kind == "tcp":
        return L4Config(tuple(Frontend(f"bench/gw/l{i}", "0.0.0.0", 10000 + i, "TCP", (g,))
                              for i, g in enumerate(groups)))
    return L4Config(tls_passthrough=(TLSPassthrough("bench/gw/tls", "0.0.0.0", 8443, tuple(
        SNIRoute(f"bench/r{i}", (f"r{i}.example.com",), (g,)) for i, g in enumerate(groups))),))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoints", type=int, default=1000)
    p.add_argument("--frontends", type=int, default=10)
    p.add_argument("--kind", default="tcp", choices=("tcp", "tls"))
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=1.0,
                   help="per check (raise it under valgrind, which slows everything)")
    p.add_argument("--topology", default="loopback", choices=("loopback", "veth"),
                   help="where the endpoints are (see the module's docstring)")
    args = p.parse_args(argv)
    check_topology(p, args)
    with placed(args.topology) as (sock, napi, remote):
        port = sock.getsockname()[1]
        server = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,),
                                                              daemon=True)
        server.start()
        try:
            print(measure(args, port, napi, remote))
        finally:
            server.kill()
            server.join(10)
    return 0


def measure(args: argparse.Namespace, port: int, napi: list[int], remote: list[int]) -> str:
    """Probe for ``args.seconds`` after two intervals (every endpoint probed: the steady
    state); the summary line."""
    check = HealthCheck(type="TCP", interval=args.interval, timeout=args.timeout)
    cfg = config(args.endpoints, args.frontends, port, check, args.kind, args.topology)
    changes = [0]

    def changed(_down: frozenset) -> None:
        changes[0] += 1

    async def run() -> tuple[float, float, float, float, float, int, int, int]:
        health = L4Health(changed)
        health.update(cfg)
        await asyncio.sleep(args.interval * 2)
        before = health.view()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        k0, b0 = thread_cpu(napi), thread_cpu(remote)
        await asyncio.sleep(args.seconds)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        k1, b1 = thread_cpu(napi), thread_cpu(remote)
        after = health.view()
        await health.close()
        checks = sum(v["checks"] for v in after) - sum(v["checks"] for v in before)
        failures = sum(v["failures"] for v in after)
        user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        return (user, system, k1 - k0, b1 - b0, t1 - t0, checks, failures,
                r1.ru_nvcsw - r0.ru_nvcsw)

    user, system, kthread, backend, wall, checks, failures, sleeps = uvloop.run(run())
    cpu = user + system + kthread
    napi_part = (f", node napi kthread {kthread:.2f}s; not counted: backend napi kthread "
                 f"{backend:.2f}s" if napi else "")
    return (f"L4 TCP checks ({args.kind}, {args.topology}) of {args.endpoints} endpoints in "
            f"{args.frontends} groups every {args.interval:g}s: {checks} checks in {wall:.1f}s "
            f"({checks / wall:.0f}/s), {failures} failed, {changes[0]} verdict changes; "
            f"CPU {cpu:.2f}s (user {user:.2f}s, system {system:.2f}s{napi_part}) = "
            f"{100 * cpu / wall:.1f}% of one core, {1e6 * cpu / max(1, checks):.0f} us per "
            f"check; {sleeps / max(1, checks):.2f} loop sleeps (voluntary context switches) "
            f"per check")


if __name__ == "__main__":
    sys.exit(main())
