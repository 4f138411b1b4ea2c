"""kgw_l4.health with real sockets: the userspace L4 plane probes a TCPRoute's endpoints
(the L7 plane's prober), a closed port is found down within interval x threshold and
gets no new connection, its state shows in the admin API's page and kgw-inspect, and
it comes back when it listens again. (The kernel plane: vm_tests/test_l4_health.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import time

from kgw_l4 import health as l4health
from kgw_l4.config import BackendGroup, Endpoint, Frontend, L4Config
from kgw_l4.configio import from_dict
from kgw_l4.inspect import Env, ExitStatus, main
from kgw_l4.plane import UserspacePlane
from kgw_l7.config import HealthCheck
from tests.helpers import free_port

CHECK = HealthCheck(type="TCP", interval=0.1, timeout=0.1, unhealthy_threshold=2)


async def _named(name: bytes, port: int) -> asyncio.Server:
    async def hello(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(name)
        await w.drain()
        w.close()
    return await asyncio.start_server(hello, f"127.0.0.{name[-1] - 48}", port,
                                      reuse_address=True)


async def _whom(port: int, sport: int) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", sport))
    try:
        return await r.read(10)
    finally:
        w.close()


def _slots(plane: UserspacePlane, port: int, ep: tuple[str, int]) -> list[int]:
    """The slots of the userspace picker's table that go to ``ep``."""
    pick = plane.proxy._picks[("127.0.0.1", port)]
    return [i for i, x in enumerate(pick.table) if x >= 0 and pick.endpoints[x] == ep]


def test_targets_are_the_tcp_groups_with_a_check():
    fe = Frontend("f", "0.0.0.0", 1, "TCP", (
        BackendGroup("g", 1, (Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)), CHECK),
        BackendGroup("h", 1, (Endpoint("10.0.0.3", 80),))))
    udp = Frontend("u", "0.0.0.0", 2, "UDP", (
        BackendGroup("g2", 1, (Endpoint("10.0.0.4", 53),), CHECK),))
    assert sorted(l4health.targets(L4Config((fe, udp)))) == [("g", "10.0.0.1", 80),
                                                            ("g", "10.0.0.2", 80)]


def test_health_check_round_trips_through_the_config_json():
    fe = Frontend("f", "0.0.0.0", 1, "TCP", (BackendGroup("g", 1, (Endpoint("10.0.0.1", 80),),
                                                          CHECK),))
    cfg = L4Config((fe,))
    assert from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert "health_check" not in json.dumps(L4Config((Frontend("f", "0.0.0.0", 1),)).to_dict())


async def test_userspace_plane_takes_a_dead_endpoint_out_and_back():
    be_port, port = free_port(), free_port()
    one = await _named(b"b1", be_port)
    group = BackendGroup("ns/db:5432", 1, (Endpoint("127.0.0.1", be_port),
                                           Endpoint("127.0.0.2", be_port)), CHECK)
    config = L4Config((Frontend("ns/gw/tcp", "127.0.0.1", port, "TCP", (group,),
                                route="ns/db"),))
    plane = UserspacePlane()
    await plane.apply(config)
    two = None
    try:
        start = time.monotonic()
        # 127.0.0.2 is not listening: down after two failed probes (the first one within
        # an interval), so within interval x (threshold + 1) plus scheduling
        dead = len(_slots(plane, port, ("127.0.0.2", be_port)))
        assert dead > 0
        while plane.health.down() != {("ns/db:5432", "127.0.0.2", be_port)} or _slots(
                plane, port, ("127.0.0.2", be_port)):
            assert time.monotonic() - start < 2.0, plane.health.view()
            await asyncio.sleep(0.02)
        assert time.monotonic() - start < 0.3 + 0.5
        got = [await _whom(port, 20000 + i) for i in range(40)]
        assert set(got) == {b"b1"}, got
        view = {e["endpoint"]: e for e in plane.health.view()}
        assert view[f"127.0.0.2:{be_port}"]["health"] == "unhealthy"
        assert view[f"127.0.0.1:{be_port}"]["health"] == "healthy"
        assert view[f"127.0.0.2:{be_port}"]["since"]
        assert b'kgw_l4_endpoint_healthy{backend="ns/db:5432",endpoint="127.0.0.2:%d"} 0' % \
            be_port in plane.metrics()

        page = json.loads(json.dumps({**plane.inspect(), "config": config.to_dict()}))
        out = io.StringIO()
        env = Env(stdout=out, stderr=io.StringIO(), admin_get=lambda _u: page)
        assert main(["-o", "json", "frontends"], env) == ExitStatus.OK
        [fe] = json.loads(out.getvalue())
        assert {b["endpoint"]: b["health"] for b in fe["backends"]} == {
            f"127.0.0.1:{be_port}": "healthy", f"127.0.0.2:{be_port}": "unhealthy"}

        two = await _named(b"b2", be_port)
        while len(_slots(plane, port, ("127.0.0.2", be_port))) != dead:
            assert time.monotonic() - start < 4.0, plane.health.view()
            await asyncio.sleep(0.02)
        got = [await _whom(port, 20000 + i) for i in range(40)]
        assert set(got) == {b"b1", b"b2"}, got
    finally:
        await plane.close()
        one.close()
        if two is not None:
            two.close()


async def test_every_endpoint_down_keeps_them_all():
    port, dead = free_port(), free_port()
    config = L4Config((Frontend("f", "127.0.0.1", port, "TCP", (BackendGroup(
        "g", 1, (Endpoint("127.0.0.1", dead),), CHECK),)),))
    plane = UserspacePlane()
    await plane.apply(config)
    try:
        start = time.monotonic()
        while not plane.proxy._picks[("127.0.0.1", port)].panic:
            assert time.monotonic() - start < 2.0
            await asyncio.sleep(0.02)
        # panic: the only endpoint keeps its slots, connections are still tried
        pick = plane.proxy._picks[("127.0.0.1", port)]
        assert pick.choose(("127.0.0.1", 1), ("127.0.0.1", port)) == ("127.0.0.1", dead)
    finally:
        await plane.close()
