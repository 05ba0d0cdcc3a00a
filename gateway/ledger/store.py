"""The ledger store contract (implemented by ``sqlite.SQLiteStore`` and ``postgres.PostgresStore``).

Only the recorder writes (batches, off the request path); reports and the CLI read. Writes are
idempotent: every insert is ``INSERT ... ON CONFLICT DO NOTHING`` (the request uid and the chain
position are unique), so a batch replayed from the spool after a lost commit is counted once.
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
        """Write a batch's event rows and shadow rows in one transaction (rows already there are
        skipped)."""
        ...

    async def insert_dead_letters(self, rows: Sequence[Row]) -> None:
        """Keep requests the store refused (``DEAD_LETTER_COLUMNS``; one already kept is skipped)."""
        ...

    def data_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the store refused a value (so retrying cannot help), not that it
        is down, locked or slow."""
        ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class LedgerBatchLike(Protocol):
    events: list[Row]
    shadows: list[Row]


DEAD_LETTER_COLUMNS: tuple[str, ...] = (
    "ts",
    "chain_id",
    "chain_seq",
    "rows_count",
    "request_uid",
    "error",
    "payload",
)


def insert_sql(table: str, columns: Sequence[str], placeholder: Callable[[int], str]) -> str:
    """An idempotent insert: a row that would repeat a unique key is skipped."""
    marks = ", ".join(placeholder(i + 1) for i in range(len(columns)))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT DO NOTHING"
