"""A private database on the shared PostgreSQL (127.0.0.1:5432, trust auth), dropped afterwards.

The server is shared by every engineer's tests: a test makes its own database, never touches
another, and never stops or reconfigures the server (outages go through ``chaos_proxy``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

PG_PORT = 5432
ADMIN_DSN = f"postgresql://127.0.0.1:{PG_PORT}/test"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_database() -> Iterator[str]:
    """The name of a new, empty database; dropped (connections included) on exit."""
    name = f"nometer_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))
