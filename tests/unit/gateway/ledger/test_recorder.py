from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from gateway.ledger.events import EVENT_COLUMNS, RequestRecord
from gateway.ledger.recorder import Recorder
from gateway.ledger.schema import LATEST
from gateway.ledger.sqlite import SQLiteStore
from gateway.ledger.store import LedgerBatchLike
from gateway.meter.rows import make_finalizer
from gateway.settings import LedgerSettings


def _rec(i: int) -> RequestRecord:
    return RequestRecord(
        f"req-{i}",
        "/v1/chat/completions",
        "m",
        1_700_000_000.0 + i,
        0.0,
        served_model="m",
        status=200,
        response=b'{"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}',
    )


def _rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as c:
        return c.execute(
            "SELECT request_id, prompt_tokens, completion_tokens, day FROM usage_events ORDER BY id"
        ).fetchall()


async def test_batches_within_the_window_and_drains_on_stop(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    store = SQLiteStore(db)
    await store.open()
    rec = Recorder(
        store, LedgerSettings(path=str(db), flush_interval_ms=20, batch_max=3), make_finalizer(None)
    )
    rec.start()
    for i in range(5):
        rec.record(_rec(i))
    await asyncio.sleep(0.3)
    assert [r[0] for r in _rows(db)] == [f"req-{i}" for i in range(5)]
    for i in range(5, 8):
        rec.record(_rec(i))
    await rec.stop()  # drains what the window had not written yet
    rows = _rows(db)
    assert len(rows) == 8 and rows[-1] == ("req-7", 3, 2, "2023-11-14")
    assert rec.written == 8 and rec.dropped == 0
    await store.close()


async def test_a_full_queue_spools_without_blocking_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    store = SQLiteStore(db)
    await store.open()
    rec = Recorder(store, LedgerSettings(path=str(db), queue_max=2), make_finalizer(None))
    for i in range(5):
        rec.record(_rec(i))  # no writer running: the queue fills, the rest goes to the spool
    assert rec.depth == 2 and rec.overflowed == 3 and rec.dropped == 0
    await rec.stop()
    assert sorted(str(r[0]) for r in _rows(db)) == [f"req-{i}" for i in range(5)]
    assert rec.dropped == 0 and not list((tmp_path / "spool").glob("*"))  # consumed, removed
    await store.close()


async def test_schema_is_versioned_and_reopen_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    for _ in range(2):
        s = SQLiteStore(db)
        await s.open()
        await s.close()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == LATEST
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = [r[1] for r in c.execute("PRAGMA table_info(usage_events)")]
    assert set(EVENT_COLUMNS) <= set(cols)


class _FailingStore(SQLiteStore):
    fails = 2

    async def insert_batch(self, rows: LedgerBatchLike) -> None:
        if self.fails:
            self.fails -= 1
            raise sqlite3.OperationalError("database is locked")
        await super().insert_batch(rows)


async def test_write_failure_is_retried(tmp_path: Path) -> None:
    store = _FailingStore(tmp_path / "l.db")
    await store.open()
    rec = Recorder(store, LedgerSettings(path=str(tmp_path / "l.db")), make_finalizer(None))
    rec.record(_rec(1))
    await rec.stop()
    assert len(_rows(tmp_path / "l.db")) == 1
    await store.close()


async def test_rows_are_sealed_once_into_this_processs_chain_before_they_are_written(tmp_path: Path) -> None:
    from gateway.ledger.chain import EVENTS, ChainWalk

    db = tmp_path / "l.db"
    store = SQLiteStore(db)
    await store.open()
    rec = Recorder(store, LedgerSettings(path=str(db), batch_max=2), make_finalizer(None))
    for i in range(5):
        rec.record(_rec(i))
    await rec.stop()  # three batches
    await store.close()
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        rows = [dict(r) for r in c.execute("SELECT * FROM usage_events ORDER BY chain_seq")]
    assert [r["chain_seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert {r["chain_id"] for r in rows} == {rec.chain.chain_id}
    walk = ChainWalk(rec.chain.chain_id)
    assert [f for r in rows for f in walk.feed(EVENTS, r)] == []
    head = walk.head()
    assert head is not None and head.head_digest == rec.chain.head
