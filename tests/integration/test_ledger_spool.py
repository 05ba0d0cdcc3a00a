"""Nothing lost (issue 9): every request the client saw answered has exactly one ledger row, through
a full queue, a store outage, a graceful stop and a kill -9, and ``verify`` stays clean.

Real SQLite files and a real PostgreSQL on 127.0.0.1; the upstream is the fake OpenAI server (load,
not behaviour, is what matters here). Faults are injected, never faked: SQLite is made unwritable
by another connection holding its write lock (``BEGIN EXCLUSIVE``: what a backup or a stuck
process does; the tests run as root, for whom a read-only file or directory is still writable),
PostgreSQL is cut off by ``ChaosProxy``. Outages last a few seconds; the gateway's code path is
the one a 60 s outage takes (write fails, batch spooled, retried with a capped backoff).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.chaos_proxy import ChaosProxy
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_process import GatewayProcess
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.postgres import PG_PORT, fresh_database
from tests.support.traffic import Traffic, audit, ledger_ids, wait_until


def _ledger(url: str) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(url + "/readyz", timeout=10).json()["ledger"]
    return state


def _spooled(url: str) -> bool:
    return int(_ledger(url)["spool_batches"]) > 0


def _drained(url: str) -> bool:
    s = _ledger(url)
    return bool(s["spool_batches"] == 0 and s["spool_requests"] == 0 and s["queue_depth"] == 0)


def _assert_once(answered: dict[str, float], db: str, price_dir: Path) -> None:
    rows = ledger_ids(db)
    assert [rid for rid in answered if rows[rid] != 1] == []  # every answered request: one row
    assert max(rows.values()) == 1  # and nothing counted twice
    result = audit(db, price_dir)
    assert result.clean, [f.line() for f in result.findings]


class WriteLock:
    """Another connection holding the SQLite ledger's write lock: the gateway's writes fail with
    "database is locked" (after its 5 s busy timeout) until ``release``."""

    def __init__(self, db: Path):
        self._c = sqlite3.connect(db, isolation_level=None)
        self._c.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self._c.execute("ROLLBACK")
        self._c.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as name:
        yield f"postgresql://127.0.0.1:{PG_PORT}/{name}"


def test_a_tiny_queue_overflows_into_the_spool_and_loses_nothing(tmp_path: Path) -> None:
    with FakeUpstream() as fake:
        g = GatewayServer(gateway_settings(tmp_path, [fake.base_url], ledger={"queue_max": 1})).start()
        try:
            traffic = Traffic(g.base_url, "q", threads=8).start()
            traffic.wait_for(200)
            traffic.stop()
            assert g.runtime.recorder.overflowed > 0  # the queue was full: they went to the spool
        finally:
            g.stop()
    assert g.runtime.recorder.dropped == 0
    _assert_once(traffic.answered, str(g.db_path), tmp_path / "prices")


def test_a_sqlite_outage_during_traffic_is_spooled_and_replayed(tmp_path: Path) -> None:
    with FakeUpstream() as fake:
        g = GatewayServer(gateway_settings(tmp_path, [fake.base_url])).start()
        try:
            traffic = Traffic(g.base_url, "s").start()
            traffic.wait_for(20)
            lock = WriteLock(g.db_path)
            try:
                wait_until(lambda: _spooled(g.url), what="a batch in the spool")
                wait_until(
                    lambda: _ledger(g.url)["store_ok"] is False, what="readyz to say the store is stuck"
                )
                traffic.wait_for(50)  # served while the ledger is unwritable
            finally:
                lock.release()
            traffic.wait_for(20)
            traffic.stop()
            wait_until(lambda: _drained(g.url), what="the spool replayed")
            metrics = httpx.get(g.url + "/metrics").text
            assert "nometer_ledger_spool_batches 0.0" in metrics
            assert g.runtime.recorder.replayed > 0
        finally:
            g.stop()
    assert g.runtime.recorder.dropped == 0
    _assert_once(traffic.answered, str(g.db_path), tmp_path / "prices")


@pytest.mark.postgres
def test_a_postgres_outage_during_traffic_is_spooled_and_replayed(tmp_path: Path, pg_url: str) -> None:
    with FakeUpstream() as fake, ChaosProxy(PG_PORT) as link:
        via = pg_url.replace(f":{PG_PORT}/", f":{link.port}/")
        g = GatewayServer(gateway_settings(tmp_path, [fake.base_url], ledger={"url": via})).start()
        try:
            traffic = Traffic(g.base_url, "p").start()
            traffic.wait_for(20)
            link.set_mode("down")
            wait_until(lambda: _spooled(g.url), what="a batch in the spool")
            traffic.wait_for(50)
            link.set_mode("pass")
            traffic.wait_for(20)
            traffic.stop()
            wait_until(lambda: _drained(g.url), what="the spool replayed")
        finally:
            g.stop()
    assert g.runtime.recorder.dropped == 0 and g.runtime.recorder.replayed > 0
    _assert_once(traffic.answered, pg_url, tmp_path / "prices")


@pytest.mark.postgres
def test_a_graceful_stop_with_postgres_down_keeps_everything_for_the_next_start(
    tmp_path: Path, pg_url: str
) -> None:
    with FakeUpstream() as fake, ChaosProxy(PG_PORT) as link:
        via = pg_url.replace(f":{PG_PORT}/", f":{link.port}/")
        settings = gateway_settings(tmp_path, [fake.base_url], ledger={"url": via})
        with GatewayServer(settings) as g:
            traffic = Traffic(g.base_url, "g").start()
            traffic.wait_for(10)
            link.set_mode("down")
            traffic.wait_for(30)
            traffic.stop()
        assert list((tmp_path / "spool").glob("*.rows"))  # kept on disk, not lost
        link.set_mode("pass")
        again = gateway_settings(tmp_path, [fake.base_url], ledger={"url": via})
        with GatewayServer(again) as g2:
            wait_until(lambda: _drained(g2.url), what="the last process's spool replayed")
    assert not list((tmp_path / "spool").glob("*.rows"))
    _assert_once(traffic.answered, pg_url, tmp_path / "prices")


def test_kill_9_under_load_with_the_store_locked_loses_at_most_the_last_window(tmp_path: Path) -> None:
    """The gateway dies (SIGKILL) while batches wait in its spool and requests are in flight; the
    next start replays the dead process's spool. Requests answered long enough before the kill
    (more than a flush window, with a wide margin for a loaded machine) all have their row."""
    with FakeUpstream() as fake:
        config = {
            "backends": [{"url": fake.base_url}],
            "ledger": {"path": str(tmp_path / "ledger.db"), "flush_interval_ms": 20},
        }
        gw = GatewayProcess(tmp_path, config).start()
        traffic = Traffic(gw.base_url, "k").start()
        traffic.wait_for(20)
        lock = WriteLock(tmp_path / "ledger.db")
        try:
            wait_until(lambda: _spooled(gw.url), what="a batch in the spool")
            traffic.wait_for(30)
            os.kill(gw.pid, signal.SIGKILL)
            killed = time.monotonic()
            assert gw.proc is not None
            gw.proc.wait(30)
        finally:
            lock.release()
        traffic.stop()
        with GatewayProcess(tmp_path, config) as again:
            wait_until(lambda: _drained(again.url), what="the dead process's spool replayed")
    rows = ledger_ids(str(tmp_path / "ledger.db"))
    assert max(rows.values()) == 1
    missing = [rid for rid in traffic.answered if rows[rid] != 1]
    margin = 1.0  # seconds: the 20 ms window, and then some for a loaded machine
    assert [rid for rid in missing if traffic.answered[rid] < killed - margin] == []
    result = audit(str(tmp_path / "ledger.db"), tmp_path / "prices")
    assert result.clean, [f.line() for f in result.findings]
