"""Decimal conventions shared by every pricing module.

Money and per-token rates are `Decimal`, never float. Two rules make receipts reproducible:

* Numbers enter through `as_decimal`. A float (as JSON parsers produce) is converted through its
  shortest round-trip `repr`, which is exactly the literal written in the JSON file, so
  `5e-07` becomes `Decimal("5E-7")` and not the binary approximation `4.99999999999999977e-07`.
* Arithmetic that can produce non-terminating results (divisions in the local-cost math) runs in
  `CONTEXT`, a fixed context, never the caller's thread context, and its results are quantized
  with `quantize_usd`. The same stored inputs therefore give the same digits on any machine.

`decimal_str` is the one text form of a Decimal used in receipts and in hashed content: plain
notation, no exponent, no trailing zeros, so equal values always serialize identically.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Final

CONTEXT: Final = Context(prec=34, rounding=ROUND_HALF_EVEN)
"""Fixed arithmetic context (IEEE decimal128 precision) for every pricing computation."""

USD_QUANTUM: Final = Decimal("1E-12")
"""Computed (divided) dollar amounts are kept to a pico-dollar: far below any billable amount,
short enough to read, and independent of the Decimal context precision."""


def as_decimal(value: object) -> Decimal:
    """Convert a JSON/config number to an exact, finite Decimal.

    Accepts `Decimal`, `int`, `float` (through `repr`, see the module docstring) and numeric
    strings. Rejects other types, `bool` included (a JSON `true` is not a price), with `TypeError`;
    malformed strings, NaN and infinities with `ValueError`.
    """
    if isinstance(value, bool):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
    else:
        raise TypeError(f"not a number: {value!r}")
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def decimal_str(value: Decimal) -> str:
    """Canonical text of a Decimal: `Decimal("3.0E-6")` -> `"0.000003"`, `Decimal("3999")` -> `"3999"`."""
    if value.is_zero():
        return "0"
    return format(value.normalize(CONTEXT), "f")


def quantize_usd(value: Decimal) -> Decimal:
    """Round a computed dollar amount to `USD_QUANTUM` (half-even), in the fixed context."""
    return value.quantize(USD_QUANTUM, context=CONTEXT)
