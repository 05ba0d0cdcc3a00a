from __future__ import annotations

import orjson
import pytest

from gateway import errors
from gateway.ledger.events import RequestRecord
from gateway.policy.admission import check_caps, total_tokens
from gateway.policy.rules import TeamRules
from gateway.settings import TeamPolicy


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


def test_caps_name_the_field_and_the_cap() -> None:
    rules = TeamRules.build("small", TeamPolicy.model_validate({"caps": {"max_n": 2, "max_tokens": 10}}))
    check_caps(rules, {"n": 2, "max_tokens": 10, "best_of": None})
    for payload, param in (
        ({"n": 3}, "n"),
        ({"best_of": 3}, "best_of"),
        ({"max_output_tokens": 11}, "max_output_tokens"),
    ):
        with pytest.raises(errors.CapExceeded) as exc:
            check_caps(rules, payload)
        assert exc.value.param == param and exc.value.status == 400 and "team `small`" in exc.value.message
    with pytest.raises(errors.InvalidRequest) as bad:
        check_caps(rules, {"n": "3"})
    assert bad.value.param == "n" and not isinstance(bad.value, errors.CapExceeded)
    check_caps(TeamRules.build(None, TeamPolicy()), {"n": 16, "max_tokens": 10**6})  # the defaults
    with pytest.raises(errors.CapExceeded):
        check_caps(TeamRules.build(None, TeamPolicy()), {"n": 17})
