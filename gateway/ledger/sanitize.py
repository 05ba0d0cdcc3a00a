"""Ledger row values made storable by both stores, before a row is sealed.

A client controls some stored text (the requested model, the tag, a request id, error text) and
the database refuses some values: PostgreSQL any NUL byte in text, both stores a str that is not
valid UTF-8 (a lone surrogate) or an integer outside 64 bits; SQLite turns NaN into NULL (which
would no longer match the row's digest). One such value used to fail a whole batch (issue 11,
item 2). So every row is cleaned where it is made, in the meter: NUL becomes U+FFFD, invalid
UTF-8 is replaced, integers are clamped to BIGINT, non-finite floats become NULL. Ordinary values
take one type check each.
"""

from __future__ import annotations

import math
from typing import Any, Final

from gateway.ledger.store import LedgerBatchLike, Row

_MIN: Final = -(2**63)
_MAX: Final = 2**63 - 1
REPLACEMENT: Final = "\ufffd"


def text(s: str) -> str:
    if s.isascii():
        return s.replace("\x00", REPLACEMENT) if "\x00" in s else s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "replace").decode("utf-8")
    return s.replace("\x00", REPLACEMENT) if "\x00" in s else s


def value(v: Any) -> Any:
    t = type(v)
    if t is str:
        return text(v)
    if t is int:
        return v if _MIN <= v <= _MAX else max(_MIN, min(_MAX, v))
    if t is float:
        return v if math.isfinite(v) else None
    if v is None or t is bool:
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return text(bytes(v).decode("utf-8", "replace"))
    if isinstance(v, str):  # subclasses (an enum...): stored as the plain value
        return text(str(v))
    if isinstance(v, int):
        return value(int(v))
    if isinstance(v, float):
        return value(float(v))
    return text(str(v))


def row(r: Row) -> Row:
    for v in r:
        t = type(v)
        if t is str:
            if "\x00" in v or not v.isascii():
                break
        elif t is int:
            if not _MIN <= v <= _MAX:
                break
        elif t is float:
            if not math.isfinite(v):
                break
        elif v is not None:
            break
    else:
        return r  # the common case: nothing to change, no copy
    return tuple(value(v) for v in r)


def clean(batch: LedgerBatchLike) -> LedgerBatchLike:
    """Clean every row of ``batch`` in place (returned for chaining)."""
    batch.events = [row(r) for r in batch.events]
    batch.shadows = [row(r) for r in batch.shadows]
    return batch
