"""The proof state a report shows: the chain heads of its period, rows outside every chain, and
what the last ``nometer verify`` covering the period found.

Cheap by design (the dashboard asks every 30 s): a few grouped queries over the same rows the
report sums, one digest lookup per chain, and the recorded verification results. Nothing here
re-walks a chain; ``verify`` does (``gateway.meter.audit``), and records what it found.

States: ``verified`` (a clean verification covers the period and every head), ``partly_verified``
(clean, but rows were written after it), ``failed`` (the latest verification covering the period
found alterations), ``unverified`` (none covers it). Rows written outside the chain (before it
existed, or inserted) are counted apart with the amounts they carry: they are in the report's
totals but never proven.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.ledger.report import ReportQuery, usd

_UNSEALED = "({a}.chain_id IS NULL OR {a}.chain_seq IS NULL)"


def queries(q: ReportQuery, ph: str = "?") -> dict[str, tuple[str, list[Any]]]:
    """Two scans of the period (its requests; its cost rows with their requests) and the
    recorded verifications. Rows outside the chain group under a NULL chain id."""
    where, params = q.where(ph)
    out_e = _UNSEALED.format(a="e")
    out_s = f"({_UNSEALED.format(a='s')} OR {out_e})"
    return {
        "chain_events": (
            f"SELECT CASE WHEN {out_e} THEN NULL ELSE e.chain_id END AS chain_id, COUNT(*) AS requests, "
            "MIN(e.chain_seq) AS first_seq, MAX(e.chain_seq) AS last_seq, "
            "COALESCE(SUM(e.local_energy_pusd), 0) AS energy_pusd, "
            "COALESCE(SUM(e.local_hardware_pusd), 0) AS hardware_pusd, "
            "COALESCE(SUM(e.hosted_cost_pusd), 0) AS hosted_pusd "
            f"FROM usage_events e WHERE {where} GROUP BY CASE WHEN {out_e} THEN NULL ELSE e.chain_id END",
            params,
        ),
        "chain_shadows": (
            f"SELECT CASE WHEN {out_s} THEN NULL ELSE s.chain_id END AS chain_id, s.ref_model AS ref_model, "
            "COUNT(*) AS cost_rows, MAX(s.chain_seq) AS last_seq, COALESCE(SUM(s.cloud_pusd), 0) AS cloud_pusd, "
            "COALESCE(SUM(s.savings_pusd), 0) AS savings_pusd FROM shadow_costs s "
            f"JOIN usage_events e ON e.uid = s.event_uid WHERE {where} "
            f"GROUP BY CASE WHEN {out_s} THEN NULL ELSE s.chain_id END, s.ref_model",
            params,
        ),
        "verifications": ("SELECT * FROM ledger_verifications ORDER BY id DESC LIMIT 50", []),
    }


def heads_wanted(results: dict[str, list[dict[str, Any]]]) -> list[tuple[str, int]]:
    """(chain id, last seq) of each chain in the period: its last request or that request's cost rows."""
    last: dict[str, int] = {}
    for r in [*results["chain_events"], *results["chain_shadows"]]:
        if r["chain_id"] is not None:
            last[r["chain_id"]] = max(last.get(r["chain_id"], 0), int(r["last_seq"]))
    return sorted(last.items())


def digest_sql(ph: str = "?") -> str:
    """The stored digest at (chain id, seq), from whichever table holds that row."""
    a, b = ("?", "?") if ph == "?" else ("$1", "$2")
    return (
        f"SELECT chain_digest FROM usage_events WHERE chain_id = {a} AND chain_seq = {b} UNION ALL "
        f"SELECT chain_digest FROM shadow_costs WHERE chain_id = {a} AND chain_seq = {b}"
    )


def digest_params(ph: str, chain_id: str, seq: int) -> list[Any]:
    return [chain_id, seq, chain_id, seq] if ph == "?" else [chain_id, seq]


def summary(
    q: ReportQuery, results: dict[str, list[dict[str, Any]]], digests: dict[tuple[str, int], str | None]
) -> dict[str, Any]:
    """The ``integrity`` block of a report."""
    first = {
        r["chain_id"]: (int(r["first_seq"]), int(r["requests"]))
        for r in results["chain_events"]
        if r["chain_id"] is not None
    }
    heads = [
        {
            "chain_id": c,
            "first_seq": first.get(c, (seq, 0))[0],
            "head_seq": seq,
            "head_digest": digests.get((c, seq)),
            "requests": first.get(c, (seq, 0))[1],
        }
        for c, seq in heads_wanted(results)
    ]
    ue = next((r for r in results["chain_events"] if r["chain_id"] is None), {})
    unchained_requests = int(ue.get("requests") or 0)
    us = [r for r in results["chain_shadows"] if r["chain_id"] is None]
    energy, hardware = int(ue.get("energy_pusd") or 0), int(ue.get("hardware_pusd") or 0)
    return {
        "chain_heads": heads,
        "unchained": {
            "requests": unchained_requests,
            "cost_rows": sum(int(r["cost_rows"]) for r in us),
            "local_cost_usd": usd(energy + hardware),
            "hosted_spend_usd": usd(int(ue.get("hosted_pusd") or 0)),
            "cloud_cost_usd": {r["ref_model"]: usd(int(r["cloud_pusd"])) for r in us},
            "savings_usd": {r["ref_model"]: usd(int(r["savings_pusd"])) for r in us},
            "note": (
                "these rows are outside the hash chain (written before it existed, or inserted later): "
                "they are included in the totals above but not proven"
                if unchained_requests or us
                else None
            ),
        },
        **_verify_state(q, heads, results["verifications"]),
    }


def _verify_state(
    q: ReportQuery, heads: Sequence[dict[str, Any]], verifications: list[dict[str, Any]]
) -> dict[str, Any]:
    for v in verifications:  # newest first
        start, end = v["period_from"], v["period_to"]
        if start is not None and (q.since is None or float(start) > q.since):
            continue  # it began after this period did: it does not cover it
        if end is not None and q.since is not None and float(end) <= q.since:
            continue  # it ended before this period began
        verified = {h["chain_id"]: int(h["head_seq"]) for h in orjson.loads(v["heads"])}
        last = {
            "at": _iso(v["ts"]),
            "period": {"from": _iso(v["period_from"]), "to": _iso(v["period_to"])},
            "rows_checked": int(v["rows_checked"]),
            "receipts": int(v["receipts"]),
            "findings": int(v["findings"]),
        }
        if not v["clean"]:
            return {"verify_state": "failed", "last_verification": last}
        newer = [h["chain_id"] for h in heads if h["head_seq"] > verified.get(h["chain_id"], 0)]
        state = "partly_verified" if newer else "verified"
        return {"verify_state": state, "last_verification": last | {"chains_with_newer_rows": newer}}
    return {"verify_state": "unverified", "last_verification": None}


def _iso(ts: Any) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).isoformat(timespec="seconds")
