from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from pricing.overrides import apply_overrides, canonical_overrides
from pricing.tables import PriceTableError, PriceTier
from tests.unit.pricing.builders import DATE, make_table

D = Decimal

DOCUMENT = {
    "gpt-4.1": {
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 8e-06,
        "cache_read_input_token_cost": 5e-07,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "claude-sonnet-4-5": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05},
}


def test_override_returns_a_new_table_with_a_new_id_and_leaves_the_base_alone() -> None:
    base = make_table(DOCUMENT)
    derived = apply_overrides(base, {"gpt-4.1": {"input_cost_per_token": "0.0000018"}})
    assert derived.id != base.id
    assert derived.date == base.date == DATE
    assert derived.base is base
    assert derived.models["gpt-4.1"].input == D("0.0000018")
    assert base.models["gpt-4.1"].input == D("0.000002")
    kept = derived.models["gpt-4.1"]
    assert (kept.output, kept.cache_read, kept.provider, kept.mode) == (
        D("0.000008"),
        D("0.0000005"),
        "openai",
        "chat",
    )
    assert derived.models["claude-sonnet-4-5"] is base.models["claude-sonnet-4-5"]
    assert set(derived.models) == set(base.models)


def test_id_hashes_base_digest_and_canonical_overrides() -> None:
    base = make_table(DOCUMENT)
    derived = apply_overrides(base, {"gpt-4.1": {"input_cost_per_token": 1.8e-06}})
    canonical = canonical_overrides({"gpt-4.1": {"input_cost_per_token": D("0.0000018")}})
    assert canonical == b'{"gpt-4.1":{"input_cost_per_token":"0.0000018"}}'
    digest = hashlib.sha256(base.digest.encode() + b"\n" + canonical).hexdigest()
    assert derived.digest == digest
    assert derived.id == f"{DATE.isoformat()}-{digest[:12]}"


def test_equal_overrides_give_equal_ids_and_different_ones_differ() -> None:
    base = make_table(DOCUMENT)
    spelled = [1.8e-06, "1.8e-6", D("0.00000180"), "0.0000018"]
    ids = {apply_overrides(base, {"gpt-4.1": {"input_cost_per_token": value}}).id for value in spelled}
    assert len(ids) == 1
    other = apply_overrides(base, {"gpt-4.1": {"input_cost_per_token": "0.0000019"}})
    assert other.id not in ids


def test_overrides_reach_the_entry_every_spelling_resolves_to() -> None:
    base = make_table(DOCUMENT)
    derived = apply_overrides(base, {"anthropic/claude-sonnet-4-5": {"output_cost_per_token": 0}})
    assert derived.lookup("claude-sonnet-4-5") == derived.lookup("anthropic/claude-sonnet-4-5")
    price = derived.lookup("claude-sonnet-4-5")
    assert price is not None and price.output == 0 and price.input == D("0.000003")
    assert dict(derived.overrides) == {"claude-sonnet-4-5": {"output_cost_per_token": D(0)}}


def test_an_unknown_model_is_added() -> None:
    derived = apply_overrides(
        make_table(DOCUMENT), {"acme-1": {"input_cost_per_token": "1e-6", "output_cost_per_token": "2e-6"}}
    )
    assert "acme-1" in derived.models
    assert len(derived.models) == 3
    assert derived.lookup("acme-1") is not None


def test_tier_fields_can_be_overridden() -> None:
    derived = apply_overrides(
        make_table(DOCUMENT), {"gpt-4.1": {"input_cost_per_token_above_128k_tokens": "4e-6"}}
    )
    assert derived.models["gpt-4.1"].tiers == (PriceTier(128_000, input=D("0.000004")),)


def test_no_overrides_is_the_same_table() -> None:
    base = make_table(DOCUMENT)
    assert apply_overrides(base, {}) is base


@pytest.mark.parametrize(
    "overrides",
    [
        {"gpt-4.1": {"input_cost_per_tokens": 1}},  # typo
        {"gpt-4.1": {"input_cost_per_token": -1}},
        {"gpt-4.1": {"input_cost_per_token": True}},
        {"gpt-4.1": {"input_cost_per_token": "cheap"}},
        {"gpt-4.1": {}},
        {"gpt-4.1": {"input_cost_per_token": 1}, "openai/gpt-4.1": {"output_cost_per_token": 1}},
    ],
)
def test_bad_overrides_raise(overrides: dict[str, dict[str, object]]) -> None:
    with pytest.raises(PriceTableError):
        apply_overrides(make_table(DOCUMENT), overrides)
