"""kgw_l7.balance: the algorithms, ejection, panic, slow start, hash keys and the minimal
remapping of consistent hashing (table-tested, a fake clock, no I/O)."""

from __future__ import annotations

import collections
import random

import pytest

from kgw_l7.balance import (
    LOCAL_FAILURE, OK, SERVER_ERROR, Balancer, HealthBook, KeySource, cookie_value, hash32,
    query_value,
)
from kgw_l7.config import HashOn, LoadBalancer, OutlierDetection


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def eps(n: int) -> list[tuple[str, int]]:
    return [(f"10.0.0.{i}", 8080) for i in range(1, n + 1)]


def balancer(n: int = 4, lb: LoadBalancer | None = None,
             od: OutlierDetection | None = None) -> tuple[Balancer, HealthBook, Clock]:
    clock = Clock()
    book = HealthBook(clock)
    return Balancer("ns/svc:80", eps(n), lb, od, book), book, clock


def test_round_robin_visits_each_endpoint_in_turn():
    bal, _, _ = balancer(4)
    got = [bal.pick() for _ in range(8)]
    assert sorted(got[:4]) == sorted(eps(4)) and got[:4] == got[4:]


def test_random_spreads_over_all():
    random.seed(1)
    bal, _, _ = balancer(4, LoadBalancer("Random"))
    counts = collections.Counter(bal.pick() for _ in range(4000))
    assert set(counts) == set(eps(4)) and min(counts.values()) > 800


def test_least_request_prefers_fewer_in_flight():
    random.seed(2)
    bal, _, _ = balancer(2, LoadBalancer("LeastRequest"))
    busy = bal.begin(eps(2)[0])
    for _ in range(5):
        bal.begin(eps(2)[0])
    counts = collections.Counter(bal.pick() for _ in range(1000))
    # P2C over two endpoints compares both: always the idle one.
    assert counts[eps(2)[1]] == 1000
    bal.end(busy, OK, 0.0)
    assert busy.in_flight == 5


def test_least_request_is_weight_aware():
    random.seed(3)
    bal, _, _ = balancer(2, LoadBalancer("LeastRequest"))
    bal.states[0].weight = 4
    bal.equal_weights = False
    for _ in range(2):
        bal.begin(eps(2)[0])  # 3/4 per unit of weight after one more, vs 1 for the other
    counts = collections.Counter(bal.pick() for _ in range(1000))
    assert counts[eps(2)[0]] > counts[eps(2)[1]]


@pytest.mark.parametrize("lb", [None, LoadBalancer("Random"), LoadBalancer("LeastRequest"),
                                LoadBalancer("ConsistentHash", hash_on=HashOn(header="x-u"))])
def test_no_endpoint_gives_none(lb):
    bal, _, _ = balancer(0, lb)
    assert bal.pick() is None and bal.pick(b"k") is None


OD = OutlierDetection(consecutive_5xx=3, consecutive_local_failures=2, base_ejection_time=10,
                      max_ejection_time=25, max_ejection_percent=50)


@pytest.mark.parametrize("outcome,needed", [(SERVER_ERROR, 3), (LOCAL_FAILURE, 2)])
def test_consecutive_failures_eject(outcome, needed):
    bal, _, clock = balancer(4, None, OD)
    st = bal.states[0]
    for _ in range(needed):
        assert not st.ejected(clock.t)
        bal.end(bal.begin(st.address), outcome, clock.t)
    assert st.ejected(clock.t)
    assert st.address not in {bal.pick() for _ in range(12)}


def test_a_success_resets_the_count():
    bal, _, clock = balancer(4, None, OD)
    st = bal.states[0]
    for outcome in (SERVER_ERROR, SERVER_ERROR, OK, SERVER_ERROR, SERVER_ERROR):
        bal.end(bal.begin(st.address), outcome, clock.t)
    assert not st.ejected(clock.t)


def test_ejection_time_grows_with_repeats_up_to_the_max_and_returns():
    bal, _, clock = balancer(4, None, OD)
    st = bal.states[0]
    durations = []
    for _ in range(3):
        for _ in range(2):
            bal.end(bal.begin(st.address), LOCAL_FAILURE, clock.t)
        durations.append(st.ejected_until - clock.t)
        clock.t = st.ejected_until
        assert st.address in {bal.pick() for _ in range(8)}  # back after the time
    assert durations == [10, 20, 25]


def test_max_ejection_percent_but_at_least_one():
    bal, _, clock = balancer(4, None, OD)  # 50%: two of four
    for st in bal.states:
        for _ in range(2):
            bal.end(bal.begin(st.address), LOCAL_FAILURE, clock.t)
    assert sum(st.ejected(clock.t) for st in bal.states) == 2
    one, _, clock = balancer(3, None, OutlierDetection(max_ejection_percent=1,
                                                       consecutive_local_failures=1))
    for st in one.states:
        one.end(one.begin(st.address), LOCAL_FAILURE, clock.t)
    assert sum(st.ejected(clock.t) for st in one.states) == 1


@pytest.mark.parametrize("healthy,threshold,expect_all", [
    (2, 50.0, False),  # 2 of 4 = 50%: not below
    (1, 50.0, True),   # 25% < 50%: panic, all four
    (1, 0.0, False),   # panic off
    (0, 0.0, False),   # nothing healthy, panic off: no endpoint
])
def test_panic_threshold(healthy, threshold, expect_all):
    bal, book, _ = balancer(4, LoadBalancer(panic_threshold=threshold))
    for st in bal.states[healthy:]:
        book.set_active("ns/svc:80", st.address, False)
    got = {bal.pick() for _ in range(16)} - {None}
    if expect_all:
        assert got == set(eps(4)) and bal.panicking
    else:
        assert got == set(eps(4)[:healthy])


