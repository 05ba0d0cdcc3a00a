"""The spool file and the recorder's spool path, on real SQLite files. ``_FailingStore`` is a fake
for fault injection only: it refuses a number of writes as a locked SQLite would."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger.chain import EVENTS, SHADOWS, ChainWalk, Finding
from gateway.ledger.events import RequestRecord
from gateway.ledger.recorder import Recorder
from gateway.ledger.spool import Spool, SpoolFile
from gateway.ledger.sqlite import SQLiteStore
from gateway.ledger.store import LedgerBatchLike
from gateway.meter.rows import make_finalizer
from gateway.settings import LedgerSettings
from tests.unit.gateway.ledger.test_recorder import _rec


class _FailingStore(SQLiteStore):
    """Refuses ``fails`` writes (then works), as SQLite does while another process holds its lock."""

    def __init__(self, path: Path, fails: int):
        super().__init__(path)
        self.fails = fails
        self.attempts = 0

    async def insert_batch(self, batch: LedgerBatchLike) -> None:
        self.attempts += 1
        if self.fails:
            self.fails -= 1
            raise sqlite3.OperationalError("database is locked")
        await super().insert_batch(batch)


def _table(db: Path, table: str) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute(f"SELECT * FROM {table} ORDER BY id")]


def _walk(db: Path) -> tuple[list[Finding], int]:
    """Every chain of the ledger walked as ``verify`` does (both tables merged in seal order)."""
    rows = [(EVENTS, r) for r in _table(db, EVENTS)] + [(SHADOWS, r) for r in _table(db, SHADOWS)]
    findings: list[Finding] = []
    for chain in sorted({r["chain_id"] for _, r in rows}):
        walk = ChainWalk(chain)
        for table, r in sorted(
            (x for x in rows if x[1]["chain_id"] == chain), key=lambda x: x[1]["chain_seq"]
        ):
            findings += walk.feed(table, r)
    return findings, len(rows)


def _settings(tmp_path: Path, **kw: Any) -> LedgerSettings:
    return LedgerSettings(path=str(tmp_path / "l.db"), flush_interval_ms=10, **kw)


def test_a_torn_last_frame_is_cut_off_and_a_held_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.rows"
    f = SpoolFile(path)
    f.append([b"one", b"two"])
    with pytest.raises(BlockingIOError):
        SpoolFile(path)  # held by its (live) owner: another process never replays it
    f.close()
    with path.open("r+b") as raw:
        raw.truncate(path.stat().st_size - 1)  # kill -9 in the middle of an append
    g = SpoolFile(path)
    assert g.frames == 1 and g.peek(5)[0] == [b"one"]
    _, offset = g.peek(1)
    g.consume(1, offset)
    assert g.frames == 0 and path.stat().st_size == 8  # consumed: the space is reclaimed
    g.close()


async def test_a_store_outage_is_spooled_and_replayed_in_seal_order(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    store = _FailingStore(db, fails=3)
    await store.open()
    rec = Recorder(store, _settings(tmp_path, batch_max=2), make_finalizer(None))
    rec.start()
    for i in range(4):
        rec.record(_rec(i))
    deadline = asyncio.get_running_loop().time() + 20
    while rec.spool.rows_pending == 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert rec.spool.rows_pending > 0 and rec.state()["replaying"]  # the store refused: kept on disk
    for i in range(4, 10):
        rec.record(_rec(i))  # while batches wait in the spool, new ones go behind them
    while (rec.spool.rows_pending or rec.written < 10) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    await rec.stop()
    await store.close()
    events = _table(db, EVENTS)
    assert sorted(e["request_id"] for e in events) == sorted(f"req-{i}" for i in range(10))
    assert rec.replayed > 0 and rec.dropped == 0 and store.attempts > 3
    findings, n = _walk(db)
    assert findings == [] and n == 10  # no REORDERED: ids grow with the seal order


async def test_a_graceful_stop_with_the_store_down_keeps_the_spool_for_the_next_start(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    down = _FailingStore(db, fails=10_000)
    await down.open()
    first = Recorder(down, _settings(tmp_path), make_finalizer(None))
    first.start()
    for i in range(3):
        first.record(_rec(i))
    await first.stop()  # the store never answered: the batch stays on disk
    await down.close()
    assert _table(db, EVENTS) == [] and len(list((tmp_path / "spool").glob("*.rows"))) == 1
    store = SQLiteStore(db)
    await store.open()
    second = Recorder(store, _settings(tmp_path), make_finalizer(None))
    second.start()  # takes over the dead process's spool file and replays it
    second.record(_rec(3))
    deadline = asyncio.get_running_loop().time() + 20
    while len(_table(db, EVENTS)) < 4 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    await second.stop()
    await store.close()
    events = _table(db, EVENTS)
    assert sorted(e["request_id"] for e in events) == [f"req-{i}" for i in range(4)]
    assert {e["chain_id"] for e in events} == {first.chain.chain_id, second.chain.chain_id}
    assert _walk(db)[0] == [] and not list((tmp_path / "spool").glob("*"))


async def test_replaying_a_batch_already_written_counts_it_once(tmp_path: Path) -> None:
    """A commit whose answer was lost (or kill -9 between the write and the spool's consume): the
    batch is in the store and in the spool; replay must not write it twice."""
    db = tmp_path / "l.db"
    store = SQLiteStore(db)
    await store.open()
    rec = Recorder(store, _settings(tmp_path), make_finalizer(None))
    batch = rec.chain.seal(make_finalizer(None)([_rec(1), _rec(2)]))
    await store.insert_batch(batch)
    rec.spool.append_rows(batch)
    rec.spool.close()
    again = Recorder(store, _settings(tmp_path), make_finalizer(None))
    again.start()
    deadline = asyncio.get_running_loop().time() + 20
    while (again.replayed < 2) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    await again.stop()
    await store.close()
    assert [e["request_id"] for e in _table(db, EVENTS)] == ["req-1", "req-2"] and again.replayed == 2
    assert _walk(db)[0] == []


async def test_a_full_spool_is_loud_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "l.db"
    store = _FailingStore(db, fails=10_000)
    await store.open()
    spool = Spool(tmp_path / "spool", "tiny", max_bytes=64)  # smaller than one batch
    rec = Recorder(store, _settings(tmp_path), make_finalizer(None), spool=spool)
    rec.record(_rec(1))
    await rec.stop()
    await store.close()
    assert rec.dropped == 1 and "LEDGER SPOOL FULL" in caplog.text


class _SlowStore(SQLiteStore):
    """Takes ``delay`` seconds over its first write (a stalled disk or a lock held a moment)."""

    delay = 0.3

    async def insert_batch(self, batch: LedgerBatchLike) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
            self.delay = 0
        await super().insert_batch(batch)


async def test_a_write_that_outlasts_its_window_is_spooled_and_counted_once(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    store = _SlowStore(db)
    await store.open()
    rec = Recorder(store, _settings(tmp_path), make_finalizer(None))
    seen: list[int] = []
    rec.listeners.append(lambda rows: seen.append(len(rows.events)))
    rec.start()
    for i in range(3):
        rec.record(_rec(i))
    deadline = asyncio.get_running_loop().time() + 20
    while rec.spool.rows_pending == 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
    assert rec.spool.rows_pending == 1  # on disk while the write still runs: a kill -9 keeps it
    rec.record(_rec(3))  # goes behind it
    while (
        rec.spool.rows_pending or len(_table(db, EVENTS)) < 4
    ) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    await rec.stop()
    await store.close()
    assert [e["request_id"] for e in _table(db, EVENTS)] == [f"req-{i}" for i in range(4)]
    assert sum(seen) == 4 and rec.written == 4  # the copy of the landed batch was not counted again
    assert _walk(db)[0] == []


async def test_what_waits_behind_a_slow_batch_is_spilled_to_disk_and_lands_once(tmp_path: Path) -> None:
    """The meter is slower than traffic (a finalizer that stalls on its first batch: fault
    injection): records queued meanwhile go to the spool's intake instead of waiting in memory."""
    db = tmp_path / "l.db"
    store = SQLiteStore(db)
    await store.open()
    real = make_finalizer(None)
    stalls = [2.0]

    def slow(batch: list[RequestRecord]) -> LedgerBatchLike:
        if stalls:
            time.sleep(stalls.pop())
        return real(batch)

    rec = Recorder(store, _settings(tmp_path), slow)
    rec.start()
    rec.record(_rec(0))
    deadline = asyncio.get_running_loop().time() + 20
    while stalls and asyncio.get_running_loop().time() < deadline:  # until the stall has begun
        await asyncio.sleep(0.005)
    for i in range(1, 6):
        rec.record(_rec(i))  # behind the stalled batch
    while rec.spilled == 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert rec.spilled == 5 and rec.depth == 0  # on disk, not in memory
    while len(_table(db, EVENTS)) < 6 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    await rec.stop()
    await store.close()
    assert sorted(e["request_id"] for e in _table(db, EVENTS)) == [f"req-{i}" for i in range(6)]
    assert _walk(db)[0] == []
