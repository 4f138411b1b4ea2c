"""Programmer diff logic against the in-memory map fake."""

from __future__ import annotations

from collections import Counter

import pytest

from kgw_l4 import abi, loader
from kgw_l4.config import BackendGroup, Endpoint, Frontend, L4Config
from kgw_l4.maps import FakeMapSet
from kgw_l4.programmer import Programmer

SIZES = dict(abi.SIZES, KGW_MAX_FRONTENDS=4, KGW_MAX_BACKENDS=16, KGW_MAGLEV_SIZE=1021,
             KGW_CT_SIZE=64, KGW_CT_SYN_SIZE=64)


def fe(name="fe", port=8080, groups=None, address="10.0.0.1", protocol="TCP"):
    if groups is None:
        groups = [("g", 1, ["10.1.0.1", "10.1.0.2", "10.1.0.3"])]
    return Frontend(name, address, port, protocol, tuple(
        BackendGroup(n, w, tuple(Endpoint(a, 80) for a in addrs)) for n, w, addrs in groups))


@pytest.fixture
def maps():
    return FakeMapSet(loader.expected_maps(SIZES))


def prog(maps, snat="10.9.9.9"):
    return Programmer(maps, snat_for=lambda _a: snat, local_addrs=lambda: ["10.0.0.1"], sizes=SIZES)


def ring(maps, fe_id):
    m = maps.get("kgw_maglev")
    n = SIZES["KGW_MAGLEV_SIZE"]
    return [abi.u32_of(m.lookup(abi.u32(abi.maglev_index(fe_id, i, n)))) for i in range(n)]


def backend_addr(maps, bid):
    return abi.backend_of(maps.get("kgw_backends").lookup(abi.u32(bid)))[0]


def test_first_apply_writes_everything_then_nothing(maps):
    p = prog(maps)
    r = p.apply(L4Config((fe(),)))
    assert r.slots_written == SIZES["KGW_MAGLEV_SIZE"]
    assert r.backends_written == 3 and r.frontends_added == 1 and not r.errors
    r2 = p.apply(L4Config((fe(),)))
    assert (r2.slots_written, r2.backends_written, r2.frontends_added) == (0, 0, 0)
    assert loader.frontends(maps) == [("10.0.0.1", 8080, "TCP", 0)]
    _, port, snat = abi.backend_of(maps.get("kgw_backends").lookup(abi.u32(0)))
    assert snat == "10.9.9.9" and port == 80


