"""The L4 plane's /metrics families: the kernel plane's, read from per-CPU counters (the map
fake, with what the BPF programs would have counted on each CPU), and the userspace
plane's, counted by its proxies on real sockets. Both render the same names and labels."""

from __future__ import annotations

import asyncio
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kgw_l4 import abi, loader
from kgw_l4.config import BackendGroup, Endpoint, Frontend, L4Config, SNIRoute, TLSPassthrough
from kgw_l4.kernelstats import kernel_stats
from kgw_l4.maps import FakeMapSet
from kgw_l4.metrics import render
from kgw_l4.plane import UserspacePlane
from kgw_l4.programmer import Programmer
from tests.helpers import free_port

SIZES = dict(abi.SIZES, KGW_MAX_FRONTENDS=4, KGW_MAX_BACKENDS=16, KGW_MAGLEV_SIZE=251,
             KGW_CT_SIZE=64, KGW_CT_SYN_SIZE=64)


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def fe_labels(frontend: str, route: str = "ns/db", listener: str = "tcp", **more: str) -> tuple:
    return tuple(sorted({"gateway": "ns/gw", "listener": listener, "route": route,
                         "frontend": frontend, **more}.items()))


def cpus(slot_values: list[tuple[int, int]]) -> list[bytes]:
    return [bytes(abi.CounterVal(p, b)) for p, b in slot_values]


DB = Frontend("ns/gw/tcp", "10.0.0.1", 5432, "TCP", (
    BackendGroup("ns/db:5432", 1, (Endpoint("10.1.0.1", 5432), Endpoint("10.1.0.2", 5432))),),
    gateway="ns/gw", listener="tcp", route="ns/db")
DNS = Frontend("ns/gw/udp", "10.0.0.1", 53, "UDP", (
    BackendGroup("ns/dns:53", 1, (Endpoint("10.1.0.2", 53),)),), gateway="ns/gw", listener="udp",
    route="ns/dns")


@pytest.fixture
def kernel():
    maps = FakeMapSet(loader.expected_maps(SIZES))
    prog = Programmer(maps, snat_for=lambda _a: "10.9.0.1", sizes=SIZES)
    config = L4Config((DB, DNS))
    prog.apply(config)
    return maps, prog, config


def test_kernel_counters_become_labelled_families(kernel):
    maps, prog, config = kernel
    lay = abi.StatsLayout(SIZES)
    stats = maps.get("kgw_stats")
    db = prog.views["ns/gw/tcp"]
    be = {ep: bid for bid, ep, _ in db.endpoints}
    # what the programs counted, split over two CPUs
    stats.set_percpu(abi.u32(lay.fe_base + 2 * db.fe_id), cpus([(10, 1000), (5, 500)]))
    stats.set_percpu(abi.u32(lay.fe_base + 2 * db.fe_id + 1), cpus([(8, 8000), (0, 0)]))
    stats.set_percpu(abi.u32(lay.fe_flows_base + db.fe_id), cpus([(2, 0), (1, 0)]))
    drop = lay.fe_drops_base + db.fe_id * len(abi.FE_DROPS) + abi.FE_DROPS.index(
        abi.Counter.DROP_NOT_SYN)
    stats.set_percpu(abi.u32(drop), cpus([(4, 160), (0, 0)]))
    bid = be["10.1.0.2:5432"]
    stats.set_percpu(abi.u32(lay.backend_base + 2 * bid), cpus([(7, 700), (0, 0)]))
    stats.set_percpu(abi.u32(lay.be_flows_base + bid), cpus([(1, 0), (1, 0)]))
    stats.set_percpu(abi.u32(lay.global_base + abi.Counter.DROP_MALFORMED), cpus([(3, 0), (0, 0)]))
    stats.set_percpu(abi.u32(lay.global_base + abi.Counter.DROP_NOT_SYN), cpus([(4, 160), (0, 0)]))
    stats.set_percpu(abi.u32(lay.global_base + abi.Counter.CT_HIT), cpus([(20, 0), (3, 0)]))
    sweep = loader.Sweep(0, {"kgw_ct": 6, "kgw_ct_syn": 1}, {db.fe_id: 3})

    got = samples(render(kernel_stats("tc", maps, prog.views.values(), config, SIZES, sweep)))
    fe = fe_labels("10.0.0.1:5432/TCP")
    assert got[
        ("kgw_l4_frontend_packets_total", tuple(sorted((*fe, ("direction", "to_backend")))))] == 15
    assert got[
        ("kgw_l4_frontend_bytes_total", tuple(sorted((*fe, ("direction", "to_backend")))))] == 1500
    assert got[
        ("kgw_l4_frontend_bytes_total", tuple(sorted((*fe, ("direction", "to_client")))))] == 8000
    assert got[("kgw_l4_frontend_flows_total", fe)] == 3
    assert got[("kgw_l4_frontend_active_flows", fe)] == 3
    assert got[("kgw_l4_frontend_drops_total", tuple(sorted((*fe, ("reason", "not_syn")))))] == 4
    ep = (("backend", "ns/db:5432"), ("endpoint", "10.1.0.2:5432"))
    assert got[
        ("kgw_l4_backend_packets_total", tuple(sorted((*ep, ("direction", "to_backend")))))] == 7
    assert got[("kgw_l4_backend_flows_total", ep)] == 2
    assert got[("kgw_l4_drops_total", (("reason", "malformed"),))] == 3
    assert got[("kgw_l4_drops_total", (("reason", "not_syn"),))] == 4
    assert got[("kgw_l4_datapath_events_total", (("event", "ct_hit"),))] == 23
    assert got[("kgw_l4_map_entries", (("map", "kgw_ct"),))] == 6
    assert got[("kgw_l4_map_capacity", (("map", "kgw_ct"),))] == 64
    assert got[("kgw_l4_mode", (("mode", "tc"),))] == 1
    # the UDP frontend has its own series, at 0
    assert got[("kgw_l4_frontend_flows_total", fe_labels("10.0.0.1:53/UDP", "ns/dns", "udp"))] == 0


