"""Hosted budgets: USD per team per UTC day and month, enforced *before* a hosted request.

Admission reserves an upper estimate (prompt tokens plus ``max_tokens``, at the hosted model's
prices) against every period counter of the team, atomically, and refuses when any would go over
its limit; ``settle`` replaces the reservation with the real cost once the provider reported its
usage. Concurrent requests therefore cannot overspend: each one's worst case is already counted
when the next is admitted, and the real cost exceeds the estimate only by the prompt estimate's
error, so the overshoot is bounded by one reservation.

A counter holds committed money (settled costs plus open reservations). In memory it is a
``Decimal``; in Redis (``limits.redis_url``, shared by replicas) an integer of nano-dollars,
rounded up. Counters start from the ledger's hosted spend of the current day and month.

Redis calls are bounded and fail as ``CountersUnavailable`` (``redis_link``). A budget fails closed
by default (``budget.fail``): the hosted request is refused with 503 ``budget_unavailable`` rather
than spend money nobody can count; ``open`` sends it unbudgeted (counted and logged). A settlement
that cannot reach Redis leaves the reservation counted (conservative) and is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from functools import partial
from typing import Any, Protocol

from gateway import errors
from gateway.policy.redis_link import FailureCount, RedisLink
from gateway.settings import BudgetSettings

log = logging.getLogger("nometer.policy")

NANO = Decimal(10) ** 9
ANONYMOUS = "-"


def periods(now: float) -> tuple[str, str]:
    t = time.gmtime(now)
    return time.strftime("%Y-%m-%d", t), time.strftime("%Y-%m", t)


def seconds_left(period: str, now: float) -> int:
    """Seconds until the UTC day (``YYYY-MM-DD``) or month (``YYYY-MM``) ends."""
    d = dt.datetime.fromtimestamp(now, dt.UTC)
    if len(period) == 10:
        end = dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    else:
        end = dt.datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=dt.UTC)
    return max(1, math.ceil(end.timestamp() - now))


@dataclass(frozen=True, slots=True)
class Counter:
    key: str  # "<team>:<period>"
    limit: Decimal
    period: str


@dataclass(slots=True)
class Reservation:
    counters: tuple[Counter, ...]
    amount: Decimal
    settled: bool = False


class Counters(Protocol):
    async def reserve(self, counters: tuple[Counter, ...], amount: Decimal) -> int:
        """Add ``amount`` to every counter if all stay within their limits: -1. Else add nothing
        and return the index of the counter that is full."""
        ...

    async def add(self, keys: list[str], amount: Decimal) -> None: ...

    async def seed(self, values: dict[str, Decimal]) -> None:
        """Start counters from the ledger: only those that do not exist yet."""
        ...

    async def get(self, key: str) -> Decimal: ...

    async def aclose(self) -> None: ...


class MemoryCounters:
    def __init__(self) -> None:
        self._c: dict[str, Decimal] = {}

    async def reserve(self, counters: tuple[Counter, ...], amount: Decimal) -> int:
        c = self._c
        for i, k in enumerate(counters):
            if c.get(k.key, Decimal(0)) + amount > k.limit:
                return i
        for k in counters:
            c[k.key] = c.get(k.key, Decimal(0)) + amount
        return -1

    async def add(self, keys: list[str], amount: Decimal) -> None:
        for k in keys:
            self._c[k] = self._c.get(k, Decimal(0)) + amount

    async def seed(self, values: dict[str, Decimal]) -> None:
        for k, v in values.items():
            self._c.setdefault(k, v)

    async def get(self, key: str) -> Decimal:
        return self._c.get(key, Decimal(0))

    async def aclose(self) -> None:
        pass


_RESERVE = """
local amount = tonumber(ARGV[1])
local n = #KEYS
for i = 1, n do
  if tonumber(redis.call('GET', KEYS[i]) or '0') + amount > tonumber(ARGV[1 + i]) then return i - 1 end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[1 + n + i])
