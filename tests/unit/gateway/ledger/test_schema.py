"""Migration numbers are reserved per change and may land out of order: a ledger that has 8 still
gets 7 when it appears (real SQLite file)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.ledger import schema
from gateway.ledger.sqlite import migrate_sqlite


def _versions(c: sqlite3.Connection) -> list[int]:
    return [int(r[0]) for r in c.execute("SELECT version FROM schema_version ORDER BY version")]


def test_a_gap_is_filled_when_its_migration_lands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger migrated while a reserved number had not landed yet (here: the one before the
    last, held back) gets it when it lands, once, whatever came after it."""
    full = schema.MIGRATIONS
    gap = full[-2]
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(m for m in full if m is not gap))
    c = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    migrate_sqlite(c)
    have = _versions(c)
    assert full[-1][0] in have and gap[0] not in have
    monkeypatch.setattr(schema, "MIGRATIONS", full)
    assert migrate_sqlite(c) == schema.LATEST
    assert _versions(c) == sorted(v for v, _ in full)
    migrate_sqlite(c)  # and runs once
    assert _versions(c) == sorted(v for v, _ in full)
    c.close()


def test_pending_is_every_missing_number_in_order() -> None:
    numbers = [v for v, _ in schema.MIGRATIONS]
    assert schema.pending(set()) == sorted(numbers)
    assert schema.pending({n for n in numbers if n != 2}) == [2]
