from __future__ import annotations

import pytest

from gateway import errors
from gateway.policy.limits import WINDOW_S, Check, MemoryWindows, RateLimiter, retry_after
from gateway.settings import TeamLimits

T0 = 1_000_020.0  # a window boundary (1_000_020 / 60 = 16667)


def test_sliding_window_weights_the_previous_minute() -> None:
    w = MemoryWindows()
    rpm = [Check("key", "k", "rpm", 10, 1)]
    for _ in range(10):
        assert w.hit_now(rpm, T0 + 1) == (0.0, -1)
    wait, which = w.hit_now(rpm, T0 + 2)
    assert which == 0 and wait > 0
    # half-way through the next minute, half of the previous one still counts: 5 fit
    for _ in range(5):
        assert w.hit_now(rpm, T0 + WINDOW_S + 30)[1] == -1
    assert w.hit_now(rpm, T0 + WINDOW_S + 30)[1] == 0
    # two minutes later everything is forgotten
    assert w.hit_now(rpm, T0 + 3 * WINDOW_S)[1] == -1


def test_all_or_nothing() -> None:
    w = MemoryWindows()
    checks = [Check("key", "k", "rpm", 5, 1), Check("team", "t", "rpm", 1, 1)]
    assert w.hit_now(checks, T0)[1] == -1
    assert w.hit_now(checks, T0)[1] == 1  # the team is full ...
    assert w.hit_now([checks[0]], T0)[1] == -1  # ... and the key was not charged for the refusal
    assert w._w["key:rpm:k"][2] == 2


def test_retry_after() -> None:
    assert retry_after(0, 10, 0.5, 10, 1) == pytest.approx(30 + 60 * 0.1)  # next window, 1/10 must pass
    assert retry_after(10, 0, 0.0, 10, 1) == pytest.approx(6.0)  # 1/10 of the previous must slide out
    assert retry_after(0, 0, 0.3, 10, 11) == WINDOW_S


async def test_limiter_raises_openai_shaped_errors() -> None:
    limiter = RateLimiter(MemoryWindows())
    lim = TeamLimits.model_validate({"key": {"rpm": 1}, "team": {"tpm": 50}})
    ticket = await limiter.admit("key_1", "web", lim, 10)
    assert ticket is not None and ticket.token_keys == ("team:tpm:web",)
    with pytest.raises(errors.RateLimited) as exc:
        await limiter.admit("key_1", "web", lim, 10)
    assert exc.value.status == 429 and exc.value.type == "requests" and "key `key_1`" in exc.value.message
    assert 1 <= int(exc.value.headers["retry-after"]) <= WINDOW_S
    await limiter.settle(ticket, 45)  # 10 estimated, 45 used
    with pytest.raises(errors.TokenRateLimited) as tok:
        await limiter.admit("key_2", "web", lim, 10)
    assert tok.value.type == "tokens" and tok.value.code == "rate_limit_exceeded"
    assert await limiter.admit(None, "other", TeamLimits(), 10) is None