def test_active_verdicts_take_effect_and_are_shared_by_name():
    clock = Clock()
    book = HealthBook(clock)
    a = Balancer("ns/svc:80", eps(3), LoadBalancer(panic_threshold=0), None, book)
    b = Balancer("ns/svc:80", eps(3), LoadBalancer("Random", panic_threshold=0), None, book)
    assert book.set_active("ns/svc:80", eps(3)[1], False)
    assert not book.set_active("ns/svc:80", eps(3)[1], False)  # no change
    for bal in (a, b):
        assert eps(3)[1] not in {bal.pick() for _ in range(30)}
        assert not bal.usable(eps(3)[1]) and bal.usable(eps(3)[0])
    book.set_active("ns/svc:80", eps(3)[1], True)
    assert eps(3)[1] in {a.pick() for _ in range(3)}


def test_state_survives_recompilation_and_goes_with_the_endpoint():
    bal, book, clock = balancer(3, None, OD)
    bal.end(bal.begin(eps(3)[0]), LOCAL_FAILURE, clock.t)
    bal.end(bal.begin(eps(3)[0]), LOCAL_FAILURE, clock.t)
    again = Balancer("ns/svc:80", eps(3), None, OD, book)
    assert eps(3)[0] not in {again.pick() for _ in range(9)}
    book.retain({("ns/svc:80", ep) for ep in eps(3)[1:]})
    assert book.get("ns/svc:80", eps(3)[0]) is None


def test_slow_start_ramps_a_new_endpoint_only():
    random.seed(4)
    clock = Clock()
    book = HealthBook(clock)
    lb = LoadBalancer(slow_start_window=100)
    Balancer("ns/svc:80", eps(2), lb, None, book)  # the first set: no ramp
    bal = Balancer("ns/svc:80", eps(3), lb, None, book)  # 10.0.0.3 is new
    counts = collections.Counter(bal.pick() for _ in range(3000))
    assert counts[eps(3)[2]] < counts[eps(3)[0]] / 3
    clock.t += 100
    counts = collections.Counter(bal.pick() for _ in range(3000))
    assert abs(counts[eps(3)[2]] - 1000) < 30


HASH = LoadBalancer("ConsistentHash", hash_on=HashOn(header="x-user"))


def test_hash_is_stable_and_missing_key_is_round_robin():
    bal, _, _ = balancer(5, HASH)
    assert len({bal.pick(b"alice") for _ in range(20)}) == 1
    assert len({bal.pick(None) for _ in range(5)}) == 5


@pytest.mark.parametrize("n", [5, 10, 30])
def test_hash_remaps_at_most_1_over_n_plus_eps(n):
    """Removing one of n endpoints moves only its keys (~1/n); adding one moves ~1/(n+1).
    The bound is 1/n + 0.02, as the L4 Maglev tests allow."""
    keys = [b"user-%d" % i for i in range(6000)]
    bal, _, _ = balancer(n, HASH)
    before = [bal.pick(k) for k in keys]
    fewer = Balancer("other", eps(n)[1:], HASH, None, HealthBook())
    moved = sum(a != b for a, b in zip(before, (fewer.pick(k) for k in keys)))
    assert moved / len(keys) <= 1 / n + 0.02
    more = Balancer("other2", eps(n + 1), HASH, None, HealthBook())
    moved = sum(a != b for a, b in zip(before, (more.pick(k) for k in keys)))
    assert moved / len(keys) <= 1 / (n + 1) + 0.02


def test_hash_on_an_unusable_endpoint_moves_only_its_keys():
    keys = [b"k%d" % i for i in range(5000)]
    bal, book, _ = balancer(6, HASH)
    before = [bal.pick(k) for k in keys]
    book.set_active("ns/svc:80", eps(6)[2], False)
    after = [bal.pick(k) for k in keys]
    assert all(a == b for a, b in zip(before, after) if a != eps(6)[2])
    assert eps(6)[2] not in after


def test_pick_untried_avoids_tried_endpoints():
    bal, _, _ = balancer(3, LoadBalancer("Random"))
    for _ in range(20):
        assert bal.pick_untried(eps(3)[:2]) == eps(3)[2]


HEADERS = ((b"host", b"a"), (b"x-user", b"bob"), (b"cookie", b"a=1; sid=xyz; b=2"))


@pytest.mark.parametrize("on,query,peer,expect", [
    (HashOn(header="X-User"), b"", b"1.2.3.4", b"bob"),
    (HashOn(header="x-missing"), b"", b"1.2.3.4", None),
    (HashOn(cookie="sid"), b"", None, b"xyz"),
    (HashOn(cookie="nope"), b"", None, None),
    (HashOn(query="u"), b"a=1&u=7", None, b"7"),
    (HashOn(query="u"), b"", None, None),
    (HashOn(source_ip=True), b"", b"1.2.3.4", b"1.2.3.4"),
])
def test_key_sources(on, query, peer, expect):
    assert KeySource(on).key(HEADERS, query, peer) == expect


def test_cookie_and_query_parsing_edges():
    assert cookie_value(((b"cookie", b"sid"),), b"sid") is None  # no '='
    assert cookie_value(((b"cookie", b"x=1"), (b"cookie", b"sid=2")), b"sid") == b"2"
    assert query_value(b"u=&v=1", b"u") == b""
    assert query_value(b"uu=1", b"u") is None


def test_hash32_is_stable_across_processes():
    assert hash32(b"alice") == hash32(b"alice") and hash32(b"alice") != hash32(b"bob")
    assert hash32(b"") == 0 and hash32(b"alice") == 741610746
