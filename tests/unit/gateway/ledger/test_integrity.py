"""The report's proof block, from query results alone: heads, unchained rows, verify state."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.ledger import integrity
from gateway.ledger.report import ReportQuery


def results(verifications: list[dict[str, Any]], unchained: int = 0) -> dict[str, list[dict[str, Any]]]:
    money = {"energy_pusd": 5, "hardware_pusd": 7, "hosted_pusd": 0}
    events: list[dict[str, Any]] = [{"chain_id": "a", "requests": 3, "first_seq": 1, "last_seq": 9, **money}]
    shadows: list[dict[str, Any]] = [
        {"chain_id": "a", "ref_model": "gpt-4.1", "cost_rows": 3, "last_seq": 12}
    ]
    if unchained:
        events.append({"chain_id": None, "requests": unchained, "first_seq": None, "last_seq": None, **money})
        shadows.append(
            {"chain_id": None, "ref_model": "gpt-4.1", "cost_rows": 1, "last_seq": None}
            | {"cloud_pusd": 10**12, "savings_pusd": 10**11}
        )
    return {"chain_events": events, "chain_shadows": shadows, "verifications": verifications}


def run(since: float | None, head: int, clean: bool = True, start: float | None = None) -> dict[str, Any]:
    v = {
        "ts": 1_800_000_000.0,
        "period_from": start,
        "period_to": None,
        "clean": int(clean),
        "rows_checked": 12,
        "receipts": 3,
        "findings": 0 if clean else 2,
        "heads": orjson.dumps([{"chain_id": "a", "head_seq": head}]).decode(),
    }
    return integrity.summary(ReportQuery(since=since), results([v]), {("a", 12): "d" * 64})


def test_heads_include_the_last_cost_row() -> None:
    assert integrity.heads_wanted(results([])) == [("a", 12)]
    s = integrity.summary(ReportQuery(), results([]), {("a", 12): "d" * 64})
    assert s["chain_heads"] == [
        {"chain_id": "a", "first_seq": 1, "head_seq": 12, "head_digest": "d" * 64, "requests": 3}
    ]
    assert s["verify_state"] == "unverified" and s["unchained"]["note"] is None


def test_verify_states() -> None:
    assert run(None, 12)["verify_state"] == "verified"
    assert run(None, 20)["verify_state"] == "verified"
    partly = run(None, 10)
    assert partly["verify_state"] == "partly_verified"
    assert partly["last_verification"]["chains_with_newer_rows"] == ["a"]
    assert run(None, 12, clean=False)["verify_state"] == "failed"
    # a verification that began after the period did does not cover it
    assert run(1_000.0, 12, start=2_000.0)["verify_state"] == "unverified"
    assert run(3_000.0, 12, start=2_000.0)["verify_state"] == "verified"


def test_unchained_rows_are_counted_with_their_amounts() -> None:
    s = integrity.summary(ReportQuery(), results([], unchained=2), {})
    u = s["unchained"]
    assert (u["requests"], u["cost_rows"], u["local_cost_usd"]) == (2, 1, "0.000000000012")
    assert u["cloud_cost_usd"] == {"gpt-4.1": "1"} and u["savings_usd"] == {"gpt-4.1": "0.1"}
    assert "not proven" in u["note"]
