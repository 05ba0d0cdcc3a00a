from __future__ import annotations

from gateway.ledger.events import RequestRecord
from gateway.meter.prefix import PrefixTracker, cacheable


def _rec(messages: list[dict[str, str]], t: float) -> RequestRecord:
    return RequestRecord(
        "r",
        "/v1/chat/completions",
        "m",
        t,
        0.0,
        served_model="m",
        request={"model": "m", "messages": messages},
    )


def test_cacheable_follows_openai_rules() -> None:
    assert cacheable(5000, 1000) == 0  # prefix below 1,024 tokens
    assert cacheable(900, 2000) == 0  # prompt below 1,024 tokens
    assert cacheable(5000, 1300) == 1280  # 128-token increments
    assert cacheable(1200, 4000) == 1200


def test_repeated_prefix_is_found_within_the_ttl() -> None:
    t = PrefixTracker(ttl_s=300)
    sys = {"role": "system", "content": "long instructions"}
    turn1 = [sys, {"role": "user", "content": "a"}]
    assert t.seen_prefix(_rec(turn1, 0)) is None
    turn2 = [*turn1, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert t.seen_prefix(_rec(turn2, 10)) == turn1  # the agent loop resends the conversation
    assert t.seen_prefix(_rec([sys, {"role": "user", "content": "other"}], 20)) == [sys]
    assert t.seen_prefix(_rec([sys, {"role": "user", "content": "x"}], 1000)) is None  # expired
