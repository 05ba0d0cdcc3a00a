from __future__ import annotations

import datetime as dt
import hashlib
import os
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from pricing.tables import (
    SHIPPED_SNAPSHOT,
    ModelPrice,
    PriceTableError,
    PriceTier,
    is_table_id,
    load_table,
    parse_model_price,
    parse_table,
    shipped_table,
    threshold_label,
)
from tests.unit.pricing.builders import make_table

D = Decimal


def test_base_rates_parse_exactly_and_absent_stays_none() -> None:
    price = parse_model_price(
        {
            "input_cost_per_token": 2e-06,
            "output_cost_per_token": 8e-06,
            "cache_read_input_token_cost": 5e-07,
            "litellm_provider": "openai",
            "mode": "chat",
            "max_input_tokens": 1047576,
        }
    )
    assert price == ModelPrice(
        input=D("0.000002"), output=D("0.000008"), cache_read=D("0.0000005"), provider="openai", mode="chat"
    )
    assert price.cache_write is None
    assert price.reasoning is None


def test_explicit_zero_is_a_price_not_an_absence() -> None:
    price = parse_model_price(
        {"input_cost_per_token": 0, "output_cost_per_token": 0.0, "cache_read_input_token_cost": 0}
    )
    assert price.input == 0 and price.input is not None
    assert price.output == 0 and price.cache_read == 0
    assert price.cache_write is None


def test_tiers_parse_thresholds_and_ignore_other_service_tiers() -> None:
    price = parse_model_price(
        {
            "input_cost_per_token": 1.25e-06,
            "input_cost_per_token_above_200k_tokens": 2.5e-06,
            "output_cost_per_token_above_200k_tokens": 1.5e-05,
            "cache_read_input_token_cost_above_200k_tokens": 2.5e-07,
            "input_cost_per_token_above_128k_tokens": 2e-06,
            "input_cost_per_token_above_1m_tokens": 5e-06,
            "input_cost_per_token_above_5000_tokens": 1.5e-06,
            # Not the standard tier: priority/batch suffixes and the 1-hour cache write.
            "input_cost_per_token_above_200k_tokens_priority": 9e-06,
            "cache_creation_input_token_cost_above_1hr": 6e-06,
            "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
            "input_cost_per_audio_token_above_200k_tokens": 7e-06,
        }
    )
    assert price.tiers == (
        PriceTier(5_000, input=D("0.0000015")),
        PriceTier(128_000, input=D("0.000002")),
        PriceTier(200_000, input=D("0.0000025"), output=D("0.000015"), cache_read=D("0.00000025")),
        PriceTier(1_000_000, input=D("0.000005")),
    )
    assert price.cache_write is None


def test_tier_for_picks_the_highest_threshold_strictly_exceeded() -> None:
    low, high = PriceTier(128_000, input=D(2)), PriceTier(256_000, input=D(3))
    price = ModelPrice(input=D(1), output=D(1), tiers=(low, high))
    assert price.tier_for(128_000) is None
    assert price.tier_for(128_001) is low
    assert price.tier_for(256_000) is low
    assert price.tier_for(256_001) is high


@pytest.mark.parametrize(
    ("tokens", "label"), [(200_000, "200k"), (128_000, "128k"), (1_000_000, "1m"), (5_500, "5500")]
)
def test_threshold_label_matches_litellm_spelling(tokens: int, label: str) -> None:
    assert threshold_label(tokens) == label
    assert PriceTier(tokens).key("input") == f"input_cost_per_token_above_{label}_tokens"


def test_fields_is_the_inverse_of_parsing() -> None:
    entry = {
        "input_cost_per_token": D("0.00000125"),
        "output_cost_per_token": D("0.00001"),
        "cache_creation_input_token_cost": D(0),
        "output_cost_per_reasoning_token": D("0.00002"),
        "input_cost_per_token_above_200k_tokens": D("0.0000025"),
    }
    price = parse_model_price(entry)
    assert price.fields() == entry
    assert parse_model_price(price.fields()) == price


@pytest.mark.parametrize("bad", ["cheap", True, -1e-06, None, [1]])
def test_unreadable_table_values_count_as_absent(bad: object) -> None:
    price = parse_model_price({"input_cost_per_token": bad, "output_cost_per_token": 1e-06})
    assert price.input is None
    assert price.output == D("0.000001")


@pytest.mark.parametrize(
    "entry",
    [
        {"input_cost_per_token": "cheap"},
        {"input_cost_per_token": True},
        {"input_cost_per_token": -1},
        {"input_cost_per_token": None},
        {"input_cost_per_tokens": 1},  # a typo must not pass silently
        {"input_cost_per_token_above_200k_tokens_priority": 1},
    ],
)
def test_strict_parsing_rejects_what_lenient_parsing_ignores(entry: dict[str, object]) -> None:
    with pytest.raises(PriceTableError):
        parse_model_price(entry, strict=True)


