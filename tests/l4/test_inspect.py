"""kgw-inspect against the in-memory map fake and a fake admin API."""

from __future__ import annotations

import io
import json

import pytest

from kgw_l4 import abi, loader, maglev
from kgw_l4.config import BackendGroup, Endpoint, Frontend, L4Config
from kgw_l4.inspect import Env, ExitStatus, main
from kgw_l4.maps import FakeMapSet
from kgw_l4.programmer import Programmer
from kgw_l7.config import HealthCheck

SIZES = dict(abi.SIZES, KGW_MAX_FRONTENDS=4, KGW_MAX_BACKENDS=16, KGW_MAGLEV_SIZE=251,
             KGW_CT_SIZE=64, KGW_CT_SYN_SIZE=64)


@pytest.fixture
def maps():
    m = FakeMapSet(loader.expected_maps(SIZES))
    p = Programmer(m, snat_for=lambda _a: "10.9.0.1", sizes=SIZES)
    p.apply(L4Config((Frontend("ns/gw/tcp", "10.0.0.1", 8080, "TCP", (
        BackendGroup("a", 1, (Endpoint("10.1.0.1", 80),)),
        BackendGroup("b", 3, (Endpoint("10.1.0.2", 80),)),)),)))
    ct = m.get("kgw_ct")
    k = abi.FlowKey(saddr=abi.ip_be("10.5.0.9"), daddr=abi.ip_be("10.0.0.1"),
                    sport=abi.port_be(40000), dport=abi.port_be(8080), proto=6)
    e = abi.CtEntry(new_saddr=abi.ip_be("10.9.0.1"), new_daddr=abi.ip_be("10.1.0.2"),
                    new_sport=abi.port_be(12345), new_dport=abi.port_be(80), fe_id=0, backend_id=1,
                    created_ns=1_000_000_000, last_seen_ns=4_000_000_000, packets=10, bytes=5000)
    ct.update(bytes(k), bytes(e))
    idx = abi.global_base(SIZES) + abi.Counter.DROP_NOT_SYN
    m.get("kgw_stats").set_percpu(abi.u32(idx),
                                  [bytes(abi.CounterVal(3, 120)), bytes(abi.CounterVal(4, 160))])
    return m


def run(maps, *argv, admin=None):
    out, err = io.StringIO(), io.StringIO()

    def get(url):
        if admin is None:
            raise OSError("connection refused")
        return admin

    env = Env(stdout=out, stderr=err, maps_factory=lambda _d: maps, admin_get=get,
              sizes=SIZES, now_ns=lambda: 6_000_000_000)
    code = main(list(argv), env)
    return code, out.getvalue(), err.getvalue()


def test_frontends_json_has_shares_and_names(maps):
    admin = {"l7": {}, "l4": {"frontends": [{"name": "ns/gw/tcp", "address": "10.0.0.1",
                                             "port": 8080, "protocol": "TCP"}]}}
    code, out, _ = run(maps, "-o", "json", "frontends", admin=admin)
    assert code == ExitStatus.OK
    rows = json.loads(out)
    assert rows[0]["name"] == "ns/gw/tcp" and rows[0]["frontend"] == "10.0.0.1:8080/TCP"
    shares = {b["endpoint"]: b["maglev_share"] for b in rows[0]["backends"]}
    assert abs(shares["10.1.0.1:80"] - 0.25) < 0.02 and abs(shares["10.1.0.2:80"] - 0.75) < 0.02


def test_frontends_show_flows_and_drops_counted_per_frontend(maps):
    lay = abi.StatsLayout(SIZES)
    stats = maps.get("kgw_stats")
    stats.set_percpu(abi.u32(lay.fe_flows_base),
                     [bytes(abi.CounterVal(2, 0)), bytes(abi.CounterVal(1, 0))])
    stats.set_percpu(abi.u32(lay.fe_drops_base + 1),
                     [bytes(abi.CounterVal(5, 0)), bytes(abi.CounterVal(0, 0))])
    stats.set_percpu(abi.u32(lay.fe_base + 1),
                     [bytes(abi.CounterVal(4, 400)), bytes(abi.CounterVal(0, 0))])
    stats.set_percpu(abi.u32(lay.be_flows_base + 1),
                     [bytes(abi.CounterVal(3, 0)), bytes(abi.CounterVal(0, 0))])
    _, out, _ = run(maps, "-o", "json", "frontends")
    fe = json.loads(out)[0]
    assert (fe["flows"], fe["drops"], fe["packets"], fe["bytes"]) == (3, 5, 4, 400)
    assert {b["endpoint"]: b["flows"] for b in fe["backends"]} == {"10.1.0.1:80": 0,
                                                                   "10.1.0.2:80": 3}


