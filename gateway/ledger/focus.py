"""The ledger as FinOps FOCUS 1.2 cost and usage rows (CSV), for finance tools.

One row per charge: a UTC day, a team, a tag, a route (local or hosted), a backend or hosted
provider, and a model. Not one row per reference model: ``BilledCost`` must add up to what the box
(or the hosted provider) cost, and a request priced against three references costs the box once.
``BilledCost`` (= ``EffectiveCost`` = ``ListCost`` = ``ContractedCost``: there are no discounts or
commitments) is the local cost, energy plus hardware write-off, of local requests, and the
provider's charge for hosted fallback requests. The cloud-equivalent cost and the savings are
custom ``x_`` columns (FOCUS allows them), for one chosen reference model in numbers and for every
reference as JSON. Every FOCUS 1.2 column is present, null where nometer has nothing to say.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson

from gateway.ledger.report import ReportQuery, usd

FOCUS_COLUMNS: tuple[str, ...] = (
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingAccountType",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "CommitmentDiscountUnit",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingCurrency",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "Tags",
)
EXTRA_COLUMNS: tuple[str, ...] = (
    "x_Requests",
    "x_PromptTokens",
    "x_CompletionTokens",
    "x_BusySeconds",
    "x_EnergyCost",
    "x_HardwareCost",
    "x_CloudReference",
    "x_CloudEquivalentCost",
    "x_Savings",
    "x_UnpricedRequests",
    "x_CloudEquivalentCosts",
    "x_SavingsByReference",
    "x_UnchainedRequests",
)
COLUMNS = FOCUS_COLUMNS + EXTRA_COLUMNS
SELF_HOSTED = "Self-hosted (nometer)"
_KEYS = ("day", "team", "tag", "route", "backend", "provider", "model")
_GROUP = (
    "e.day AS day, e.team AS team, e.tag AS tag, e.route AS route, e.backend AS backend, "
    "e.provider AS provider, COALESCE(e.served_model, e.requested_model) AS model"
)
_BY = "e.day, e.team, e.tag, e.route, e.backend, e.provider, COALESCE(e.served_model, e.requested_model)"


def queries(q: ReportQuery, ph: str = "?") -> dict[str, tuple[str, list[Any]]]:
    where, params = q.where(ph)
    return {
        "events": (
            f"SELECT {_GROUP}, COUNT(*) AS requests, COALESCE(SUM(e.prompt_tokens), 0) AS prompt_tokens, "
            "COALESCE(SUM(e.completion_tokens), 0) AS completion_tokens, COALESCE(SUM(e.busy_s), 0) AS busy_s, "
            "COALESCE(SUM(e.local_energy_pusd), 0) AS energy_pusd, "
            "COALESCE(SUM(e.local_hardware_pusd), 0) AS hardware_pusd, "
            "COALESCE(SUM(e.hosted_cost_pusd), 0) AS hosted_pusd, "
            "SUM(CASE WHEN e.chain_id IS NULL OR e.chain_seq IS NULL THEN 1 ELSE 0 END) AS unchained "
            f"FROM usage_events e WHERE {where} GROUP BY {_BY}",
            params,
        ),
        "shadows": (
            f"SELECT {_GROUP}, s.ref_model AS ref_model, COUNT(*) AS n, "
            "SUM(CASE WHEN s.cloud_pusd IS NULL THEN 1 ELSE 0 END) AS unpriced, "
            "COALESCE(SUM(s.cloud_pusd), 0) AS cloud_pusd, COALESCE(SUM(s.savings_pusd), 0) AS savings_pusd "
            f"FROM shadow_costs s JOIN usage_events e ON e.uid = s.event_uid WHERE {where} "
            f"GROUP BY {_BY}, s.ref_model",
            params,
        ),
    }


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(r[k] for k in _KEYS)


def _stamp(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _month(day: dt.date, later: int = 0) -> dt.date:
    y, m = divmod(day.month - 1 + later, 12)
    return dt.date(day.year + y, m + 1, 1)


def _priced(ref: dict[str, Any] | None, col: str) -> str | None:
    """A reference's sum, or None (unpriced) when no request of the group could be priced."""
    if ref is None or int(ref["unpriced"]) == int(ref["n"]):
        return None
    return usd(int(ref[col]))


