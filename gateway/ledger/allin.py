"""The report's all-in cost: each box's cost of ownership over the period, split by busy share.

``pricing.allin`` has the formulas; this module finds the boxes (``meter.box``, and each
``meter.backend_box`` entry as a box of its own), sums each box's busy seconds and busy energy
per report group from the ledger (one grouped query, never filtered by team: a team's share
needs the whole box's busy time), and splits each box's fixed part (hardware write-off for the
whole period plus idle power) across groups in integer pico-dollars. Groups plus the
unattributed remainder (a box nobody used) equal the boxes' total exactly.

Requests the meter did not price (a failed request still kept the box busy) have no stored
energy: their busy seconds are charged at the box's ``busy_watts``, so busy time is never
counted as idle nor left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from gateway.settings import BoxSettings, MeterSettings
from pricing.allin import AllInCost, OnTime, all_in_cost, parse_window, split_pusd, to_pusd
from pricing.local import BoxCost, energy_cost
from pricing.money import decimal_str

DEFAULT_BOX: Final = "default"
PARTS: Final = ("hardware", "idle_energy", "busy_energy")
PICO: Final = Decimal(10) ** 12


@dataclass(frozen=True)
class Box:
    name: str
    cost: BoxCost
    on: OnTime
    settings: BoxSettings


@dataclass(frozen=True)
class BoxPlan:
    """Which boxes there are and which backend runs on which (a backend without an entry of its
    own in ``meter.backend_box`` runs on the default box)."""

    boxes: Mapping[str, Box]
    default_used: bool

    def box_of(self, backend: str | None) -> str:
        return backend if backend is not None and backend in self.boxes else DEFAULT_BOX


def box_of_settings(name: str, b: BoxSettings) -> Box:
    cost = BoxCost(
        idle_watts=b.idle_watts,
        busy_watts=b.busy_watts,
        usd_per_kwh=b.usd_per_kwh,
        hardware_usd=b.hardware_usd,
        lifetime_years=b.lifetime_years,
    )
    on = OnTime(b.hours_on, tuple(parse_window(w) for w in b.schedule))
    return Box(name, cost, on, b)


def plan(meter: MeterSettings, backends: Iterable[str] = ()) -> BoxPlan:
    """The boxes of this configuration. The default box counts when no backend has a box of its
    own, or some configured backend has none (it runs there)."""
    boxes = {name: box_of_settings(name, b) for name, b in meter.backend_box.items() if name != DEFAULT_BOX}
    default_used = not boxes or any(b not in boxes for b in backends)
    boxes[DEFAULT_BOX] = box_of_settings(DEFAULT_BOX, meter.box)
    return BoxPlan(boxes, default_used)


def query(where: str, params: list[Any], group: str) -> tuple[str, list[Any]]:
    """Busy seconds and energy per (group, team, backend) of local requests; ``where`` must not
    restrict the team (see the module docstring)."""
    sql = f"""SELECT {group} AS grp, e.team AS team, e.backend AS backend,
        COALESCE(SUM(e.busy_s), 0) AS busy_s,
        COALESCE(SUM(CASE WHEN e.local_energy_pusd IS NULL THEN e.busy_s ELSE 0 END), 0) AS unmetered_busy_s,
        COALESCE(SUM(e.local_energy_pusd), 0) AS energy_pusd,
        MIN(e.ts) AS first_ts
        FROM usage_events e WHERE {where} AND e.route = 'local' GROUP BY grp, e.team, e.backend"""
    return sql, params


@dataclass(frozen=True)
class AllInResult:
    groups: dict[str, dict[str, int]]  # grp -> part -> pico-dollars
    totals: dict[str, int]
    unattributed: dict[str, int]
    boxes: list[dict[str, Any]]
    period: tuple[float, float]


def compute(
    rows: list[dict[str, Any]],
    box_plan: BoxPlan,
    *,
    since: float | None,
    until: float | None,
    now: float,
    team: str | None,
) -> AllInResult:
    """Each box's all-in cost over [since, min(until, now)) and every group's share of it. Without
    ``since`` the period starts at the first local request. With ``team``, only that team's
    groups are returned (and the totals are theirs), though the split used every team's time."""
    first = min((float(r["first_ts"]) for r in rows if r["first_ts"] is not None), default=now)
    lo = since if since is not None else first
    hi = min(until, now) if until is not None else now
    start, end = Decimal(repr(lo)), Decimal(repr(max(lo, hi)))
    groups: dict[str, dict[str, int]] = {}
    unattributed = dict.fromkeys(PARTS, 0)
    box_rows: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        box_rows.setdefault(box_plan.box_of(r["backend"]), []).append(r)
    out_boxes = []
    for name, box in box_plan.boxes.items():
        mine = box_rows.get(name, [])
        if name == DEFAULT_BOX and not box_plan.default_used and not mine:
            continue
        units: dict[tuple[str, str | None], tuple[int, int]] = {}  # (grp, team) -> (busy us, energy pusd)
        for r in mine:
            key = (str(r["grp"]), r["team"])
            busy_us = round(float(r["busy_s"]) * 1_000_000)
            energy = int(r["energy_pusd"]) + to_pusd(
                energy_cost(
                    box.cost.busy_watts * Decimal(repr(float(r["unmetered_busy_s"]))), box.cost.usd_per_kwh
                )
            )
            b0, e0 = units.get(key, (0, 0))
            units[key] = (b0 + busy_us, e0 + energy)
        busy_s = Decimal(sum(b for b, _ in units.values())) / 1_000_000
        cost = all_in_cost(
            box.cost,
            period_seconds=end - start,
            on_seconds=box.on.seconds(start, end),
            busy_seconds=busy_s,
            busy_energy_usd=Decimal(sum(e for _, e in units.values())) / PICO,
        )
        out_boxes.append(_box_json(box, cost))
        hardware = _split_by_team(to_pusd(cost.hardware_usd), units)
        idle = _split_by_team(to_pusd(cost.idle_energy_usd), units)
        if not hardware:  # nobody used the box: its fixed cost is charged to no group
            unattributed["hardware"] += to_pusd(cost.hardware_usd)
            unattributed["idle_energy"] += to_pusd(cost.idle_energy_usd)
        for k, (_, energy) in units.items():
            if team is not None and k[1] != team:
                continue
            g = groups.setdefault(k[0], dict.fromkeys(PARTS, 0))
            g["hardware"] += hardware.get(k, 0)
            g["idle_energy"] += idle.get(k, 0)
            g["busy_energy"] += energy
    totals = {p: sum(g[p] for g in groups.values()) for p in PARTS}
    if team is None:
        totals = {p: totals[p] + unattributed[p] for p in PARTS}
    return AllInResult(groups, totals, unattributed, out_boxes if team is None else [], (lo, max(lo, hi)))


