"""All-in cost: what owning a box cost over a period, beside the marginal cost of its requests.

A receipt charges one request its *marginal* cost (pricing.local): the energy of its busy share
plus the hardware write-off of its busy share. That is what one more request costs. It leaves
two costs of owning the box to nobody: the write-off of the hours it sat idle (or off), and the
power it drew while idle. The all-in cost of one box over a period adds them back:

    hardware = hardware_usd / (lifetime_years x 31,557,600 s) x period_seconds
    idle     = idle_watts x idle_seconds / 3,600,000 x usd_per_kwh
    busy     = the busy energy of its requests (their receipts' energy, measured or estimated)
    all-in   = hardware + idle + busy

    idle_seconds = on_seconds - busy_seconds (never below 0)
    on_seconds   = the period's seconds in the box's schedule (`hours_on` a day, or windows),
                   at least busy_seconds (a box that served was on) and at most period_seconds

The write-off runs by the calendar, on or off: straight-line depreciation does not stop when the
box is switched off. A box that was off draws nothing, so only its on-time can be idle.

Splitting it: each group (team, model, ...) pays its own busy energy plus the box's fixed part
(hardware + idle) in proportion to its busy seconds. The fixed part is split in integer
pico-dollars by largest remainder (ties to the first group), so the groups add up to the box's
fixed part exactly. With no busy seconds at all the fixed part is unattributed: the report shows
it in the totals, charged to no group.

Everything here is pure, in the fixed `CONTEXT`, amounts quantized to a pico-dollar.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Final, TypeVar

from pricing.local import SECONDS_PER_YEAR, BoxCost, energy_cost
from pricing.money import CONTEXT, as_decimal, quantize_usd

SECONDS_PER_DAY: Final = 86_400
PICO: Final = Decimal(10) ** 12
_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW: Final = re.compile(
    r"\s*(?:(?P<d1>[a-z]{3})(?:-(?P<d2>[a-z]{3}))?\s+)?(?P<h1>\d{1,2}):(?P<m1>\d{2})\s*-\s*(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*"
)

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Window:
    """A daily on-window in UTC: `start`..`end` seconds after midnight on the given weekdays
    (0 = Monday). `end <= start` means it runs past midnight into the next day."""

    days: frozenset[int]
    start: int
    end: int


def parse_window(text: str) -> Window:
    """`"08:00-20:00"` (every day), `"mon-fri 08:00-20:00"`, `"sat 10:00-14:00"`, `"22:00-06:00"`."""
    m = _WINDOW.fullmatch(text.lower())
    if m is None:
        raise ValueError(f"schedule window {text!r}: expected '[mon[-fri]] HH:MM-HH:MM' (UTC)")
    if m["d1"] is None:
        days = frozenset(range(7))
    else:
        if m["d1"] not in _DAYS or (m["d2"] is not None and m["d2"] not in _DAYS):
            raise ValueError(f"schedule window {text!r}: days are {', '.join(_DAYS)}")
        a = _DAYS.index(m["d1"])
        b = a if m["d2"] is None else _DAYS.index(m["d2"])
        days = frozenset((a + i) % 7 for i in range((b - a) % 7 + 1))
    start, end = _clock(text, m["h1"], m["m1"]), _clock(text, m["h2"], m["m2"])
    if start == end:
        raise ValueError(f"schedule window {text!r} is empty")
    return Window(days, start, end)


def _clock(text: str, hours: str, minutes: str) -> int:
    h, mi = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= mi < 60) or (h == 24 and mi):
        raise ValueError(f"schedule window {text!r}: {hours}:{minutes} is not a time of day")
    return h * 3600 + mi * 60


@dataclass(frozen=True, slots=True)
class OnTime:
    """When the box is on: `hours_per_day` (0-24, spread evenly) or, when given, `windows`."""

    hours_per_day: Decimal = Decimal(24)
    windows: tuple[Window, ...] = ()

    def __post_init__(self) -> None:
        hours = as_decimal(self.hours_per_day)
        if not 0 <= hours <= 24:
            raise ValueError(f"hours_on must be between 0 and 24: {hours}")
        object.__setattr__(self, "hours_per_day", hours)

    def seconds(self, start: Decimal, end: Decimal) -> Decimal:
        """Seconds of [start, end) (unix seconds) the box was on."""
        if end <= start:
            return Decimal(0)
        with localcontext(CONTEXT):
            if not self.windows:
                return (end - start) * self.hours_per_day / 24
            total = Decimal(0)
            first = int(start // SECONDS_PER_DAY) - 1  # a window from the day before may run past midnight
            for day in range(first, int(end // SECONDS_PER_DAY) + 1):
                midnight = Decimal(day * SECONDS_PER_DAY)
                weekday = dt.date.fromordinal(719163 + day).weekday()  # day 0 = 1970-01-01
                for w in self.windows:
                    if weekday not in w.days:
                        continue
                    lo = midnight + w.start
                    hi = midnight + (w.end if w.end > w.start else w.end + SECONDS_PER_DAY)
                    total += max(Decimal(0), min(hi, end) - max(lo, start))
            return min(total, end - start)  # overlapping windows count once at most per period


@dataclass(frozen=True, slots=True)
class AllInCost:
    """One box's all-in cost over a period (see the module docstring for each term)."""

    period_seconds: Decimal
    on_seconds: Decimal
    busy_seconds: Decimal
    idle_seconds: Decimal
    hardware_usd: Decimal
    idle_energy_usd: Decimal
    busy_energy_usd: Decimal
    total_usd: Decimal

    @property
    def fixed_usd(self) -> Decimal:
        """The part split by busy share: hardware write-off plus idle power."""
        with localcontext(CONTEXT):
            return self.hardware_usd + self.idle_energy_usd