def test_frontends_table_without_admin(maps):
    code, out, _ = run(maps, "frontends")
    assert code == ExitStatus.OK
    assert out.splitlines()[0].startswith("NAME")
    assert "10.1.0.2:80" in out and "backend" in out


def test_frontends_show_health_and_list_a_down_endpoint_without_slots():
    """A down endpoint's slots went to the other (Programmer.set_health): it is listed
    with share 0 from the admin API's programmed endpoints, its health from the same page."""
    m = FakeMapSet(loader.expected_maps(SIZES))
    p = Programmer(m, snat_for=lambda _a: "10.9.0.1", sizes=SIZES)
    p.apply(L4Config((Frontend("ns/gw/tcp", "10.0.0.1", 8080, "TCP", (
        BackendGroup("g", 1, (Endpoint("10.1.0.1", 80), Endpoint("10.1.0.2", 80)),
                     HealthCheck(type="TCP")),)),)))
    p.set_health(frozenset({("g", "10.1.0.2", 80)}))
    v = p.views["ns/gw/tcp"]
    admin = {"l4": {
        "frontends": [{"name": v.name, "address": v.address, "port": v.port, "protocol": "TCP",
                       "endpoints": [{"backend_id": b, "endpoint": e, "weight": w}
                                     for b, e, w in v.endpoints]}],
        "health": [{"backend": "g", "endpoint": "10.1.0.1:80", "health": "healthy",
                    "since": "2026-12-07T05:00:00+00:00"},
                   {"backend": "g", "endpoint": "10.1.0.2:80", "health": "unhealthy",
                    "since": "2026-12-07T05:01:00+00:00"}]}}
    code, out, _ = run(m, "-o", "json", "frontends", admin=admin)
    assert code == ExitStatus.OK
    got = {b["endpoint"]: (b["maglev_share"], b["health"], b["health_since"])
           for b in json.loads(out)[0]["backends"]}
    assert got == {"10.1.0.1:80": (1.0, "healthy", "2026-12-07T05:00:00+00:00"),
                   "10.1.0.2:80": (0.0, "unhealthy", "2026-12-07T05:01:00+00:00")}
    code, out, _ = run(m, "frontends", admin=admin)
    assert "HEALTH" in out and "unhealthy" in out
    # without the admin API: what the maps hold, health unknown
    code, out, _ = run(m, "-o", "json", "frontends")
    assert [(b["endpoint"], b["health"]) for b in json.loads(out)[0]["backends"]] == [
        ("10.1.0.1:80", "unknown")]


def test_flows_filters_and_age(maps):
    code, out, _ = run(maps, "-o", "json", "flows", "--src", "10.5.0.9")
    rows = json.loads(out)
    assert len(rows) == 1
    r = rows[0]
    assert r["rewrite"] == "10.9.0.1:12345 -> 10.1.0.2:80"
    assert (r["age_s"], r["idle_s"], r["state"]) == (5.0, 2.0, "established")
    _, out, _ = run(maps, "-o", "json", "flows", "--backend", "0")
    assert json.loads(out) == []
    code, _, err = run(maps, "flows", "--src", "nope")
    assert code == ExitStatus.USAGE and "IPv4" in err