def _split_by_team(
    total_pusd: int, units: Mapping[tuple[str, str | None], tuple[int, int]]
) -> dict[Any, int]:
    """The fixed cost split by busy share: first per team, then each team's share over its groups,
    so a team's total is the same whatever the report groups by (a team key's headline equals its
    by-team row to the pico-dollar). Empty when nobody used the box."""
    teams: dict[str | None, int] = {}
    for (_, team), (busy, _) in units.items():
        teams[team] = teams.get(team, 0) + busy
    out: dict[Any, int] = {}
    for team, share in split_pusd(total_pusd, teams).items():
        out.update(split_pusd(share, {k: b for k, (b, _) in units.items() if k[1] == team}))
    return out


def usd_parts(parts: Mapping[str, int]) -> dict[str, str]:
    """Pico-dollar parts as the report's decimal strings, with their total."""
    out = {p: decimal_str(Decimal(parts.get(p, 0)) / PICO) for p in PARTS}
    out["total"] = decimal_str(Decimal(sum(parts.get(p, 0) for p in PARTS)) / PICO)
    return out


def _box_json(box: Box, cost: AllInCost) -> dict[str, Any]:
    return {
        "box": box.name,
        "hardware_usd": decimal_str(box.cost.hardware_usd),
        "lifetime_years": decimal_str(box.cost.lifetime_years),
        "idle_watts": decimal_str(box.cost.idle_watts),
        "busy_watts": decimal_str(box.cost.busy_watts),
        "usd_per_kwh": decimal_str(box.cost.usd_per_kwh),
        "hours_on": decimal_str(box.on.hours_per_day) if not box.settings.schedule else None,
        "schedule": list(box.settings.schedule),
        "period_seconds": decimal_str(cost.period_seconds),
        "on_seconds": decimal_str(cost.on_seconds),
        "busy_seconds": decimal_str(cost.busy_seconds),
        "idle_seconds": decimal_str(cost.idle_seconds),
        "cost_usd": {
            "hardware": decimal_str(cost.hardware_usd),
            "idle_energy": decimal_str(cost.idle_energy_usd),
            "busy_energy": decimal_str(cost.busy_energy_usd),
            "total": decimal_str(cost.total_usd),
        },
    }


def without_team(q: Any) -> Any:
    """The same report query over every team (the split needs the whole box)."""
    return dataclasses.replace(q, team=None)