def all_in_cost(
    box: BoxCost,
    *,
    period_seconds: Decimal,
    on_seconds: Decimal,
    busy_seconds: Decimal,
    busy_energy_usd: Decimal,
) -> AllInCost:
    """The all-in cost of `box` over a period of `period_seconds`, `on_seconds` of it switched on,
    `busy_seconds` of it serving, whose requests' busy energy cost `busy_energy_usd`."""
    period, busy = _non_negative(period_seconds), _non_negative(busy_seconds)
    with localcontext(CONTEXT):
        on = min(period, max(_non_negative(on_seconds), busy))
        idle = max(Decimal(0), on - busy)
        hardware = quantize_usd(box.hardware_usd / (box.lifetime_years * SECONDS_PER_YEAR) * period)
        idle_usd = energy_cost(box.idle_watts * idle, box.usd_per_kwh)
        busy_usd = _non_negative(busy_energy_usd)
        return AllInCost(period, on, busy, idle, hardware, idle_usd, busy_usd, hardware + idle_usd + busy_usd)


def split_pusd(total_pusd: int, weights: Mapping[K, int]) -> dict[K, int]:
    """`total_pusd` split in proportion to non-negative integer `weights`, summing exactly to it
    (largest remainder; ties to the earlier key). All weights 0: nothing is split (empty dict)."""
    whole = sum(weights.values())
    if any(w < 0 for w in weights.values()):
        raise ValueError("weights must not be negative")
    if whole == 0:
        return {}
    shares = {k: total_pusd * w // whole for k, w in weights.items()}
    left = total_pusd - sum(shares.values())
    order = sorted(weights, key=lambda k: -(total_pusd * weights[k] % whole))  # stable: ties keep order
    for k in order[:left]:
        shares[k] += 1
    return shares


def to_pusd(usd: Decimal) -> int:
    """A quantized dollar amount as integer pico-dollars (exact)."""
    return int((usd * PICO).to_integral_value(context=CONTEXT))


def _non_negative(value: Decimal) -> Decimal:
    number = as_decimal(value)
    if number < 0:
        raise ValueError(f"must not be negative: {number}")
    return number
