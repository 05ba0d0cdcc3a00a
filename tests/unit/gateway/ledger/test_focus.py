"""FOCUS 1.2 rows from query results: billed cost adds up, cloud-equivalent is an x_ column."""

from __future__ import annotations

import csv
from typing import Any

import orjson

from gateway.ledger import focus

KEY = {"day": "2026-11-30", "team": "research", "tag": "run-1", "backend": "box-0", "model": "qwen3"}


def results() -> dict[str, list[dict[str, Any]]]:
    local = {**KEY, "route": "local", "provider": None}
    hosted = {**KEY, "route": "hosted", "provider": "openai", "backend": None, "model": "gpt-4.1-mini"}
    ev = {"requests": 2, "prompt_tokens": 100, "completion_tokens": 20, "busy_s": 0.5, "unchained": 0}
    return {
        "events": [
            {**local, **ev, "energy_pusd": 3 * 10**9, "hardware_pusd": 7 * 10**9, "hosted_pusd": 0},
            {**hosted, **ev, "energy_pusd": 0, "hardware_pusd": 0, "hosted_pusd": 5 * 10**10},
        ],
        "shadows": [
            {
                **local,
                "ref_model": "gpt-4.1",
                "n": 2,
                "unpriced": 0,
                "cloud_pusd": 4 * 10**10,
                "savings_pusd": 3 * 10**10,
            },
            {**local, "ref_model": "acme", "n": 2, "unpriced": 2, "cloud_pusd": 0, "savings_pusd": 0},
        ],
    }


def test_rows_follow_focus_and_add_up() -> None:
    rows = focus.rows(results(), "gpt-4.1")
    assert [r["ProviderName"] for r in rows] == ["openai", focus.SELF_HOSTED]
    hosted, local = rows
    assert local["BilledCost"] == local["EffectiveCost"] == local["ListCost"] == "0.01"
    assert hosted["BilledCost"] == "0.05" and hosted["x_CloudEquivalentCost"] is None  # it went to the cloud
    assert (local["x_CloudEquivalentCost"], local["x_Savings"]) == ("0.04", "0.03")
    assert orjson.loads(local["x_CloudEquivalentCosts"]) == {
        "acme": None,
        "gpt-4.1": "0.04",
    }  # unpriced, never 0
    assert (
        local["ChargePeriodStart"] == "2026-11-30T00:00:00Z"
        and local["ChargePeriodEnd"] == "2026-12-01T00:00:00Z"
    )
    assert (
        local["BillingPeriodStart"] == "2026-11-01T00:00:00Z"
        and local["BillingPeriodEnd"] == "2026-12-01T00:00:00Z"
    )
    assert (local["PricingQuantity"], local["PricingUnit"]) == ("0.500000", "Seconds")
    assert (local["ConsumedQuantity"], local["ConsumedUnit"]) == ("120", "Tokens")
    assert orjson.loads(local["Tags"]) == {"nometer/team": "research", "nometer/tag": "run-1"}
    assert local["SubAccountId"] == "research" and local["SkuId"] == "qwen3"
    text = focus.to_csv(rows)
    parsed = list(csv.DictReader(text.splitlines()))
    assert list(parsed[0]) == list(focus.COLUMNS) and len(focus.FOCUS_COLUMNS) == 57
    assert parsed[0]["CommitmentDiscountId"] == ""


def test_an_unpriced_reference_is_empty_not_zero() -> None:
    (_, local) = focus.rows(results(), "acme")
    assert local["x_CloudEquivalentCost"] is None and local["x_UnpricedRequests"] == 2
    assert focus.rows(results(), "not-a-reference")[1]["x_CloudReference"] is None
