"""All-in cost of a box over a period (pricing/allin.py): each term against a hand computation."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from pricing.allin import OnTime, all_in_cost, parse_window, split_pusd
from pricing.local import BoxCost

D = Decimal
BOX = BoxCost(
    idle_watts=D(40), busy_watts=D(200), usd_per_kwh=D("0.2"), hardware_usd=D(3600), lifetime_years=D(1)
)


def ts(text: str) -> Decimal:
    return D(int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()))


def test_all_in_adds_the_idle_write_off_and_idle_power() -> None:
    # two days, on 12 h a day, 450 s busy whose requests' energy cost $0.005
    cost = all_in_cost(
        BOX, period_seconds=D(172_800), on_seconds=D(86_400), busy_seconds=D(450), busy_energy_usd=D("0.005")
    )
    # hardware: 3600 / 31,557,600 x 172,800 = 19.712... ; idle: 40 W x 85,950 s x 0.2 / 3.6e6
    assert cost.hardware_usd == (D(3600) * 172_800 / D(31_557_600)).quantize(D("1E-12"))
    assert cost.idle_seconds == D(85_950)
    assert cost.idle_energy_usd == D("0.191")
    assert cost.total_usd == cost.hardware_usd + D("0.191") + D("0.005")
    assert cost.fixed_usd == cost.hardware_usd + D("0.191")


def test_on_time_is_at_least_the_busy_time_and_at_most_the_period() -> None:
    busy = all_in_cost(BOX, period_seconds=D(100), on_seconds=D(10), busy_seconds=D(60), busy_energy_usd=D(0))
    assert (busy.on_seconds, busy.idle_seconds, busy.idle_energy_usd) == (D(60), D(0), D(0))
    over = all_in_cost(BOX, period_seconds=D(100), on_seconds=D(500), busy_seconds=D(0), busy_energy_usd=D(0))
    assert over.on_seconds == D(100)


def test_hours_on_and_schedules() -> None:
    monday, next_monday = ts("2026-11-02T00:00:00"), ts("2026-11-09T00:00:00")  # 2026-11-02 is a Monday
    assert OnTime(D(12)).seconds(monday, next_monday) == D(7 * 12 * 3600)
    assert OnTime().seconds(monday, next_monday) == D(7 * 86_400)
    office = OnTime(windows=(parse_window("mon-fri 08:00-20:00"),))
    assert office.seconds(monday, next_monday) == D(5 * 12 * 3600)
    # a period that starts mid-window counts only its part; a window past midnight carries over
    assert office.seconds(ts("2026-11-02T19:00:00"), ts("2026-11-03T09:00:00")) == D(2 * 3600)
    night = OnTime(windows=(parse_window("22:00-06:00"),))
    assert night.seconds(monday, ts("2026-11-03T00:00:00")) == D(8 * 3600)  # 00-06 and 22-24
    weekend = OnTime(windows=(parse_window("sat-sun 10:00-14:00"),))
    assert weekend.seconds(monday, next_monday) == D(2 * 4 * 3600)


@pytest.mark.parametrize("bad", ["8-20", "mon-fry 08:00-20:00", "08:00-08:00", "25:00-26:00", "08:61-09:00"])
def test_bad_windows_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_window(bad)


def test_hours_on_is_a_day_at_most() -> None:
    with pytest.raises(ValueError):
        OnTime(D(25))


def test_split_sums_exactly_to_the_whole() -> None:
    shares = split_pusd(1_000, {"a": 1, "b": 1, "c": 1})
    assert shares == {"a": 334, "b": 333, "c": 333} and sum(shares.values()) == 1_000
    assert split_pusd(10, {"a": 2, "b": 1}) == {"a": 7, "b": 3}
    assert split_pusd(10, {"a": 0, "b": 0}) == {}
    assert split_pusd(7, {"a": 0, "b": 5}) == {"a": 0, "b": 7}