end
return -1
"""


def nano(usd: Decimal) -> int:
    return int((usd * NANO).to_integral_value(ROUND_CEILING))


def _ttl(key: str) -> int:
    return 3 * 86400 if len(key.rsplit(":", 1)[1]) == 10 else 33 * 86400


class RedisCounters:
    def __init__(self, link: RedisLink, prefix: str):
        self._link = link
        self._r: Any = link.client
        self._prefix = prefix + ":budget:"
        self._reserve = self._r.register_script(_RESERVE)

    async def reserve(self, counters: tuple[Counter, ...], amount: Decimal) -> int:
        keys = [self._prefix + k.key for k in counters]
        args = [nano(amount), *(nano(k.limit) for k in counters), *(_ttl(k.key) for k in counters)]
        return int(await self._link.call("budget reservation", partial(self._reserve, keys=keys, args=args)))

    async def add(self, keys: list[str], amount: Decimal) -> None:
        delta = nano(amount) if amount >= 0 else -nano(-amount)

        async def run() -> None:
            async with self._r.pipeline(transaction=True) as p:
                for k in keys:
                    p.incrby(self._prefix + k, delta)
                await p.execute()

        await self._link.call("budget settlement", run)

    async def seed(self, values: dict[str, Decimal]) -> None:
        for k, v in values.items():
            await self._link.call(
                "budget seed", partial(self._r.set, self._prefix + k, nano(v), nx=True, ex=_ttl(k))
            )

    async def get(self, key: str) -> Decimal:
        v = await self._link.call("budget read", partial(self._r.get, self._prefix + key))
        return Decimal(int(v or 0)) / NANO

    async def aclose(self) -> None:
        await self._link.aclose()


class Budgets:
    def __init__(self, counters: Counters):
        self.counters = counters
        self.failures = FailureCount("budget counters")

    @staticmethod
    def plan(team: str | None, budget: BudgetSettings, now: float) -> tuple[Counter, ...]:
        day, month = periods(now)
        t = team or ANONYMOUS
        out = []
        if budget.usd_per_day is not None:
            out.append(Counter(f"{t}:{day}", budget.usd_per_day, day))
        if budget.usd_per_month is not None:
            out.append(Counter(f"{t}:{month}", budget.usd_per_month, month))
        return tuple(out)

    async def reserve(
        self, team: str | None, budget: BudgetSettings, amount: Decimal, now: float | None = None
    ) -> Reservation | None:
        """Reserve ``amount`` USD, or raise BudgetExceeded (Retry-After: when the period ends)."""
        now = time.time() if now is None else now
        counters = self.plan(team, budget, now)
        if not counters:
            return None
        try:
            full = await self.counters.reserve(counters, amount)
        except errors.CountersUnavailable as exc:
            self.failures.failed(budget.fail, exc, team)
            if budget.fail == "open":
                return None  # sent unbudgeted, counted and logged
            raise errors.BudgetUnavailable(
                f"Team `{team or ANONYMOUS}` has a hosted budget that cannot be checked right now "
                f"({exc.message}), so no hosted request is sent. Try again shortly.",
                headers=exc.headers,
            ) from exc
        if full >= 0:
            c = counters[full]
            what = "daily" if len(c.period) == 10 else "monthly"
            raise errors.BudgetExceeded(
                f"Team `{team or ANONYMOUS}` has reached its {what} hosted budget of ${c.limit} ({c.period}); "
                f"this request could cost up to ${amount.quantize(Decimal('0.000001'), ROUND_CEILING)}.",
                headers={"retry-after": str(seconds_left(c.period, now))},
            )
        return Reservation(counters, amount)

    async def settle(self, res: Reservation | None, actual: Decimal) -> None:
        """Replace the reservation with the real cost (once)."""
        if res is None or res.settled:
            return
        res.settled = True
        if actual != res.amount:
            try:
                await self.counters.add([c.key for c in res.counters], actual - res.amount)
            except errors.CountersUnavailable as exc:  # the reservation stays counted: conservative
                log.warning(
                    "budget settlement lost (reserved $%s, cost $%s stays reserved): %s",
                    res.amount,
                    actual,
                    exc.message,
                )

    async def spent(
        self, team: str | None, budget: BudgetSettings, now: float | None = None
    ) -> dict[str, Any]:
        """Committed money per configured period (for the admin and usage views)."""
        out: dict[str, Any] = {}
        for c in self.plan(team, budget, time.time() if now is None else now):
            out[c.period] = {"limit_usd": str(c.limit), "committed_usd": str(await self.counters.get(c.key))}
        return out


SEED_SQL = """SELECT COALESCE(team, '-') AS team, day, SUM(hosted_cost_pusd) AS pusd FROM usage_events
    WHERE route = 'hosted' AND hosted_cost_pusd IS NOT NULL AND day >= {p} GROUP BY COALESCE(team, '-'), day"""


def seed_values(rows: list[dict[str, Any]], now: float) -> dict[str, Decimal]:
    """Counter values for today and this month from ledger rows of SEED_SQL (pico-dollars)."""
    day, month = periods(now)
    out: dict[str, Decimal] = {}
    for r in rows:
        usd = Decimal(int(r["pusd"] or 0)) / Decimal(10) ** 12
        if r["day"] == day:
            out[f"{r['team']}:{day}"] = out.get(f"{r['team']}:{day}", Decimal(0)) + usd
        if str(r["day"]).startswith(month):
            out[f"{r['team']}:{month}"] = out.get(f"{r['team']}:{month}", Decimal(0)) + usd
    return out
