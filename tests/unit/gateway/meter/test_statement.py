"""Statement periods and signatures, without a ledger."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger import signing
from gateway.meter import statement


def test_month_periods() -> None:
    lo, hi = statement.month_period("2026-11")
    assert dt.datetime.fromtimestamp(lo, dt.UTC) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert dt.datetime.fromtimestamp(hi, dt.UTC) == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert dt.datetime.fromtimestamp(statement.month_period("2026-12")[1], dt.UTC).year == 2027
    for bad in ("2026-13", "2026/11", "nov"):
        with pytest.raises(ValueError, match="not a month"):
            statement.month_period(bad)


def test_the_signature_covers_every_field_and_names_its_key(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    signing.ensure_key(key)
    priv = signing.load_private(key)
    total: dict[str, int] = {"requests": 3}
    doc: dict[str, Any] = {"object": "nometer.statement", "total": total, "chain_heads": []}
    doc["signature"] = {
        "algorithm": "ed25519",
        "key_id": signing.key_id(priv.public_key()),
        "value": signing.sign(priv, statement.canonical(doc)),
    }
    pub = signing.public_path(key).read_bytes()
    assert statement.check_signature(doc, pub) == []
    total["requests"] = 4
    assert "edited after signing" in statement.check_signature(doc, pub)[0].detail
    other = tmp_path / "o.key"
    signing.ensure_key(other)
    assert (
        "not by the given public key"
        in statement.check_signature(doc, signing.public_path(other).read_bytes())[0].detail
    )
    del doc["signature"]
    assert "no ed25519 signature" in statement.check_signature(doc, pub)[0].detail