def test_a_reused_id_starts_at_zero(kernel):
    """A frontend removed and another added: it gets the freed id, and its counters do
    not start with what the old one counted."""
    maps, prog, config = kernel
    lay = abi.StatsLayout(SIZES)
    old = prog.views["ns/gw/tcp"].fe_id
    for slot in lay.frontend_slots(old):
        maps.get("kgw_stats").set_percpu(abi.u32(slot), cpus([(9, 90), (9, 90)]))
    new = Frontend("ns/gw/other", "10.0.0.1", 6000, "TCP", DB.backends, gateway="ns/gw",
                   listener="other", route="ns/other")
    prog.apply(L4Config((DNS,)))
    prog.apply(L4Config((DNS, new)))
    assert prog.views["ns/gw/other"].fe_id == old
    got = loader.stats(maps, [old], [], SIZES).frontends[old]
    assert (got.to_backend, got.to_client, got.flows) == ((0, 0), (0, 0), 0)
    assert all(v == (0, 0) for v in got.drops.values())


def test_stats_reads_in_batches_up_to_the_highest_id(kernel):
    maps, prog, _ = kernel
    reads = []
    m = maps.get("kgw_stats")
    real = m.lookup_range
    m.lookup_range = lambda start, count: reads.append((start, count)) or real(start, count)  # type: ignore[method-assign]
    loader.stats(maps, [0, 1], [0, 2], SIZES)
    lay = abi.StatsLayout(SIZES)
    assert sorted(reads) == sorted([(lay.fe_base, 4), (lay.fe_flows_base, 2),
                                    (lay.fe_drops_base, 2 * len(abi.FE_DROPS)),
                                    (lay.backend_base, 6),
                                    (lay.be_flows_base, 3), (lay.global_base, abi.COUNTER_COUNT)])


# ----------------------------------------------------------------------------- userspace


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):  # type: ignore[override]
        self.t = transport

    def datagram_received(self, data, addr):  # type: ignore[override]
        self.t.sendto(data, addr)


