"""gateway/http/cost.py: where usage.nometer goes in each answer shape, and only there."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from gateway import errors
from gateway.http import cost
from gateway.ledger.events import RequestRecord

FIGURES = {"receipt_id": "r1", "local_cost_usd": "0.1"}


def stamp_for(endpoint: str) -> tuple[cost.CostStamp, list[str]]:
    calls: list[str] = []
    rec = RequestRecord("rid", endpoint, "m", 0.0, 0.0)

    async def price(r: RequestRecord) -> dict[str, Any]:
        calls.append("price")
        return dict(FIGURES)

    return cost.CostStamp(rec, price, lambda: calls.append("freeze")), calls


def sse(*events: dict[str, Any] | str, names: tuple[str, ...] = ()) -> bytes:
    out = b""
    for i, ev in enumerate(events):
        head = f"event: {names[i]}\n".encode() if names else b""
        data = ev.encode() if isinstance(ev, str) else orjson.dumps(ev)
        out += head + b"data: " + data + b"\n\n"
    return out


def run_stream(stamp: cost.CostStamp, data: bytes, size: int) -> bytes:
    async def go() -> bytes:
        out = b""
        for i in range(0, len(data), size):
            out += await stamp.chunk(data[i : i + size])
        return out + stamp.flush()

    return asyncio.run(go())


CHAT = sse(
    {"choices": [{"delta": {"content": "hi"}}], "usage": None},
    {"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": None},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
    "[DONE]",
)
RESPONSES = sse(
    {"type": "response.output_text.delta", "delta": "hi"},
    {"type": "response.completed", "response": {"usage": {"input_tokens": 3}}},
)
MESSAGES = sse(
    {"type": "content_block_delta", "delta": {"text": "usage"}},
    {"type": "message_delta", "usage": {"output_tokens": 1}},
    {"type": "message_stop"},
    names=("content_block_delta", "message_delta", "message_stop"),
)


@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
@pytest.mark.parametrize(
    ("endpoint", "stream", "index"),
    [("/v1/chat/completions", CHAT, 2), ("/v1/responses", RESPONSES, 1), ("/v1/messages", MESSAGES, 1)],
)
def test_only_the_final_usage_event_changes_whatever_the_chunking(
    endpoint: str, stream: bytes, index: int, size: int
) -> None:
    stamp, calls = stamp_for(endpoint)
    out = run_stream(stamp, stream, size)
    assert calls == ["freeze", "price"] and stamp.done
    before, after = stream.split(b"\n\n"), out.split(b"\n\n")
    assert len(before) == len(after)
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if i != index:
            assert a == b
    changed = orjson.loads(after[index].split(b"data: ", 1)[1])
    usage = changed["response"]["usage"] if endpoint == "/v1/responses" else changed["usage"]
    assert usage["nometer"] == FIGURES
    assert after[index].startswith(b"event: message_delta\n") == (endpoint == "/v1/messages")


def test_continuous_usage_chunks_are_not_the_final_one() -> None:
    stamp, calls = stamp_for("/v1/chat/completions")
    chunk = sse({"choices": [{"delta": {"content": "x"}}], "usage": {"prompt_tokens": 3}})
    assert run_stream(stamp, chunk, 1000) == chunk and calls == []


def test_a_stream_without_usage_passes_through() -> None:
    stamp, calls = stamp_for("/v1/chat/completions")
    stream = sse({"choices": [{"delta": {"content": "usage"}}]}, "[DONE]")
    assert run_stream(stamp, stream, 5) == stream and calls == [] and not stamp.done


def test_a_json_answer_gets_it_in_usage_and_one_without_usage_is_unchanged() -> None:
    stamp, calls = stamp_for("/v1/chat/completions")
    out = asyncio.run(stamp.body(b'{"choices":[],"usage":{"prompt_tokens":1}}'))
    assert orjson.loads(out)["usage"]["nometer"] == FIGURES and calls == ["freeze", "price"]
    stamp, calls = stamp_for("/v1/chat/completions")
    for body in (b'{"choices":[]}', b"not json", b"[1, 2]"):
        assert asyncio.run(stamp.body(body)) == body
    assert calls == []


def test_the_header() -> None:
    assert cost.wanted(None, False) is False and cost.wanted(None, True) is True
    assert cost.wanted(b"include", False) is True and cost.wanted(b" Omit ", True) is False
    with pytest.raises(errors.InvalidRequest) as info:
        cost.wanted(b"yes", False)
    assert info.value.param == "X-Nometer-Cost"
