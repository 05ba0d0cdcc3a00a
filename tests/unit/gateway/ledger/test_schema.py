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
    c = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    migrate_sqlite(c)
    have = _versions(c)
    assert 8 in have and 7 not in have and have == sorted(v for v, _ in schema.MIGRATIONS)
    late = (7, ("CREATE TABLE late_arrival (x INTEGER)",))
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(sorted((*schema.MIGRATIONS, late))))
    assert migrate_sqlite(c) == schema.LATEST
    assert _versions(c) == sorted({*have, 7})
    c.execute("SELECT x FROM late_arrival")  # it ran
    migrate_sqlite(c)  # and runs once
    assert _versions(c) == sorted({*have, 7})
    c.close()


def test_pending_is_every_missing_number_in_order() -> None:
    numbers = [v for v, _ in schema.MIGRATIONS]
    assert schema.pending(set()) == sorted(numbers)
    assert schema.pending({n for n in numbers if n != 2}) == [2]
