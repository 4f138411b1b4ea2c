"""Splice mode's per-frontend and per-backend counters (kgw_l4.splice.SpliceProxy), with
the in-memory splice maps standing in for the kernel's (no verdict program: the byte
counts are set in kgw_splice_peer as the verdict would). vm_tests/test_tcproute.py reads
the same families from `kgw run --l4-mode splice`'s /metrics with real traffic."""

from __future__ import annotations

import asyncio
import socket

from prometheus_client.parser import text_string_to_metric_families

from kgw_l4 import abi
from kgw_l4.config import BackendGroup, Endpoint, Frontend, L4Config
from kgw_l4.metrics import L4Stats, render, sum_drops
from kgw_l4.splice import SpliceProxy, Splicer, sock_cookie
from tests.l4.test_splice_maps import FakeLoader
from tests.l4.test_userspace import free_port


def frontend(port: int, backend_port: int, route: str) -> Frontend:
    return Frontend(f"gw/{route}", "127.0.0.1", port, "TCP",
                    (BackendGroup("ns/svc:80", 1, (Endpoint("127.0.0.1", backend_port),)),),
                    gateway="ns/gw", listener="tcp", route=f"ns/{route}")


async def wait_until(pred, timeout: float = 5.0):
    async with asyncio.timeout(timeout):
        while not (v := pred()):
            await asyncio.sleep(0.01)
    return v


async def test_splice_frontend_counts_flows_bytes_each_way_and_drops():
    ld = FakeLoader()
    splicer = Splicer(ld)
    proxy = SpliceProxy(splicer)
    backend = socket.create_server(("127.0.0.1", 0))
    backend.setblocking(False)
    port, dead_port = free_port(), free_port()
    try:
        await proxy.apply(L4Config((
            frontend(port, backend.getsockname()[1], "up"),
            frontend(free_port(), dead_port, "down"),  # nothing listens on its backend
        )))
        assert proxy.errors == {}
        loop = asyncio.get_running_loop()
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = await loop.sock_accept(backend)
        conn = await wait_until(lambda: next(iter(splicer._conns.values()), None))

        def by_route() -> dict:
            fes, bes = proxy.stats()
            return {f.route: f for f in fes}, {b.endpoint: b for b in bes}

        fes, bes = by_route()
        up = fes["ns/up"]
        assert (up.flows, up.active, up.bytes, up.drops) == (1, 1, (0, 0), {})
        assert up.packets is None  # a splice moves skbs of any size: no packet counts
        # what the verdict redirected, plus what the agent copied of a held direction
        peers = ld.maps.get("kgw_splice_peer")
        ka, kb = sock_cookie(conn.a), sock_cookie(conn.b)
        peers.update(abi.u64(ka), bytes(abi.SplicePeer(peer=kb, redirected=1000)))
        peers.update(abi.u64(kb), bytes(abi.SplicePeer(peer=ka, redirected=300)))
        conn.ways[conn.a.fileno()].written = 24
        fes, bes = by_route()
        assert fes["ns/up"].bytes == (1024, 300)  # read live at scrape time
        ep = f"127.0.0.1:{backend.getsockname()[1]}"
        assert (bes[ep].backend, bes[ep].flows, bes[ep].bytes) == ("ns/svc:80", 1, (1024, 300))

        # both ends close: the connection's bytes stay in its frontend's and backend's counts
        client.close()
        served.close()
        await wait_until(lambda: not splicer._conns)
        fes, bes = by_route()
        assert (fes["ns/up"].flows, fes["ns/up"].active, fes["ns/up"].bytes) == (1, 0, (1024, 300))
        assert bes[ep].bytes == (1024, 300)

        # a connection whose backend refuses it is a drop of its frontend, not a flow
        down = next(f for f in proxy.stats()[0] if f.route == "ns/down")
        c2 = socket.create_connection(("127.0.0.1", int(down.frontend.split(":")[1].split("/")[0])))
        await wait_until(lambda: by_route()[0]["ns/down"].drops)
        c2.close()
        fes, _ = by_route()
        assert (fes["ns/down"].flows, fes["ns/down"].drops) == (0, {"backend_unreachable": 1})

        fes, bes = proxy.stats()
        text = render(L4Stats("splice", tuple(fes), tuple(bes), sum_drops(fes))).decode()
        samples = {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
                   for fam in text_string_to_metric_families(text) for smp in fam.samples}
        labels = {"gateway": "ns/gw", "listener": "tcp", "route": "ns/up",
                  "frontend": f"127.0.0.1:{port}/TCP"}

        def value(name: str, **more: str) -> float | None:
            return samples.get((name, tuple(sorted({**labels, **more}.items()))))
        assert value("kgw_l4_frontend_bytes_total", direction="to_backend") == 1024
        assert value("kgw_l4_frontend_bytes_total", direction="to_client") == 300
        assert value("kgw_l4_frontend_flows_total") == 1
        assert value("kgw_l4_frontend_active_flows") == 0
        assert samples[("kgw_l4_drops_total", (("reason", "backend_unreachable"),))] == 1
    finally:
        await proxy.close()
        await splicer.close()
        backend.close()
        ld.close()
