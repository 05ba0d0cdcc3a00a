"""Rate limits: requests and tokens per minute, per key and per team.

Sliding-window counters: two fixed one-minute windows, the previous one weighted by how much of it
still overlaps the last 60 s (``prev * (1 - elapsed) + curr``). O(1) memory and time per check,
within a few percent of an exact log, and the same arithmetic in memory and in Redis.

A request is admitted only when *every* applicable limit has room (checked first, counted after,
atomically: nothing awaits in between in memory; one Lua script in Redis), so a refusal by the
team limit does not use up the key's. Tokens are unknown before the answer: admission counts the
prompt estimate, ``settle`` adds the difference once the real usage is known.

Redis (``limits.redis_url``) shares the counters between gateway replicas; keys are
``<prefix>:rl:<scope>:<window>`` and expire after two windows. Every Redis call is bounded and its
failures arrive as ``CountersUnavailable`` (``redis_link``); the team's ``limits.fail`` decides:
``open`` (the default) serves the request without the check, counted and logged; ``closed``
refuses it with 503 ``rate_limits_unavailable``. Settling never fails a request: a lost
settlement only leaves the prompt estimate counted.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from gateway import errors
from gateway.policy.redis_link import FailureCount, RedisLink

log = logging.getLogger("nometer.policy")
WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class Check:
    scope: str  # "key" or "team"
    ident: str  # key id or team name
    metric: str  # "rpm" or "tpm"
    limit: int
    amount: int

    @property
    def key(self) -> str:  # counter name
        return f"{self.scope}:{self.metric}:{self.ident}"


def retry_after(prev: float, curr: float, frac: float, limit: int, amount: int) -> float:
    """Seconds until ``amount`` more fits under ``limit``, assuming no other traffic."""
    if amount > limit:
        return WINDOW_S
    if curr + amount <= limit:
        if prev <= 0:
            return 0.0
        need = 1 - (limit - curr - amount) / prev  # fraction of this window that must pass
        return max(0.0, (need - frac) * WINDOW_S)
    need_next = 1 - (limit - amount) / curr if curr > 0 else 0.0
    return (1 - frac) * WINDOW_S + max(0.0, need_next) * WINDOW_S


class Windows(Protocol):
    async def hit(self, checks: list[Check]) -> tuple[float, int]:
        """Count every check if all fit: (0, -1). Else count nothing: (retry-after seconds, index
        of the check that waits longest)."""
        ...

    async def add(self, key: str, amount: int) -> None: ...

    async def aclose(self) -> None: ...


class MemoryWindows:
    def __init__(self) -> None:
        self._w: dict[str, list[float]] = {}  # key -> [window index, prev, curr]

    def _slot(self, key: str, idx: int) -> list[float]:
        s = self._w.get(key)
        if s is None:
            s = self._w[key] = [idx, 0.0, 0.0]
        elif s[0] != idx:
            s[1] = s[2] if s[0] == idx - 1 else 0.0
            s[0], s[2] = idx, 0.0
        return s

    async def hit(self, checks: list[Check]) -> tuple[float, int]:
        return self.hit_now(checks, time.time())

    def hit_now(self, checks: list[Check], now: float) -> tuple[float, int]:
        idx = int(now // WINDOW_S)
        frac = now / WINDOW_S - idx
        wait, which = 0.0, -1
        slots = [self._slot(c.key, idx) for c in checks]
        for i, (c, s) in enumerate(zip(checks, slots, strict=False)):
            if s[1] * (1 - frac) + s[2] + c.amount > c.limit:
                w = max(retry_after(s[1], s[2], frac, c.limit, c.amount), 0.001)
                if w > wait:
                    wait, which = w, i
        if which >= 0:
            return wait, which
        for c, s in zip(checks, slots, strict=False):
            s[2] += c.amount
        return 0.0, -1

    async def add(self, key: str, amount: int) -> None:
        self._slot(key, int(time.time() // WINDOW_S))[2] += amount

    async def aclose(self) -> None:
        pass


# KEYS: counter names; ARGV: window seconds, then limit and amount per key. Uses the server's
# clock, so replicas agree on windows. Returns "<wait seconds> <index of the full check>", "0 -1"
# when admitted.
_HIT = """
local t = redis.call('TIME')
local win = tonumber(ARGV[1])
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local idx = math.floor(now / win)
local frac = now / win - idx
local wait = 0
local which = -1
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i]); local amount = tonumber(ARGV[2 * i + 1])
  local curr = tonumber(redis.call('GET', KEYS[i] .. ':' .. idx) or '0')
  local prev = tonumber(redis.call('GET', KEYS[i] .. ':' .. (idx - 1)) or '0')
  if prev * (1 - frac) + curr + amount > limit then
    local w
    if amount > limit then w = win
    elseif curr + amount <= limit then
      w = math.max(0, ((1 - (limit - curr - amount) / prev) - frac) * win)
    else
      local need = 0
      if curr > 0 then need = math.max(0, 1 - (limit - amount) / curr) end
      w = (1 - frac) * win + need * win
    end
    if w < 0.001 then w = 0.001 end
    if w > wait then wait = w; which = i - 1 end
  end
