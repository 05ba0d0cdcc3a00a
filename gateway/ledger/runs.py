"""Agent runs: the totals of every request that carried one ``X-Nometer-Run`` id.

An agent (Claude Code, Codex, a LangChain loop) tags each of its requests with a run id, and
optionally a session id for one conversation within the run. A run's totals are plain SQL sums
over its ledger rows, in integer pico-dollars, so they equal the sum of the run's receipts
exactly (each receipt's amounts are stored as those same integers): requests, failed requests
(any outcome but ``ok``: upstream errors, timeouts, clients gone, refusals), local tokens, the
local cost (the requests' share of energy and hardware write-off), hosted spend, and per
reference cloud model what the cloud would have billed and the savings. Requests that were not
metered (failed before a model worked, ``count_tokens``) count as requests with no cost.

The same queries serve ``GET /v1/nometer/runs/{id}`` (live: the recorder writes every ~100 ms)
and ``nometer runs``.
"""

from __future__ import annotations

from typing import Any

from gateway.ledger.report import usd

_EVENTS = """SELECT e.run_id AS run_id, COUNT(*) AS requests,
    SUM(CASE WHEN e.outcome = 'ok' THEN 0 ELSE 1 END) AS failed_requests,
    COUNT(DISTINCT e.session_id) AS sessions,
    COALESCE(SUM(e.prompt_tokens), 0) AS prompt_tokens,
    COALESCE(SUM(e.completion_tokens), 0) AS completion_tokens,
    COALESCE(SUM(e.cached_tokens), 0) AS cached_tokens,
    SUM(CASE WHEN e.usage_source = 'estimated' THEN 1 ELSE 0 END) AS estimated_usage,
    SUM(CASE WHEN e.price_table_id IS NULL THEN 0 ELSE 1 END) AS metered_requests,
    COALESCE(SUM(e.local_energy_pusd), 0) AS energy_pusd,
    COALESCE(SUM(e.local_hardware_pusd), 0) AS hardware_pusd,
    COALESCE(SUM(e.hosted_cost_pusd), 0) AS hosted_pusd,
    MIN(e.ts) AS first_ts, MAX(e.ts) AS last_ts
    FROM usage_events e WHERE {where} GROUP BY e.run_id"""
_SHADOWS = """SELECT e.run_id AS run_id, s.ref_model AS ref_model, MIN(s.ref_index) AS ref_index,
    COUNT(*) AS requests, SUM(CASE WHEN s.cloud_pusd IS NULL THEN 1 ELSE 0 END) AS unpriced,
    SUM(s.input_tokens) AS input_tokens, SUM(s.cached_tokens) AS cached_tokens,
    SUM(s.cache_write_tokens) AS cache_write_tokens, SUM(s.output_tokens) AS output_tokens,
    COALESCE(SUM(s.cloud_pusd), 0) AS cloud_pusd, COALESCE(SUM(s.savings_pusd), 0) AS savings_pusd
    FROM shadow_costs s JOIN usage_events e ON e.uid = s.event_uid WHERE {where}
    GROUP BY e.run_id, s.ref_model"""


def queries(
    ph: str, *, run_id: str | None = None, since: float | None = None, team: str | None = None
) -> tuple[tuple[str, str], list[Any]]:
    """(events SQL, shadows SQL) and their parameters; ``ph`` is '?' (SQLite) or '$' (PostgreSQL)."""
    clauses, params = ["e.run_id IS NOT NULL"], []
    for cond, value in (("e.run_id = {}", run_id), ("e.ts >= {}", since), ("e.team = {}", team)):
        if value is not None:
            params.append(value)
            clauses.append(cond.format("?" if ph == "?" else f"${len(params)}"))
    where = " AND ".join(clauses)
    return (_EVENTS.format(where=where), _SHADOWS.format(where=where)), params


def build(events: list[dict[str, Any]], shadows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One totals object per run, most recent activity first (pure: the two queries' rows in)."""
    refs: dict[str, list[dict[str, Any]]] = {}
    for s in sorted(shadows, key=lambda s: (int(s["ref_index"]), s["ref_model"])):
        refs.setdefault(s["run_id"], []).append(s)
    out = []
    for ev in sorted(events, key=lambda e: -float(e["last_ts"])):
        local = int(ev["energy_pusd"]) + int(ev["hardware_pusd"])
        references = [
            {
                "model": s["ref_model"],
                "requests": int(s["requests"]),
                "unpriced_requests": int(s["unpriced"]),
                "tokens": {
                    "input": int(s["input_tokens"]),
                    "cached": int(s["cached_tokens"]),
                    "cache_write": int(s["cache_write_tokens"]),
                    "output": int(s["output_tokens"]),
                },
                "cloud_usd": None if int(s["unpriced"]) == int(s["requests"]) else usd(int(s["cloud_pusd"])),
                "savings_usd": None
                if int(s["unpriced"]) == int(s["requests"])
                else usd(int(s["savings_pusd"])),
            }
            for s in refs.get(ev["run_id"], [])
        ]
        out.append(
            {
                "object": "nometer.run",
                "run_id": ev["run_id"],
                "first_ts": ev["first_ts"],
                "last_ts": ev["last_ts"],
                "requests": int(ev["requests"]),
                "failed_requests": int(ev["failed_requests"]),
                "metered_requests": int(ev["metered_requests"]),
                "sessions": int(ev["sessions"]),
                "tokens": {
                    "prompt": int(ev["prompt_tokens"]),
                    "completion": int(ev["completion_tokens"]),
                    "total": int(ev["prompt_tokens"]) + int(ev["completion_tokens"]),
                    "cached": int(ev["cached_tokens"]),
                    "estimated_requests": int(ev["estimated_usage"]),
                },
                "local": {
                    "energy_usd": usd(int(ev["energy_pusd"])),
                    "hardware_share_usd": usd(int(ev["hardware_pusd"])),
                    "total_usd": usd(local),
                },
                "hosted_usd": usd(int(ev["hosted_pusd"])),
                "references": references,
            }
        )
    return out
