"""Health verdicts in the Maglev rows: only a down endpoint's slots move, a recovered one
gets exactly its slots back, every endpoint down keeps them all (panic). Pure
(kgw_l4.maglev.without_down) and through the programmer against the map fake."""

from __future__ import annotations

from collections import Counter

import pytest

from kgw_l4 import abi, loader, maglev
from kgw_l4.config import BackendGroup, Endpoint, Frontend, L4Config
from kgw_l4.maglev import WeightedEndpoint as W
from kgw_l4.maps import FakeMapSet
from kgw_l4.programmer import Programmer
from kgw_l7.config import HealthCheck

SIZE = maglev.DEFAULT_SIZE
SIZES = dict(abi.SIZES, KGW_MAX_FRONTENDS=4, KGW_MAX_BACKENDS=16, KGW_MAGLEV_SIZE=1021,
             KGW_CT_SIZE=64, KGW_CT_SYN_SIZE=64)


# (weights, down indices) -> the down ones' slots are spread by weight over the others
CASES = [
    ((1, 1), {0}),
    ((1, 1, 1, 1, 1), {2}),
    ((1, 1, 1, 1, 1, 1, 1, 1, 1, 1), {3, 7}),
    ((1, 3, 1), {1}),
    ((2, 1, 1), {1}),
    ((1, 0, 1), {0}),
]


@pytest.mark.parametrize(("weights", "down"), CASES)
def test_only_the_down_endpoints_slots_move(weights, down):
    eps = [W(f"10.0.0.{i}:80", w) for i, w in enumerate(weights)]
    full = maglev.build_table(eps, SIZE)
    row, panic = maglev.without_down(eps, down, SIZE)
    assert not panic
    moved = [i for i, (a, b) in enumerate(zip(full, row)) if a != b]
    # every slot that moved was a down endpoint's, and every one of those moved
    assert {full[i] for i in moved} <= down
    assert len(moved) == sum(1 for v in full if v in down)
    assert not set(row) & down
    # the movement bound: what moved is the down endpoints' share, no more
    share = sum(weights[i] for i in down) / sum(weights)
    assert len(moved) / SIZE <= share + 0.01
    # the slots are spread over the healthy ones by weight
    up = {i: w for i, w in enumerate(weights) if i not in down and w > 0}
    got = Counter(row)
    for i, w in up.items():
        assert abs(got[i] / SIZE - w / sum(up.values())) < 0.02, (i, got)


@pytest.mark.parametrize(("weights", "down"), CASES)
def test_recovery_gives_back_exactly_the_same_slots(weights, down):
    eps = [W(f"10.0.0.{i}:80", w) for i, w in enumerate(weights)]
    assert maglev.without_down(eps, set(), SIZE) == (maglev.build_table(eps, SIZE), False)


@pytest.mark.parametrize(("weights", "down"), [((1, 1), {0, 1}), ((1, 0, 2), {0, 2}),
                                                ((4,), {0})])
def test_every_endpoint_down_keeps_them_all(weights, down):
    eps = [W(f"10.0.0.{i}:80", w) for i, w in enumerate(weights)]
    assert maglev.without_down(eps, down, SIZE) == (maglev.build_table(eps, SIZE), True)


def test_a_down_endpoint_without_weight_changes_nothing():
    eps = [W("a:1", 1), W("b:1", 0)]
    assert maglev.without_down(eps, {1, 9}, 101) == (maglev.build_table(eps, 101), False)


# ---------------------------------------------------------------- through the programmer

CHECK = HealthCheck(type="TCP")


def frontend(name="fe", port=8080, addrs=("10.1.0.1", "10.1.0.2", "10.1.0.3"),
             check: HealthCheck | None = CHECK):
    return Frontend(name, "10.0.0.1", port, "TCP",
                    (BackendGroup("ns/svc:80", 1, tuple(Endpoint(a, 80) for a in addrs),
                                  check),))


def test_a_group_without_a_check_takes_no_verdict(maps):
    """The same group name through another listener, without a health check there: the
    verdicts of the checked one do not move its slots."""
    p = prog(maps)
    p.apply(L4Config((frontend(check=None),)))
    before = ring(maps, 0)
    assert p.set_health(frozenset({("ns/svc:80", "10.1.0.2", 80)})) == 0
    assert ring(maps, 0) == before


@pytest.fixture
def maps():
    return FakeMapSet(loader.expected_maps(SIZES))


def ring(maps, fe_id):
    m = maps.get("kgw_maglev")
    n = SIZES["KGW_MAGLEV_SIZE"]
    return [abi.u32_of(m.lookup(abi.u32(abi.maglev_index(fe_id, i, n)))) for i in range(n)]


def prog(maps):
    return Programmer(maps, snat_for=lambda _a: "10.9.9.9", local_addrs=lambda: ["10.0.0.1"],
                      sizes=SIZES)


def test_programmer_moves_only_the_down_slots_and_gives_them_back(maps):
    p = prog(maps)
    p.apply(L4Config((frontend(),)))
    before = ring(maps, 0)
    dead = p.be_ids[("10.1.0.2", 80)]
    writes = maps.get("kgw_maglev").writes
    n = p.set_health(frozenset({("ns/svc:80", "10.1.0.2", 80)}))
    during = ring(maps, 0)
    moved = [i for i, (a, b) in enumerate(zip(before, during)) if a != b]
    assert n == len(moved) == before.count(dead) == maps.get("kgw_maglev").writes - writes
    assert dead not in during
    assert p.views["fe"].down == ("10.1.0.2:80",) and not p.views["fe"].panic
    # an unrelated apply keeps the verdict (the row is not rebuilt without it)
    assert p.apply(L4Config((frontend(),))).slots_written == 0
    assert ring(maps, 0) == during
    assert p.set_health(frozenset()) == len(moved)
    assert ring(maps, 0) == before and p.views["fe"].down == ()


def test_programmer_health_is_per_group_and_frontend(maps):
    p = prog(maps)
    other = Frontend("other", "10.0.0.1", 9090, "TCP", (BackendGroup(
        "ns/other:80", 1, tuple(Endpoint(a, 80) for a in ("10.1.0.1", "10.1.0.2"))),))
    p.apply(L4Config((frontend(), other)))
    fe_other = p.views["other"].fe_id
    before_other = ring(maps, fe_other)
    p.set_health(frozenset({("ns/svc:80", "10.1.0.2", 80)}))
    assert ring(maps, fe_other) == before_other  # its group has no failing check
    assert p.views["other"].down == ()


def test_programmer_panic_keeps_every_endpoint_and_says_so(maps):
    p = prog(maps)
    p.apply(L4Config((frontend(addrs=("10.1.0.1", "10.1.0.2")),)))
    before = ring(maps, 0)
    n = p.set_health(frozenset({("ns/svc:80", "10.1.0.1", 80), ("ns/svc:80", "10.1.0.2", 80)}))
    assert n == 0 and ring(maps, 0) == before
    assert p.views["fe"].panic and p.views["fe"].down == ("10.1.0.1:80", "10.1.0.2:80")


def test_check_does_not_undo_the_health_rewrite(maps):
    p = prog(maps)
    p.apply(L4Config((frontend(),)))
    p.set_health(frozenset({("ns/svc:80", "10.1.0.3", 80)}))
    assert not p.check()
