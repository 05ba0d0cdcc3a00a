from __future__ import annotations

from decimal import Decimal

import pytest

from pricing.money import as_decimal, decimal_str, quantize_usd


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5e-07, Decimal("0.0000005")),
        (3.75e-06, Decimal("0.00000375")),
        (1.1e-06, Decimal("0.0000011")),  # Decimal(1.1e-06) would be 1.09999999999999995...e-6
        (0, Decimal(0)),
        (3999, Decimal(3999)),
        ("2e-6", Decimal("0.000002")),
        (" 0.17 ", Decimal("0.17")),
        (Decimal("1.5"), Decimal("1.5")),
    ],
)
def test_as_decimal_is_exact(value: object, expected: Decimal) -> None:
    result = as_decimal(value)
    assert result == expected
    assert isinstance(result, Decimal)


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}])
def test_as_decimal_rejects_non_numbers(value: object) -> None:
    with pytest.raises(TypeError):
        as_decimal(value)


@pytest.mark.parametrize("value", ["abc", "", float("nan"), float("inf"), "Infinity", Decimal("NaN")])
def test_as_decimal_rejects_malformed_and_non_finite(value: object) -> None:
    with pytest.raises(ValueError, match="not a"):
        as_decimal(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("5E-7"), "0.0000005"),
        (Decimal("3.0E-6"), "0.000003"),
        (Decimal("0.000003000"), "0.000003"),
        (Decimal(3999), "3999"),
        (Decimal("1E+3"), "1000"),
        (Decimal("0E-12"), "0"),
        (Decimal("-0.50"), "-0.5"),
    ],
)
def test_decimal_str_is_canonical(value: Decimal, text: str) -> None:
    assert decimal_str(value) == text


def test_quantize_usd_rounds_half_even_to_a_picodollar() -> None:
    assert quantize_usd(Decimal("0.0000000000025")) == Decimal("0.000000000002")
    assert quantize_usd(Decimal("0.0000000000035")) == Decimal("0.000000000004")
    assert quantize_usd(Decimal(1)) == Decimal("1.000000000000")
