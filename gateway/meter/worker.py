"""The shadow meter's own process: metering CPU off the gateway's event loop *and* its GIL.

Turning a record into ledger rows means parsing the response, re-tokenizing the request and the
answer for each reference model and pricing them: a few hundred microseconds per request. In a
thread of the gateway process that work competes with the event loop for the GIL and for the
core (measured: 1.10 -> 0.41 ms of gateway-process CPU per request, +0.81 -> +0.37 ms added p50,
when it moved out; docs/benchmarks.md). So by default a single worker process does it: batches
go there by pickle and ledger rows come back; the gateway process only writes them. One worker,
so the prefix tracker sees every request in order. If the worker dies, the recorder meters that
batch in a thread and starts a new worker for the next one: no record is lost.

The worker never outlives the gateway: after a kill -9 of the gateway nothing would ever stop it
(nor the ``multiprocessing`` resource tracker, which lives as long as the worker holds its pipe).
So on Linux it asks the kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and
everywhere a daemon thread checks once a second that its parent is still the one that started it.
The worker is started with the recorder; until it answers (a spawn takes seconds) the recorder
meters in a thread, so no record waits in memory for it (a kill -9 meanwhile would lose them).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
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
    parent_pid: int = 0  # the gateway's pid (0: os.getppid() when the worker starts)


_PR_SET_PDEATHSIG = 1
PARENT_POLL_S = 1.0


def die_with_parent(parent: int) -> None:
    """Exit when ``parent`` dies: at once on Linux (the kernel sends SIGKILL), within
    ``PARENT_POLL_S`` elsewhere (or if the first did not take)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)  # orphaned: no one will read our results

    threading.Thread(target=watch, name="nometer-parent-watch", daemon=True).start()


def init(config: MeterConfig) -> None:
    """Runs once in the worker: build the meter on the gateway's pinned table."""
    global _finalize, _access_log
    die_with_parent(config.parent_pid or os.getppid())
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


def ready() -> int:
    return os.getpid()


class MeterPool:
    """One metering process (spawned: no fork of a threaded server), started with the recorder."""

    def __init__(self, config: MeterConfig):
        self.config = config
        self._pool: ProcessPoolExecutor | None = None
        self.restarts = 0
        self.ready = False  # start() saw the worker answer (the recorder meters in a thread until then)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init,
                initargs=(
                    self.config if self.config.parent_pid else replace(self.config, parent_pid=os.getpid()),
                ),
            )
        return self._pool

    async def start(self) -> None:
        """Spawn the worker now (not on the first batch) and wait until it is up."""
        try:
            pid = await asyncio.get_running_loop().run_in_executor(self._executor(), ready)
        except Exception:
            log.exception("the meter process did not start; it is retried with the first batch")
            self.restarts += 1
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            self.ready = True  # the first batch spawns it again (and falls back to a thread if it fails)
            return
        self.ready = True
        log.debug("meter process %d started", pid)

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
