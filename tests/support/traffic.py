"""Steady client traffic against a gateway, and what a test needs to check that none of it was lost.

``Traffic`` sends chat completions from a few threads, each with its own ``x-request-id``, and
remembers every request the client saw answered (and when). ``ledger_ids`` counts the ledger's
rows per request id; ``audit`` runs ``nometer verify``'s checks in process.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.ledger.reader import open_reader
from gateway.meter.audit import Audit, Auditor

BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "count to three"}]}


class Traffic:
    def __init__(self, base_url: str, prefix: str, threads: int = 4):
        self.base_url = base_url
        self.prefix = prefix
        self.answered: dict[str, float] = {}  # request id -> monotonic time the answer arrived
        self.failed = 0
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            n = 0
            while not self._stop.is_set():
                rid = f"{self.prefix}-{worker}-{n}"
                n += 1
                try:
                    r = client.post("/chat/completions", json=BODY, headers={"x-request-id": rid})
                except httpx.HTTPError:
                    self.failed += 1
                    continue
                if r.status_code == 200:
                    with self._lock:
                        self.answered[rid] = time.monotonic()

    def start(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def wait_for(self, more: int, timeout: float = 60) -> None:
        """Wait until ``more`` further requests have been answered."""
        target = len(self.answered) + more
        deadline = time.monotonic() + timeout
        while len(self.answered) < target and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.answered) >= target, f"{len(self.answered)} answered of {target}"


def ledger_ids(db: str) -> Counter[str]:
    """How many usage rows each request id has (``db``: a SQLite path or a PostgreSQL URL)."""
    reader = open_reader(db)
    try:
        return Counter(str(r["request_id"]) for r in reader.fetch("SELECT request_id FROM usage_events"))
    finally:
        reader.close()


def audit(db: str, price_dir: Path) -> Audit:
    reader = open_reader(db)
    try:
        return Auditor(reader, price_dir).run()
    finally:
        reader.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    """Poll ``predicate()`` until it is true (a generous deadline, never a speed assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.05)
