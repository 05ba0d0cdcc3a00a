"""Direct access to a real ledger database, as someone tampering with it would have it.

``SQLiteLedger`` and ``PostgresLedger`` run plain SQL (``?`` placeholders for both) on a ledger
file or database, outside the gateway: tests edit, delete, insert and reorder rows with them and
then check that ``verify`` sees it. ``pg_database`` makes a private PostgreSQL database (optionally
a copy of another, through ``CREATE DATABASE ... TEMPLATE``) and drops it afterwards;
``copy_sqlite`` copies a ledger file (and its price directory) consistently, WAL included.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

ADMIN_DSN = "postgresql://127.0.0.1:5432/test"


class Ledger(Protocol):
    db: str  # what `nometer ... --db` takes

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def nullable(self, table: str) -> dict[str, bool]: ...

    def types(self, table: str) -> dict[str, str]: ...

    def close(self) -> None: ...


class SQLiteLedger:
    def __init__(self, path: Path):
        self.db = str(path)
        self._c = sqlite3.connect(path, isolation_level=None)
        self._c.row_factory = sqlite3.Row

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._c.execute(sql, list(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self._c.execute(sql, list(params))]

    def nullable(self, table: str) -> dict[str, bool]:
        return {r["name"]: not (r["notnull"] or r["pk"]) for r in self.query(f"PRAGMA table_info({table})")}

    def types(self, table: str) -> dict[str, str]:
        return {r["name"]: str(r["type"]).lower() for r in self.query(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self._c.close()


def _numbered(sql: str) -> str:
    n = 0

    def number(_: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return f"${n}"

    return re.sub(r"\?", number, sql)


class PostgresLedger:
    def __init__(self, url: str):
        import asyncpg

        self.db = url
        self._loop = asyncio.new_event_loop()
        self._conn = self._loop.run_until_complete(asyncpg.connect(url))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._loop.run_until_complete(self._conn.execute(_numbered(sql), *params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self._loop.run_until_complete(self._conn.fetch(_numbered(sql), *params))]

    def nullable(self, table: str) -> dict[str, bool]:
        rows = self.query(
            "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = ?", [table]
        )
        return {r["column_name"]: r["is_nullable"] == "YES" for r in rows}

    def types(self, table: str) -> dict[str, str]:
        rows = self.query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [table]
        )
        return {r["column_name"]: str(r["data_type"]).lower() for r in rows}

    def close(self) -> None:
        self._loop.run_until_complete(self._conn.close())
        self._loop.close()


def _admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def pg_database(template: str | None = None) -> Iterator[str]:
    """A fresh PostgreSQL database (a copy of the database named by the URL ``template``)."""
    import asyncpg

    name = f"nometer_{uuid.uuid4().hex[:12]}"
    copy = "" if template is None else f' TEMPLATE "{template.rsplit("/", 1)[1]}"'
    for attempt in range(50):  # a template must have no sessions: a stopped gateway's may linger a moment
        try:
            _admin(f'CREATE DATABASE "{name}"{copy}')
            break
        except asyncpg.ObjectInUseError:
            if attempt == 49:
                raise
            time.sleep(0.2)
    try:
        yield f"postgresql://127.0.0.1:5432/{name}"
    finally:
        _admin(f'DROP DATABASE "{name}" WITH (FORCE)')


def copy_sqlite(src: Path, dst: Path) -> Path:
    """Copy the ledger file ``src`` (and its ``prices/`` beside it) to ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    prices = src.parent / "prices"
    if prices.is_dir():
        shutil.copytree(prices, dst.parent / "prices", dirs_exist_ok=True)
    return dst
