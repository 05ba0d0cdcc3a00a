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
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gateway import logs
from gateway.ledger.events import EVENT_COLUMNS, RequestRecord
from gateway.meter.rows import LedgerBatch, estimate_prompt_tokens, make_finalizer
from gateway.meter.shadow import ShadowMeter
from gateway.settings import MeterSettings
from pricing.store import PriceStore

log = logging.getLogger("nometer.recorder")

_finalize: Callable[[list[RequestRecord]], LedgerBatch] | None = None
_access_log = False


@dataclass(frozen=True)
class MeterConfig:
    """What the meter process needs to meter exactly as the gateway would (pickled to it)."""

    meter: MeterSettings
    aliases: Mapping[str, str]
    price_dir: Path
    table_id: str  # the very table the gateway pinned
    log_level: str = "info"
    access_log: bool = False
    log_format: logs.LogFormat = "auto"


def init(config: MeterConfig) -> None:
    """Runs once in the worker: build the meter on the gateway's pinned table."""
    global _finalize, _access_log
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the gateway, which stops us
    logs.setup(config.log_level, config.log_format)
    table = PriceStore(config.price_dir).get(config.table_id)
    _finalize = make_finalizer(estimate_prompt_tokens, ShadowMeter(config.meter, table, config.aliases))
    _access_log = config.access_log


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

    def __init__(self, config: MeterConfig):
        self.config = config
        self._pool: ProcessPoolExecutor | None = None
        self.restarts = 0

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init,
                initargs=(self.config,),
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
