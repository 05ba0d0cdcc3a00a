"""Synchronous ledger reads for the CLI: SQLite through sqlite3, PostgreSQL through the async store."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from gateway.ledger.sqlite import migrate_sqlite


class Reader:
    placeholder = "?"

    def param(self, n: int) -> str:
        """The placeholder for the n-th (1-based) parameter."""
        return "?" if self.placeholder == "?" else f"${n}"

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One write, committed (e.g. a verification record)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class SQLiteReader(Reader):
    def __init__(self, path: str):
        if not os.path.exists(path):
            raise SystemExit(f"nometer: no ledger at {path}")
        self._conn = sqlite3.connect(path)
        self._conn.row_factory = sqlite3.Row
        migrate_sqlite(self._conn)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn.execute(sql, list(params)).fetchall()]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._conn:
            self._conn.execute(sql, list(params))

    def close(self) -> None:
        self._conn.close()


class PostgresReader(Reader):
    placeholder = "$"

    def __init__(self, url: str):
        from gateway.ledger.postgres import PostgresStore

        self._loop = asyncio.new_event_loop()
        self._store = PostgresStore(url, max_size=1)
        try:
            self._loop.run_until_complete(self._store.open())
        except (OSError, ValueError) as exc:
            self._loop.close()
            raise SystemExit(f"nometer: cannot open the PostgreSQL ledger: {exc}") from None

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._loop.run_until_complete(self._store.fetch(sql, params))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._loop.run_until_complete(self._store.fetch(sql, params))  # autocommit

    def close(self) -> None:
        self._loop.run_until_complete(self._store.close())
        self._loop.close()


def open_reader(db: str) -> Reader:
    """``db`` is a SQLite path or a ``postgresql://`` URL."""
    if db.startswith(("postgresql://", "postgres://")):
        return PostgresReader(db)
    return SQLiteReader(db)