async def test_userspace_plane_counts_the_same_families():
    loop = asyncio.get_running_loop()
    tcp_be = await asyncio.start_server(_echo, "127.0.0.1", 0)
    tcp_port = tcp_be.sockets[0].getsockname()[1]
    udp_be, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
    udp_port = udp_be.get_extra_info("sockname")[1]
    fe_tcp, fe_udp, fe_off = free_port(), free_port(kind=socket.SOCK_DGRAM), free_port()
    config = L4Config((
        Frontend("ns/gw/tcp", "127.0.0.1", fe_tcp, "TCP",
                 (BackendGroup("ns/db:5432", 1, (Endpoint("127.0.0.1", tcp_port),)),),
                 gateway="ns/gw", listener="tcp", route="ns/db"),
        Frontend("ns/gw/udp", "127.0.0.1", fe_udp, "UDP",
                 (BackendGroup("ns/dns:53", 1, (Endpoint("127.0.0.1", udp_port),)),),
                 gateway="ns/gw", listener="udp", route="ns/dns"),
        # a drained frontend keeps its listener for UDP only; TCP: refused, and not served
        Frontend("ns/gw/udp-off", "127.0.0.1", fe_off, "UDP",
                 (BackendGroup("ns/off:1", 0, (Endpoint("127.0.0.1", udp_port),)),),
                 gateway="ns/gw", listener="udp-off", route="ns/off"),
    ))
    plane = UserspacePlane()
    try:
        await plane.apply(config)
        r, w = await asyncio.open_connection("127.0.0.1", fe_tcp)
        w.write(b"x" * 3000)
        await w.drain()
        await r.readexactly(3000)

        class Client(asyncio.DatagramProtocol):
            def __init__(self):
                self.got = loop.create_future()

            def datagram_received(self, data, addr):  # type: ignore[override]
                if not self.got.done():
                    self.got.set_result(data)

        ct, cp = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", fe_udp))
        ct.sendto(b"y" * 100)
        assert await asyncio.wait_for(cp.got, 5) == b"y" * 100
        ot, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                    remote_addr=("127.0.0.1", fe_off))
        ot.sendto(b"z")
        for _ in range(100):
            if plane.udp.frontends[("127.0.0.1", fe_off)].tally.drops:
                break
            await asyncio.sleep(0.01)

        flows = plane.flows()
        assert {f["proto"] for f in flows} == {"TCP", "UDP"}
        tcp_flow = next(f for f in flows if f["proto"] == "TCP")
        assert tcp_flow["bytes_to_backend"] == 3000 and tcp_flow[
            "backend"] == f"127.0.0.1:{tcp_port}"

        got = samples(plane.metrics())
        tcp = fe_labels(f"127.0.0.1:{fe_tcp}/TCP")
        assert got[("kgw_l4_frontend_bytes_total",
                    tuple(sorted((*tcp, ("direction", "to_backend")))))] == 3000
        assert got[("kgw_l4_frontend_bytes_total",
                    tuple(sorted((*tcp, ("direction", "to_client")))))] == 3000
        assert got[("kgw_l4_frontend_flows_total", tcp)] == 1
        assert got[("kgw_l4_frontend_active_flows", tcp)] == 1
        # a stream proxy has no packets
        assert not [k for k in got if k[0] == "kgw_l4_frontend_packets_total"
                    and ("frontend", tcp[1][1]) in k[1]]
        udp = fe_labels(f"127.0.0.1:{fe_udp}/UDP", "ns/dns", "udp")
        assert got[("kgw_l4_frontend_packets_total",
                    tuple(sorted((*udp, ("direction", "to_client")))))] == 1
        assert got[("kgw_l4_frontend_bytes_total",
                    tuple(sorted((*udp, ("direction", "to_backend")))))] == 100
        off = fe_labels(f"127.0.0.1:{fe_off}/UDP", "ns/off", "udp-off")
        assert got[
            ("kgw_l4_frontend_drops_total", tuple(sorted((*off, ("reason", "no_backend")))))] == 1
        assert got[("kgw_l4_drops_total", (("reason", "no_backend"),))] == 1
        ep = (("backend", "ns/db:5432"), ("endpoint", f"127.0.0.1:{tcp_port}"))
        assert got[("kgw_l4_backend_flows_total", ep)] == 1
        assert got[("kgw_l4_map_entries", (("map", f"udp_flows 127.0.0.1:{fe_udp}"),))] == 1
        assert got[("kgw_l4_mode", (("mode", "userspace"),))] == 1

        w.close()
        await w.wait_closed()
        for _ in range(100):
            if not plane.proxy.conns:
                break
            await asyncio.sleep(0.01)
        assert samples(plane.metrics())[("kgw_l4_frontend_active_flows", tcp)] == 0
        ct.close()
        ot.close()
    finally:
        await plane.close()
        tcp_be.close()
        udp_be.close()


async def test_tls_passthrough_counts_per_route_and_unknown_names():
    from tests.l4.tlshelp import client_hello

    loop = asyncio.get_running_loop()
    be = await asyncio.start_server(_echo, "127.0.0.1", 0)
    be_port = be.sockets[0].getsockname()[1]
    port = free_port()
    config = L4Config(tls_passthrough=(TLSPassthrough("127.0.0.1:%d" % port, "127.0.0.1", port, (
        SNIRoute("ns/web", ("a.example.com",),
                 (BackendGroup("ns/web:443", 1, (Endpoint("127.0.0.1", be_port),)),),
                 gateway="ns/gw", listener="tls"),)),))
    plane = UserspacePlane()
    try:
        await plane.apply(config)
        for name in ("a.example.com", "b.example.com"):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            hello = client_hello(name)
            w.write(hello)
            await w.drain()
            if name == "a.example.com":
                assert await r.readexactly(len(hello)) == hello
            else:
                with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                    await r.readexactly(1)  # reset: no route for that name
            w.close()
        got = samples(plane.metrics())
        web = fe_labels(f"127.0.0.1:{port}/TLS", "ns/web", "tls")
        assert got[("kgw_l4_frontend_flows_total", web)] == 1
        assert got[("kgw_l4_frontend_bytes_total",
                    tuple(sorted((*web, ("direction", "to_backend")))))] >= len(hello)
        none = tuple(sorted({"gateway": "", "listener": "", "route": "",
                             "frontend": f"127.0.0.1:{port}/TLS", "reason": "no_route"}.items()))
        assert got[("kgw_l4_frontend_drops_total", none)] == 1
    finally:
        await plane.close()
        be.close()
    del loop
