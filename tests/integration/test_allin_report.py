"""The report's all-in cost equals a hand computation for a box with known hours (real SQLite
ledger, the real `nometer report` command; the rows are written by hand so the busy seconds and
energy are known exactly)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger.sqlite import migrate_sqlite

D = Decimal
PICO = D(10) ** 12
FROM, TO = "2026-11-02T00:00:00", "2026-11-04T00:00:00"  # two days; 2026-11-02 is a Monday
BOX = {"idle_watts": 40, "busy_watts": 200, "usd_per_kwh": "0.2", "hardware_usd": 3600, "lifetime_years": 1}


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def _ledger(path: Path, rows: list[dict[str, Any]]) -> None:
    c = sqlite3.connect(path, isolation_level=None)
    migrate_sqlite(c)
    for i, r in enumerate(rows):
        row = {
            "request_id": f"r{i}",
            "uid": f"u{i}",
            "ts": _ts("2026-11-02T10:00:00") + i,
            "day": "2026-11-02",
            "endpoint": "/v1/chat/completions",
            "route": "local",
            "outcome": "ok",
            "status": 200,
            "stream": 0,
            "usage_source": "upstream",
            "price_table_id": "2026-11-28-000000000000",
            "cache_mode": "conservative",
            "local_hardware_pusd": 1,
            **r,
        }
        cols = ", ".join(row)
        c.execute(
            f"INSERT INTO usage_events ({cols}) VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
    c.close()


def _report(tmp_path: Path, db: Path, box: dict[str, Any], *extra: str) -> dict[str, Any]:
    config = tmp_path / "nometer.yaml"
    config.write_text(json.dumps({"meter": {"box": box}}))  # JSON is YAML
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "report",
            "--db",
            str(db),
            "--config",
            str(config),
            "--from",
            FROM,
            "--to",
            TO,
            "--format",
            "json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def _hand(
    box: dict[str, Any], on_seconds: int, busy: dict[str, D], energy_pusd: dict[str, int]
) -> dict[str, Any]:
    """All-in by hand: the formulas of docs/meter.md, with the numbers of this test."""
    q = D("1E-12")
    period = D(172_800)
    hardware = (D(box["hardware_usd"]) / (D(box["lifetime_years"]) * 31_557_600) * period).quantize(q)
    all_busy = sum(busy.values(), D(0))
    idle = (D(box["idle_watts"]) * (on_seconds - all_busy) * D(box["usd_per_kwh"]) / 3_600_000).quantize(q)
    out: dict[str, Any] = {"hardware": hardware, "idle": idle, "teams": {}}
    fixed_h, fixed_i = int(hardware * PICO), int(idle * PICO)
    share_h = {t: fixed_h * int(b * 10**6) // int(all_busy * 10**6) for t, b in busy.items()}
    share_i = {t: fixed_i * int(b * 10**6) // int(all_busy * 10**6) for t, b in busy.items()}
    # the remainder pico-dollar(s) go to the largest remainders: here team a (2/3) then b
    for shares, whole in ((share_h, fixed_h), (share_i, fixed_i)):
        left = whole - sum(shares.values())
        for t in sorted(busy, key=lambda t: -(whole * int(busy[t] * 10**6) % int(all_busy * 10**6)))[:left]:
            shares[t] += 1
    for t in busy:
        out["teams"][t] = {
            "hardware": D(share_h[t]) / PICO,
            "idle_energy": D(share_i[t]) / PICO,
            "busy_energy": D(energy_pusd[t]) / PICO,
        }
    return out


@pytest.mark.parametrize(
    ("box_hours", "on_seconds"),
    [
        ({"hours_on": 12}, 86_400),
        ({"schedule": ["mon-fri 08:00-20:00", "tue 22:00-23:00"]}, 2 * 12 * 3600 + 3600),
    ],
)
def test_all_in_equals_the_hand_computation(
    tmp_path: Path, box_hours: dict[str, Any], on_seconds: int
) -> None:
    db = tmp_path / "ledger.db"
    _ledger(
        db,
        [
            {"team": "a", "busy_s": 200.0, "local_energy_pusd": 2_000_000_000},
            {"team": "a", "busy_s": 100.0, "local_energy_pusd": 1_000_000_000},
            {"team": "b", "busy_s": 100.0, "local_energy_pusd": 700_000_000},
            # not metered (a failed request kept the box busy): its energy at busy_watts
            {
                "team": "b",
                "busy_s": 50.0,
                "local_energy_pusd": None,
                "price_table_id": None,
                "outcome": "failed",
            },
        ],
    )
    box = {**BOX, **box_hours}
    unmetered = int((D(200) * 50 * D("0.2") / 3_600_000).quantize(D("1E-12")) * PICO)
    want = _hand(
        box, on_seconds, {"a": D(300), "b": D(150)}, {"a": 3_000_000_000, "b": 700_000_000 + unmetered}
    )
    rep = _report(tmp_path, db, box, "--by", "team")
    assert rep["basis"] == "all_in"
    (b,) = rep["all_in"]["boxes"]
    assert D(b["on_seconds"]) == on_seconds and D(b["busy_seconds"]) == 450
    assert D(b["idle_seconds"]) == on_seconds - 450
    assert D(b["cost_usd"]["hardware"]) == want["hardware"]
    assert D(b["cost_usd"]["idle_energy"]) == want["idle"]
    groups = {g["key"]: g for g in rep["groups"]}
    for team, parts in want["teams"].items():
        got = groups[team]["all_in_cost_usd"]
        assert {k: D(got[k]) for k in parts} == parts
        assert D(got["total"]) == sum(parts.values(), D(0))
        # the marginal figure is beside it, unchanged: the receipts' sum
        assert groups[team]["local_cost_usd"]["energy"] is not None
    total = rep["totals"]["all_in_cost_usd"]
    assert D(total["hardware"]) == want["hardware"] and D(total["idle_energy"]) == want["idle"]
    assert D(total["total"]) == D(b["cost_usd"]["total"])
    assert D(total["total"]) == sum((D(g["all_in_cost_usd"]["total"]) for g in rep["groups"]), D(0))
    assert rep["payback"]["basis"] == "all_in" and "marginal" in rep["payback"]
    # the CSV carries the same all-in figures, after the marginal columns
    config = tmp_path / "nometer.yaml"
    args = ["report", "--db", str(db), "--config", str(config), "--from", FROM, "--to", TO, "--by", "team"]
    csv_out = subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    head, *rows = (line.split(",") for line in csv_out)
    total = dict(zip(head, rows[-1], strict=True))
    assert total["group"] == "total" and D(total["all_in_cost_usd"]) == D(
        rep["totals"]["all_in_cost_usd"]["total"]
    )
    assert head.index("all_in_cost_usd") > head.index("local_cost_usd")
    table = subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "all-in cost" in table and "marginal (what one more request costs" in table


def test_an_unused_box_still_costs_its_write_off(tmp_path: Path) -> None:
    """A period without a request: the box's fixed cost is in the totals, charged to no group."""
    db = tmp_path / "ledger.db"
    _ledger(db, [])
    rep = _report(tmp_path, db, {**BOX, "hours_on": 24})
    hardware = (D(3600) / D(31_557_600) * 172_800).quantize(D("1E-12"))
    idle = (D(40) * 172_800 * D("0.2") / 3_600_000).quantize(D("1E-12"))
    assert D(rep["totals"]["all_in_cost_usd"]["total"]) == hardware + idle
    assert D(rep["all_in"]["unattributed_usd"]["total"]) == hardware + idle
    assert rep["groups"] == [] or all(D(g["all_in_cost_usd"]["total"]) == 0 for g in rep["groups"])
