"""The recorder: a bounded in-memory queue and one batch writer, off the request path; nothing lost.

``record()`` never awaits and never blocks: the proxy calls it exactly once per request. The
writer wakes on the first event, waits out one flush window (<= 100 ms by default) to gather a
batch, turns records into ledger rows in the meter process (JSON parsing, token counting,
pricing: CPU work kept off the event loop and its GIL; ``gateway.meter.worker``), or in a worker
thread when that is off, seals them into this process's hash chain (``gateway.ledger.chain``:
once, here, before any write or spool), then writes the batch in one transaction
(``gateway.ledger.writer``).

What the ledger cannot take now goes to the on-disk spool (``gateway.ledger.spool``), never
dropped: a request the queue has no room for is handed to the spool's thread (a queue put), kept
on disk and metered when the queue has room; a sealed batch the store cannot write (down, locked,
slower than ``write_timeout_s``) is appended to the spool with an fsync, and from then on every
batch goes behind it, so rows reach the store in seal order. A write still running after one
flush window is spooled too (and the copy skipped on replay if the write lands), so a slow store
never holds more than a window of records in memory. The spool is replayed, oldest batch
first, as soon as the store answers again (retried with a backoff up to ``_RETRY_MAX_S``); replay
is idempotent (``INSERT ... ON CONFLICT DO NOTHING``). Only a full spool (``spool_max_bytes``)
loses records, counted and logged loudly. When the writer is behind (one batch for a window or
more), what waits in the queue moves to the spool's intake too, so little more than a window is
ever in memory. A graceful stop writes or spools everything; kill -9 loses what was in memory:
the current window and the batch being metered. The next start replays what a dead
process left in the spool directory.

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
from gateway.ledger.events import EVENT_COLUMNS, RequestRecord, warm_up_record
from gateway.ledger.spool import Spool, SpoolFull, Taken, spool_dir
from gateway.ledger.store import LedgerBatchLike, Store
from gateway.ledger.writer import BatchWriter
from gateway.settings import LedgerSettings

log = logging.getLogger("nometer.recorder")

Finalizer = Callable[[list[RequestRecord]], LedgerBatchLike]
_RETRY_MIN_S = 0.2  # after a failed write the store is tried again after this, doubling...
_RETRY_MAX_S = 2.0  # ...up to this, for as long as it is down (every batch meanwhile spooled)
_STOP_ATTEMPTS = 3  # a graceful stop tries the store this often (then the spool keeps the rest)...
_STOP_RETRY_S = 2.0  # ...but retries only within this (each try is bounded by write_timeout_s)
# batches of at most this many requests update the metrics on the event loop (tens of
# microseconds); larger ones in a worker thread (a thread hand-off costs more than a few rows)
_NOTIFY_INLINE = 16


def _first_seal(rows: LedgerBatchLike) -> tuple[object, object] | None:
    """A sealed batch's first (chain id, sequence number): which batch it is."""
    first = rows.events[0] if rows.events else rows.shadows[0] if rows.shadows else None
    return None if first is None else (first[-5], first[-4])