end
if which >= 0 then return tostring(wait) .. ' ' .. which end
for i = 1, #KEYS do
  local k = KEYS[i] .. ':' .. idx
  redis.call('INCRBY', k, ARGV[2 * i + 1])
  redis.call('EXPIRE', k, 2 * win + 5)
end
return '0 -1'
"""

_ADD = """
local t = redis.call('TIME')
local win = tonumber(ARGV[1])
local k = KEYS[1] .. ':' .. math.floor((tonumber(t[1]) + tonumber(t[2]) / 1000000) / win)
redis.call('INCRBY', k, ARGV[2])
redis.call('EXPIRE', k, 2 * win + 5)
return 0
"""


class RedisWindows:
    def __init__(self, link: RedisLink, prefix: str):
        self._link = link
        self._prefix = prefix + ":rl:"
        self._hit = link.client.register_script(_HIT)
        self._add = link.client.register_script(_ADD)

    async def hit(self, checks: list[Check]) -> tuple[float, int]:
        args: list[int] = [WINDOW_S]
        for c in checks:
            args += [c.limit, c.amount]
        keys = [self._prefix + c.key for c in checks]
        answer = await self._link.call("rate-limit check", partial(self._hit, keys=keys, args=args))
        wait, which = str(answer).split()
        return float(wait), int(which)

    async def add(self, key: str, amount: int) -> None:
        await self._link.call(
            "rate-limit settle", partial(self._add, keys=[self._prefix + key], args=[WINDOW_S, amount])
        )

    async def aclose(self) -> None:
        await self._link.aclose()


@dataclass(slots=True)
class Ticket:
    """Token counters a request was charged at admission, to settle with the real usage."""

    token_keys: tuple[str, ...]
    estimate: int


class RateLimiter:
    def __init__(self, windows: Windows):
        self.windows = windows
        self.failures = FailureCount("rate-limit counters")

    async def admit(
        self, key_id: str | None, team: str | None, limits: Any, prompt_tokens: int
    ) -> Ticket | None:
        """Count this request against ``limits`` (a ``TeamLimits``); raise RateLimited if any is full."""
        checks: list[Check] = []
        token_keys: list[str] = []
        for scope, ident, lim in (("key", key_id, limits.key), ("team", team, limits.team)):
            if ident is None:
                continue
            if lim.rpm is not None:
                checks.append(Check(scope, ident, "rpm", lim.rpm, 1))
            if lim.tpm is not None:
                check = Check(scope, ident, "tpm", lim.tpm, prompt_tokens)
                checks.append(check)
                token_keys.append(check.key)
        if not checks:
            return None
        try:
            wait, which = await self.windows.hit(checks)
        except errors.CountersUnavailable as exc:
            self.failures.failed(limits.fail, exc, team)
            if limits.fail == "closed":
                raise errors.LimitsUnavailable(
                    f"Rate limits for team `{team}` cannot be checked right now, and its policy fails "
                    f"closed ({exc.message}). Try again shortly.",
                    headers=exc.headers,
                ) from exc
            return None  # fail open: served unlimited, counted and logged
        if which >= 0:
            full = checks[which]
            # the two-window estimate may wait past one window after a burst; a client is told at
            # most one window (every request it made is out of a true sliding window by then)
            seconds = max(1, min(WINDOW_S, math.ceil(wait)))
            who = f"team `{full.ident}`" if full.scope == "team" else f"key `{full.ident}`"
            unit = "requests" if full.metric == "rpm" else "tokens"
            cls = errors.TokenRateLimited if full.metric == "tpm" else errors.RateLimited
            raise cls(
                f"Rate limit reached for {who}: {full.limit} {unit} per minute. Try again in {seconds}s.",
                headers={"retry-after": str(seconds)},
            )
        return Ticket(tuple(token_keys), prompt_tokens) if token_keys else None

    async def settle(self, ticket: Ticket | None, tokens: int | None) -> None:
        if ticket is None or tokens is None or tokens == ticket.estimate:
            return
        for key in ticket.token_keys:
            try:
                await self.windows.add(key, tokens - ticket.estimate)
            except errors.CountersUnavailable as exc:  # the answer is sent: only the count is lost
                log.warning("rate-limit settlement lost for %s: %s", key, exc.message)
                return
