"""Opening the configured ledger: PostgreSQL when ``ledger.url`` is set, else the SQLite file."""

from __future__ import annotations

from gateway.ledger.store import Store
from gateway.settings import LedgerSettings


def open_store(ledger: LedgerSettings) -> Store:
    """The configured ledger store (not yet opened: call ``await store.open()``)."""
    if ledger.url:
        from gateway.ledger.postgres import PostgresStore  # asyncpg: the postgres extra

        return PostgresStore(ledger.url)
    from gateway.ledger.sqlite import SQLiteStore

    return SQLiteStore(ledger.path)
