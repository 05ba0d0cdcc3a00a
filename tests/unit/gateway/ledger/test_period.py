"""Report periods: what a caller may name, and the 400-worthy rest."""

from __future__ import annotations

import pytest

from gateway.ledger.period import LATEST, parse_instant, parse_period

NOW = 1_800_000_000.0


def test_relative_iso_and_unix_instants() -> None:
    assert parse_instant("7d", NOW) == NOW - 7 * 86400
    assert parse_instant("2026-01-01", NOW) == 1767225600.0
    assert parse_instant("1767225600", NOW) == 1767225600.0
    assert parse_instant("9999-12-31T23:59:59", NOW) == LATEST
    assert parse_instant("99999999999999999999d", NOW) == 0.0  # "since the beginning"


@pytest.mark.parametrize(
    "text", ["1e400", "nan", "inf", "-inf", "-5", "0001-01-01", "9999-12-31T23:59:59-05:00", "yesterday", ""]
)
def test_instants_no_report_can_name_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text, NOW)


def test_a_period_that_ends_before_it_starts() -> None:
    with pytest.raises(ValueError):
        parse_period(None, "2026-02-01", "2026-01-01", NOW)
