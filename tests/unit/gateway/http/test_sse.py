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


# -- system_fingerprint: vLLM puts it on the usage chunk when include_usage is on (forced by the
# gateway), on the terminal chunk otherwise; the filter moves it back where the client expects it.
LAST = b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
LAST_DIRECT = LAST.replace(b"]}\n\n", b'],"system_fingerprint":"fp_1"}\n\n')
USAGE_FP = (
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4},'
    b'"system_fingerprint":"fp_1"}\n\n'
)


def test_fingerprint_moves_from_usage_chunk_to_terminal_chunk() -> None:
    f = UsageChunkFilter()
    assert f.feed(CHUNK) is CHUNK
    assert f.feed(LAST) == b""  # held until the usage chunk says the fingerprint
    assert f.feed(USAGE_FP) == LAST_DIRECT
    assert f.feed(DONE) == DONE
    assert f.flush() == b""


def test_fingerprint_moves_when_everything_arrives_at_once_or_split() -> None:
    data = CHUNK + LAST + USAGE_FP + DONE
    assert UsageChunkFilter().feed(data) == CHUNK + LAST_DIRECT + DONE
    f = UsageChunkFilter()
    out = b"".join(f.feed(data[i : i + 5]) for i in range(0, len(data), 5)) + f.flush()
    assert out == CHUNK + LAST_DIRECT + DONE


def test_held_events_are_released_when_no_usage_chunk_comes() -> None:
    f = UsageChunkFilter()
    assert f.feed(LAST) == b""
    assert f.feed(DONE) == b""
    assert f.flush() == LAST + DONE


def test_with_two_choices_only_the_last_terminal_chunk_waits() -> None:
    first = LAST.replace(b'"index":0', b'"index":1')
    f = UsageChunkFilter(choices=2)
    assert f.feed(first) == first
    assert f.feed(CHUNK) is CHUNK  # the other choice streams on
    assert f.feed(LAST) == b""
    assert f.feed(USAGE_FP + DONE) == LAST_DIRECT + DONE


def test_finished_streams_end_with_their_terminal_event() -> None:
    from gateway.http.sse import finished

    assert finished([CHUNK, DONE])
    assert finished([b'event: response.completed\ndata: {"response":{},"type":"response.completed"}\n\n'])
    assert finished(
        [b'event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n']
    )
    assert not finished([CHUNK])
    assert not finished([b'event: message_start\ndata: {"type":"message_start"}\n\n'])
