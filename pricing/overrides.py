"""Operator price overrides: a new table, with a new id, never an edited one.

Why a new id: a receipt names the table it was priced with. If an override edited a table in
place, old receipts would silently re-price against the new numbers. Deriving a new table whose
digest covers the base digest *and* the overrides keeps every receipt pinned to the exact rates
it used; `PriceStore.pin` persists the derived table so it can be fetched by id again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Mapping
from decimal import Decimal
from types import MappingProxyType

import orjson

from pricing.money import as_decimal, decimal_str
from pricing.tables import ModelPrice, PriceTable, PriceTableError, make_table_id, parse_model_price

Overrides = Mapping[str, Mapping[str, object]]
"""`{model: {litellm price field: number}}`, e.g. `{"gpt-4.1": {"input_cost_per_token": "2e-6"}}`."""


def apply_overrides(table: PriceTable, overrides: Overrides) -> PriceTable:
    """Return a table equal to `table` except for the overridden fields.

    * Model names resolve like `PriceTable.resolve`, so overriding `anthropic/claude-sonnet-4-5`
      changes the `claude-sonnet-4-5` entry every spelling reaches; an unknown name adds a model.
    * Fields are litellm price fields, base (`input_cost_per_token`, ...) or tier
      (`input_cost_per_token_above_200k_tokens`); values are numbers or numeric strings. Unknown
      fields, non-numbers and negatives raise `PriceTableError`: a typo must not go unnoticed.
    * Unmentioned fields keep their table values; provider and mode are kept.
    * The new id keeps the base date and hashes `base digest + canonical overrides`, so the same
      overrides on the same table always give the same id, and any change gives a new one.

    Empty `overrides` returns `table` itself: nothing changed, so neither does the id.
    """
    if not overrides:
        return table
    prices: dict[str, ModelPrice] = {}
    canonical: dict[str, dict[str, Decimal]] = {}
    for name, fields in overrides.items():
        if not isinstance(name, str) or not name or not isinstance(fields, Mapping) or not fields:
            raise PriceTableError(f"override for {name!r} must map price fields to numbers")
        key = table.resolve(name) or name
        if key in canonical:
            raise PriceTableError(f"overrides {name!r} and another spelling both target {key!r}")
        parse_model_price(fields, strict=True)  # validate names and values before merging
        values = {field: as_decimal(value) for field, value in fields.items()}
        current = table.models.get(key)
        merged = (current.fields() if current else {}) | values
        price = parse_model_price(merged, strict=True)
        if current is not None:
            price = dataclasses.replace(price, provider=current.provider, mode=current.mode)
        prices[key] = price
        canonical[key] = values
    digest = hashlib.sha256(table.digest.encode() + b"\n" + canonical_overrides(canonical)).hexdigest()
    return PriceTable(
        id=make_table_id(table.date, digest),
        source=f"{table.source} + overrides",
        models=_Overlay(prices, table.models),
        digest=digest,
        base=table,
        overrides=MappingProxyType({key: MappingProxyType(values) for key, values in canonical.items()}),
    )


def canonical_overrides(overrides: Mapping[str, Mapping[str, Decimal]]) -> bytes:
    """Sorted, compact JSON with values in `decimal_str` form: equal overrides, equal bytes."""
    document = {
        model: {field: decimal_str(value) for field, value in fields.items()}
        for model, fields in overrides.items()
    }
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


class _Overlay(Mapping[str, ModelPrice]):
    """Overridden models in front of the base table's (which stay shared, not copied)."""

    __slots__ = ("_base", "_top")

    def __init__(self, top: Mapping[str, ModelPrice], base: Mapping[str, ModelPrice]) -> None:
        self._top = top
        self._base = base

    def __getitem__(self, name: str) -> ModelPrice:
        price = self._top.get(name)
        return self._base[name] if price is None else price

    def __contains__(self, name: object) -> bool:
        return name in self._top or name in self._base

    def __iter__(self) -> Iterator[str]:
        yield from self._base
        yield from (name for name in self._top if name not in self._base)

    def __len__(self) -> int:
        return len(self._base) + sum(1 for name in self._top if name not in self._base)
