from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import orjson

from pricing.tables import PriceTable, parse_table

DATE = dt.date(2025, 6, 1)


def make_table(document: Mapping[str, object], *, date: dt.date = DATE) -> PriceTable:
    """A table parsed from an in-memory litellm-style document, as the real loader would."""
    return parse_table(orjson.dumps(document), date=date, source="test")
