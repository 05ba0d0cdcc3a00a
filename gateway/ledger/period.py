"""Parsing report periods: ``--since 7d`` or ``--from 2026-11-01 --to 2026-11-08``."""

from __future__ import annotations

import datetime as dt
import re

_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Instants a report can name: 1970-01-01 to 9999-12-31 UTC (beyond, no date can be printed).
EARLIEST, LATEST = 0.0, dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()


def parse_instant(text: str, now: float) -> float:
    """``7d`` (that long ago), an ISO date or datetime (UTC if no zone), or unix seconds; clamped
    to 1970 at the earliest (``100000d`` means "since the beginning"). ValueError otherwise."""
    text = text.strip()
    m = _REL.match(text)
    if m:
        return max(EARLIEST, now - float(m.group(1)) * _UNIT[m.group(2)])
    try:
        t = float(text)
    except ValueError:
        try:
            d = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a time: {text!r} (use 7d, 24h, 2026-11-01 or 2026-11-01T12:00)") from None
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.UTC)
        try:
            t = d.timestamp()
        except (OverflowError, ValueError, OSError):
            t = float("nan")
    if not EARLIEST <= t <= LATEST:  # NaN fails this too
        raise ValueError(f"not a time between 1970-01-01 and 9999-12-31: {text!r}")
    return t


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
