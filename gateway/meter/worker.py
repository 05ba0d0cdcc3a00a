"""The shadow meter's own process: metering CPU off the gateway's event loop *and* its GIL.

Turning a record into ledger rows means parsing the response, re-tokenizing the request and the
answer for each reference model and pricing them: a few hundred microseconds per request. In a
thread of the gateway process that work competes with the event loop for the GIL and for the
core (measured: 1.10 -> 0.41 ms of gateway-process CPU per request, +0.81 -> +0.37 ms added p50,
when it moved out; docs/benchmarks.md). So by default a single worker process does it: batches
go there by pickle and ledger rows come back; the gateway process only writes them. One worker,
so the prefix tracker sees every request in order. If the worker dies, the recorder meters that
batch in a thread and starts a new worker for the next one: no record is lost. The batches cross
two pipes that the event loop reads itself (``MeterPool``), with no thread of ours in between.

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
import pickle
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path

from gateway import logs
from gateway.ledger.events import EVENT_COLUMNS, RequestRecord, warm_up_record
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
    try:  # tokenizers loaded now, with a meter thrown away after (its prefix tracker saw the warm-up)
        make_finalizer(estimate_prompt_tokens, ShadowMeter(config.meter, table, config.aliases))(
            [warm_up_record(time.time())]
        )
    except Exception:
        log.exception("warming the meter process up failed (its first batch will load it)")
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
    """One metering process (spawned: no fork of a threaded server), started with the recorder.

    Batches go over a pipe, read by the event loop itself (``loop.add_reader``): no thread in the
    gateway process hands them over. ``concurrent.futures.ProcessPoolExecutor`` did this with two
    threads of its own (a manager and a queue feeder) that each woke per batch; on a box serving
    one agent step at a time that cost about 0.4 ms of CPU per request (docs/benchmarks.md 5b).
    One message at a time (the recorder meters one batch at a time): a pickled ``(verb, arg)``
    each way. A request that fits the pipe's buffer (raised to ``_PIPE_BYTES`` where the kernel
    allows) is written at once, a larger one from a thread, so the event loop never waits for the
    worker to drain the pipe. EOF or a broken pipe means the worker
    died: the call fails, the recorder meters that batch in a thread, and the next call spawns a
    new worker."""

    def __init__(self, config: MeterConfig):
        self.config = config
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: tuple[Connection, Connection] | None = None  # (requests, results), ours
        self._lock: asyncio.Lock | None = None
        self._inline = _PIPE_DEFAULT  # bytes the requests pipe holds: a write up to that never blocks
        self.restarts = 0
        self.ready = False  # start() saw the worker answer (the recorder meters in a thread until then)

    @property
    def pid(self) -> int | None:
        """The worker's pid, while one runs."""
        return None if self._proc is None else self._proc.pid

    def _spawn(self) -> tuple[Connection, Connection]:
        ctx = multiprocessing.get_context("spawn")
        # two one-way pipes: the loop watches the results pipe (its fd non-blocking); the requests
        # pipe stays blocking, written on the loop only when the whole frame fits its buffer
        results, results_w = ctx.Pipe(duplex=False)
        requests_r, requests = ctx.Pipe(duplex=False)
        config = self.config if self.config.parent_pid else replace(self.config, parent_pid=os.getpid())
        proc = ctx.Process(
            target=serve, args=(config, requests_r, results_w), name="nometer-meter", daemon=True
        )
        proc.start()
        requests_r.close()  # the worker holds those ends: our copies would hide its EOF from us,
        results_w.close()  # and ours from it
        os.set_blocking(results.fileno(), False)  # read as it arrives (uvloop would; asyncio not)
        self._inline = _pipe_buffer(requests.fileno())
        self._proc, self._conn = proc, (requests, results)
        return requests, results

    async def _call(self, verb: str, arg: object) -> object:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            conns = self._conn
            if conns is None:  # on the loop's thread: PR_SET_PDEATHSIG follows the thread that spawns
                conns = self._spawn()
            requests, results = conns
            loop = asyncio.get_running_loop()
            payload = pickle.dumps((verb, arg), protocol=pickle.HIGHEST_PROTOCOL)
            try:
                if len(payload) + 12 <= self._inline:  # 12: the frame's header
                    requests.send_bytes(payload)  # fits the pipe's buffer: never blocks
                else:
                    await asyncio.to_thread(requests.send_bytes, payload)
                raw = await _read_frame(loop, results.fileno())
            except BaseException:  # died, or cancelled mid-call: the pipes' state is unknown
                self._drop()
                raise
            status, value = pickle.loads(raw)
            if status != "ok":
                raise MeterWorkerError(str(value))
            return value

    def _drop(self, *, kill: bool = True) -> None:
        """Forget the worker (dead or failing; ``kill=False``: stopping): the next call spawns a
        new one."""
        conns, proc = self._conn, self._proc
        self._conn = self._proc = None
        if conns is not None:
            for c in conns:
                c.close()  # a live worker reads EOF and exits
        if kill and proc is not None and proc.is_alive():
            proc.kill()

    async def start(self) -> None:
        """Spawn the worker now (not on the first batch) and wait until it is up."""
        try:
            pid = await self._call("ready", None)
        except Exception:
            log.exception("the meter process did not start; it is retried with the first batch")
            self.restarts += 1
            self._drop()
            self.ready = True  # the first batch spawns it again (and falls back to a thread if it fails)
            return
        self.ready = True
        log.debug("meter process %s started", pid)

    async def run(self, batch: list[RequestRecord]) -> LedgerBatch:
        try:
            rows = await self._call("finalize", batch)
        except Exception:
            self.restarts += 1
            self._drop()  # a new worker for the next batch
            raise
        assert isinstance(rows, LedgerBatch)
        return rows

    async def close(self) -> None:
        proc = self._proc
        self._drop(kill=False)  # EOF: the worker's loop ends
        if proc is not None:
            await asyncio.to_thread(_reap, proc)