def test_rearmed_entry_is_embryonic_and_swept_on_the_syn_timeout(maps):
    """An entry re-armed in place in kgw_ct (CT_F_EMBRYO, bpf/nat.h) is shown as embryonic
    and expires on the SYN timeout, like one in kgw_ct_syn; without the flag it is
    established and keeps the established timeout."""
    ct = maps.get("kgw_ct")
    k, = list(ct.keys())
    e = abi.CtEntry.from_buffer_copy(ct.lookup(k))
    e.flags = abi.CT_F_EMBRYO
    ct.update(k, bytes(e))
    _, out, _ = run(maps, "-o", "json", "flows")
    assert [r["state"] for r in json.loads(out)] == ["embryonic"]
    st = abi.Settings(ct_timeout_syn_ns=1_000_000_000, ct_timeout_est_ns=3600_000_000_000,
                      ct_timeout_closing_ns=30_000_000_000)
    e.flags = 0
    ct.update(k, bytes(e))
    assert loader.sweep_flows(maps, st, now_ns=6_000_000_000).removed == 0  # idle 2 s < 1 h
    e.flags = abi.CT_F_EMBRYO
    ct.update(k, bytes(e))
    assert loader.sweep_flows(maps, st, now_ns=6_000_000_000).removed == 1  # idle 2 s > 1 s
    assert list(ct.keys()) == []


def test_counters_sum_cpus(maps):
    _, out, _ = run(maps, "-o", "json", "counters")
    rows = {r["counter"]: r for r in json.loads(out)}
    assert rows["DROP_NOT_SYN"]["packets"] == 7 and rows["DROP_NOT_SYN"]["bytes"] == 280
    _, out, _ = run(maps, "-o", "json", "counters", "--all")
    assert len(json.loads(out)) == len(abi.Counter)


def test_maps_fill_levels(maps):
    _, out, _ = run(maps, "-o", "json", "maps")
    rows = {r["map"]: r for r in json.loads(out)}
    assert rows["kgw_ct"]["entries"] == 1 and rows["kgw_ct"]["capacity"] == 64
    assert rows["kgw_frontends"]["entries"] == 1


def test_flow_existing_and_new(maps):
    _, out, _ = run(maps, "-o", "json", "flow", "10.5.0.9:40000", "10.0.0.1:8080")
    r = json.loads(out)[0]
    assert r["backend"] == "10.1.0.2:80" and "existing" in r["source"]
    code, out, _ = run(maps, "-o", "json", "flow", "10.5.0.9:40001", "10.0.0.1:8080")
    r = json.loads(out)[0]
    assert code == ExitStatus.OK and "Python mirror" in r["source"]
    slot = maglev.flow_slot("10.5.0.9", 40001, "10.0.0.1", 8080, 6, SIZES["KGW_MAGLEV_SIZE"])
    assert r["slot"] == slot and r["backend"] in ("10.1.0.1:80", "10.1.0.2:80")
    code, _, err = run(maps, "flow", "10.5.0.9:1", "10.0.0.1:9999")
    assert code == ExitStatus.NOT_FOUND and "no frontend" in err
    code, _, _ = run(maps, "flow", "10.5.0.9", "10.0.0.1:8080")
    assert code == ExitStatus.USAGE


def test_spliced_needs_admin(maps):
    code, _, err = run(maps, "spliced")
    assert code == ExitStatus.ERROR and "unreachable" in err
    admin = {"l4": {"spliced": [{"client": "10.0.0.5:1", "backend": "10.1.0.1:80"}]}}
    code, out, _ = run(maps, "-o", "json", "spliced", admin=admin)
    assert json.loads(out) == admin["l4"]["spliced"]


def test_relayed_from_admin(maps):
    code, _, err = run(maps, "relayed")
    assert code == ExitStatus.ERROR and "unreachable" in err
    rows = [{"listener": "ns/gw/tls", "route": "a", "client": "10.0.0.5:1",
             "backend": "10.1.0.1:443", "age_s": 0.2, "bytes_to_backend": 517,
             "bytes_to_client": 0}]
    code, out, _ = run(maps, "-o", "json", "relayed", admin={"l4": {"relayed": rows}})
    assert code == 0 and json.loads(out) == rows


def _refused(_url):
    raise OSError("connection refused")


