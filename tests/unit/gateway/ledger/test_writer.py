"""One bad row never takes its batch with it (issue 11, item 2), on a real SQLite ledger. The bad
row is made by hand (a NULL where the schema says NOT NULL: what sanitising cannot repair)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from gateway.ledger.chain import Sealer
from gateway.ledger.events import EVENT_COLUMNS, RequestRecord
from gateway.ledger.sqlite import SQLiteStore
from gateway.ledger.writer import BatchWriter
from gateway.meter.rows import make_finalizer

_OUTCOME = EVENT_COLUMNS.index("outcome")


def _rec(i: int) -> RequestRecord:
    return RequestRecord(f"req-{i}", "/v1/chat/completions", "m", 1_700_000_000.0 + i, 0.0, status=200)


async def test_a_refused_row_is_dead_lettered_and_the_rest_of_its_batch_lands(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    store = SQLiteStore(db)
    await store.open()
    batch = make_finalizer(None)([_rec(i) for i in range(5)])
    bad = list(batch.events[2])
    bad[_OUTCOME] = None  # NOT NULL
    batch.events[2] = tuple(bad)
    Sealer().seal(batch)
    writer = BatchWriter(store, timeout_s=10)
    assert await writer.write(batch)
    assert await writer.write(batch)  # a replay of the same batch: nothing twice
    await store.close()
    with sqlite3.connect(db) as c:
        ids = [r[0] for r in c.execute("SELECT request_id FROM usage_events ORDER BY id")]
        dead = c.execute(
            "SELECT request_uid, chain_seq, rows_count, error, payload FROM ledger_dead_letters"
        ).fetchall()
    assert ids == ["req-0", "req-1", "req-3", "req-4"]
    assert len(dead) == 1 and writer.dead_lettered == 2  # once per write; kept once
    uid, seq, n, error, payload = dead[0]
    assert uid == batch.events[2][EVENT_COLUMNS.index("uid")] and seq == 3 and n == 1
    assert "NOT NULL" in error and orjson.loads(payload)["events"][0][0] == "req-2"
