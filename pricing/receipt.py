"""Receipts: the savings claim for one request, recomputable by anyone from stored quantities.

`compute_receipt` is a pure function of `ReceiptInputs` (token counts per reference model, the
price table, the cache mode and the local-cost inputs). The ledger stores those inputs and the
table id; `verify` fetches the table by id (`PriceStore.get`), recomputes, and compares. For that
to work the output must not depend on anything else: no clock, no environment, no float, no
ambient Decimal context. Money and rates are decimal strings in `decimal_str` form; token counts
are integers; references keep the order they were given in.

Shape (version 1):

    {"version": 1, "price_table": id, "cache_mode": "none" | "conservative",
     "cloud_tier": "standard" | "batch" | "flex",
     "local": {"method", "busy_seconds", "joules", "idle_watts", "busy_watts", "usd_per_kwh",
               "hardware_usd", "lifetime_years", "energy_usd", "hardware_share_usd", "total_usd"},
     "references": [{"model", "price_key", "tokenizer", "estimated",
                     "priced_tier", "priced_tier_note", "hidden_reasoning",
                     "tokens": {"input", "cached", "cache_write", "output", "reasoning"},
                     "priced", "unpriced_reason", "tier",
                     "terms": [{"kind", "tokens", "rate", "rate_field", "usd"}, ...],
                     "cloud_usd", "savings_usd"}, ...]}

`savings_usd = cloud_usd - local total_usd` and may be negative; both are `null` when unpriced.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any, Final

import orjson

from pricing.cost import CacheMode, CloudCost, CloudUsage, cloud_cost, service_price
from pricing.local import BoxCost, LocalCost, request_local_cost
from pricing.money import CONTEXT, decimal_str
from pricing.tables import SERVICE_SUFFIX, CloudTier, PriceTable, threshold_label

RECEIPT_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class ReferenceTokens:
    """One reference cloud model's token counts, as counted and stored at request time."""

    model: str
    tokenizer: str
    estimated: bool
    usage: CloudUsage
    hidden_reasoning: str | None = None
    """For a reasoning reference (pricing.tokens.is_reasoning_model): `"not_modelled"` or
    `"local"` (estimated from the local model's own reasoning tokens); `None` otherwise."""


@dataclass(frozen=True, slots=True)
class ReceiptInputs:
    """Everything a receipt is computed from. `joules=None` means the energy was estimated."""

    references: tuple[ReferenceTokens, ...]
    table: PriceTable
    cache_mode: CacheMode
    busy_seconds: Decimal
    box: BoxCost
    joules: Decimal | None = None
    cloud_tier: CloudTier = "standard"  # X-Nometer-Cloud-Tier: the cloud service tier compared with


def compute_receipt(inputs: ReceiptInputs) -> dict[str, Any]:
    """The JSON-able receipt for `inputs` (shape in the module docstring); deterministic."""
    local = request_local_cost(inputs.busy_seconds, inputs.joules, inputs.box)
    return {
        "version": RECEIPT_VERSION,
        "price_table": inputs.table.id,
        "cache_mode": inputs.cache_mode,
        "cloud_tier": inputs.cloud_tier,
        "local": _local_json(inputs, local),
        "references": [_reference_json(ref, inputs, local) for ref in inputs.references],
    }


def receipt_digest(receipt: dict[str, Any]) -> str:
    """SHA-256 hex of the receipt's canonical JSON (sorted keys, compact), for cheap comparison."""
    return hashlib.sha256(orjson.dumps(receipt, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _local_json(inputs: ReceiptInputs, local: LocalCost) -> dict[str, Any]:
    box = inputs.box
    return {
        "method": local.method,
        "busy_seconds": decimal_str(inputs.busy_seconds),
        "joules": decimal_str(local.joules),
        "idle_watts": decimal_str(box.idle_watts),
        "busy_watts": decimal_str(box.busy_watts),
        "usd_per_kwh": decimal_str(box.usd_per_kwh),
        "hardware_usd": decimal_str(box.hardware_usd),
        "lifetime_years": decimal_str(box.lifetime_years),
        "energy_usd": decimal_str(local.energy_usd),
        "hardware_share_usd": decimal_str(local.hardware_usd),
        "total_usd": decimal_str(local.total),
    }


def _reference_json(ref: ReferenceTokens, inputs: ReceiptInputs, local: LocalCost) -> dict[str, Any]:
    price_key = inputs.table.resolve(ref.model)
    listed = None if price_key is None else inputs.table.models[price_key]
    price, tier, tier_note = service_price(listed, inputs.cloud_tier)
    # a rate the batch/flex tier lists came from its suffixed field; the others kept the standard one
    own = set(listed.services[tier].fields()) if listed is not None and tier != "standard" else set()
    suffix = SERVICE_SUFFIX.get(tier, "")
    cost = cloud_cost(price, ref.usage, inputs.cache_mode)
    usage = ref.usage
    return {
        "model": ref.model,
        "price_key": price_key,
        "tokenizer": ref.tokenizer,
        "estimated": ref.estimated,
        "priced_tier": tier,
        "priced_tier_note": tier_note,
        "hidden_reasoning": ref.hidden_reasoning,
        "tokens": {
            "input": usage.input_tokens,
            "cached": usage.cached_tokens,
            "cache_write": usage.cache_write_tokens,
            "output": usage.output_tokens,
            "reasoning": usage.reasoning_tokens,
        },
        "priced": cost.priced,
        "unpriced_reason": cost.unpriced_reason,
        "tier": None if cost.tier is None else threshold_label(cost.tier),
        "terms": [
            {
                "kind": term.kind,
                "tokens": term.tokens,
                "rate": decimal_str(term.rate),
                "rate_field": term.rate_field + suffix if term.rate_field in own else term.rate_field,
                "usd": decimal_str(term.usd),
            }
            for term in cost.terms
        ],
        "cloud_usd": _money(cost.total),
        "savings_usd": _money(_savings(cost, local)),
    }


def _savings(cost: CloudCost, local: LocalCost) -> Decimal | None:
    if cost.total is None:
        return None
    with localcontext(CONTEXT):
        return cost.total - local.total


def _money(value: Decimal | None) -> str | None:
    return None if value is None else decimal_str(value)
