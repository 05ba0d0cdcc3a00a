from __future__ import annotations

import orjson

from gateway.ledger.events import RequestRecord
from gateway.policy.admission import total_tokens


def rec(**kw: object) -> RequestRecord:
    r = RequestRecord("r", "/v1/chat/completions", "m", 0.0, 0.0)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_total_tokens_from_body_and_stream() -> None:
    assert (
        total_tokens(rec(response=orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}))) == 7
    )
    assert total_tokens(rec(response=b"not json")) is None
    chunks = [
        b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\ndata: [DONE]\n\n',
    ]
    assert total_tokens(rec(chunks=chunks)) == 4
    assert total_tokens(rec(chunks=chunks[:1])) is None
    assert total_tokens(rec()) is None
