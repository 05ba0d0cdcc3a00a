"""API keys: made once, shown once, stored only as a SHA-256 digest, looked up by that digest.

A key is ``nmk-`` plus 43 url-safe random characters (256 bits). Its public id (``key_...``) and
a display prefix are stored beside the digest; the key itself never is. The hot path hashes the
presented key and does one dict lookup (``KeyRing.find``); the stored digest is then compared
with ``hmac.compare_digest``, so no comparison of secret material leaks timing.

``KeyStore`` is the table (``api_keys``, schema migration 3) behind the CLI and the admin API:
synchronous sqlite3, one short connection per call (``PostgresKeyStore``: the same table in a
PostgreSQL ledger, so replicas share their keys), so the gateway runs it in a worker thread and
the CLI runs it directly, against the same ledger file, even while the gateway serves. Every write
bumps ``revision``; the gateway polls the highest revision (cheap) and reloads on a change, which
is how a key disabled from the CLI stops working within ``auth.refresh_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.ledger.sqlite import migrate_sqlite

KEY_PREFIX = "nmk-"


def digest(key: str | bytes) -> bytes:
    raw = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(raw).digest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    name: str
    team: str
    digest: bytes
    prefix: str  # first characters of the key, for people to recognise it
    created: float
    disabled: float | None = None
    expires: float | None = None  # a rotated key keeps working until then
    replaced_by: str | None = None

    def active(self, now: float) -> bool:
        return self.disabled is None and (self.expires is None or now < self.expires)

    def public(self) -> dict[str, object]:
        """What listings show: everything but the digest."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "team": self.team,
            "prefix": self.prefix,
            "created": self.created,
            "disabled": self.disabled,
            "expires": self.expires,
            "replaced_by": self.replaced_by,
            "active": self.active(time.time()),
        }


class KeyNotFound(LookupError):
    pass


_REVISION = object()  # stands for the write's new revision number in statement parameters
_COLUMNS = "key_id, name, team, digest, prefix, created, disabled, expires, replaced_by"


def _record(row: tuple[Any, ...]) -> KeyRecord:
    key_id, name, team, dig, prefix, created, disabled, expires, replaced_by = row
    return KeyRecord(
        str(key_id),
        str(name),
        str(team),
        bytes.fromhex(str(dig)),
        str(prefix),
        float(created),
        None if disabled is None else float(disabled),
        None if expires is None else float(expires),
        None if replaced_by is None else str(replaced_by),
    )


def _insert(rec: KeyRecord) -> tuple[str, tuple[object, ...]]:
    return (
        f"INSERT INTO api_keys ({_COLUMNS}, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            rec.key_id,
            rec.name,
            rec.team,
            rec.digest.hex(),
            rec.prefix,
            rec.created,
            None,
            None,
            None,
            _REVISION,
        ),
    )


