"""JSON log lines, the request id on them, and the access log the recorder writes."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway import logs
from gateway.ledger.events import EVENT_COLUMNS, RequestRecord
from gateway.ledger.recorder import Recorder
from gateway.ledger.sqlite import SQLiteStore
from gateway.meter.rows import make_finalizer
from gateway.settings import LedgerSettings


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Everything logged while the test runs, through the real handler setup (JSON + request id)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.setup("info", "json")
    buf = io.StringIO()
    root.handlers[0].setStream(buf)  # type: ignore[attr-defined]
    try:
        yield buf
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def parsed(buf: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_its_extras(lines: io.StringIO) -> None:
    logging.getLogger("nometer.test").warning("backend %s slow", "b0", extra={"request_id": "r-1", "ms": 12})
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("nometer.test").exception("failed")
    first, second = parsed(lines)
    assert (
        first["msg"] == "backend b0 slow"
        and first["level"] == "warning"
        and first["logger"] == "nometer.test"
    )
    assert first["request_id"] == "r-1" and first["ms"] == 12
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert "ValueError: boom" in second["exc"] and "request_id" not in second


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert isinstance(logs.formatter("auto", Terminal()), logs.ConsoleFormatter)
    assert isinstance(logs.formatter("auto", io.StringIO()), logs.JSONFormatter)
    assert isinstance(logs.formatter("json", Terminal()), logs.JSONFormatter)
    assert isinstance(logs.formatter("text", io.StringIO()), logs.ConsoleFormatter)


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, "Started server process [%d]", (7,), None
    )
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_a_console_line_is_readable_and_drops_uvicorns_coloured_copy() -> None:
    coloured = "Started server process [\x1b[36m%d\x1b[0m]"
    line = logs.ConsoleFormatter().format(
        _record(color_message=coloured, request_id="r-1", litellm_redacted=object())
    )
    assert line.endswith(" info    uvicorn.error: Started server process [7]  request_id=r-1")
    assert "\x1b" not in line and "color_message" not in line and not line.startswith("{")
    assert "litellm" not in line
    assert "color_message" not in orjson.loads(logs.JSONFormatter().format(_record(color_message=coloured)))


def test_the_request_context_names_the_request(lines: io.StringIO) -> None:
    log = logging.getLogger("nometer.test")
    token = logs.REQUEST_ID.set("ctx-7")
    try:
        log.info("inside")
        log.info("explicit wins", extra={"request_id": "other"})
    finally:
        logs.REQUEST_ID.reset(token)
    log.info("outside")
    assert [(r["msg"], r.get("request_id")) for r in parsed(lines)] == [
        ("inside", "ctx-7"),
        ("explicit wins", "other"),
        ("outside", None),
    ]


def _row(**values: Any) -> tuple[Any, ...]:
    return tuple(values.get(c) for c in EVENT_COLUMNS)


def test_access_lines_carry_the_request(lines: io.StringIO) -> None:
    rows = [
        _row(
            request_id="r-1",
            ts=1_700_000_000.25,
            endpoint="/v1/chat/completions",
            requested_model="gpt-4o",
            served_model="llama",
            backend="b0",
            route="local",
            status=200,
            outcome="ok",
            stream=1,
            latency_ms=812.5,
            ttft_ms=40.0,
            prompt_tokens=12,
            completion_tokens=30,
            usage_source="reported",
            team="research",
            key_id="key_1",
            tag="run-3",
        ),
        _row(
            request_id="r-2",
            ts=1_700_000_001.0,
            endpoint="/v1/embeddings",
            requested_model="e5",
            route="local",
            status=502,
            outcome="unreachable",
            stream=0,
            error="no backend",
        ),
    ]
    logs.access(EVENT_COLUMNS, rows)
    a, b = parsed(lines)
    assert a["logger"] == "nometer.access" and a["msg"] == "/v1/chat/completions 200 ok"
    assert {
        k: a[k]
        for k in (
            "request_id",
            "model",
            "served_model",
            "backend",
            "status",
            "outcome",
            "stream",
            "latency_ms",
            "ttft_ms",
            "prompt_tokens",
            "completion_tokens",
            "team",
            "tag",
        )
    } == {
        "request_id": "r-1",
        "model": "gpt-4o",
        "served_model": "llama",
        "backend": "b0",
        "status": 200,
        "outcome": "ok",
        "stream": True,
        "latency_ms": 812.5,
        "ttft_ms": 40.0,
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "team": "research",
        "tag": "run-3",
    }
    assert a["started"] == "2023-11-14T22:13:20.250Z"
    assert b["request_id"] == "r-2" and b["error"] == "no backend" and b["stream"] is False
    assert "team" not in b and "ttft_ms" not in b  # empty fields are left out


def test_access_log_is_skipped_when_its_logger_is_off(lines: io.StringIO) -> None:
    logging.getLogger("nometer.access").setLevel(logging.WARNING)
    try:
        logs.access(EVENT_COLUMNS, [_row(request_id="r-1", status=200, outcome="ok")])
    finally:
        logging.getLogger("nometer.access").setLevel(logging.NOTSET)
    assert parsed(lines) == []


def _rec(i: int) -> RequestRecord:
    return RequestRecord(
        f"req-{i}",
        "/v1/chat/completions",
        "m",
        1_700_000_000.0 + i,
        0.0,
        served_model="m",
        status=200,
        latency_s=0.5,
        tag="t",
        response=b'{"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}',
    )


@pytest.mark.parametrize("on", [True, False])
async def test_the_recorder_writes_the_access_log_after_each_batch(
    tmp_path: Path, lines: io.StringIO, on: bool
) -> None:
    db = tmp_path / "l.db"
    store = SQLiteStore(db)
    await store.open()
    rec = Recorder(
        store, LedgerSettings(path=str(db), flush_interval_ms=10), make_finalizer(None), access_log=on
    )
    rec.start()
    for i in range(3):
        rec.record(_rec(i))
    await asyncio.sleep(0.2)
    await rec.stop()
    await store.close()
    access = [r for r in parsed(lines) if r["logger"] == "nometer.access"]
    if not on:
        assert access == []
        return
    assert [
        (r["request_id"], r["status"], r["outcome"], r["latency_ms"], r["prompt_tokens"], r["tag"])
        for r in access
    ] == [(f"req-{i}", 200, "ok", 500.0, 3, "t") for i in range(3)]
    assert rec.written == 3


def test_the_setting_turns_the_access_log_on(tmp_path: Path) -> None:
    from gateway.app import build_runtime
    from gateway.settings import load_settings

    for on in (True, False):
        settings = load_settings(
            env={}, overrides={"server": {"access_log": on}, "ledger": {"path": str(tmp_path / "l.db")}}
        )
        assert build_runtime(settings).recorder._access_log is on
