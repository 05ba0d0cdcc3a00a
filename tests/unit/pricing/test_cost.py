"""Every branch of the cloud-cost formula, with totals worked out by hand in the comments."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest

from pricing.cost import CloudCost, CloudUsage, CostTerm, cloud_cost
from pricing.tables import ModelPrice, PriceTier, shipped_table

D = Decimal

FULL = ModelPrice(
    input=D("0.000002"),
    output=D("0.000008"),
    cache_read=D("0.0000005"),
    cache_write=D("0.0000025"),
    reasoning=D("0.00001"),
)
USAGE = CloudUsage(
    input_tokens=1000, output_tokens=200, cached_tokens=300, cache_write_tokens=100, reasoning_tokens=50
)


def _usd(cost: CloudCost) -> dict[str, Decimal]:
    return {term.kind: term.usd for term in cost.terms}


def _fields(cost: CloudCost) -> dict[str, str]:
    return {term.kind: term.rate_field for term in cost.terms}


def test_conservative_bills_cache_reads_and_writes_at_their_rates() -> None:
    cost = cloud_cost(FULL, USAGE, "conservative")
    # 600 uncached x 0.000002 = 0.0012; 300 reads x 0.0000005 = 0.00015; 100 writes x 0.0000025 =
    # 0.00025; 150 visible output x 0.000008 = 0.0012; 50 reasoning x 0.00001 = 0.0005.
    assert cost.terms == (
        CostTerm("input", 600, D("0.000002"), "input_cost_per_token", D("0.0012")),
        CostTerm("cache_read", 300, D("0.0000005"), "cache_read_input_token_cost", D("0.00015")),
        CostTerm("cache_write", 100, D("0.0000025"), "cache_creation_input_token_cost", D("0.00025")),
        CostTerm("output", 150, D("0.000008"), "output_cost_per_token", D("0.0012")),
        CostTerm("reasoning", 50, D("0.00001"), "output_cost_per_reasoning_token", D("0.0005")),
    )
    assert cost.total == D("0.0033")
    assert cost.priced and cost.tier is None and cost.cache_mode == "conservative"
    assert cost.unpriced_reason is None


def test_cache_mode_none_bills_every_prompt_token_as_input() -> None:
    cost = cloud_cost(FULL, USAGE, "none")
    # 1000 x 0.000002 = 0.002; output 0.0012; reasoning 0.0005.
    assert _usd(cost) == {
        "input": D("0.002"),
        "cache_read": D(0),
        "cache_write": D(0),
        "output": D("0.0012"),
        "reasoning": D("0.0005"),
    }
    assert [term.tokens for term in cost.terms] == [1000, 0, 0, 150, 50]
    assert cost.total == D("0.0037")


def test_absent_rates_fall_back_to_input_and_output() -> None:
    price = ModelPrice(input=D("0.000003"), output=D("0.000015"))
    cost = cloud_cost(price, USAGE, "conservative")
    # 600 x 3e-6 = 0.0018; reads 300 x 3e-6 = 0.0009; writes 100 x 3e-6 = 0.0003;
    # output 150 x 15e-6 = 0.00225; reasoning 50 x 15e-6 = 0.00075.
    assert _usd(cost) == {
        "input": D("0.0018"),
        "cache_read": D("0.0009"),
        "cache_write": D("0.0003"),
        "output": D("0.00225"),
        "reasoning": D("0.00075"),
    }
    assert cost.total == D("0.006")
    assert _fields(cost) == {
        "input": "input_cost_per_token",
        "cache_read": "input_cost_per_token",
        "cache_write": "input_cost_per_token",
        "output": "output_cost_per_token",
        "reasoning": "output_cost_per_token",
    }
    # With no cache or reasoning discounts the two cache modes agree.
    assert cloud_cost(price, USAGE, "none").total == cost.total


def test_explicit_zero_rates_stay_zero() -> None:
    price = ModelPrice(input=D("0.000002"), output=D("0.000008"), cache_read=D(0), reasoning=D(0))
    cost = cloud_cost(price, USAGE, "conservative")
    # 600 x 2e-6 = 0.0012; reads free; writes fall back: 100 x 2e-6 = 0.0002; 150 x 8e-6 = 0.0012.
    assert _usd(cost) == {
        "input": D("0.0012"),
        "cache_read": D(0),
        "cache_write": D("0.0002"),
        "output": D("0.0012"),
        "reasoning": D(0),
    }
    assert cost.total == D("0.0026")
    assert _fields(cost)["cache_read"] == "cache_read_input_token_cost"


def test_a_free_model_is_priced_at_zero() -> None:
    cost = cloud_cost(ModelPrice(input=D(0), output=D(0)), USAGE, "none")
    assert cost.priced is True
    assert cost.total == 0


@pytest.mark.parametrize(
    ("price", "reason"),
    [
        (ModelPrice(output=D("0.000008")), "no input_cost_per_token"),
        (ModelPrice(input=D("0.000002")), "no output_cost_per_token"),
        (ModelPrice(cache_read=D("0.0000005")), "no input_cost_per_token or output_cost_per_token"),
        (None, "model not in price table"),
    ],
)
def test_missing_input_or_output_price_is_unpriced_never_zero(price: ModelPrice | None, reason: str) -> None:
    cost = cloud_cost(price, USAGE, "conservative")
    assert cost == CloudCost(False, None, (), None, "conservative", reason)


GEMINI_LIKE = ModelPrice(
    input=D("0.00000125"),
    output=D("0.00001"),
    cache_read=D("0.000000125"),
    tiers=(PriceTier(200_000, input=D("0.0000025"), output=D("0.000015"), cache_read=D("0.00000025")),),
)


def test_at_the_threshold_base_rates_apply() -> None:
    cost = cloud_cost(GEMINI_LIKE, CloudUsage(input_tokens=200_000, output_tokens=1_000), "none")
    # 200,000 x 0.00000125 = 0.25; 1,000 x 0.00001 = 0.01.
    assert cost.total == D("0.26")
    assert cost.tier is None


def test_above_the_threshold_the_tier_prices_the_whole_request() -> None:
    usage = CloudUsage(input_tokens=200_001, output_tokens=1_000, cached_tokens=100_000)
    cost = cloud_cost(GEMINI_LIKE, usage, "conservative")
    # 100,001 x 0.0000025 = 0.2500025; 100,000 x 0.00000025 = 0.025; 1,000 x 0.000015 = 0.015.
    assert cost.total == D("0.2900025")
    assert cost.tier == 200_000
    assert _fields(cost) == {
        "input": "input_cost_per_token_above_200k_tokens",
        "cache_read": "cache_read_input_token_cost_above_200k_tokens",
        "cache_write": "input_cost_per_token_above_200k_tokens",  # absent everywhere: tier input
        "output": "output_cost_per_token_above_200k_tokens",
        "reasoning": "output_cost_per_token_above_200k_tokens",  # absent everywhere: tier output
    }


def test_highest_applicable_tier_wins_and_unlisted_kinds_keep_base_rates() -> None:
    price = ModelPrice(
        input=D("0.000001"),
        output=D("0.000002"),
        cache_read=D("0.0000001"),
        tiers=(
            PriceTier(128_000, input=D("0.000003"), output=D("0.000004")),
            PriceTier(256_000, input=D("0.000005"), output=D("0.000006")),
        ),
    )
    usage = CloudUsage(input_tokens=300_000, output_tokens=10, cached_tokens=100_000)
    cost = cloud_cost(price, usage, "conservative")
    # 200,000 x 0.000005 = 1; reads keep the base cache rate: 100,000 x 0.0000001 = 0.01;
    # 10 x 0.000006 = 0.00006.
    assert cost.total == D("1.01006")
    assert cost.tier == 256_000
    assert _fields(cost)["cache_read"] == "cache_read_input_token_cost"
    middle = cloud_cost(price, CloudUsage(input_tokens=200_000, output_tokens=10), "none")
    # 200,000 x 0.000003 = 0.6; 10 x 0.000004 = 0.00004.
    assert middle.total == D("0.60004")
    assert middle.tier == 128_000


def test_shipped_table_prices_match_hand_arithmetic() -> None:
    table = shipped_table()
    gpt = cloud_cost(table.lookup("gpt-4.1"), CloudUsage(10_000, 500, cached_tokens=4_000), "conservative")
    # 6,000 x 0.000002 = 0.012; 4,000 x 0.0000005 = 0.002; 500 x 0.000008 = 0.004.
    assert gpt.total == D("0.018")
    gemini = cloud_cost(table.lookup("gemini/gemini-2.5-pro"), CloudUsage(250_000, 1_000), "none")
    # Above 200k: 250,000 x 0.0000025 = 0.625; 1,000 x 0.000015 = 0.015.
    assert gemini.total == D("0.64")


def test_results_do_not_depend_on_the_callers_decimal_context() -> None:
    expected = cloud_cost(FULL, USAGE, "conservative")
    with localcontext() as ctx:
        ctx.prec = 2
        assert cloud_cost(FULL, USAGE, "conservative") == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_tokens": -1, "output_tokens": 0},
        {"input_tokens": 10, "output_tokens": 0, "cached_tokens": 8, "cache_write_tokens": 3},
        {"input_tokens": 10, "output_tokens": 5, "reasoning_tokens": 6},
        {"input_tokens": True, "output_tokens": 0},
    ],
)
def test_inconsistent_usage_is_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="tokens"):
        CloudUsage(**kwargs)


def test_unknown_cache_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="cache_mode"):
        cloud_cost(FULL, USAGE, "aggressive")  # type: ignore[arg-type]
