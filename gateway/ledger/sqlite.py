"""The embedded ledger: SQLite in WAL mode; reads through aiosqlite, batch writes in one hop.

The recorder's batch write (``insert_batch``) is one transaction of several statements. Through
aiosqlite each statement is a round trip to its thread (BEGIN, two ``executemany``, COMMIT: four
hand-offs, each waking the event loop). On a box serving one agent step at a time, those
hand-offs cost more CPU than the rows (measured: ``bench/agent_steps.py --e2e``, docs/benchmarks.md
5b). So the batch write runs whole in one call to a dedicated writer thread, on its own
connection (opened there on first use, reopened after a failure); everything else (reads, keys,
dead letters) stays on the aiosqlite connection. SQLite serialises the two writers with its lock
and ``busy_timeout``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.ledger import schema
from gateway.ledger.events import CHAIN_COLUMNS, EVENT_COLUMNS, SHADOW_COLUMNS
from gateway.ledger.store import DEAD_LETTER_COLUMNS, LedgerBatchLike, Row, insert_sql

_INSERT_EVENT = insert_sql("usage_events", EVENT_COLUMNS + CHAIN_COLUMNS, lambda i: "?")
_INSERT_SHADOW = insert_sql("shadow_costs", SHADOW_COLUMNS + CHAIN_COLUMNS, lambda i: "?")
_INSERT_DEAD = insert_sql("ledger_dead_letters", DEAD_LETTER_COLUMNS, lambda i: "?")
# what a refused value raises (NOT NULL, a type or size SQLite cannot bind); OperationalError
# (locked, read-only, disk I/O) is an outage, not a data error
_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    OverflowError,
    UnicodeError,
    TypeError,
    ValueError,
)


def migrate_sqlite(conn: sqlite3.Connection) -> int:
    """Synchronous migration (used by the async store through its thread, and by the CLI)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_version")}
    current = max(applied, default=0)
    for version in schema.pending(applied):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in schema.statements("sqlite", version):
                conn.execute(stmt)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        current = max(current, version)
    return int(current)


def _migrate_file(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # persistent: set once per file
        conn.execute("PRAGMA busy_timeout=5000")
        migrate_sqlite(conn)
    finally:
        conn.close()


class SQLiteStore:
    placeholder = "?"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._writer: ThreadPoolExecutor | None = None  # one thread: the batch writer's connection
        self._wconn: sqlite3.Connection | None = None  # used only in that thread

    async def open(self) -> None:
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_migrate_file, self.path)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")

    async def insert_batch(self, batch: LedgerBatchLike) -> None:
        assert self._db is not None, "store not open"
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nometer-ledger-write")
        await asyncio.get_running_loop().run_in_executor(self._writer, self._insert_sync, batch)

    def _insert_sync(self, batch: LedgerBatchLike) -> None:
        """The whole transaction, in the writer thread."""
        conn = self._wconn
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=5000")
            except BaseException:
                conn.close()
                raise
            self._wconn = conn
        try:
            conn.execute("BEGIN")
            try:
                conn.executemany(_INSERT_EVENT, batch.events)
                if batch.shadows:
                    conn.executemany(_INSERT_SHADOW, batch.shadows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError:  # locked, read-only, disk I/O: a fresh connection next time
            self._wconn = None
            conn.close()
            raise

    async def insert_dead_letters(self, rows: Sequence[Row]) -> None:
        assert self._db is not None
        await self._db.execute("BEGIN")
        try:
            await self._db.executemany(_INSERT_DEAD, rows)
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise

    def data_error(self, exc: BaseException) -> bool:
        return isinstance(exc, _DATA_ERRORS)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        assert self._db is not None
        async with self._db.execute(sql, params) as cur:
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, r, strict=False)) for r in await cur.fetchall()]

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.get_running_loop().run_in_executor(writer, self._close_writer)
            writer.shutdown(wait=True)
        if self._db is not None:
            await self._db.close()
            self._db = None

    def _close_writer(self) -> None:
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None
