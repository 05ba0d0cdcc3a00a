"""The report's all-in split (gateway/ledger/allin.py) on hand-made query rows: boxes per backend,
a team's share computed over every team's busy time, groups adding up to the boxes exactly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.ledger import allin
from gateway.settings import MeterSettings
from pricing.allin import to_pusd

DAY = 86_400.0
METER = MeterSettings.model_validate(
    {
        "box": {
            "idle_watts": 40,
            "busy_watts": 200,
            "usd_per_kwh": "0.2",
            "hardware_usd": 3600,
            "lifetime_years": 1,
        },
        "backend_box": {
            "big": {"idle_watts": 100, "busy_watts": 600, "hardware_usd": 36000, "lifetime_years": 1}
        },
    }
)


def row(grp: str, team: str, backend: str, busy: float, energy: int) -> dict[str, Any]:
    return {"grp": grp, "team": team, "backend": backend, "busy_s": busy, "unmetered_busy_s": 0.0,
            "energy_pusd": energy, "first_ts": 0.0}  # fmt: skip


ROWS = [row("a", "a", "small", 300.0, 10), row("b", "b", "small", 100.0, 20), row("a", "a", "big", 50.0, 30)]


def test_every_box_is_split_and_the_groups_add_up() -> None:
    plan = allin.plan(METER, ["small", "big"])
    out = allin.compute(ROWS, plan, since=0.0, until=DAY, now=2 * DAY, team=None)
    assert [b["box"] for b in out.boxes] == ["big", "default"]
    for part in allin.PARTS:
        assert sum(g[part] for g in out.groups.values()) == out.totals[part]
    boxes = sum(to_pusd(Decimal(b["cost_usd"]["total"])) for b in out.boxes)
    assert sum(out.totals.values()) == boxes
    # team b used only the default box, a quarter of its busy time: a quarter of its fixed part
    default = next(b for b in out.boxes if b["box"] == "default")
    fixed = to_pusd(Decimal(default["cost_usd"]["hardware"]))
    assert out.groups["b"]["hardware"] == fixed // 4
    assert out.groups["b"]["busy_energy"] == 20


def test_a_team_sees_its_share_of_the_whole_box() -> None:
    plan = allin.plan(METER, ["small", "big"])
    whole = allin.compute(ROWS, plan, since=0.0, until=DAY, now=2 * DAY, team=None)
    mine = allin.compute(ROWS, plan, since=0.0, until=DAY, now=2 * DAY, team="b")
    assert mine.groups == {"b": whole.groups["b"]} and mine.totals == whole.groups["b"]
    assert mine.boxes == []  # a team key sees no box details


def test_an_open_period_ends_now_and_an_unused_box_is_unattributed() -> None:
    plan = allin.plan(METER, ["small"])  # "big" has a box but no traffic
    out = allin.compute([], plan, since=0.0, until=None, now=DAY, team=None)
    assert out.period == (0.0, DAY) and out.groups == {}
    assert sum(out.unattributed.values()) == sum(out.totals.values()) > 0


def test_a_teams_total_does_not_depend_on_the_grouping() -> None:
    """Three teams, busy times that do not divide the fixed cost evenly, grouped by team and by
    day: each team's total is the same to the pico-dollar (the dashboard's headline for a team key
    comes from one grouping, its table from another)."""
    plan = allin.plan(METER, ["small"])
    by_day = [
        row(day, team, "small", busy, 0)
        for day, team, busy in [
            ("d0", "a", 0.758385), ("d1", "a", 4.252425), ("d2", "a", 3.842496),
            ("d0", "b", 1.349838), ("d1", "b", 2.527632), ("d2", "c", 2.302506),
        ]
    ]  # fmt: skip
    by_team: dict[str, dict[str, Any]] = {}
    for r in by_day:
        t = by_team.setdefault(r["team"], {**r, "grp": r["team"], "busy_s": 0.0})
        t["busy_s"] += r["busy_s"]
    for team in ("a", "b", "c"):
        days = allin.compute(by_day, plan, since=0.0, until=DAY, now=DAY, team=team)
        teams = allin.compute(list(by_team.values()), plan, since=0.0, until=DAY, now=DAY, team=team)
        assert days.totals == teams.totals == teams.groups[team], team
    whole = allin.compute(by_day, plan, since=0.0, until=DAY, now=DAY, team=None)
    for part in allin.PARTS:  # (the unused "big" box is nobody's)
        assert sum(g[part] for g in whole.groups.values()) + whole.unattributed[part] == whole.totals[part]
