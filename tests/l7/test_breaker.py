"""kgw_l7.breaker: limits, per-worker shares, the retry budget."""

from __future__ import annotations

import pytest

from kgw_l7.breaker import CONNECTIONS, PENDING, REQUESTS, RETRIES, Breaker, share
from kgw_l7.config import CircuitBreaker


@pytest.mark.parametrize("limit,workers,expect", [(10, 1, 10), (10, 3, 4), (1, 4, 1),
                                                  (0, 2, 1), (5, 0, 5)])
def test_share(limit, workers, expect):
    assert share(limit, workers) == expect


def test_enter_until_the_limit_then_overflow_and_leave():
    b = Breaker(CircuitBreaker(max_requests=2))
    assert b.enter(REQUESTS) and b.enter(REQUESTS)
    assert not b.enter(REQUESTS)
    assert b.overflows[REQUESTS] == 1
    b.leave(REQUESTS)
    assert b.enter(REQUESTS)
    b.leave(PENDING)  # never below zero
    assert b.active[PENDING] == 0


def test_limits_are_shared_among_workers():
    b = Breaker(CircuitBreaker(max_connections=10, max_pending_requests=3), workers=2)
    assert b.limit(CONNECTIONS) == 5 and b.limit(PENDING) == 2


def test_retry_budget_grows_with_active_requests():
    b = Breaker(CircuitBreaker(max_retries=1, retry_budget_percent=20, max_requests=100))
    assert b.limit(RETRIES) == 1
    for _ in range(50):
        b.enter(REQUESTS)
    assert b.limit(RETRIES) == 10
    assert b.view()["max_retries"] == {"limit": 1, "active": 0, "overflows": 0}
