"""Which price table the meter prices with, and where installed tables live.

Tables are files under ``meter.price_dir`` (default: ``prices/`` beside the SQLite ledger). The
gateway prices with the newest installed table plus the config's overrides, and pins that exact
table under its id, so every receipt can find it again (``nometer verify``).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

from pricing.overrides import apply_overrides
from pricing.store import PriceStore
from pricing.tables import PriceTable


def price_dir(price_dir_setting: str | None, ledger_path: str) -> Path:
    """``meter.price_dir``, else ``prices/`` beside the ledger file."""
    return Path(price_dir_setting) if price_dir_setting else Path(ledger_path).resolve().parent / "prices"


def pinned_table(prices: PriceStore, overrides: Mapping[str, Mapping[str, Decimal]]) -> PriceTable:
    """The newest installed table plus overrides, pinned so receipts can find it by id."""
    table = prices.current()
    if overrides:
        table = apply_overrides(table, dict(overrides))
    prices.pin(table)
    return table