def test_table_id_is_date_plus_sha256_of_the_exact_bytes() -> None:
    data = orjson.dumps({"sample_spec": {"input_cost_per_token": 0}, "m": {"input_cost_per_token": 1e-06}})
    table = parse_table(data, date=dt.date(2025, 3, 9), source="x")
    digest = hashlib.sha256(data).hexdigest()
    assert table.id == f"2025-03-09-{digest[:12]}"
    assert table.digest == digest
    assert table.date == dt.date(2025, 3, 9)
    assert is_table_id(table.id)
    assert list(table.models) == ["m"]  # sample_spec is documentation, not a model
    assert "sample_spec" not in table.models


def test_whitespace_changes_the_id_because_bytes_are_the_identity() -> None:
    a = parse_table(b'{"m": {"input_cost_per_token": 1}}', date=dt.date(2025, 1, 1), source="a")
    b = parse_table(b'{"m":{"input_cost_per_token":1}}', date=dt.date(2025, 1, 1), source="b")
    assert a.id != b.id
    assert a.models["m"] == b.models["m"]


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b'"x"'])
def test_malformed_tables_are_rejected(data: bytes) -> None:
    with pytest.raises(PriceTableError):
        parse_table(data, date=dt.date(2025, 1, 1), source="bad")


def test_load_table_dates_by_mtime_unless_told(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_bytes(b'{"m": {"input_cost_per_token": 1}}')
    stamp = dt.datetime(2024, 12, 31, 23, 30, tzinfo=dt.UTC).timestamp()
    os.utime(path, (stamp, stamp))
    assert load_table(path).id.startswith("2024-12-31-")
    assert load_table(path, date=dt.date(2025, 2, 2)).id.startswith("2025-02-02-")
    assert load_table(path).source == str(path)


def test_shipped_snapshot_loads_with_exact_prices() -> None:
    table = shipped_table()
    assert len(table.models) > 4000
    gpt = table.models["gpt-4.1"]
    assert (gpt.input, gpt.output, gpt.cache_read) == (D("0.000002"), D("0.000008"), D("0.0000005"))
    assert table.models["claude-sonnet-4-5"].cache_write == D("0.00000375")
    gemini = table.models["gemini/gemini-2.5-pro"]
    assert gemini.tiers[0].threshold == 200_000
    assert gemini.tiers[0].input == D("0.0000025")
    assert table.digest == hashlib.sha256(SHIPPED_SNAPSHOT.read_bytes()).hexdigest()


SPELLINGS = {
    "claude-sonnet-4-5": {"input_cost_per_token": 3e-06, "litellm_provider": "anthropic"},
    "gemini/gemini-2.5-pro": {"input_cost_per_token": 1.25e-06, "litellm_provider": "gemini"},
    "vertex_ai/gemini-2.5-pro": {"input_cost_per_token": 1.25e-06, "litellm_provider": "vertex_ai"},
    "openrouter/google/gemini-2.5-pro": {"input_cost_per_token": 1.3e-06, "litellm_provider": "openrouter"},
    "azure_ai/grok-4": {"input_cost_per_token": 3e-06, "litellm_provider": "azure_ai"},
    "vercel_ai_gateway/xai/grok-4": {"input_cost_per_token": 3e-06, "litellm_provider": "vercel_ai_gateway"},
    "gpt-4.1": {"input_cost_per_token": 2e-06, "litellm_provider": "openai"},
}


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),  # exact
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),  # provider stripped
        ("bedrock/anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),  # several segments stripped
        ("gemini-2.5-pro", "gemini/gemini-2.5-pro"),  # provider added, first party preferred
        ("google/gemini-2.5-pro", "gemini/gemini-2.5-pro"),  # stripped, then prefixed
        ("openrouter/google/gemini-2.5-pro", "openrouter/google/gemini-2.5-pro"),  # exact wins
        ("grok-4", "azure_ai/grok-4"),  # no first party: fewest segments
        ("GPT-4.1", "gpt-4.1"),  # case-insensitive fallback
        ("openai/GPT-4.1", "gpt-4.1"),
        ("gpt-9", None),
    ],
)
def test_lookup_spellings(name: str, key: str | None) -> None:
    table = make_table(SPELLINGS)
    assert table.resolve(name) == key
    assert table.lookup(name) == (None if key is None else table.models[key])


def test_lookup_spellings_on_the_shipped_snapshot() -> None:
    table = shipped_table()
    assert table.resolve("anthropic/claude-sonnet-4-5") == "claude-sonnet-4-5"
    assert table.resolve("openai/gpt-4.1") == "gpt-4.1"
    assert table.resolve("mistral-large-latest") == "mistral/mistral-large-latest"
    assert table.resolve("gemini/gemini-2.5-pro") == "gemini/gemini-2.5-pro"
