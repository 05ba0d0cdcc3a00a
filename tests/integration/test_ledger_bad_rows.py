"""One bad request never poisons a batch (issue 11, item 2), on real SQLite and real PostgreSQL.

A refused request whose model name holds a NUL byte (PostgreSQL refuses NUL in text) lands with
the NUL replaced, beside the good requests of its batch. A row the store refuses even so (made
by hand: a NULL where the schema says NOT NULL) is written apart into ``ledger_dead_letters``
and the rest of its batch lands."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.ledger.chain import Sealer
from gateway.ledger.events import EVENT_COLUMNS, RequestRecord
from gateway.ledger.postgres import PostgresStore
from gateway.ledger.reader import open_reader
from gateway.ledger.sqlite import SQLiteStore
from gateway.ledger.store import Store
from gateway.ledger.writer import BatchWriter
from gateway.meter.rows import make_finalizer
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.postgres import PG_PORT, fresh_database
from tests.support.traffic import BODY, audit, ledger_ids

_OUTCOME = EVENT_COLUMNS.index("outcome")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {"path": str(tmp_path / "ledger.db")}
        return
    with fresh_database() as name:
        yield {"path": str(tmp_path / "ledger.db"), "url": f"postgresql://127.0.0.1:{PG_PORT}/{name}"}


def _db(ledger: dict[str, str]) -> str:
    return ledger.get("url") or ledger["path"]


def _fetch(db: str, sql: str) -> list[dict[str, object]]:
    reader = open_reader(db)
    try:
        return reader.fetch(sql)
    finally:
        reader.close()


def test_a_nul_in_a_model_name_costs_no_other_request_its_row(tmp_path: Path, ledger: dict[str, str]) -> None:
    with FakeUpstream() as fake:
        settings = gateway_settings(
            tmp_path,
            [fake.base_url],
            ledger={**ledger, "flush_interval_ms": 300},
            policy={"models": ["fake-model"]},  # any other name is refused by policy, with a row
        )
        with GatewayServer(settings) as g, httpx.Client(base_url=g.base_url, timeout=30) as c:
            bad = c.post(
                "/chat/completions",
                json={**BODY, "model": "gpt\x00-evil"},
                headers={"x-request-id": "bad-nul"},
            )
            assert bad.status_code == 403 and bad.json()["error"]
            for i in range(20):  # within the same flush window: one batch with the bad one
                assert (
                    c.post("/chat/completions", json=BODY, headers={"x-request-id": f"ok-{i}"}).status_code
                    == 200
                )
            for path in ("/nometer/receipts/%00", "/nometer/usage?team=%00"):  # lookups too: no 500
                assert c.get(path).status_code in (200, 404)
    db = _db(ledger)
    rows = ledger_ids(db)
    assert rows["bad-nul"] == 1 and all(rows[f"ok-{i}"] == 1 for i in range(20))
    stored = _fetch(
        db, "SELECT requested_model, outcome, error FROM usage_events WHERE request_id = 'bad-nul'"
    )
    assert stored[0]["requested_model"] == "gpt\ufffd-evil" and stored[0]["outcome"] == "refused"
    assert "\x00" not in str(stored[0]["error"])
    result = audit(db, tmp_path / "prices")
    assert result.clean, [f.line() for f in result.findings]


def test_a_row_the_store_refuses_is_dead_lettered_and_its_batch_lands(
    tmp_path: Path, ledger: dict[str, str]
) -> None:
    async def write() -> None:
        store: Store = PostgresStore(ledger["url"]) if "url" in ledger else SQLiteStore(ledger["path"])
        await store.open()
        try:
            recs = [
                RequestRecord(f"r-{i}", "/v1/chat/completions", "m", 1.7e9 + i, 0.0, status=200)
                for i in range(6)
            ]
            batch = make_finalizer(None)(recs)
            bad = list(batch.events[3])
            bad[_OUTCOME] = None
            batch.events[3] = tuple(bad)
            Sealer().seal(batch)
            writer = BatchWriter(store, timeout_s=30)
            assert await writer.write(batch)
            assert await writer.write(batch)  # replayed: still once
        finally:
            await store.close()

    asyncio.run(write())
    db = _db(ledger)
    assert sorted(ledger_ids(db)) == ["r-0", "r-1", "r-2", "r-4", "r-5"]
    dead = _fetch(
        db,
        "SELECT request_id_seq, error FROM (SELECT chain_seq AS request_id_seq, error FROM ledger_dead_letters) d",
    )
    assert len(dead) == 1 and dead[0]["request_id_seq"] == 4 and "null" in str(dead[0]["error"]).lower()
    result = audit(db, tmp_path / "prices")  # the gap at seq 4 is named, and is not a tampering
    assert result.clean and [(f.kind, f.seq) for f in result.findings] == [("dead_letter", 4)]
    assert "DEAD-LETTERED" in result.summary()