class KeyStore:
    """The ``api_keys`` table of the ledger: a SQLite file, or PostgreSQL (``open_key_store``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5)
        conn.execute("PRAGMA busy_timeout=5000")
        migrate_sqlite(conn)
        return conn

    def _fetchall(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        conn = self._connect()
        try:
            return list(conn.execute(sql, params).fetchall())
        finally:
            conn.close()

    def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            rev = conn.execute("SELECT COALESCE(MAX(revision), 0) + 1 FROM api_keys").fetchone()[0]
            for sql, params in statements:
                conn.execute(sql, tuple(rev if v is _REVISION else v for v in params))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def create(self, team: str, name: str | None = None) -> tuple[str, KeyRecord]:
        """A new key for ``team``: (the key, shown once; its record)."""
        if not team:
            raise ValueError("a key needs a team")
        secret = new_secret()
        rec = KeyRecord(
            "key_" + secrets.token_hex(8),
            name or "default",
            team,
            digest(secret),
            secret[: len(KEY_PREFIX) + 6],
            time.time(),
        )
        self._write([_insert(rec)])
        return secret, rec

    def get(self, key_id: str) -> KeyRecord:
        rows = self._fetchall(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,))
        if not rows:
            raise KeyNotFound(key_id)
        return _record(rows[0])

    def list(self, team: str | None = None) -> list[KeyRecord]:
        sql = f"SELECT {_COLUMNS} FROM api_keys" + (" WHERE team = ?" if team else "") + " ORDER BY created"
        return [_record(r) for r in self._fetchall(sql, (team,) if team else ())]

    def disable(self, key_id: str) -> KeyRecord:
        self.get(key_id)
        self._write(
            [
                (
                    "UPDATE api_keys SET disabled = COALESCE(disabled, ?), revision = ? WHERE key_id = ?",
                    (time.time(), _REVISION, key_id),
                )
            ]
        )
        return self.get(key_id)

    def rotate(self, key_id: str, grace_s: float = 0.0) -> tuple[str, KeyRecord]:
        """A new key for the same team and name; the old one stops now, or after ``grace_s``."""
        old = self.get(key_id)
        if old.disabled is not None:
            raise ValueError(f"key {key_id} is disabled; create a new one instead")
        secret = new_secret()
        now = time.time()
        rec = KeyRecord(
            "key_" + secrets.token_hex(8),
            old.name,
            old.team,
            digest(secret),
            secret[: len(KEY_PREFIX) + 6],
            now,
        )
        if grace_s > 0:
            retire = (
                "UPDATE api_keys SET expires = ?, replaced_by = ?, revision = ? WHERE key_id = ?",
                (now + grace_s, rec.key_id, _REVISION, key_id),
            )
        else:
            retire = (
                "UPDATE api_keys SET disabled = ?, replaced_by = ?, revision = ? WHERE key_id = ?",
                (now, rec.key_id, _REVISION, key_id),
            )
        self._write([_insert(rec), retire])
        return secret, rec

    def revision(self) -> int:
        value = self._fetchall("SELECT COALESCE(MAX(revision), 0) FROM api_keys")[0][0]
        return int(str(value))

    def active(self) -> tuple[KeyRecord, ...]:
        """Every key not disabled (expiry is checked at lookup)."""
        rows = self._fetchall(f"SELECT {_COLUMNS} FROM api_keys WHERE disabled IS NULL")
        return tuple(_record(r) for r in rows)


class PostgresKeyStore(KeyStore):
    """The same table in a PostgreSQL ledger, shared by every replica (and the CLI).

    The store's methods are synchronous (the gateway calls them in worker threads, the CLI
    directly); asyncpg is async, so a private event loop in a daemon thread owns a small
    connection pool and every call is handed to it, one at a time. A pool, not one connection:
    when the server drops its connections (a restart, a failover), the next call connects
    again; a read that meets a dead connection is retried once on a fresh one, so the first poll
    after the database is back already sees every change. Connecting and each statement are
    bounded (``TIMEOUT_S``), so a database that hangs cannot hold a caller for long.
    """

    TIMEOUT_S = 5.0

    def __init__(self, url: str):
        import threading

        self.url = url
        self.path = Path(url)  # unused; keeps the attribute
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="nometer-keys-pg", daemon=True).start()
        self._pool: Any = None
        self._call(self._open())

    async def _open(self) -> None:
        import asyncpg

        from gateway.ledger.postgres import PostgresStore

        store = PostgresStore(self.url, max_size=1)  # migrations (api_keys is migration 3)
        await store.open()
        await store.close()
        self._pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=2, timeout=self.TIMEOUT_S, command_timeout=self.TIMEOUT_S
        )

    def _call(self, coro: Any) -> Any:
        with self._lock:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result(4 * self.TIMEOUT_S)

    @staticmethod
    def _pg(sql: str) -> str:
        n = 0

        def number(_: re.Match[str]) -> str:
            nonlocal n
            n += 1
            return f"${n}"

        return re.sub(r"\?", number, sql)

    def _fetchall(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        import asyncpg

        dead = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.AdminShutdownError, OSError)

        async def run() -> list[tuple[object, ...]]:
            for attempt in (1, 2):
                try:
                    async with self._pool.acquire(timeout=self.TIMEOUT_S) as conn:
                        return [tuple(r) for r in await conn.fetch(self._pg(sql), *params)]
                except dead:  # a connection the server dropped: once more, on a new one
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

        return self._call(run())  # type: ignore[no-any-return]

    def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        async def run() -> None:  # never retried: a write whose commit was lost must not run twice
            async with self._pool.acquire(timeout=self.TIMEOUT_S) as conn, conn.transaction():
                await conn.execute("LOCK TABLE api_keys IN EXCLUSIVE MODE")  # revisions stay ordered
                rev = await conn.fetchval("SELECT COALESCE(MAX(revision), 0) + 1 FROM api_keys")
                for sql, params in statements:
                    await conn.execute(self._pg(sql), *(rev if v is _REVISION else v for v in params))

        self._call(run())

    def close(self) -> None:
        if self._pool is not None:
            self._call(self._pool.close())
        self._loop.call_soon_threadsafe(self._loop.stop)


def open_key_store(path: str | Path, url: str | None) -> KeyStore:
    """The key table of the configured ledger: PostgreSQL when ``url`` is set, else SQLite."""
    return PostgresKeyStore(url) if url else KeyStore(path)
