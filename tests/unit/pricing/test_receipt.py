from __future__ import annotations

import datetime as dt
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import orjson

from pricing.cost import CloudUsage
from pricing.local import BoxCost
from pricing.overrides import apply_overrides
from pricing.receipt import ReceiptInputs, ReferenceTokens, compute_receipt, receipt_digest
from pricing.store import PriceStore
from pricing.tables import load_table
from tests.unit.pricing.builders import make_table

D = Decimal
DOCUMENT = {
    "ref-a": {
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 8e-06,
        "cache_read_input_token_cost": 5e-07,
    }
}
BOX = BoxCost(idle_watts=D(30), busy_watts=D(200))
REFERENCES = (
    ReferenceTokens("openai/ref-a", "o200k_base", False, CloudUsage(1000, 200, cached_tokens=300)),
    ReferenceTokens("nobody-1", "o200k_base", True, CloudUsage(1000, 200)),
)


def _inputs(**changes: Any) -> ReceiptInputs:
    fields: dict[str, Any] = {
        "references": REFERENCES,
        "table": make_table(DOCUMENT),
        "cache_mode": "conservative",
        "busy_seconds": D(2),
        "box": BOX,
        "joules": None,
    }
    return ReceiptInputs(**(fields | changes))


def test_receipt_contents_by_hand() -> None:
    inputs = _inputs()
    receipt = compute_receipt(inputs)
    # Cloud: 700 x 0.000002 = 0.0014; 300 x 0.0000005 = 0.00015; 200 x 0.000008 = 0.0016 -> 0.00315.
    # Local (see test_local): 0.000018888889 + 0.000084480442 = 0.000103369331.
    assert receipt == {
        "version": 1,
        "price_table": inputs.table.id,
        "cache_mode": "conservative",
        "cloud_tier": "standard",
        "local": {
            "method": "estimated",
            "busy_seconds": "2",
            "joules": "400",
            "idle_watts": "30",
            "busy_watts": "200",
            "usd_per_kwh": "0.17",
            "hardware_usd": "3999",
            "lifetime_years": "3",
            "energy_usd": "0.000018888889",
            "hardware_share_usd": "0.000084480442",
            "total_usd": "0.000103369331",
        },
        "references": [
            {
                "model": "openai/ref-a",
                "price_key": "ref-a",
                "tokenizer": "o200k_base",
                "estimated": False,
                "priced_tier": "standard",
                "priced_tier_note": None,
                "hidden_reasoning": None,
                "tokens": {"input": 1000, "cached": 300, "cache_write": 0, "output": 200, "reasoning": 0},
                "priced": True,
                "unpriced_reason": None,
                "tier": None,
                "terms": [
                    {
                        "kind": "input",
                        "tokens": 700,
                        "rate": "0.000002",
                        "rate_field": "input_cost_per_token",
                        "usd": "0.0014",
                    },
                    {
                        "kind": "cache_read",
                        "tokens": 300,
                        "rate": "0.0000005",
                        "rate_field": "cache_read_input_token_cost",
                        "usd": "0.00015",
                    },
                    {
                        "kind": "cache_write",
                        "tokens": 0,
                        "rate": "0.000002",
                        "rate_field": "input_cost_per_token",
                        "usd": "0",
                    },
                    {
                        "kind": "output",
                        "tokens": 200,
                        "rate": "0.000008",
                        "rate_field": "output_cost_per_token",
                        "usd": "0.0016",
                    },
                    {
                        "kind": "reasoning",
                        "tokens": 0,
                        "rate": "0.000008",
                        "rate_field": "output_cost_per_token",
                        "usd": "0",
                    },
                ],
                "cloud_usd": "0.00315",
                "savings_usd": "0.003046630669",
            },
            {
                "model": "nobody-1",
                "price_key": None,
                "tokenizer": "o200k_base",
                "estimated": True,
                "priced_tier": "standard",
                "priced_tier_note": None,
                "hidden_reasoning": None,
                "tokens": {"input": 1000, "cached": 0, "cache_write": 0, "output": 200, "reasoning": 0},
                "priced": False,
                "unpriced_reason": "model not in price table",
                "tier": None,
                "terms": [],
                "cloud_usd": None,
                "savings_usd": None,
            },
        ],
    }


def test_measured_energy_and_tiers_show_in_the_receipt() -> None:
    table = make_table(
        {
            "long": {
                "input_cost_per_token": 1e-06,
                "output_cost_per_token": 1e-06,
                "input_cost_per_token_above_128k_tokens": 2e-06,
            }
        }
    )
    refs = (ReferenceTokens("long", "o200k_base*1.05", True, CloudUsage(200_000, 0)),)
    receipt = compute_receipt(_inputs(table=table, references=refs, joules=D(250), cache_mode="none"))
    assert receipt["local"]["method"] == "measured"
    assert receipt["local"]["joules"] == "250"
    ref = receipt["references"][0]
    assert ref["tier"] == "128k"
    assert ref["cloud_usd"] == "0.4"  # 200,000 x 0.000002
    assert ref["terms"][0]["rate_field"] == "input_cost_per_token_above_128k_tokens"


def test_local_cost_above_cloud_cost_gives_negative_savings() -> None:
    refs = (ReferenceTokens("ref-a", "o200k_base", False, CloudUsage(1, 1)),)
    receipt = compute_receipt(_inputs(references=refs))
    # 0.000002 + 0.000008 - 0.000103369331
    assert receipt["references"][0]["savings_usd"] == "-0.000093369331"


def test_receipts_hold_no_floats_and_are_deterministic() -> None:
    receipt = compute_receipt(_inputs())

    def walk(value: object) -> None:
        assert not isinstance(value, float)
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(receipt)
    with localcontext() as ctx:
        ctx.prec = 3
        again = compute_receipt(_inputs())
    assert again == receipt
    assert receipt_digest(again) == receipt_digest(receipt)
    assert orjson.loads(orjson.dumps(receipt)) == receipt


def test_verify_flow_recomputes_from_the_table_id(tmp_path: Path) -> None:
    """What `verify` does: fetch the recorded table id in a fresh store and recompute."""
    source = tmp_path / "prices.json"
    source.write_bytes(orjson.dumps(DOCUMENT))
    table = apply_overrides(
        load_table(source, date=dt.date(2025, 1, 1)), {"ref-a": {"output_cost_per_token": "7e-6"}}
    )
    PriceStore(tmp_path / "store").pin(table)
    recorded = compute_receipt(_inputs(table=table))

    fetched = PriceStore(tmp_path / "store").get(recorded["price_table"])
    recomputed = compute_receipt(_inputs(table=fetched))
    assert recomputed == recorded
    assert recomputed["references"][0]["terms"][3]["rate"] == "0.000007"
