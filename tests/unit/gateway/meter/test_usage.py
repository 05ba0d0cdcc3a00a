from __future__ import annotations

import orjson

from gateway.ledger import events as ev
from gateway.ledger.events import RequestRecord
from gateway.meter.answer import answer_of
from gateway.meter.usage import ESTIMATED, UPSTREAM, extract


def _rec(**kw: object) -> RequestRecord:
    rec = RequestRecord(
        "r",
        "/v1/chat/completions",
        "m",
        0.0,
        0.0,
        served_model="m",
        request={"model": "m", "messages": [{"role": "user", "content": "hello there"}]},
    )
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def test_non_stream_usage_with_details() -> None:
    body = {
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
    }
    u, _ = extract(_rec(response=orjson.dumps(body)))
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens, u.reasoning_tokens) == (
        10,
        5,
        15,
        4,
        2,
    )
    assert u.source == UPSTREAM


def test_responses_api_usage() -> None:
    body = {
        "usage": {
            "input_tokens": 7,
            "output_tokens": 3,
            "total_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 1},
        }
    }
    u, _ = extract(_rec(response=orjson.dumps(body)))
    assert (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens) == (7, 3, 1)


def test_stream_usage_chunk_and_text() -> None:
    chunks = [
        b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n',
        b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\ndata: {"choices":[{"delta":{"content":"lo"}}]}\n\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\n',
        b"data: [DONE]\n\n",
    ]
    rec = _rec(stream=True, chunks=chunks)
    u, events = extract(rec)
    assert (u.prompt_tokens, u.completion_tokens, u.source) == (9, 2, UPSTREAM)
    assert events is not None and answer_of(rec, events).content == "Hello"


def test_responses_stream_completed_event() -> None:
    chunks = [
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"x"}\n\n',
        (
            b'event: response.completed\ndata: {"type":"response.completed","response":'
            b'{"usage":{"input_tokens":4,"output_tokens":1,"total_tokens":5}}}\n\n'
        ),
    ]
    u, _ = extract(_rec(stream=True, chunks=chunks))
    assert (u.prompt_tokens, u.completion_tokens) == (4, 1)


def test_missing_usage_is_estimated_and_labelled() -> None:
    chunks = [
        b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n',
        b'data: {"choices":[{"delta":{"content":"b"}}]}\n\n',
    ]
    u, _ = extract(_rec(stream=True, chunks=chunks, outcome=ev.CLIENT_GONE), lambda text: len(text.split()))
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.source) == (2, 2, 4, ESTIMATED)


def test_unreachable_counts_nothing() -> None:
    u, _ = extract(_rec(outcome=ev.UNREACHABLE), lambda text: 99)
    assert u.prompt_tokens is None and u.source == "none"


def test_request_text_reads_a_body_nested_deeper_than_the_recursion_limit() -> None:
    from gateway.meter.usage import request_text

    deep = orjson.loads(b'{"messages":' + b"[" * 1020 + b'"deep"' + b"]" * 1020 + b"}")
    assert request_text(deep) == "deep"
    body = {
        "instructions": "i",
        "messages": [{"role": "user", "content": [{"text": "a"}, {"text": "b"}], "name": "n"}],
        "prompt": "p",
    }
    assert request_text(body) == "a\nb\nn\np\ni"  # document order, as the recursive walk had it
