"""The ledger store contract (implemented by ``sqlite.SQLiteStore`` and ``postgres.PostgresStore``).

Only the recorder writes (batches, off the request path); reports and the CLI read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

Row = tuple[Any, ...]


class Store(Protocol):
    placeholder: str  # "?" (SQLite) or "$" (PostgreSQL: $1, $2, ...)

    async def open(self) -> None:
        """Connect and bring the schema to the latest version."""
        ...

    async def insert_batch(self, batch: LedgerBatchLike) -> None:
        """Write a batch's event rows and shadow rows in one transaction."""
        ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class LedgerBatchLike(Protocol):
    events: list[Row]
    shadows: list[Row]


def insert_sql(table: str, columns: Sequence[str], placeholder: Callable[[int], str]) -> str:
    marks = ", ".join(placeholder(i + 1) for i in range(len(columns)))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
