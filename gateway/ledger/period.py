"""Parsing report periods: ``--since 7d`` or ``--from 2026-11-01 --to 2026-11-08``."""

from __future__ import annotations

import datetime as dt
import re

_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_instant(text: str, now: float) -> float:
    """``7d`` (that long ago), an ISO date or datetime (UTC if no zone), or unix seconds."""
    text = text.strip()
    m = _REL.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        d = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use 7d, 24h, 2026-11-01 or 2026-11-01T12:00)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.timestamp()


def parse_period(
    since: str | None, start: str | None, end: str | None, now: float
) -> tuple[float | None, float | None]:
    if since and start:
        raise ValueError("give either --since or --from, not both")
    first = since or start
    lo = parse_instant(first, now) if first else None
    hi = parse_instant(end, now) if end else None
    if lo is not None and hi is not None and hi <= lo:
        raise ValueError("the period ends before it starts")
    return lo, hi
