"""Savings reports: SQL does the sums (integer pico-dollars, exact), Python shapes the result.

The same two queries serve the CLI (sqlite3), the HTTP report and the dashboard, so every
surface shows the same numbers. ``build`` is a pure function of the query results.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.ledger import allin
from pricing.money import decimal_str

PICO = Decimal(10) ** 12
DIMENSIONS = {
    "team": "team",
    "key": "key_id",
    "model": "COALESCE(e.served_model, e.requested_model)",
    "tag": "tag",
    "day": "day",
    "backend": "backend",
    "cause": "fallback_cause",
}


@dataclass(frozen=True)
class ReportQuery:
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None  # exclusive
    by: str | None = None
    compare: tuple[str, ...] = ()  # reference models to show; empty = all recorded
    team: str | None = None  # restrict to one team (non-admin callers)
    # the instant a relative period (`--since 30d`) was resolved at: an open period ends there, so
    # the all-in cost of "the last 30 days" covers exactly 30 days however late it is computed
    now: float | None = None

    def where(self, ph: str) -> tuple[str, list[Any]]:
        """WHERE clause on usage_events aliased ``e``; ``ph`` is the placeholder ('?' or '$')."""
        clauses, params = ["1=1"], []
        for cond, value in (
            ("e.ts >= {}", self.since),
            ("e.ts < {}", self.until),
            ("e.team = {}", self.team),
        ):
            if value is not None:
                params.append(value)
                clauses.append(cond.format("?" if ph == "?" else f"${len(params)}"))
        return " AND ".join(clauses), params


def _group_expr(q: ReportQuery) -> str:
    if q.by is None:
        return "'all'"
    col = DIMENSIONS[q.by]
    return col if col.startswith("COALESCE") else f"e.{col}"


def queries(q: ReportQuery, ph: str = "?") -> dict[str, tuple[str, list[Any]]]:
    where, params = q.where(ph)
    all_teams = allin.without_team(q).where(ph)  # a team's all-in share needs the whole box's time
    g = _group_expr(q)
    events = f"""SELECT {g} AS grp, COUNT(*) AS requests,
        SUM(CASE WHEN e.route = 'local' THEN 1 ELSE 0 END) AS local_requests,
        SUM(CASE WHEN e.route = 'hosted' THEN 1 ELSE 0 END) AS hosted_requests,
        SUM(CASE WHEN e.outcome = 'ok' THEN 0 ELSE 1 END) AS failed_requests,
        COALESCE(SUM(e.prompt_tokens), 0) AS prompt_tokens,
        COALESCE(SUM(e.completion_tokens), 0) AS completion_tokens,
        COALESCE(SUM(e.cached_tokens), 0) AS cached_tokens,
        SUM(CASE WHEN e.usage_source = 'estimated' THEN 1 ELSE 0 END) AS estimated_usage,
        COALESCE(SUM(e.local_energy_pusd), 0) AS energy_pusd,
        COALESCE(SUM(e.local_hardware_pusd), 0) AS hardware_pusd,
        COALESCE(SUM(e.hosted_cost_pusd), 0) AS hosted_pusd,
        COALESCE(SUM(e.busy_s), 0) AS busy_s,
        MIN(e.ts) AS first_ts, MAX(e.ts) AS last_ts
        FROM usage_events e WHERE {where} GROUP BY grp"""
    shadows = f"""SELECT {g} AS grp, s.ref_model AS ref_model, COUNT(*) AS requests,
        SUM(s.input_tokens) AS input_tokens, SUM(s.output_tokens) AS output_tokens,
        SUM(s.cached_tokens) AS cached_tokens, SUM(s.reasoning_tokens) AS reasoning_tokens,
        MAX(s.estimated) AS estimated,
        SUM(CASE WHEN s.cloud_pusd IS NULL THEN 1 ELSE 0 END) AS unpriced,
        COALESCE(SUM(s.cloud_pusd), 0) AS cloud_pusd, COALESCE(SUM(s.savings_pusd), 0) AS savings_pusd,
        COALESCE(SUM(CASE WHEN s.cloud_pusd IS NULL THEN 0 ELSE e.local_energy_pusd END), 0) AS priced_energy_pusd
        FROM shadow_costs s JOIN usage_events e ON e.uid = s.event_uid WHERE {where}
        GROUP BY grp, s.ref_model"""
    hosted = f"""SELECT {g} AS grp, COALESCE(e.fallback_cause, 'unknown') AS cause, COUNT(*) AS requests,
        COALESCE(SUM(e.hosted_cost_pusd), 0) AS hosted_pusd
        FROM usage_events e WHERE {where} AND e.route = 'hosted' GROUP BY grp, cause"""
    meta = f"""SELECT DISTINCT e.price_table_id AS price_table_id, e.cache_mode AS cache_mode
        FROM usage_events e WHERE {where} AND e.price_table_id IS NOT NULL"""
    return {
        "events": (events, params),
        "shadows": (shadows, params),
        "hosted": (hosted, params),
        "meta": (meta, params),
        "allin": allin.query(all_teams[0], all_teams[1], g),
    }


def usd(pusd: int | Decimal | None) -> str:
    return decimal_str(Decimal(pusd or 0) / PICO)


def _priced(ref: dict[str, Any], col: str) -> str | None:
    return None if int(ref["unpriced"]) == int(ref["requests"]) else usd(int(ref[col]))


def _group(
    ev: dict[str, Any],
    refs: dict[str, dict[str, Any]],
    hosted: dict[str, dict[str, Any]],
    compare: Sequence[str],
) -> dict[str, Any]:
    energy, hardware = int(ev["energy_pusd"]), int(ev["hardware_pusd"])
    names = [m for m in compare if m in refs] if compare else sorted(refs)
    return {
        "requests": int(ev["requests"]),
        "local_requests": int(ev["local_requests"]),
        "hosted_requests": int(ev["hosted_requests"]),
        "failed_requests": int(ev["failed_requests"]),
        "local_tokens": {
            "prompt": int(ev["prompt_tokens"]),
            "completion": int(ev["completion_tokens"]),
            "cached": int(ev["cached_tokens"]),
            "estimated_requests": int(ev["estimated_usage"]),
        },
        "busy_seconds": round(float(ev["busy_s"]), 6),
        "cloud_tokens": {
            m: {
                "input": int(refs[m]["input_tokens"]),
                "output": int(refs[m]["output_tokens"]),
                "cached": int(refs[m]["cached_tokens"]),
                "reasoning": int(refs[m]["reasoning_tokens"]),
                "estimated": bool(refs[m]["estimated"]),
            }
            for m in names
        },
        # a reference no request could be priced against is "unpriced" (None), never $0
        "cloud_cost_usd": {m: _priced(refs[m], "cloud_pusd") for m in names},
        "unpriced_requests": {m: int(refs[m]["unpriced"]) for m in names},
        "local_cost_usd": {"energy": usd(energy), "hardware": usd(hardware), "total": usd(energy + hardware)},
        "hosted_spend_usd": usd(int(ev["hosted_pusd"])),
        "hosted_spend_by_cause": {
            c: {"requests": int(h["requests"]), "usd": usd(int(h["hosted_pusd"]))}
            for c, h in sorted(hosted.items())
        },
        "savings_usd": {m: _priced(refs[m], "savings_pusd") for m in names},
        # what the box earns toward its own price: avoided cloud spend minus energy (hardware excluded)
        "_recoup_pusd": {m: int(refs[m]["cloud_pusd"]) - int(refs[m]["priced_energy_pusd"]) for m in names},
        "_span": (ev["first_ts"], ev["last_ts"]),
    }


def build(
    q: ReportQuery,
    results: dict[str, list[dict[str, Any]]],
    *,
    hardware_usd: Decimal,
    primary: str | None,
    now: float,
    order: Sequence[str] = (),
    boxes: allin.BoxPlan | None = None,
) -> dict[str, Any]:
    """Shape query results into the report (groups, totals, payback).

    With ``boxes`` the report is on the all-in basis (``gateway.ledger.allin``): every group and
    the totals carry ``all_in_cost_usd`` and ``all_in_savings_usd`` beside the marginal
    ``local_cost_usd`` and ``savings_usd``, and the payback is all-in (the marginal one beside it).
    ``hardware_usd`` is then the used boxes' price. Without, the report is marginal only."""
    refs: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results["shadows"]:
        refs.setdefault(str(r["grp"]), {})[r["ref_model"]] = r
    hosted: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results["hosted"]:
        hosted.setdefault(str(r["grp"]), {})[r["cause"]] = r
    groups = []
    for ev in sorted(results["events"], key=lambda r: str(r["grp"])):
        key = str(ev["grp"]) if ev["grp"] is not None else None
        g = _group(ev, refs.get(str(ev["grp"]), {}), hosted.get(str(ev["grp"]), {}), q.compare)
        groups.append({"key": key, **g})
    totals = _sum_groups(groups)
    pref = list(q.compare or order)
    references = sorted(
        {m for g in groups for m in g["cloud_cost_usd"]},
        key=lambda m: (pref.index(m) if m in pref else len(pref), m),
    )
    primary = primary if primary in references else (references[0] if references else None)
    result = None
    if boxes is not None and "allin" in results:
        end = q.now if q.now is not None else now
        result = allin.compute(results["allin"], boxes, since=q.since, until=q.until, now=end, team=q.team)
        used = [b["box"] for b in result.boxes] or [allin.DEFAULT_BOX]
        hardware_usd = sum((boxes.boxes[b].cost.hardware_usd for b in used), Decimal(0))
        for g in groups:
            _with_all_in(g, result.groups.get(str(g["key"]), {}))
        _with_all_in(totals, result.totals)
    out: dict[str, Any] = {
        "object": "nometer.report",
        "period": {"from": _iso(q.since), "to": _iso(q.until)},
        "by": q.by,
        "team": q.team,
        "references": references,
        "price_tables": sorted({r["price_table_id"] for r in results["meta"]}),
        "cache_modes": sorted({r["cache_mode"] for r in results["meta"]}),
        "groups": [_public(g) for g in groups],
        "totals": _public(totals),
        "payback": _payback(totals, primary, hardware_usd, now),
    }
    if result is not None:
        out["basis"] = "all_in"
        out["basis_note"] = BASIS_NOTE
        out["all_in"] = {
            "period": {"from": _iso(result.period[0]), "to": _iso(result.period[1])},
            "boxes": result.boxes,
            "unattributed_usd": allin.usd_parts(result.unattributed) if q.team is None else None,
        }
        marginal = out["payback"]
        out["payback"] = _payback_all_in(totals, primary, hardware_usd, now, result.period)
        out["payback"]["marginal"] = {
            k: marginal[k] for k in ("net_per_day_usd", "days_to_payback", "payback_date")
        }
    else:
        out["basis"] = "marginal"
    return out


