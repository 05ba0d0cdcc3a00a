"""The hot path's error boundary, with small ASGI apps in place of the proxy (no sockets)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway import errors
from gateway.http.boundary import ErrorBoundary, hold
from gateway.ledger import events as ev
from gateway.ledger.events import RequestRecord
from gateway.logs import REQUEST_ID
from gateway.policy.auth import Identity

BODY = orjson.dumps({"model": "qwen3-32b", "messages": []})
SSE = [(b"content-type", b"text/event-stream")]


class Harness:
    def __init__(self) -> None:
        self.recorded: list[RequestRecord] = []
        self.sent: list[Message] = []
        self.path = "/v1/chat/completions"

    def record(self, rec: RequestRecord) -> None:
        self.recorded.append(rec)

    async def run(self, app: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        boundary = ErrorBoundary(app, self.record, identify)
        scope: Scope = {
            "type": "http",
            "method": "POST",
            "path": self.path,
            "headers": headers or [],
        }

        async def receive() -> Message:
            return {"type": "http.request", "body": BODY, "more_body": False}

        async def send(msg: Message) -> None:
            self.sent.append(msg)

        await boundary(scope, receive, send)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def start(self) -> Message:
        return next(m for m in self.sent if m["type"] == "http.response.start")


def identify(headers: list[tuple[bytes, bytes]]) -> Identity | None:
    return Identity("key_1", "notebooks", "research") if (b"authorization", b"Bearer k") in headers else None


def record_for(rid: str) -> RequestRecord:
    return RequestRecord(rid, "/v1/chat/completions", "qwen3-32b", 0.0, 0.0, team="research", status=200)


async def test_failure_before_any_byte_is_a_500_envelope_and_one_row(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        REQUEST_ID.set("rid-1")
        raise KeyError("boom")

    h = Harness()
    with caplog.at_level(logging.ERROR, "nometer.proxy"):
        await h.run(app, [(b"authorization", b"Bearer k")])
    assert h.start["status"] == 500
    assert (b"content-type", b"application/json") in h.start["headers"]
    assert (b"x-request-id", b"rid-1") in h.start["headers"]
    err = orjson.loads(h.body)["error"]
    assert err["code"] == "internal_error" and err["type"] == "server_error"
    assert "boom" not in err["message"] and "Traceback" not in err["message"]  # nothing internal leaks
    [rec] = h.recorded
    assert (rec.request_id, rec.outcome, rec.status, rec.requested_model) == (
        "rid-1",
        ev.GATEWAY_ERROR,
        500,
        "qwen3-32b",
    )
    assert (rec.team, rec.key_id) == ("research", "key_1") and rec.error and "KeyError" in rec.error
    [line] = [r for r in caplog.records if r.name == "nometer.proxy"]
    assert getattr(line, "request_id", None) == "rid-1" and line.exc_info is not None


async def test_failure_mid_stream_is_sent_in_band_and_marks_the_proxy_record() -> None:
    h = Harness()
    record = hold(h.record)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        rec = record_for("rid-2")
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE})
            await send({"type": "http.response.body", "body": b'data: {"x":1}\n\n', "more_body": True})
            raise ValueError("a bug in the relay")
        finally:
            record(rec)  # the proxy records in a finally: the boundary holds it

    await h.run(app)
    assert h.body.startswith(b'data: {"x":1}\n\ndata: {"error":')
    assert h.body.endswith(b"data: [DONE]\n\n")
    assert h.sent[-1]["more_body"] is False
    [rec] = h.recorded
    assert (rec.request_id, rec.outcome, rec.status) == ("rid-2", ev.GATEWAY_ERROR, 200)


async def test_a_second_response_start_becomes_an_in_band_error() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send({"type": "http.response.start", "status": 503, "headers": []})

    h = Harness()
    await h.run(app)
    assert [m["type"] for m in h.sent] == ["http.response.start", "http.response.body"]
    assert b'"error"' in h.body and h.body.endswith(b"data: [DONE]\n\n")


async def test_an_escaped_gateway_error_keeps_its_status_and_envelope() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise errors.CountersUnavailable("Redis is down", headers={"retry-after": "1"})

    h = Harness()
    await h.run(app)
    assert h.start["status"] == 503 and (b"retry-after", b"1") in h.start["headers"]
    assert orjson.loads(h.body)["error"]["code"] == "counters_unavailable"
    assert h.recorded[0].outcome == ev.GATEWAY_ERROR and h.recorded[0].status == 503


async def test_a_request_that_succeeds_is_passed_through_untouched() -> None:
    h = Harness()
    record = hold(h.record)
    rec = record_for("rid-3")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        record(rec)

    await h.run(app)
    assert h.recorded == [rec] and rec.outcome == ev.OK
    assert h.body == b"{}"


def test_outside_a_boundary_records_go_at_once() -> None:
    got: list[RequestRecord] = []
    hold(got.append)(record_for("rid-4"))
    assert [r.request_id for r in got] == ["rid-4"]


async def test_anthropic_routes_get_anthropics_envelope() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("boom")

    h = Harness()
    h.path = "/v1/messages"
    await h.run(app)
    body = orjson.loads(h.body)
    assert h.start["status"] == 500 and body["type"] == "error" and body["error"]["type"] == "api_error"
