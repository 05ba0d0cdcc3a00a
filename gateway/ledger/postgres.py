"""The ledger on PostgreSQL (asyncpg), for several gateway replicas sharing one ledger.

Same schema and migrations as SQLite (``schema.py``, with ``BIGSERIAL`` keys); migrations run
under a transaction-scoped advisory lock so replicas starting together migrate once. Writes are
the recorder's batches (``executemany`` in one transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.ledger import sanitize, schema
from gateway.ledger.events import CHAIN_COLUMNS, EVENT_COLUMNS, SHADOW_COLUMNS
from gateway.ledger.store import DEAD_LETTER_COLUMNS, LedgerBatchLike, Row, insert_sql

_MIGRATION_LOCK = 0x6E6F6D65746572  # "nometer"
_INSERT_EVENT = insert_sql("usage_events", EVENT_COLUMNS + CHAIN_COLUMNS, lambda i: f"${i}")
_INSERT_SHADOW = insert_sql("shadow_costs", SHADOW_COLUMNS + CHAIN_COLUMNS, lambda i: f"${i}")
_INSERT_DEAD = insert_sql("ledger_dead_letters", DEAD_LETTER_COLUMNS, lambda i: f"${i}")


class PostgresStore:
    placeholder = "$"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4):
        self.url = url
        self._sizes = (min_size, max_size)
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg  # the postgres extra; imported only when a PostgreSQL ledger is configured

        self._pool = await asyncpg.create_pool(self.url, min_size=self._sizes[0], max_size=self._sizes[1])
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            applied = {int(r["version"]) for r in await conn.fetch("SELECT version FROM schema_version")}
            for version in schema.pending(applied):
                for stmt in schema.statements("postgres", version):
                    await conn.execute(stmt)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)

    async def insert_batch(self, batch: LedgerBatchLike) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(_INSERT_EVENT, batch.events)
            if batch.shadows:
                await conn.executemany(_INSERT_SHADOW, batch.shadows)

    async def insert_dead_letters(self, rows: Sequence[Row]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(_INSERT_DEAD, rows)

    def data_error(self, exc: BaseException) -> bool:
        """SQLSTATE class 22 (data exception: a NUL byte, a value out of range) and 23 (integrity:
        NOT NULL), and what asyncpg raises encoding an argument; never a connection error."""
        import asyncpg

        if isinstance(
            exc, asyncpg.exceptions.DataError | asyncpg.exceptions.IntegrityConstraintViolationError
        ):
            return True
        return isinstance(exc, OverflowError | UnicodeError | TypeError | ValueError) and not isinstance(
            exc, asyncpg.exceptions.PostgresError | OSError
        )

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Parameters are sanitised as stored values are (a NUL byte in a looked-up receipt id or
        team matches what such a value was stored as, instead of PostgreSQL refusing the query)."""
        async with self._pool.acquire() as conn:
            return [
                dict(r)
                for r in await conn.fetch(sql, *[sanitize.text(p) if type(p) is str else p for p in params])
            ]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