BASIS_NOTE = (
    "marginal: what one more request costs (its busy share of energy and hardware, as on its receipt); "
    "all-in: what owning the box cost in this period (hardware write-off for the whole period, idle "
    "power, busy energy), split by busy share"
)


def _with_all_in(g: dict[str, Any], parts: dict[str, int]) -> None:
    cost = allin.usd_parts(parts)
    g["all_in_cost_usd"] = cost
    total = Decimal(cost["total"])
    g["all_in_savings_usd"] = {
        m: None if v is None else decimal_str(Decimal(v) - total) for m, v in g["cloud_cost_usd"].items()
    }
    g["_all_in_energy_pusd"] = parts.get("idle_energy", 0) + parts.get("busy_energy", 0)


def _sum_groups(groups: list[dict[str, Any]]) -> dict[str, Any]:
    def add_money(key: str) -> dict[str, str | None]:
        acc: dict[str, Decimal | None] = {}
        for g in groups:
            for m, v in g[key].items():
                if v is not None:
                    acc[m] = (acc.get(m) or Decimal(0)) + Decimal(v)
                else:
                    acc.setdefault(m, None)
        return {m: None if v is None else decimal_str(v) for m, v in acc.items()}

    t: dict[str, Any] = {"key": "total"}
    for k in ("requests", "local_requests", "hosted_requests", "failed_requests"):
        t[k] = sum(g[k] for g in groups)
    t["local_tokens"] = {
        k: sum(g["local_tokens"][k] for g in groups)
        for k in ("prompt", "completion", "cached", "estimated_requests")
    }
    t["busy_seconds"] = round(sum(g["busy_seconds"] for g in groups), 6)
    ct: dict[str, dict[str, Any]] = {}
    for g in groups:
        for m, v in g["cloud_tokens"].items():
            cur = ct.setdefault(m, {"input": 0, "output": 0, "cached": 0, "reasoning": 0, "estimated": False})
            for k in ("input", "output", "cached", "reasoning"):
                cur[k] += v[k]
            cur["estimated"] = cur["estimated"] or v["estimated"]
    t["cloud_tokens"] = ct
    t["cloud_cost_usd"] = add_money("cloud_cost_usd")
    t["unpriced_requests"] = {m: sum(g["unpriced_requests"].get(m, 0) for g in groups) for m in ct}
    t["local_cost_usd"] = {"energy": "0", "hardware": "0", "total": "0", **add_money("local_cost_usd")}
    t["hosted_spend_usd"] = decimal_str(sum((Decimal(g["hosted_spend_usd"]) for g in groups), Decimal(0)))
    by_cause: dict[str, dict[str, Any]] = {}
    for g in groups:
        for c, v in g["hosted_spend_by_cause"].items():
            cur = by_cause.setdefault(c, {"requests": 0, "usd": Decimal(0)})
            cur["requests"] += v["requests"]
            cur["usd"] += Decimal(v["usd"])
    t["hosted_spend_by_cause"] = {
        c: {"requests": v["requests"], "usd": decimal_str(v["usd"])} for c, v in sorted(by_cause.items())
    }
    t["savings_usd"] = add_money("savings_usd")
    recoup: dict[str, int] = {}
    for g in groups:
        for m, v in g["_recoup_pusd"].items():
            recoup[m] = recoup.get(m, 0) + v
    t["_recoup_pusd"] = recoup
    spans = [g["_span"] for g in groups if g["_span"][0] is not None]
    t["_span"] = (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else (None, None)
    return t


def _payback(
    totals: dict[str, Any], primary: str | None, hardware_usd: Decimal, now: float
) -> dict[str, Any]:
    """When the box has paid for itself at the period's rate: hardware price / (avoided cloud
    spend - energy - hosted spend) per day."""
    first, last = totals["_span"]
    if primary is None or first is None:
        return _payback_at(primary, hardware_usd, now, None, 0)
    days = max((last - first) / 86400, 1 / 24)  # at least an hour, so a burst does not extrapolate wildly
    net = (Decimal(totals["_recoup_pusd"].get(primary, 0)) / PICO) - Decimal(totals["hosted_spend_usd"])
    return _payback_at(primary, hardware_usd, now, net, days)


def _payback_all_in(
    totals: dict[str, Any],
    primary: str | None,
    hardware_usd: Decimal,
    now: float,
    period: tuple[float, float],
) -> dict[str, Any]:
    """The all-in payback: hardware price / (avoided cloud spend - busy and idle energy - hosted
    spend) per day of the period (the write-off is what is being paid back, so it is not
    subtracted; idle power is)."""
    cloud = totals["cloud_cost_usd"].get(primary) if primary is not None else None
    if cloud is None or period[1] <= period[0]:
        return {"basis": "all_in", **_payback_at(primary, hardware_usd, now, None, 0)}
    days = max((period[1] - period[0]) / 86400, 1 / 24)
    net = Decimal(cloud) - Decimal(totals["_all_in_energy_pusd"]) / PICO - Decimal(totals["hosted_spend_usd"])
    return {"basis": "all_in", **_payback_at(primary, hardware_usd, now, net, days)}


def _payback_at(
    primary: str | None, hardware_usd: Decimal, now: float, net: Decimal | None, days: float
) -> dict[str, Any]:
    """The payback block for a net saving of ``net`` over ``days`` (``None``: nothing to say)."""
    out: dict[str, Any] = {
        "reference": primary,
        "hardware_usd": decimal_str(hardware_usd),
        "net_per_day_usd": None,
        "days_to_payback": None,
        "payback_date": None,
    }
    if net is None:
        return out
    per_day = net / Decimal(repr(days))
    out["net_per_day_usd"] = decimal_str(per_day.quantize(Decimal("0.000001")))
    if per_day > 0:
        d = hardware_usd / per_day
        out["days_to_payback"] = float(round(d, 1))
        if d < 365 * 100:
            out["payback_date"] = (
                (dt.datetime.fromtimestamp(now, dt.UTC) + dt.timedelta(days=float(d))).date().isoformat()
            )
    return out


def _public(g: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in g.items() if not k.startswith("_")}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")
