"""`nometer report`'s table fits a 100-column terminal; --wide shows every reference model."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.ledger.report import ReportQuery, build
from gateway.ledger.report_format import TABLE_WIDTH, to_table

REFS = ("gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-pro", "gpt-4o")
PICO = 10**12


def _event(grp: str, n: int) -> dict[str, Any]:
    return {
        "grp": grp,
        "requests": n,
        "local_requests": n,
        "hosted_requests": 0,
        "failed_requests": 0,
        "prompt_tokens": 123_456 * n,
        "completion_tokens": 7_890 * n,
        "cached_tokens": 0,
        "estimated_usage": 0,
        "energy_pusd": 31_000_000 * n,
        "hardware_pusd": 1_250_000_000 * n,
        "hosted_pusd": 0,
        "busy_s": 1.5 * n,
        "first_ts": 1_700_000_000.0,
        "last_ts": 1_700_086_400.0,
    }


def _shadow(grp: str, ref: str, n: int) -> dict[str, Any]:
    cloud = 1_234_567_890_123 * n  # $1.23 each
    return {
        "grp": grp,
        "ref_model": ref,
        "requests": n,
        "input_tokens": 123_456 * n,
        "output_tokens": 7_890 * n,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "estimated": ref.startswith("claude"),
        "unpriced": 0,
        "cloud_pusd": cloud,
        "savings_pusd": cloud - 1_281_000_000 * n,
        "priced_energy_pusd": 31_000_000 * n,
    }


def report(groups: dict[str, int], by: str | None = "tag") -> dict[str, Any]:
    results = {
        "events": [_event(g, n) for g, n in groups.items()],
        "shadows": [_shadow(g, r, n) for g, n in groups.items() for r in REFS],
        "hosted": [],
        "meta": [{"price_table_id": "2026-11-01-0123456789ab", "cache_mode": "conservative"}],
    }
    q = ReportQuery(by=by)
    return build(q, results, hardware_usd=Decimal(3999), primary="gpt-4.1", now=1_700_086_400.0, order=REFS)


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_the_default_table_fits_100_columns_and_names_what_it_left_out() -> None:
    data = report({"agent-run-42": 12_000, "nightly-summaries": 3_400, "eval-mmlu-v3": 800})
    wide = to_table(data, width=None)
    assert widest(wide) > TABLE_WIDTH  # four references side by side do not fit
    table = to_table(data)
    assert widest(table) <= TABLE_WIDTH == 100
    head = table.splitlines()[0]
    assert "gpt-4.1 cost" in head and "savings vs gpt-4.1" in head  # the headline reference, always
    assert "gpt-4o cost" not in head and "gpt-4o cost" in wide.splitlines()[0]
    assert "--wide" in table and "gpt-4o would have cost $" in table  # the others, in total
    for name in ("agent-run-42", "nightly-summaries", "eval-mmlu-v3", "total"):
        assert any(line.startswith(name) for line in table.splitlines())
    assert "payback:" in table and "payback:" in wide


def test_the_headline_reference_comes_first_even_when_it_sorts_later() -> None:
    data = report({"a": 1})
    data["payback"]["reference"] = "gpt-4o"
    head = to_table(data).splitlines()[0]
    assert head.index("gpt-4o cost") < head.index("savings vs gpt-4o")
    assert head.split("  ")[-1] == "hosted"
    assert "gpt-4o cost" in head.split("savings vs")[0]


def test_long_group_names_are_clipped_to_fit() -> None:
    name = "x" * 150
    table = to_table(report({name: 2}))
    assert widest(table) <= TABLE_WIDTH
    assert name not in table and "\u2026" in table
    assert name in to_table(report({name: 2}), width=None)


def test_totals_only_report_fits_too() -> None:
    table = to_table(report({"all": 5}, by=None))
    assert widest(table) <= TABLE_WIDTH and table.splitlines()[2].startswith("total")


def test_the_proof_state_is_said_once_and_wrapped_to_fit() -> None:
    data = report({"a": 1})
    data["integrity"] = {
        "verify_state": "unverified",
        "last_verification": None,
        "chain_heads": [
            {
                "chain_id": f"20261201T120718Z-acd7c405dd4{i}",
                "head_seq": 4,
                "head_digest": "ea246bcd7ca86a41" * 4,
            }
            for i in range(3)
        ],
        "unchained": {"requests": 0, "cost_rows": 0, "local_cost_usd": "0", "savings_usd": {}},
    }
    table = to_table(data)
    assert table.count("ledger proof: not verified") == 1 and widest(table) <= TABLE_WIDTH
    assert to_table(data, width=None).count("ledger proof:") == 1
