from __future__ import annotations

from decimal import Decimal

import pytest

from pricing.local import (
    BoxCost,
    LocalCost,
    energy_cost,
    estimated_joules,
    hardware_cost,
    idle_cost,
    request_local_cost,
)

D = Decimal
BOX = BoxCost(idle_watts=D(30), busy_watts=D(200))
# Default write-off: 3999 USD over 3 x 31,557,600 s = 94,672,800 s.


def test_defaults_are_the_documented_ones() -> None:
    assert (BOX.usd_per_kwh, BOX.hardware_usd, BOX.lifetime_years) == (D("0.17"), D(3999), D(3))


def test_energy_cost() -> None:
    assert energy_cost(D(3_600_000), D("0.17")) == D("0.17")  # exactly one kWh
    # 100 J x 0.17 / 3,600,000 = 0.0000047222... -> a pico-dollar
    assert energy_cost(D(100), D("0.17")) == D("0.000004722222")
    assert energy_cost(D(0), D("0.17")) == 0


def test_hardware_cost() -> None:
    assert hardware_cost(D(94_672_800), BOX) == D(3999)  # the whole lifetime
    assert hardware_cost(D(31_557_600), BOX) == D(1333)  # one year of three
    # 3999 / 94,672,800 = 0.0000422402208...
    assert hardware_cost(D(1), BOX) == D("0.000042240221")


def test_estimated_request_cost_uses_busy_watts() -> None:
    cost = request_local_cost(D(2), None, BOX)
    # 200 W x 2 s = 400 J; 400 x 0.17 / 3.6e6 = 0.0000188888... ; 2 x 3999 / 94,672,800 = 0.0000844804416...
    assert cost == LocalCost(
        energy_usd=D("0.000018888889"),
        hardware_usd=D("0.000084480442"),
        total=D("0.000103369331"),
        joules=D(400),
        method="estimated",
    )
    assert estimated_joules(D(2), BOX) == D(400)


def test_measured_energy_replaces_the_estimate() -> None:
    cost = request_local_cost(D("1.5"), D(250), BOX)
    # 250 x 0.17 / 3.6e6 = 0.0000118055...; 1.5 x 3999 / 94,672,800 = 0.0000633603312...
    assert cost == LocalCost(
        D("0.000011805556"), D("0.000063360332"), D("0.000075165888"), D(250), "measured"
    )


def test_idle_draw_is_a_period_cost_not_a_request_cost() -> None:
    # 30 W x 3600 s = 108,000 J = 0.03 kWh; x 0.17 = 0.0051.
    assert idle_cost(D(3600), BOX) == D("0.0051")
    busier_idle = BoxCost(idle_watts=D(90), busy_watts=D(200))
    assert request_local_cost(D(2), None, busier_idle) == request_local_cost(D(2), None, BOX)


def test_box_values_are_coerced_to_decimal() -> None:
    box = BoxCost(idle_watts=30, busy_watts=200.5, usd_per_kwh="0.30")  # type: ignore[arg-type]
    assert (box.idle_watts, box.busy_watts, box.usd_per_kwh) == (D(30), D("200.5"), D("0.30"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"idle_watts": D(-1), "busy_watts": D(1)},
        {"idle_watts": D(1), "busy_watts": D(1), "lifetime_years": D(0)},
        {"idle_watts": D(1), "busy_watts": D(1), "usd_per_kwh": D("-0.1")},
    ],
)
def test_bad_box_values_are_rejected(kwargs: dict[str, Decimal]) -> None:
    with pytest.raises(ValueError, match="must"):
        BoxCost(**kwargs)


def test_negative_durations_and_energies_are_rejected() -> None:
    with pytest.raises(ValueError, match="busy_seconds"):
        request_local_cost(D(-1), None, BOX)
    with pytest.raises(ValueError, match="joules"):
        request_local_cost(D(1), D(-5), BOX)
