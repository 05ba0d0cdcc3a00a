"""Batch and flex prices (`*_batches`, `*_flex` fields) and the cloud tier of a receipt."""

from __future__ import annotations

from decimal import Decimal

from pricing.cost import CloudUsage, cloud_cost, service_price
from pricing.local import BoxCost
from pricing.receipt import ReceiptInputs, ReferenceTokens, compute_receipt
from pricing.tables import shipped_table
from tests.unit.pricing.builders import make_table

D = Decimal
DOC = {
    "m": {
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 8e-06,
        "cache_read_input_token_cost": 5e-07,
        "input_cost_per_token_batches": 1e-06,
        "output_cost_per_token_batches": 4e-06,
        "input_cost_per_token_flex": 1.5e-06,
        "output_cost_per_token_flex": 6e-06,
        "cache_read_input_token_cost_flex": 2.5e-07,
        "input_cost_per_token_above_200k_tokens_flex": 3e-06,
        "output_cost_per_image_token_batches": 1.0,  # not a token rate nometer prices: ignored
    },
    "standard-only": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
}
USAGE = CloudUsage(1000, 100, cached_tokens=400)


def test_batch_and_flex_rates_are_parsed_beside_the_standard_ones() -> None:
    price = make_table(DOC).models["m"]
    assert (price.input, price.output) == (D("0.000002"), D("0.000008"))
    batch = price.for_service("batch")
    assert batch is not None and (batch.input, batch.output) == (D("0.000001"), D("0.000004"))
    assert batch.cache_read == D("0.0000005")  # no batch cache-read rate: the standard one stays
    flex = price.for_service("flex")
    assert flex is not None and flex.cache_read == D("0.00000025")
    assert [t.threshold for t in flex.tiers] == [200_000] and flex.tiers[0].input == D("0.000003")
    assert price.tiers == ()  # the flex tier's long-context rates are the flex tier's only
    assert price.for_service("standard") is price
    assert make_table(DOC).models["standard-only"].for_service("batch") is None


def test_batch_cost_by_hand() -> None:
    price, tier, note = service_price(make_table(DOC).models["m"], "batch")
    assert (tier, note) == ("batch", None)
    cost = cloud_cost(price, USAGE, "conservative")
    # 600 x 0.000001 + 400 x 0.0000005 + 100 x 0.000004 = 0.0006 + 0.0002 + 0.0004
    assert cost.total == D("0.0012")


def test_a_table_without_batch_rates_prices_standard_and_says_so() -> None:
    standard = make_table(DOC).models["standard-only"]
    price, tier, note = service_price(standard, "flex")
    assert tier == "standard" and note is not None and "no flex rates" in note
    assert price is standard


def test_the_receipt_names_the_tier_and_the_suffixed_fields() -> None:
    inputs = ReceiptInputs(
        references=(
            ReferenceTokens("m", "o200k_base", False, USAGE),
            ReferenceTokens("standard-only", "o200k_base", False, USAGE),
        ),
        table=make_table(DOC),
        cache_mode="conservative",
        busy_seconds=D(1),
        box=BoxCost(idle_watts=D(30), busy_watts=D(200)),
        cloud_tier="batch",
    )
    receipt = compute_receipt(inputs)
    assert receipt["cloud_tier"] == "batch"
    m, other = receipt["references"]
    assert (m["priced_tier"], m["priced_tier_note"], m["cloud_usd"]) == ("batch", None, "0.0012")
    fields = {t["kind"]: t["rate_field"] for t in m["terms"]}
    assert fields["input"] == "input_cost_per_token_batches"
    assert fields["cache_read"] == "cache_read_input_token_cost"  # kept from the standard tier
    assert other["priced_tier"] == "standard" and "no batch rates" in other["priced_tier_note"]


def test_the_shipped_snapshot_has_batch_rates_for_the_default_references() -> None:
    table = shipped_table()
    for model in ("gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-pro", "text-embedding-3-small"):
        price = table.lookup(model)
        assert price is not None and price.for_service("batch") is not None, model
        batch = price.for_service("batch")
        assert batch is not None and price.input is not None and batch.input is not None
        assert batch.input < price.input
