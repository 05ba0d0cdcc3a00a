from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import pytest

from gateway import errors
from gateway.policy.budget import Budgets, MemoryCounters, nano, periods, seconds_left, seed_values
from gateway.settings import BudgetSettings

NOW = dt.datetime(2026, 11, 28, 23, 0, tzinfo=dt.UTC).timestamp()
DAY = BudgetSettings(usd_per_day=Decimal(1))


def test_periods_and_their_ends() -> None:
    assert periods(NOW) == ("2026-11-28", "2026-11")
    assert seconds_left("2026-11-28", NOW) == 3600
    assert seconds_left("2026-11", NOW) == 2 * 86400 + 3600  # November has 30 days
    dec = dt.datetime(2026, 12, 15, tzinfo=dt.UTC).timestamp()
    assert seconds_left("2026-12", dec) == 17 * 86400


async def test_reserve_then_settle() -> None:
    b = Budgets(MemoryCounters())
    r1 = await b.reserve("t", DAY, Decimal("0.6"), NOW)
    assert r1 is not None
    with pytest.raises(errors.BudgetExceeded) as exc:
        await b.reserve("t", DAY, Decimal("0.6"), NOW)
    assert exc.value.status == 429 and exc.value.code == "budget_exceeded"
    assert exc.value.headers["retry-after"] == "3600" and "daily" in exc.value.message
    await b.settle(r1, Decimal("0.1"))  # it cost less than reserved
    await b.settle(r1, Decimal("0.5"))  # settling twice changes nothing
    assert await b.counters.get("t:2026-11-28") == Decimal("0.1")
    assert await b.reserve("t", DAY, Decimal("0.6"), NOW) is not None
    assert await b.reserve("t", BudgetSettings(), Decimal(100), NOW) is None  # no budget: no counter


async def test_day_and_month_both_hold() -> None:
    b = Budgets(MemoryCounters())
    both = BudgetSettings(usd_per_day=Decimal(5), usd_per_month=Decimal(1))
    await b.reserve("t", both, Decimal(1), NOW)
    with pytest.raises(errors.BudgetExceeded, match="monthly"):
        await b.reserve("t", both, Decimal("0.01"), NOW)
    assert await b.counters.get("t:2026-11-28") == Decimal(1)  # the refused one reserved nothing


async def test_concurrent_reservations_never_overspend() -> None:
    b = Budgets(MemoryCounters())

    async def one() -> bool:
        try:
            r = await b.reserve("t", DAY, Decimal("0.3"), NOW)
        except errors.BudgetExceeded:
            return False
        await asyncio.sleep(0.01)
        await b.settle(r, Decimal("0.3"))
        return True

    results = await asyncio.gather(*(one() for _ in range(10)))
    assert sum(results) == 3 and await b.counters.get("t:2026-11-28") == Decimal("0.9")


def test_seed_from_ledger_rows() -> None:
    rows = [
        {"team": "t", "day": "2026-11-28", "pusd": 2 * 10**12},
        {"team": "t", "day": "2026-11-02", "pusd": 10**12},
        {"team": "-", "day": "2026-11-28", "pusd": 5},
    ]
    seeded = seed_values(rows, NOW)
    assert seeded["t:2026-11-28"] == Decimal(2) and seeded["t:2026-11"] == Decimal(3)
    assert seeded["-:2026-11-28"] == Decimal("5E-12")
    assert nano(Decimal("0.0000000001")) == 1  # rounded up: Redis never under-counts
