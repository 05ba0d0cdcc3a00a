"""The Messages API in the shadow meter: vLLM's Anthropic usage fields, the answer, the prompt."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from gateway.ledger.events import RequestRecord
from gateway.meter import anthropic
from gateway.meter.rows import make_finalizer
from gateway.meter.shadow import ShadowMeter
from gateway.meter.usage import UPSTREAM, extract
from gateway.settings import MeterSettings
from pricing.tables import SHIPPED_SNAPSHOT, load_table
from pricing.tokens import count_chat_prompt, tokenizer_for

REQ = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "list the files"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "ls", "input": {"p": "."}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.py b.py"}]},
    ],
    "tools": [
        {"name": "ls", "description": "List files", "input_schema": {"type": "object", "properties": {}}}
    ],
}
BODY = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "content": [
        {"type": "text", "text": "two files"},
        {"type": "tool_use", "id": "t2", "name": "ls", "input": {}},
    ],
    "usage": {
        "input_tokens": 30,
        "output_tokens": 7,
        "cache_read_input_tokens": 64,
        "cache_creation_input_tokens": 6,
    },
}


def _sse(kind: str, data: dict[str, object]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


_START = {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "tiny-llama"}
STREAM = [
    _sse(
        "message_start", {"message": {**_START, "usage": {"input_tokens": 30, "cache_read_input_tokens": 64}}}
    ),
    _sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    _sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "two "}}),
    _sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "files"}}),
    _sse("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "ls"}}),
    _sse("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
    _sse("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
    _sse("message_stop", {}),
]


def _rec(**kw: object) -> RequestRecord:
    rec = RequestRecord(
        "r", "/v1/messages", "claude-sonnet-4-5", 0.0, 0.0, served_model="tiny-llama", request=REQ
    )
    rec.backend, rec.busy_s = "b", 0.5
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def test_body_usage_counts_cache_reads_and_writes_into_the_prompt() -> None:
    u, _ = extract(_rec(response=orjson.dumps(BODY)))
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (100, 7, 107)
    assert (u.cached_tokens, u.cache_write_tokens, u.source) == (64, 6, UPSTREAM)


def test_stream_usage_merges_message_start_and_message_delta() -> None:
    u, events = extract(_rec(stream=True, chunks=STREAM))
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens) == (94, 7, 64, None)
    answer = anthropic.answer_of(_rec(), events)
    assert answer.content == "two files"
    assert answer.tool_calls == ({"type": "function", "function": {"name": "ls", "arguments": "{}"}},)


def test_body_answer_and_prompt_counting() -> None:
    answer = anthropic.answer_of(_rec(response=orjson.dumps(BODY)), None)
    assert answer.content == "two files" and answer.tool_calls[0]["function"]["name"] == "ls"
    spec = tokenizer_for("gpt-4.1")
    chat: list[dict[str, Any]] = [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "list the files"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "ls", "arguments": '{"p":"."}'}}],
        },
        {"role": "user", "content": "a.py b.py"},
    ]
    tools = [{"type": "function", "function": {"name": "ls", "description": "List files", "parameters": {}}}]
    assert anthropic.prompt_tokens(REQ, spec) == count_chat_prompt(chat, tools, spec) > 20


def test_a_messages_request_is_priced_with_cache_reads_at_the_cache_read_rate() -> None:
    table = load_table(SHIPPED_SNAPSHOT)
    meter = ShadowMeter(MeterSettings(), table, {"claude-sonnet-4-5": "tiny-llama"})
    batch = make_finalizer(None, meter)([_rec(response=orjson.dumps(BODY))])
    refs = [row[2] for row in batch.shadows]
    assert refs[0] == "claude-sonnet-4-5"  # the requested Claude name comes first
    claude = batch.shadows[0]
    input_tokens, cached, written = claude[6], claude[7], claude[8]
    assert cached == input_tokens * 64 // 100 and written == input_tokens * 6 // 100 and cached > 0
    price = table.models["claude-sonnet-4-5"]
    assert price.cache_read is not None and price.cache_write is not None
    output = claude[9]
    expected = (
        (input_tokens - cached - written) * price.input
        + cached * price.cache_read
        + written * price.cache_write
        + output * price.output
    )
    assert Decimal(claude[11]) / 10**12 == expected


def test_count_tokens_is_recorded_but_not_metered() -> None:
    meter = ShadowMeter(MeterSettings(), load_table(SHIPPED_SNAPSHOT), {})
    rec = _rec(endpoint="/v1/messages/count_tokens", response=b'{"input_tokens":12}')
    batch = make_finalizer(None, meter)([rec])
    assert len(batch.events) == 1 and batch.shadows == []
