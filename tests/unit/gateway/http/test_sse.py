from __future__ import annotations

import orjson

from gateway.http.sse import DONE, UsageChunkFilter, error_event

CHUNK = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
USAGE = (
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n'
)


def test_passthrough_is_the_same_object() -> None:
    f = UsageChunkFilter()
    assert f.feed(CHUNK) is CHUNK


def test_usage_only_chunk_is_removed() -> None:
    f = UsageChunkFilter()
    assert f.feed(CHUNK) == CHUNK
    assert f.feed(USAGE) == b""
    assert f.feed(DONE) == DONE
    assert f.flush() == b""


def test_usage_chunk_removed_when_glued_to_others() -> None:
    f = UsageChunkFilter()
    assert f.feed(CHUNK + USAGE + DONE) == CHUNK + DONE


def test_split_events_are_reassembled_and_filtered() -> None:
    f = UsageChunkFilter()
    data = CHUNK + USAGE + DONE
    out = b"".join(f.feed(data[i : i + 7]) for i in range(0, len(data), 7)) + f.flush()
    assert out == CHUNK + DONE


def test_content_mentioning_usage_is_kept() -> None:
    # a JSON string cannot contain an unescaped quote, so "usage":{ in text never matches
    text = b'data: {"choices":[{"delta":{"content":"\\"usage\\":{ and \\"choices\\":[]"}}]}\n\n'
    assert UsageChunkFilter().feed(text) == text


def test_usage_with_choices_is_kept() -> None:
    # continuous usage stats put usage on content chunks: those must pass
    ev = b'data: {"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1}}\n\n'
    assert UsageChunkFilter().feed(ev) == ev


def test_error_event_is_openai_shaped_and_terminates() -> None:
    out = error_event("boom", "upstream_error", "upstream_stream_broken")
    first, rest = out.split(b"\n\n", 1)
    assert orjson.loads(first[len(b"data: ") :]) == {
        "error": {
            "message": "boom",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_stream_broken",
        }
    }
    assert rest == DONE