class MeterProcess(Protocol):
    """Where batches are metered off this process (``gateway.meter.worker.MeterPool``)."""

    ready: bool  # started and answering: until then batches are metered in a thread here

    async def run(self, batch: list[RequestRecord]) -> LedgerBatchLike: ...

    async def start(self) -> None: ...

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
        spool: Spool | None = None,
    ):
        self._store = store
        self._finalize = finalize
        self._pool = pool  # a metering process; None: meter in a thread of this process
        self.chain = chain or Sealer()  # this process's hash chain: every row is sealed once, here
        self.spool = spool or Spool(spool_dir(settings), self.chain.chain_id, settings.spool_max_bytes)
        self.writer = BatchWriter(store, settings.write_timeout_s)
        self._access_log = access_log
        self._max = settings.queue_max
        self._window = settings.flush_interval_ms / 1000
        self._batch_max = settings.batch_max
        self._queue: deque[RequestRecord] = deque()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None  # the meter process being spawned
        self._spiller: asyncio.Task[None] | None = None
        self._batch_since: float | None = None  # monotonic: when the writer took its current batch
        self._batching = asyncio.Event()  # set while a batch is metered or written (wakes the spiller)
        self._write_since: float | None = None  # ...and when the store write running now began
        self._last_loud = 0.0
        self._retry_at = 0.0  # monotonic: no store write before this (it failed just now)
        self._failures = 0
        self._inflight: asyncio.Task[bool] | None = None  # a direct write that outlasted its window
        self._inflight_key: tuple[object, object] | None = None  # its first row's chain position
        self._landed: tuple[object, object] | None = None  # ...once it landed: skip its spooled copy
        self.lost = 0  # rows that could not be made, or a full spool refused
        self.written = 0
        self.overflowed = 0  # requests the queue had no room for (kept in the spool)
        self.spilled = 0  # requests moved from the queue to the spool, the writer being behind
        self.replayed = 0  # requests written from the spool
        self.listeners: list[
            Callable[[LedgerBatchLike], Any]
        ] = []  # e.g. metrics; run in a worker thread after a write

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def dropped(self) -> int:
        """Usage events lost for good (the spool full or failing; rows that could not be made)."""
        return self.lost + self.spool.refused

    def state(self) -> dict[str, Any]:
        """The ledger's write path, for ``/metrics`` and ``/readyz``."""
        sp = self.spool
        pending = sp.rows_pending
        stalled = None
        since = self._write_since
        if since is not None and time.monotonic() - since > self._window:
            stalled = f"a ledger write has been running for {time.monotonic() - since:.1f} s"
        return {
            "queue_depth": len(self._queue),
            "spool_batches": pending,
            "spool_requests": sp.intake_pending + sp.inbox,
            "spool_bytes": sp.bytes,
            "spool_max_bytes": sp.max_bytes,
            "spool_dir": str(sp.directory),
            "replaying": pending > 0,
            "store_ok": self.writer.last_error is None and stalled is None,
            "store_error": self.writer.last_error or stalled,
            "overflowed": self.overflowed,
            "spilled": self.spilled,
            "replayed": self.replayed,
            "dead_lettered": self.writer.dead_lettered,
            "written": self.written,
            "dropped": self.dropped,
        }

    def _loud(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_loud > 1.0:
            self._last_loud = now
            log.error(msg, *args)

    def record(self, rec: RequestRecord) -> None:
        if len(self._queue) < self._max:
            self._queue.append(rec)
        elif self.spool.offer(rec):  # a queue put to the spool's thread: never blocks
            self.overflowed += 1
            if self.overflowed == 1 or self.overflowed % 1000 == 0:
                log.warning(
                    "ledger queue full (%d): requests go to the spool in %s (%d so far)",
                    self._max,
                    self.spool.directory,
                    self.overflowed,
                )
        else:
            self.lost += 1
            self._loud("LEDGER SPOOL CLOSED: a usage event arrived after the stop and is LOST")
            return
        if not self._wake.is_set():
            self._wake.set()

    async def warm(self) -> None:
        """Meter one made-up request here and drop its rows, so the tokenizers and the price table
        load before the first request (a second or two on a small box), not while real records
        wait for them in memory, where a kill -9 would lose them."""
        rec = warm_up_record(time.time())
        try:
            await asyncio.to_thread(self._finalize, [rec])
        except Exception:
            log.exception("warming the meter up failed (the first batch will load it)")

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def woken() -> None:  # the spool's thread appended overflowed requests
            loop.call_soon_threadsafe(self._wake.set)

        self.spool.on_intake = woken
        self._task = asyncio.create_task(self._run(), name="nometer-recorder")
        self._spiller = asyncio.create_task(self._spill_loop(), name="nometer-recorder-spill")

    async def _spill_loop(self) -> None:
        """Once a window: if the writer has been on one batch for a window or more (metering is
        slower than traffic, the store stalls), what waits in the queue goes to the spool's intake
        now, so no record sits in memory much longer than a window (a kill -9 loses only those)."""
        while not self._stopping.is_set():
            if not self._batching.is_set():  # idle: nothing to watch, no wake-up every window
                await self._batching.wait()
                continue
            try:
                async with asyncio.timeout(self._window):  # no task per wait, unlike wait_for()
                    await self._stopping.wait()
            except TimeoutError:
                pass
            since = self._batch_since
            if since is None or time.monotonic() - since < self._window or not self._queue:
                continue
            n = len(self._queue)
            for _ in range(n):
                rec = self._queue.popleft()
                if self.spool.offer(rec):
                    self.spilled += 1
                else:
                    self.lost += 1

    def _busy(self) -> bool:
        return bool(self.spool.rows_pending or self.spool.intake_pending)

    async def _run(self) -> None:
        try:
            found = await asyncio.to_thread(self.spool.recover)
        except OSError as exc:
            found = 0
            log.error("the spool directory %s cannot be read: %s", self.spool.directory, exc)
        if self._pool is not None:  # spawning takes seconds: batches meanwhile are metered here
            self._starting = asyncio.create_task(self._pool.start(), name="nometer-meter-start")
        if found:
            self._wake.set()
        while not self._stopping.is_set():
            if self._busy():  # a spool to replay: come back after the retry delay at the latest
                wait = max(self._retry_at - time.monotonic(), self._window)
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            else:
                await self._wake.wait()
            try:  # gather a batch for one window; a stop cuts the wait short
                async with asyncio.timeout(self._window):  # no task per wait, unlike wait_for()
                    await self._stopping.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self._cycle()

    async def _cycle(self) -> None:
        await self.flush()
        await self._meter_intake()
        await self._replay()

    async def flush(self) -> None:
        """Meter, seal and write (or spool) everything queued now, in batches."""
        while self._queue:
            n = min(len(self._queue), self._batch_max)
            await self._process([self._queue.popleft() for _ in range(n)])

    async def _meter_intake(self, *, stopping: bool = False) -> None:
        """Take overflowed requests back from the spool, while the queue leaves room for them."""
        while stopping or len(self._queue) < self._max // 2 + 1:
            if not self.spool.intake_pending:
                return  # nothing overflowed (the common case): no hop to the spool's thread
            try:
                got = await asyncio.to_thread(self.spool.take_intake, self._batch_max)
            except OSError as exc:
                self._loud("the spool cannot be read (%s): overflowed requests wait there", exc)
                return
            if got is None:
                return
            recs, taken = got
            await self._process(recs, taken)

    async def _process(self, batch: list[RequestRecord], taken: Taken | None = None) -> None:
        self._batch_since = time.monotonic()
        self._batching.set()
        try:
            rows = self.chain.seal(await self._make_rows(batch))  # before any write or spool
        except Exception:
            log.exception("could not turn %d usage events into rows; they are lost", len(batch))
            self.lost += len(batch)
            rows = None
        try:
            if taken is not None:  # sealed: metering them again would seal them twice
                await asyncio.to_thread(self.spool.consume, taken)
            if rows is not None:
                await self._deliver(rows)
        finally:
            self._batch_since = None
            self._batching.clear()

    async def _make_rows(self, batch: list[RequestRecord]) -> LedgerBatchLike:
        if self._pool is not None and self._pool.ready:
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

    async def _deliver(self, rows: LedgerBatchLike) -> None:
        """Write a sealed batch, or spool it: behind what the spool holds, or when the store fails."""
        if not rows.events and not rows.shadows:
            return
        if self._inflight is None and not self.spool.rows_pending and time.monotonic() >= self._retry_at:
            write = asyncio.create_task(self._write(rows))
            done, _ = await asyncio.wait({write}, timeout=self._window)
            if done and write.result():
                return
            if not done:  # a slow (locked, stalled) store: the batch is spooled now, so a kill -9 does
                self._inflight = write  # not lose it; if the write lands, replay skips the copy
                self._inflight_key = _first_seal(rows)
        try:
            await asyncio.to_thread(self.spool.append_rows, rows)
        except (SpoolFull, OSError) as exc:
            self.lost += len(rows.events)
            log.error(
                "LEDGER SPOOL FULL OR FAILING (%s): %d usage events LOST (%d so far); the store: %s",
                exc,
                len(rows.events),
                self.dropped,
                self.writer.last_error,
            )

    async def _write(self, rows: LedgerBatchLike) -> bool:
        self._write_since = time.monotonic()
        try:
            ok = await self.writer.write(rows)
        finally:
            self._write_since = None
        if not ok:
            self._failures += 1
            delay = min(_RETRY_MIN_S * 2 ** (self._failures - 1), _RETRY_MAX_S)
            self._retry_at = time.monotonic() + delay
            return False
        if self._failures:
            log.warning("the ledger store answers again after %d failed writes", self._failures)
        self._failures = 0
        self.written += len(rows.events)
        if self.listeners:  # metrics: CPU work; a large batch's in a worker thread, off the event loop
            if len(rows.events) <= _NOTIFY_INLINE:
                self._notify(rows)  # a few requests: cheaper here than the hand-off to a thread
            else:
                await asyncio.to_thread(self._notify, rows)
        return True

    async def _settled(self, *, wait: bool = False) -> bool:
        """Whether no direct write is still in flight (``wait``: until it is not)."""
        if self._inflight is not None:
            if not (wait or self._inflight.done()):
                return False
            if await self._inflight:  # its outcome is counted by _write; the spooled copy is in the
                self._landed = self._inflight_key  # store already: consumed unwritten, uncounted
            self._inflight = None
        return True

    async def _replay(self, *, force: bool = False) -> None:
        """Write spooled batches to the store, oldest first, while it takes them."""
        if not await self._settled(wait=force):
            return
        while self.spool.rows_pending and (force or time.monotonic() >= self._retry_at):
            got = await asyncio.to_thread(self.spool.peek_rows)
            if got is None:
                return
            rows, taken = got
            if self._landed is not None and _first_seal(rows) == self._landed:
                self._landed = None
                await asyncio.to_thread(self.spool.consume, taken)
                continue
            if not await self._write(rows):
                return
            await asyncio.to_thread(self.spool.consume, taken)
            self.replayed += len(rows.events)
            if not self.spool.rows_pending:
                log.warning("ledger spool replayed: %d requests written from it", self.replayed)
            if self._queue and not force:
                return  # new requests first; the loop comes back at once

    async def stop(self) -> None:
        """Stop the writer and write or spool everything (called on graceful shutdown)."""
        self._stopping.set()
        self._batching.set()  # the spiller sees the stop
        self._wake.set()
        for name in ("_task", "_spiller"):
            task: asyncio.Task[None] | None = getattr(self, name)
            setattr(self, name, None)
            if task is None:
                continue
            try:
                await task  # finishes its current batch; never cancelled mid-write by us
            except asyncio.CancelledError:
                # A forced exit (a second Ctrl-C: asyncio.run cancels every task) cancelled the
                # writer itself: go on, what is queued is still written or spooled below. If only
                # this stop is being cancelled, give way.
                if not task.cancelled():
                    raise
        await self.flush()
        await asyncio.to_thread(self.spool.close_intake)  # what its thread held is on disk now
        await self._meter_intake(stopping=True)
        give_up = time.monotonic() + _STOP_RETRY_S  # a short blip should not leave work for the next start
        for attempt in range(_STOP_ATTEMPTS):
            await self._replay(force=True)
            if not self.spool.rows_pending or attempt == _STOP_ATTEMPTS - 1 or time.monotonic() > give_up:
                break
            await asyncio.sleep(_RETRY_MIN_S * 2**attempt)
        sp = self.spool
        if sp.rows_pending:
            log.error(
                "the ledger store is not answering (%s): %d batches stay in the spool %s, "
                "replayed when the gateway starts again",
                self.writer.last_error,
                sp.rows_pending,
                sp.directory,
            )
        await asyncio.to_thread(sp.close)
        if self._starting is not None:
            await self._starting
        if self._pool is not None:
            await self._pool.close()
