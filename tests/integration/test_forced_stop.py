"""A second Ctrl-C (a forced exit) still ends the process and keeps what was queued: asyncio.run
then cancels every task, the recorder's writer among them, and the ledger's aiosqlite thread
(not a daemon) kept the process alive forever when the store was never closed."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_process import GatewayProcess


def test_a_second_sigint_exits_and_writes_what_was_queued(tmp_path: Path) -> None:
    with FakeUpstream() as fake:
        ledger = {"path": str(tmp_path / "ledger.db"), "flush_interval_ms": 2000}  # rows wait
        g = GatewayProcess(tmp_path, {"backends": [{"url": fake.base_url}], "ledger": ledger}).start()
        try:
            with httpx.Client(base_url=g.base_url, timeout=30) as c:
                for i in range(20):
                    body = {"model": "fake-model", "messages": [{"role": "user", "content": f"q{i}"}]}
                    assert c.post("/chat/completions", json=body).status_code == 200
            assert g.proc is not None
            g.proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
            g.proc.send_signal(signal.SIGINT)  # impatient: force it
            g.proc.wait(timeout=30)  # before the fix: never returned
        finally:
            if g.proc is not None and g.proc.poll() is None:
                g.proc.kill()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        rows = db.execute("SELECT COUNT(*) FROM usage_events").fetchone()[0]
    assert rows == 20  # the writer was cancelled, the stop wrote what was queued anyway
