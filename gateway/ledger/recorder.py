"""The recorder: a bounded in-memory queue and one batch writer, off the request path.

``record()`` never awaits and never blocks: the proxy calls it exactly once per request. When the
queue is full the event is dropped, counted and logged loudly (a request is never slowed down by
the ledger). The writer wakes on the first event, waits out one flush window (<= 100 ms by
default) to gather a batch, turns records into ledger rows in the meter process (JSON parsing,
token counting, pricing: CPU work kept off the event loop and its GIL; ``gateway.meter.worker``), or
in a worker thread when that is off, seals them into this process's hash chain
(``gateway.ledger.chain``: once, here, before any write), then writes the batch in one
transaction. A graceful stop writes everything still queued; a crash loses at most one window.
With ``access_log`` on, the same worker thread writes one access-log line per request
(``gateway.logs.access``): the only access log, so the proxy never formats or writes one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from gateway import logs
from gateway.ledger.chain import Sealer
from gateway.ledger.events import EVENT_COLUMNS, RequestRecord
from gateway.ledger.store import LedgerBatchLike, Store
from gateway.settings import LedgerSettings

log = logging.getLogger("nometer.recorder")

Finalizer = Callable[[list[RequestRecord]], LedgerBatchLike]


class MeterProcess(Protocol):
    """Where batches are metered off this process (``gateway.meter.worker.MeterPool``)."""

    async def run(self, batch: list[RequestRecord]) -> LedgerBatchLike: ...

    async def close(self) -> None: ...


class Recorder:
    def __init__(
        self,
        store: Store,
        settings: LedgerSettings,
        finalize: Finalizer,
        *,
        access_log: bool = False,
        pool: MeterProcess | None = None,
        chain: Sealer | None = None,
    ):
        self._store = store
        self._finalize = finalize
        self._pool = pool  # a metering process; None: meter in a thread of this process
        self.chain = chain or Sealer()  # this process's hash chain: every row is sealed once, here
        self._access_log = access_log
        self._max = settings.queue_max
        self._window = settings.flush_interval_ms / 1000
        self._batch_max = settings.batch_max
        self._queue: deque[RequestRecord] = deque()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_drop_log = 0.0
        self.dropped = 0
        self.written = 0
        self.listeners: list[
            Callable[[LedgerBatchLike], Any]
        ] = []  # e.g. metrics; run in a worker thread after a write

    @property
    def depth(self) -> int:
        return len(self._queue)

    def record(self, rec: RequestRecord) -> None:
        if len(self._queue) >= self._max:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log > 1.0:
                self._last_drop_log = now
                log.error(
                    "LEDGER QUEUE FULL (%d): usage events are being DROPPED (%d so far); "
                    "the store cannot keep up",
                    self._max,
                    self.dropped,
                )
            return
        self._queue.append(rec)
        if not self._wake.is_set():
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="nometer-recorder")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._wake.wait()
            try:  # gather a batch for one window; a stop cuts the wait short
                await asyncio.wait_for(self._stopping.wait(), self._window)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued now, in batches."""
        while self._queue:
            n = min(len(self._queue), self._batch_max)
            batch = [self._queue.popleft() for _ in range(n)]
            try:
                rows = self.chain.seal(await self._make_rows(batch))  # before any write or spool
            except Exception:
                log.exception("could not turn %d usage events into rows; they are lost", n)
                self.dropped += n
                continue
            await self._write(rows)

    async def _make_rows(self, batch: list[RequestRecord]) -> LedgerBatchLike:
        if self._pool is not None:
            try:
                return await self._pool.run(batch)
            except Exception:
                log.exception(
                    "the meter process failed on a batch of %d; metering it here instead", len(batch)
                )
        return await asyncio.to_thread(self._rows, batch)

    def _rows(self, batch: list[RequestRecord]) -> LedgerBatchLike:
        rows = self._finalize(batch)
        if self._access_log:
            try:
                logs.access(EVENT_COLUMNS, rows.events)
            except Exception:  # a log line is never worth a ledger row
                log.exception("access log of %d requests failed", len(rows.events))
        return rows

    def _notify(self, rows: LedgerBatchLike) -> None:
        for listener in self.listeners:
            try:
                listener(rows)
            except Exception:  # a metrics bug must never cost a ledger row (or a retry of one)
                log.exception("recorder listener failed")

    async def _write(self, rows: LedgerBatchLike) -> None:
        for attempt in range(4):
            try:
                await self._store.insert_batch(rows)
            except Exception:
                log.exception("ledger write of %d rows failed (attempt %d)", len(rows.events), attempt + 1)
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            self.written += len(rows.events)
            if self.listeners:  # metrics: CPU work, so in the worker thread, not on the event loop
                await asyncio.to_thread(self._notify, rows)
            return
        self.dropped += len(rows.events)
        log.error("LEDGER WRITE GAVE UP: %d usage events lost", len(rows.events))

    async def stop(self) -> None:
        """Stop the writer and drain the queue (called on graceful shutdown)."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task  # finishes its current batch; never cancelled mid-write
            self._task = None
        await self.flush()
        if self._pool is not None:
            await self._pool.close()
