from __future__ import annotations

from typing import Any

from gateway.backends.backend import Backend
from gateway.backends.outlier import EjectionPolicy, RetryBudget


def _b() -> Backend:
    up: Any = object()
    return Backend("a", up)


def test_consecutive_failures_eject_with_doubling_backoff() -> None:
    p = EjectionPolicy(consecutive_failures=3, base_s=5, max_s=12)
    b = _b()
    assert not p.failed(b, now=100) and not p.failed(b, now=100)
    p.succeeded(b)  # a success in between: the count starts again
    assert [p.failed(b, now=100) for _ in range(3)] == [False, False, True]
    assert b.ejected_until == 105
    assert not any(p.failed(b, now=101) for _ in range(5))  # in-flight failures while out
    assert [p.failed(b, now=106) for _ in range(3)] == [False, False, True]
    assert b.ejected_until == 116  # doubled
    for _ in range(3):
        p.failed(b, now=120)
    assert b.ejected_until == 132  # capped at max_s
    for _ in range(3):
        p.failed(b, now=1000)
    assert b.ejected_until == 1005  # long fine since: back to base


def test_retry_budget_is_a_share_of_requests() -> None:
    budget = RetryBudget(ratio=0.1, min_retries=2, window_s=60)
    assert budget.try_retry() and budget.try_retry() and not budget.try_retry()
    for _ in range(30):
        budget.request()
    assert sum(budget.try_retry() for _ in range(10)) == 3  # 2 + 10% of 30 = 5 in all
    assert not RetryBudget(ratio=0.0, min_retries=0).try_retry()