def test_adding_a_backend_writes_only_changed_slots(maps):
    p = prog(maps)
    p.apply(L4Config((fe(),)))
    before = ring(maps, 0)
    writes = maps.get("kgw_maglev").writes
    r = p.apply(
        L4Config((fe(groups=[("g", 1, ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"])]),)))
    after = ring(maps, 0)
    changed = sum(1 for a, b in zip(before, after) if a != b)
    assert r.slots_written == changed == maps.get("kgw_maglev").writes - writes
    assert changed < 0.35 * len(after)  # ~1/4 move to the new backend
    new_id = p.be_ids[("10.1.0.4", 80)]
    to_new = sum(1 for a, b in zip(before, after) if a != b and b == new_id)
    assert to_new >= 0.9 * changed  # Maglev moves a few slots between old backends too


def test_weight_zero_drains_without_forgetting(maps):
    p = prog(maps)
    p.apply(L4Config((fe(groups=[("a", 1, ["10.1.0.1"]), ("b", 1, ["10.1.0.2"])]),)))
    bid_b = p.be_ids[("10.1.0.2", 80)]
    assert bid_b in ring(maps, 0)
    r = p.apply(L4Config((fe(groups=[("a", 1, ["10.1.0.1"]), ("b", 0, ["10.1.0.2"])]),)))
    assert bid_b not in ring(maps, 0)
    assert backend_addr(maps, bid_b) == "10.1.0.2"  # entry kept, id kept
    assert p.be_ids[("10.1.0.2", 80)] == bid_b and not r.errors
    view = p.views["fe"]
    assert (bid_b, "10.1.0.2:80", 0) in view.endpoints


def test_weights_follow_groups_shared_among_endpoints(maps):
    p = prog(maps)
    p.apply(L4Config((fe(groups=[("a", 1, ["10.1.0.1", "10.1.0.2"]), ("b", 2, ["10.1.0.3"])]),)))
    c = Counter(ring(maps, 0))
    size = SIZES["KGW_MAGLEV_SIZE"]
    ida, idb, idc = (p.be_ids[(a, 80)] for a in ("10.1.0.1", "10.1.0.2", "10.1.0.3"))
    assert abs(c[ida] / size - 1 / 6) < 0.02
    assert abs(c[idb] / size - 1 / 6) < 0.02
    assert abs(c[idc] / size - 4 / 6) < 0.02


def test_errors_are_reported_and_good_frontends_survive(maps):
    p = prog(maps)
    cfg = L4Config((
        fe("good"),
        fe("clash", groups=[("g", 1, ["10.1.0.9"])]),
        fe("empty", port=9000, groups=[]),
        fe("drained", port=9001, groups=[("g", 0, ["10.1.0.1"])]),
        fe("badaddr", port=9002, address="not-an-ip"),
        fe("badport", port=70000),
        fe("sctp", port=9003, protocol="SCTP"),
        fe("badep", port=9004, groups=[("g", 1, ["10.1.0.1", "bogus"])]),
    ))
    r = p.apply(cfg)
    assert "port clash" in r.errors["clash"] and "'good'" in r.errors["clash"]
    assert r.errors["empty"] == "no backends"
    assert "weight > 0" in r.errors["drained"]
    assert "not an IPv4" in r.errors["badaddr"]
    assert "out of range" in r.errors["badport"]
    assert "SCTP" in r.errors["sctp"]
    assert "bogus" in r.errors["badep"]
    assert "good" not in r.errors
    assert set(p.views) == {"good", "badep"}
    assert sum(1 for _ in maps.get("kgw_frontends").keys()) == 2


def test_too_many_frontends_is_an_error_not_a_crash(maps):
    p = prog(maps)
    r = p.apply(L4Config(tuple(fe(f"f{i}", port=8000 + i) for i in range(6))))
    assert len(p.views) == SIZES["KGW_MAX_FRONTENDS"]
    assert "too many frontends" in r.errors["f5"]


def test_frontend_removal_and_id_reuse(maps):
    p = prog(maps)
    p.apply(L4Config((fe("a", port=1), fe("b", port=2))))
    r = p.apply(L4Config((fe("b", port=2),)))
    assert r.frontends_removed == 1
    assert sum(1 for _ in maps.get("kgw_frontends").keys()) == 1
    p.apply(L4Config((fe("b", port=2), fe("c", port=3))))
    assert p.views["c"].fe_id == 0 and p.views["b"].fe_id == 1


def test_adoption_writes_nothing_for_unchanged_config(maps):
    cfg = L4Config((fe("a", port=1), fe("b", port=2, groups=[("g", 3, ["10.1.0.7"])])))
    prog(maps).apply(cfg)
    fresh = prog(maps)
    assert fresh.adopt() == 2
    r = fresh.apply(cfg)
    assert (r.slots_written, r.backends_written, r.frontends_added, r.frontends_removed) == (0, 0,
                                                                                             0, 0)
    assert {v.fe_id for v in fresh.views.values()} == {0, 1}


def test_local_addresses_are_written_as_a_diff(maps):
    addrs = ["10.0.0.1", "10.0.0.2"]
    p = Programmer(maps, snat_for=lambda _a: "10.9.9.9", local_addrs=lambda: list(addrs),
                   sizes=SIZES)
    p.apply(L4Config((fe(address="0.0.0.0"),)))
    assert loader.local_addrs(maps) == set(addrs)
    addrs.pop()
    p.apply(L4Config((fe(address="0.0.0.0"),)))
    assert loader.local_addrs(maps) == {"10.0.0.1"}


def test_unroutable_backend_is_reported(maps):
    def snat(addr):
        raise OSError("network unreachable")

    p = Programmer(maps, snat_for=snat, sizes=SIZES)
    r = p.apply(L4Config((fe(),)))
    assert "backend 10.1.0.1: network unreachable" in r.errors["fe"]


def test_counters_accessor_sums_cpus(maps):
    stats = maps.get("kgw_stats")
    idx = abi.global_base(SIZES) + abi.Counter.DROP_NOT_SYN
    stats.set_percpu(abi.u32(idx),
                     [bytes(abi.CounterVal(2, 100)), bytes(abi.CounterVal(3, 50))])
    assert loader.counter(maps, abi.Counter.DROP_NOT_SYN, SIZES) == (5, 150)
    assert loader.counters(maps, SIZES)["NEW_FLOWS"] == (0, 0)


def test_expire_flows_uses_the_entry_state(maps):
    ct = maps.get("kgw_ct")
    s = abi.Settings(ct_timeout_syn_ns=10, ct_timeout_est_ns=100, ct_timeout_closing_ns=20)
    for i, (flags,
            seen) in enumerate([(0, 950), (0, 850), (abi.CT_F_FIN, 985), (abi.CT_F_FIN, 960)]):
        k = abi.FlowKey(saddr=i + 1, proto=6)
        ct.update(bytes(k), bytes(abi.CtEntry(flags=flags, last_seen_ns=seen)))
    assert loader.sweep_flows(maps, s, now_ns=1000).removed == 2
    left = {f.saddr for f in loader.flows(maps, ("kgw_ct",))}
    assert left == {abi.ip_str(1), abi.ip_str(3)}


# ----------------------------------------------------------------------------- drift


def test_check_finds_nothing_after_apply(maps):
    p = prog(maps)
    p.apply(L4Config((fe("a", port=1), fe("b", port=2, address="0.0.0.0"))))
    assert not p.check() and p.check().total == 0


def test_check_repairs_every_kind_of_change_and_names_the_frontends(maps):
    p = prog(maps)
    p.apply(L4Config((fe("a", port=1), fe("b", port=2, groups=[("g", 1, ["10.1.0.9"])]),
                      fe("c", port=3, address="0.0.0.0", groups=[("g", 1, ["10.1.0.8"])]))))
    before = {name: dict(m._d) for name, m in maps.maps.items()}
    va, vb = p.views["a"], p.views["b"]
    # Maglev slots of "a" moved to b's backend; b's backend rewritten; a frontend key
    # of kgw's deleted and a foreign one added; a local address removed and one added
    ring = maps.get("kgw_maglev")
    b_bid = vb.endpoints[0][0]
    base = va.fe_id * SIZES["KGW_MAGLEV_SIZE"]
    for slot in range(5):
        ring.update(abi.u32(base + slot), abi.u32(b_bid))
    bem = maps.get("kgw_backends")
    bem.update(abi.u32(b_bid), abi.backend_val("10.66.0.1", 80, "0.0.0.0"))
    fem = maps.get("kgw_frontends")
    fem.delete(abi.fe_key("0.0.0.0", 3, "TCP"))
    foreign = abi.fe_key("10.0.0.1", 99, "TCP")
    fem.update(foreign, abi.fe_val(va.fe_id))
    lam = maps.get("kgw_local_addrs")
    lam.delete(abi.local_addr_key("10.0.0.1"))
    lam.update(abi.local_addr_key("10.0.0.77"), abi.LOCAL_ADDR_PRESENT)

    d = p.check()
    assert d.entries == {"kgw_maglev": 5, "kgw_backends": 1, "kgw_frontends": 2,
                         "kgw_local_addrs": 2}
    assert d.frontends == ("a", "b", "c")
    assert {name: dict(m._d) for name, m in maps.maps.items()} == before
    assert not p.check()


def test_check_without_repair_only_reports(maps):
    p = prog(maps)
    p.apply(L4Config((fe(),)))
    ring = maps.get("kgw_maglev")
    ring.update(abi.u32(0), abi.u32(7))
    assert p.check(repair=False).entries == {"kgw_maglev": 1}
    assert p.check(repair=False).entries == {"kgw_maglev": 1}
    assert p.check().entries == {"kgw_maglev": 1}
    assert not p.check()


def test_refresh_node_rewrites_only_backends_whose_source_changed(maps):
    sources = {"10.1.0.1": "10.9.0.1", "10.1.0.2": "10.9.0.1", "10.1.0.3": "10.9.0.1"}

    def snat(addr):
        if sources[addr] is None:
            raise OSError("no route (Network is unreachable)")
        return sources[addr]

    p = Programmer(maps, snat_for=snat, sizes=SIZES)
    p.apply(L4Config((fe(),)))
    assert p.refresh_node() == 0
    sources["10.1.0.2"] = "10.9.0.2"
    writes = maps.get("kgw_maglev").writes
    assert p.refresh_node() == 1
    assert maps.get("kgw_maglev").writes == writes  # no Maglev work
    assert loader.backends(maps, SIZES)[p.be_ids[("10.1.0.2", 80)]][2] == "10.9.0.2"
    assert not p.errors
    sources["10.1.0.3"] = None
    p.refresh_node()
    assert p.errors == {"fe": "backend 10.1.0.3: no route (Network is unreachable)"}
    sources["10.1.0.3"] = "10.9.0.1"
    p.refresh_node()
    assert not p.errors


def test_check_reads_maglev_rows_in_turn_within_a_budget(maps):
    p = prog(maps)
    p.apply(L4Config(tuple(fe(f"f{i}", port=i + 1) for i in range(4))))
    victim = p.views["f2"].fe_id
    maps.get("kgw_maglev").update(abi.u32(abi.maglev_index(victim, 0, SIZES["KGW_MAGLEV_SIZE"])),
                                  abi.u32(9))
    found = [p.check(max_rows=1).frontends for _ in range(4)]
    assert sorted(found) == [(), (), (), ("f2",)]
    assert not any(p.check(max_rows=1) for _ in range(4))


def syn_map(maps) -> dict:
    m = maps.get("kgw_syn_limits")
    return {abi.syn_limit_of(k, m.lookup(k))[:2]: abi.syn_limit_of(k, m.lookup(k))[2:]
            for k in m.keys()}


def test_connection_limits_written_kept_and_removed(maps):
    from kgw_l4.config import ConnectionRateLimit as Limit

    p = prog(maps)
    http = Limit("ns/gw/http", "0.0.0.0", 80, 20, 40)
    tls = Limit("ns/gw/tls", "10.0.0.1", 443, 5, 1)
    assert not p.apply(L4Config(connection_limits=(http, tls))).errors
    assert syn_map(maps) == {("0.0.0.0", 80): (20.0, 40, 1), ("10.0.0.1", 443): (5.0, 1, 2)}
    # A new rate keeps the port's id (its sources' buckets); removed ports go.
    p.apply(L4Config(connection_limits=(Limit("ns/gw/http", "0.0.0.0", 80, 100, 10),)))
    assert syn_map(maps) == {("0.0.0.0", 80): (100.0, 10, 1)}
    # A restarted agent adopts the ids and writes nothing when nothing changed.
    again = prog(maps)
    again.adopt()
    writes = maps.get("kgw_syn_limits").writes
    again.apply(L4Config(connection_limits=(Limit("ns/gw/http", "0.0.0.0", 80, 100, 10),)))
    assert maps.get("kgw_syn_limits").writes == writes


@pytest.mark.parametrize("limit, error", [
    (("bad", "nope", 80, 1, 1), "not an IPv4 address"),
    (("bad", "0.0.0.0", 0, 1, 1), "out of range"),
    (("bad", "0.0.0.0", 80, 0, 1), "connection rate 0"),
    (("bad", "0.0.0.0", 80, -3, 1), "connection rate -3"),
    (("bad", "0.0.0.0", 80, 1, 0), "burst 0"),
])
def test_bad_connection_limits_are_reported_and_skipped(maps, limit, error):
    from kgw_l4.config import ConnectionRateLimit as Limit

    good = Limit("ns/gw/ok", "0.0.0.0", 8443, 1, 1)
    r = prog(maps).apply(L4Config(connection_limits=(Limit(*limit), good)))
    assert error in r.errors["bad"] and "ns/gw/ok" not in r.errors
    assert list(syn_map(maps)) == [("0.0.0.0", 8443)]


def test_two_limits_on_one_port_clash(maps):
    from kgw_l4.config import ConnectionRateLimit as Limit

    r = prog(maps).apply(L4Config(connection_limits=(Limit("a", "0.0.0.0", 80, 1, 1),
                                                     Limit("b", "0.0.0.0", 80, 2, 2))))
    assert "port clash" in r.errors["b"] and "a" not in r.errors
    assert syn_map(maps) == {("0.0.0.0", 80): (1.0, 1, 1)}