def test_usage_and_missing_state(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert main([], Env(stdout=out, stderr=err)) == ExitStatus.USAGE
    assert main(["bogus"], Env(stdout=out, stderr=err)) == ExitStatus.USAGE
    code = main(["--pin-dir", str(tmp_path), "counters"],
                Env(stdout=out, stderr=err, admin_get=_refused))
    assert code == ExitStatus.NO_STATE and "no kgw maps pinned" in err.getvalue()
    assert "no kgw answers at http://127.0.0.1:9095" in err.getvalue()


# ----------------------------------------------------------------------------- userspace mode


async def test_userspace_mode_answers_from_the_admin_api(tmp_path):
    """With the L4 plane in userspace mode nothing is pinned: every command answers from
    the admin API's /l4 page (here the page a live UserspacePlane serves, with one TCP
    connection open through it) instead of saying no maps are pinned."""
    import asyncio
    import dataclasses

    from kgw_l4.plane import UserspacePlane
    from tests.helpers import free_port
    from tests.l4.test_l4_metrics import _echo

    be = await asyncio.start_server(_echo, "127.0.0.1", 0)
    be_port = be.sockets[0].getsockname()[1]
    port = free_port()
    config = L4Config((Frontend("ns/gw/tcp", "127.0.0.1", port, "TCP", (
        BackendGroup("ns/db:5432", 2, (Endpoint("127.0.0.1", be_port),)),), gateway="ns/gw",
        listener="tcp", route="ns/db"),))
    plane = UserspacePlane()
    await plane.apply(config)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"q" * 500)
        await w.drain()
        await r.readexactly(500)
        client = "127.0.0.1:%d" % w.get_extra_info("sockname")[1]
        page = json.loads(json.dumps({**plane.inspect(), "config": config.to_dict()}))

        read_maps: list[bool] = []

        def run_us(*argv):
            out, err = io.StringIO(), io.StringIO()
            seen = []

            def get(url):
                seen.append(url)
                if url.endswith("/l4"):
                    return page
                raise OSError("not asked for")

            def maps_factory(_d):
                read_maps.append(True)
                return FakeMapSet(loader.expected_maps(SIZES))

            env = Env(stdout=out, stderr=err, admin_get=get, maps_factory=maps_factory, sizes=SIZES)
            code = main(["--pin-dir", str(tmp_path), *argv], env)
            return code, out.getvalue(), err.getvalue()

        code, out, err = run_us("-o", "json", "frontends")
        assert code == ExitStatus.OK, err
        fe, = json.loads(out)
        assert (fe["name"], fe["frontend"], fe["route"]) == ("ns/gw/tcp", f"127.0.0.1:{port}/TCP",
                                                             "ns/db")
        assert (fe["flows"], fe["active"], fe["bytes_to_backend"]) == (1, 1, 500)
        assert fe["backends"] == [{"endpoint": f"127.0.0.1:{be_port}", "backend": "ns/db:5432",
                                   "weight": 2,
                                   "flows": 1, "bytes_to_backend": 500, "bytes_to_client": 500,
                                   "health": "unknown", "health_since": ""}]
        code, out, _ = run_us("-o", "json", "flows", "--src", client)
        flow, = json.loads(out)
        assert flow["backend"] == f"127.0.0.1:{be_port}" and flow["bytes_to_client"] == 500
        _, out, _ = run_us("-o", "json", "flows", "--dst", "127.0.0.1:1")
        assert json.loads(out) == []
        code, _, err = run_us("flows", "--frontend", "0")
        assert code == ExitStatus.INVALID and "userspace mode" in err
        _, out, _ = run_us("-o", "json", "counters")
        assert json.loads(out) == [{"counter": "NEW_FLOWS", "count": 1}]
        code, out, _ = run_us("-o", "json", "flow", client, f"127.0.0.1:{port}")
        assert json.loads(out)[0]["backend"] == f"127.0.0.1:{be_port}" and "open flow" in out
        code, out, _ = run_us("-o", "json", "flow", "10.9.9.9:1234", f"127.0.0.1:{port}")
        assert json.loads(out)[0]["backend"] == f"127.0.0.1:{be_port}" and "picker" in out
        code, _, _ = run_us("flow", "10.9.9.9:1234", "127.0.0.1:1")
        assert code == ExitStatus.NOT_FOUND
        code, out, _ = run_us("frontends")
        assert code == ExitStatus.OK and out.splitlines()[0].startswith("NAME")
        assert not read_maps
        # a kernel mode's page does not divert: the maps are the truth
        page = {"mode": "tc", "stats": dataclasses.replace(plane.stats(), mode="tc").to_dict()}
        code, out, _ = run_us("-o", "json", "counters")
        assert code == ExitStatus.OK and read_maps and json.loads(out) == []
        w.close()
    finally:
        await plane.close()
        be.close()
