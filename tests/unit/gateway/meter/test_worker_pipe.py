"""The meter process's pipe (gateway/meter/worker.py): framing read by the event loop, large
batches and answers, a worker that dies mid-call, and a new one after it. A real spawned worker."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import threading
import time
from pathlib import Path

import pytest

from gateway.ledger.events import RequestRecord
from gateway.meter.tables import pinned_table
from gateway.meter.worker import _PIPE_BYTES, MeterConfig, MeterPool, _pipe_buffer, _read_frame
from gateway.settings import MeterSettings
from pricing.store import PriceStore


def _frame(payload: bytes) -> bytes:
    return struct.pack("!i", len(payload)) + payload  # multiprocessing.connection's framing


async def _read_in_pieces(pieces: list[bytes]) -> bytes:
    r, w = os.pipe()
    os.set_blocking(r, False)

    def write() -> None:
        for p in pieces:
            os.write(w, p)
            time.sleep(0.02)  # each piece its own read: a header split, a body split

    t = threading.Thread(target=write)
    t.start()
    try:
        return await asyncio.wait_for(_read_frame(asyncio.get_running_loop(), r), 10)
    finally:
        t.join()
        os.close(r)
        os.close(w)


async def test_a_frame_is_read_whole_however_it_arrives() -> None:
    payload = os.urandom(3 << 20)  # more than a pipe holds, and than one read takes
    data = _frame(payload)
    got = await _read_in_pieces([data[:2], data[2:7], data[7 : 1 << 20], data[1 << 20 :]])
    assert got == payload


async def test_eof_before_a_whole_frame_is_an_error() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.write(w, _frame(b"abcdef")[:6])
    os.close(w)
    with pytest.raises(EOFError):
        await asyncio.wait_for(_read_frame(asyncio.get_running_loop(), r), 10)
    os.close(r)


def _record(i: int, body: str = "hello") -> RequestRecord:
    rec = RequestRecord(f"r{i}", "/v1/chat/completions", "m", 1.77e9 + i, 0.0, status=200, served_model="m")
    rec.backend, rec.busy_s = "b", 0.001
    rec.request = {"model": "m", "messages": [{"role": "user", "content": body}]}
    rec.response = (
        b'{"choices":[{"message":{"role":"assistant","content":"ok"}}],'
        b'"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}'
    )
    return rec


async def test_pool_meters_small_and_huge_batches_and_survives_the_workers_death(tmp_path: Path) -> None:
    prices = PriceStore(tmp_path / "prices")
    table = pinned_table(prices, {})
    settings = MeterSettings(references=("gpt-4.1",))
    pool = MeterPool(MeterConfig(settings, {}, prices.directory, table.id))
    try:
        await pool.start()
        assert pool.ready and pool.restarts == 0 and pool.pid is not None
        rows = await pool.run([_record(0)])
        assert len(rows.events) == 1 and len(rows.shadows) == 1
        assert (1 << 16) <= pool._inline <= _PIPE_BYTES  # raised where the kernel allows
        big = [_record(i, "x " * 2000) for i in range(400)]  # more than the pipe holds: from a thread
        rows = await pool.run(big)
        assert len(rows.events) == 400 and [e[0] for e in rows.events] == [f"r{i}" for i in range(400)]
        assert sum(len(r.request["messages"][0]["content"]) for r in big if r.request) > _PIPE_BYTES
        first = pool.pid
        os.kill(first, signal.SIGKILL)
        with pytest.raises((EOFError, OSError)):
            for _ in range(50):  # the kill lands at once; a call after it finds the pipe closed
                await pool.run([_record(1)])
                await asyncio.sleep(0.1)
        assert pool.restarts == 1 and pool.pid is None
        rows = await pool.run([_record(2)])  # a new worker, spawned by this call
        assert len(rows.events) == 1 and pool.pid not in (None, first)
    finally:
        await pool.close()
    assert pool.pid is None


def test_pipe_buffer_is_raised_and_a_write_that_fits_never_blocks() -> None:
    r, w = os.pipe()
    try:
        size = _pipe_buffer(w)
        assert size >= 1 << 16
        os.set_blocking(w, False)
        os.write(w, b"x" * size)  # no reader yet: a blocking pipe would hang, this one would raise
        with pytest.raises(BlockingIOError):
            os.write(w, b"x")
    finally:
        os.close(r)
        os.close(w)
