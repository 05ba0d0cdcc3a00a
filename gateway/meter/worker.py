"""The shadow meter's own process: metering CPU off the gateway's event loop *and* its GIL.

Turning a record into ledger rows means parsing the response, re-tokenizing the request and the
answer for each reference model and pricing them: a few hundred microseconds per request. In a
thread of the gateway process that work competes with the event loop for the GIL and for the
core (measured: 1.10 -> 0.41 ms of gateway-process CPU per request, +0.81 -> +0.37 ms added p50,
when it moved out; docs/benchmarks.md). So by default a single worker process does it: batches
go there by pickle and ledger rows come back; the gateway process only writes them. One worker,
so the prefix tracker sees every request in order. If the worker dies, the recorder meters that
batch in a thread and starts a new worker for the next one: no record is lost.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from gateway import logs
from gateway.ledger.events import EVENT_COLUMNS, RequestRecord
from gateway.meter.rows import LedgerBatch
from gateway.settings import Settings

log = logging.getLogger("nometer.recorder")

_finalize: Callable[[list[RequestRecord]], LedgerBatch] | None = None
_access_log = False


def init(settings: Settings, table_id: str) -> None:
    """Runs once in the worker: build the meter exactly as the gateway would have."""
    global _finalize, _access_log
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the gateway, which stops us
    logs.setup(settings.server.log_level)
    from gateway.app import finalizer  # the gateway's own wiring, imported here to avoid a cycle

    _finalize = finalizer(settings, table_id)  # the very table the gateway pinned
    _access_log = settings.server.access_log


def finalize(batch: list[RequestRecord]) -> LedgerBatch:
    assert _finalize is not None, "worker not initialized"
    rows = _finalize(batch)
    if _access_log:
        try:
            logs.access(EVENT_COLUMNS, rows.events)
        except Exception:  # a log line is never worth a ledger row
            log.exception("access log of %d requests failed", len(rows.events))
    return rows


class MeterPool:
    """One metering process, started on first use (spawned: no fork of a threaded server)."""

    def __init__(self, settings: Settings, table_id: str):
        self.settings = settings
        self.table_id = table_id
        self._pool: ProcessPoolExecutor | None = None
        self.restarts = 0

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init,
                initargs=(self.settings, self.table_id),
            )
        return self._pool

    async def run(self, batch: list[RequestRecord]) -> LedgerBatch:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor(), finalize, batch)
        except Exception:
            pool, self._pool = self._pool, None  # a new worker for the next batch
            self.restarts += 1
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True)
