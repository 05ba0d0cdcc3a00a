"""Receipts: rebuild one request's savings claim from the ledger and its pinned price table.

The ledger keeps the *inputs* of ``pricing.receipt.compute_receipt`` (re-counted tokens per
reference, table id, cache mode, busy share, measured joules, box parameters) and the amounts
computed at request time. Recomputing from those inputs must give the same amounts: ``verify``
checks exactly that for every metered request in a period, beside the hash chain, which proves
the stored inputs themselves were not edited (``gateway.ledger.chain``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.meter.shadow import box_from_json, pico
from pricing.cost import CloudUsage
from pricing.receipt import ReceiptInputs, ReferenceTokens, compute_receipt, receipt_digest
from pricing.store import PriceStore
from pricing.tables import CloudTier

# A receipt is looked up by the server's id (`uid`, sent as x-nometer-receipt-id: unique) or by the
# client's request id (not unique: any client may send any id), within what the caller may see.
EVENT_SQL = (
    "SELECT * FROM usage_events WHERE (uid = {p1} OR request_id = {p2}){team} ORDER BY id DESC LIMIT 50"
)
SHADOW_SQL = "SELECT * FROM shadow_costs WHERE event_uid = {p} ORDER BY ref_index"


@dataclass(frozen=True)
class Check:
    request_id: str
    ok: bool
    problem: str | None = None
    column: str | None = None  # the stored column that differs from the recomputation
    table: str = "usage_events"


def recompute(event: dict[str, Any], shadows: list[dict[str, Any]], prices: PriceStore) -> dict[str, Any]:
    """The receipt as computed from the stored inputs (raises LookupError if the table is gone)."""
    refs = tuple(
        ReferenceTokens(
            s["ref_model"],
            s["tokenizer"],
            bool(s["estimated"]),
            CloudUsage(
                int(s["input_tokens"]),
                int(s["output_tokens"]),
                cached_tokens=int(s["cached_tokens"]),
                cache_write_tokens=int(s["cache_write_tokens"]),
                reasoning_tokens=int(s["reasoning_tokens"]),
            ),
            s.get("hidden_reasoning"),
        )
        for s in shadows
    )
    inputs = ReceiptInputs(
        references=refs,
        table=prices.get(event["price_table_id"]),
        cache_mode=event["cache_mode"],
        busy_seconds=Decimal(repr(float(event["busy_s"] or 0.0))),
        box=box_from_json(event["box"]),
        joules=None if event["joules"] is None else Decimal(repr(float(event["joules"]))),
        cloud_tier=_tier(event.get("cloud_tier")),
    )
    return compute_receipt(inputs)


def _tier(value: object) -> CloudTier:
    """The stored cloud tier (NULL in rows older than schema 8: standard)."""
    if value in (None, "standard"):
        return "standard"
    if value == "batch" or value == "flex":
        return value
    raise ValueError(f"unknown cloud tier {value!r}")


def view(event: dict[str, Any], receipt: dict[str, Any]) -> dict[str, Any]:
    """The receipt as served: the request's identity and local counts, then the computation."""
    return {
        "object": "nometer.receipt",
        "request_id": event["request_id"],
        "receipt_id": event["uid"],
        "created": event["ts"],
        "endpoint": event["endpoint"],
        "requested_model": event["requested_model"],
        "served_model": event["served_model"],
        "backend": event["backend"],
        "team": event["team"],
        "key_id": event["key_id"],
        "tag": event["tag"],
        "outcome": event["outcome"],
        "local_usage": {
            k: event[k]
            for k in (
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "cached_tokens",
                "reasoning_tokens",
            )
        }
        | {"source": event["usage_source"]},
        "receipt_sha256": receipt_digest(receipt),  # of this receipt's canonical JSON, for comparing copies
        **receipt,
    }


def check(event: dict[str, Any], shadows: list[dict[str, Any]], prices: PriceStore) -> Check:
    """Recompute the receipt from the stored inputs and compare it with every stored amount."""
    rid = event["request_id"]
    try:
        receipt = recompute(event, shadows, prices)
    except (LookupError, ValueError, TypeError, ArithmeticError) as exc:
        return Check(rid, False, f"cannot recompute its receipt: {exc}")
    local = receipt["local"]
    for column, key in (("local_energy_pusd", "energy_usd"), ("local_hardware_pusd", "hardware_share_usd")):
        if pico(local[key]) != event[column]:
            return Check(rid, False, f"stored {column} differs from the recomputed receipt", column)
    for ref, s in zip(receipt["references"], shadows, strict=True):
        for column, key in (("cloud_pusd", "cloud_usd"), ("savings_pusd", "savings_usd")):
            if s[column] != pico(ref[key]):
                return Check(
                    rid,
                    False,
                    f"stored {column} for {ref['model']} differs from the recomputed receipt",
                    column,
                    "shadow_costs",
                )
    return Check(rid, True)
