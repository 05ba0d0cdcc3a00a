"""What one request cost on the local box: energy plus hardware write-off.

    energy_usd   = joules / 3,600,000 x usd_per_kwh
    hardware_usd = hardware_usd / (lifetime_years x 31,557,600 s) x busy_seconds

Energy is the measured joules when a meter reports them (`method="measured"`); otherwise
`busy_watts x busy_seconds` (`method="estimated"`). `busy_watts` is the box's whole wall draw while
serving, so it already contains the idle baseline for those seconds.

Idle time is not charged to requests. Power drawn and hardware life spent while the box waits
between requests is a cost of keeping it on, not of any request; spreading it over requests would
make a request's cost depend on the traffic around it, which a receipt cannot reproduce. Reports
that want the full picture add `idle_cost` over a period and show it as a separate line.

Concurrency: vLLM batches requests, so wall-clock durations overlap. Callers should pass each
request's share of busy time (and of measured energy); passing full wall time for overlapping
requests charges the shared seconds more than once, which overstates local cost (understates
savings) and is therefore the safe error.

Defaults, each documented so a reader can replace it with their own:

* `usd_per_kwh = 0.17`: U.S. average residential retail electricity price in 2025, about 17 cents
  per kWh (U.S. EIA, Electric Power Monthly, average retail price by end-use sector).
* `hardware_usd = 3999`: NVIDIA DGX Spark (GB10, 128 GB, 4 TB) list price at its October 2025
  launch, USD.
* `lifetime_years = 3`: a short straight-line write-off. Cloud providers depreciate servers over
  5-6 years; choosing 3 charges more hardware per second, again understating savings.
* A year is 365.25 days (31,557,600 s).

`idle_watts` and `busy_watts` have no defaults: they differ per box and should be measured.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal, localcontext
from typing import Final, Literal

from pricing.money import CONTEXT, as_decimal, quantize_usd

JOULES_PER_KWH: Final = Decimal(3_600_000)
SECONDS_PER_YEAR: Final = Decimal(31_557_600)
DEFAULT_USD_PER_KWH: Final = Decimal("0.17")
DEFAULT_HARDWARE_USD: Final = Decimal(3999)
DEFAULT_LIFETIME_YEARS: Final = Decimal(3)

LocalMethod = Literal["measured", "estimated"]


@dataclass(frozen=True, slots=True)
class BoxCost:
    """The local box's cost parameters (see the module docstring for defaults and their sources)."""

    idle_watts: Decimal
    busy_watts: Decimal
    usd_per_kwh: Decimal = DEFAULT_USD_PER_KWH
    hardware_usd: Decimal = DEFAULT_HARDWARE_USD
    lifetime_years: Decimal = DEFAULT_LIFETIME_YEARS

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = as_decimal(getattr(self, spec.name))
            if value < 0:
                raise ValueError(f"{spec.name} must not be negative: {value}")
            object.__setattr__(self, spec.name, value)
        if self.lifetime_years == 0:
            raise ValueError("lifetime_years must be positive")


@dataclass(frozen=True, slots=True)
class LocalCost:
    """One request's local cost; `joules` is the energy charged (measured or estimated)."""

    energy_usd: Decimal
    hardware_usd: Decimal
    total: Decimal
    joules: Decimal
    method: LocalMethod


def energy_cost(joules: Decimal, usd_per_kwh: Decimal) -> Decimal:
    """Dollars for `joules` of electricity, rounded to a pico-dollar."""
    with localcontext(CONTEXT):
        return quantize_usd(_non_negative("joules", joules) * as_decimal(usd_per_kwh) / JOULES_PER_KWH)


def hardware_cost(busy_seconds: Decimal, box: BoxCost) -> Decimal:
    """The purchase price written off over the lifetime, for `busy_seconds` of it."""
    with localcontext(CONTEXT):
        per_second = box.hardware_usd / (box.lifetime_years * SECONDS_PER_YEAR)
        return quantize_usd(per_second * _non_negative("busy_seconds", busy_seconds))


def estimated_joules(busy_seconds: Decimal, box: BoxCost) -> Decimal:
    """`busy_watts x busy_seconds`: the energy estimate when nothing measured it."""
    with localcontext(CONTEXT):
        return box.busy_watts * _non_negative("busy_seconds", busy_seconds)


def request_local_cost(busy_seconds: Decimal, joules: Decimal | None, box: BoxCost) -> LocalCost:
    """Energy (measured `joules`, else estimated) plus hardware share for one request."""
    method: LocalMethod = "estimated" if joules is None else "measured"
    charged = estimated_joules(busy_seconds, box) if joules is None else _non_negative("joules", joules)
    energy = energy_cost(charged, box.usd_per_kwh)
    hardware = hardware_cost(busy_seconds, box)
    with localcontext(CONTEXT):
        total = energy + hardware
    return LocalCost(energy, hardware, total, charged, method)


def idle_cost(idle_seconds: Decimal, box: BoxCost) -> Decimal:
    """Energy dollars of `idle_seconds` at `idle_watts`: a per-period line, never per request."""
    with localcontext(CONTEXT):
        return energy_cost(box.idle_watts * _non_negative("idle_seconds", idle_seconds), box.usd_per_kwh)


def _non_negative(name: str, value: Decimal) -> Decimal:
    number = as_decimal(value)
    if number < 0:
        raise ValueError(f"{name} must not be negative: {number}")
    return number