def rows(
    results: dict[str, list[dict[str, Any]]], reference: str | None, account: str = "nometer"
) -> list[dict[str, Any]]:
    refs: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for r in results["shadows"]:
        refs.setdefault(_key(r), {})[r["ref_model"]] = r
    out = []
    for ev in sorted(results["events"], key=lambda r: tuple(str(v) for v in _key(r))):
        day = dt.date.fromisoformat(str(ev["day"]))
        hosted = ev["route"] == "hosted"
        energy, hardware = int(ev["energy_pusd"]), int(ev["hardware_pusd"])
        billed = usd(int(ev["hosted_pusd"])) if hosted else usd(energy + hardware)
        tokens = int(ev["prompt_tokens"]) + int(ev["completion_tokens"])
        mine = {} if hosted else refs.get(_key(ev), {})
        chosen = mine.get(reference) if reference else None
        provider = (ev["provider"] or "hosted") if hosted else SELF_HOSTED
        resource = f"{ev['provider']}/{ev['model']}" if hosted else ev["backend"]
        team, tag, model = ev["team"], ev["tag"], ev["model"]
        busy = Decimal(repr(float(ev["busy_s"]))).quantize(Decimal("0.000001"))
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(
            BilledCost=billed,
            EffectiveCost=billed,
            ListCost=billed,
            ContractedCost=billed,
            BillingAccountId=account,
            BillingAccountName=f"{account} gateway",
            BillingAccountType="Gateway",
            BillingCurrency="USD",
            PricingCurrency="USD",
            BillingPeriodStart=_stamp(_month(day)),
            BillingPeriodEnd=_stamp(_month(day, 1)),
            ChargePeriodStart=_stamp(day),
            ChargePeriodEnd=_stamp(day + dt.timedelta(days=1)),
            ChargeCategory="Usage",
            ChargeFrequency="Usage-Based",
            ChargeDescription=(
                f"Hosted fallback: {model} via {provider}, {ev['requests']} requests"
                if hosted
                else f"Self-hosted inference: {model} on {ev['backend']}, {ev['requests']} requests"
            ),
            ConsumedQuantity=str(tokens),
            ConsumedUnit="Tokens",
            PricingCategory="Standard",
            PricingQuantity=str(tokens) if hosted else str(busy),
            PricingUnit="Tokens" if hosted else "Seconds",
            ProviderName=provider,
            PublisherName=provider,
            InvoiceIssuerName=provider,
            ResourceId=resource,
            ResourceName=resource,
            ResourceType="Hosted model" if hosted else "Inference backend",
            ServiceCategory="AI and Machine Learning",
            ServiceSubcategory="Generative AI",
            ServiceName="Hosted LLM inference (fallback)" if hosted else "Self-hosted LLM inference",
            SkuId=model,
            SkuMeter="Inference",
            SubAccountId=team,
            SubAccountName=team,
            SubAccountType=None if team is None else "Team",
            Tags=orjson.dumps(
                {k: v for k, v in (("nometer/team", team), ("nometer/tag", tag)) if v is not None}
            ).decode(),
            x_Requests=int(ev["requests"]),
            x_PromptTokens=int(ev["prompt_tokens"]),
            x_CompletionTokens=int(ev["completion_tokens"]),
            x_BusySeconds=str(busy),
            x_EnergyCost=None if hosted else usd(energy),
            x_HardwareCost=None if hosted else usd(hardware),
            x_CloudReference=reference if chosen is not None else None,
            x_CloudEquivalentCost=_priced(chosen, "cloud_pusd"),
            x_Savings=_priced(chosen, "savings_pusd"),
            x_UnpricedRequests=None if chosen is None else int(chosen["unpriced"]),
            x_CloudEquivalentCosts=orjson.dumps(
                {m: _priced(r, "cloud_pusd") for m, r in sorted(mine.items())}
            ).decode(),
            x_SavingsByReference=orjson.dumps(
                {m: _priced(r, "savings_pusd") for m, r in sorted(mine.items())}
            ).decode(),
            x_UnchainedRequests=int(ev["unchained"] or 0),
        )
        out.append(row)
    return out


def to_csv(data: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in data:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()