_PIPE_DEFAULT = 1 << 16  # Linux's default pipe buffer (elsewhere we assume one page: 4 KiB)
_PIPE_BYTES = 1 << 20  # asked for; Linux grants up to /proc/sys/fs/pipe-max-size (1 MiB by default)


def _pipe_buffer(fd: int) -> int:
    """Raise the pipe's buffer to ``_PIPE_BYTES`` where the kernel lets us; what it holds now."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        return int(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))
    except (ImportError, AttributeError, OSError):
        return 4096 if sys.platform != "linux" else _PIPE_DEFAULT


class MeterWorkerError(Exception):
    """The meter process raised while metering a batch (its message and traceback are logged there)."""


def _reap(proc: multiprocessing.process.BaseProcess) -> None:
    proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


async def _read_frame(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    """One message from the worker (``multiprocessing.connection`` framing: a 4-byte big-endian
    length, or -1 and an 8-byte one), read by the event loop as it arrives: never a blocking read."""
    done: asyncio.Future[bytes] = loop.create_future()
    buf = bytearray()

    def readable() -> None:
        if done.done():
            return
        try:
            while True:
                try:
                    chunk = os.read(fd, 1 << 20)
                except BlockingIOError:
                    break
                if not chunk:
                    raise EOFError("the meter process closed its pipe")
                buf.extend(chunk)
            if len(buf) < 4:
                return
            (n,) = struct.unpack("!i", buf[:4])
            head = 4
            if n == -1:
                if len(buf) < 12:
                    return
                (n,) = struct.unpack("!Q", buf[4:12])
                head = 12
            if len(buf) >= head + n:
                done.set_result(bytes(buf[head : head + n]))
        except BaseException as exc:  # EOF, reset: the worker died
            done.set_exception(exc)

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)


def serve(config: MeterConfig, requests: Connection, results: Connection) -> None:
    """The worker's loop: one ``(verb, arg)`` at a time until the gateway closes the pipe."""
    init(config)
    while True:
        try:
            raw = requests.recv_bytes()
        except (EOFError, OSError):
            return  # the gateway closed its end (or died)
        verb, arg = pickle.loads(raw)
        try:
            value: object = finalize(arg) if verb == "finalize" else ready()
            out = pickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            log.exception("metering a batch failed in the meter process")
            out = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            results.send_bytes(out)
        except OSError:
            return
