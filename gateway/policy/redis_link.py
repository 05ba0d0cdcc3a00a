"""The Redis connection behind shared rate limits and budgets, bounded for use on the hot path.

Every call is bounded by ``limits.redis_timeout_s`` (socket connect and read timeouts, and an
``asyncio.wait_for`` around the whole call, retries included), and every failure of the client
(refused, reset, timed out, a script error) is translated here, in one place, into the gateway's
``CountersUnavailable``: no Redis exception reaches the policy or the proxy. After a failure the
link fails fast for ``limits.redis_retry_s`` (no call is tried), so a frozen Redis costs one
timeout per retry period, not one per request. What a failure means for a request (serve it
anyway, or refuse it) is the policy's decision: see ``limits.RateLimiter`` and ``budget.Budgets``.

The counts of failures are read by ``/metrics`` (``nometer_policy_store_errors_total``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway import errors

log = logging.getLogger("nometer.policy")
T = TypeVar("T")
_LOG_EVERY_S = 10.0


class RedisLink:
    def __init__(self, url: str, timeout_s: float = 0.25, retry_s: float = 1.0):
        import redis.asyncio as aioredis  # only when configured
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self.client: Any = aioredis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),  # one immediate retry (a pooled connection Redis dropped)
        )
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        # RuntimeError too: a connection Redis reset mid-command can surface as asyncio's "unable
        # to perform operation on <TCPTransport closed=True>" (found by bench/soak.py as a 500).
        # Only the Redis command runs inside call(), so nothing of ours is swallowed by it.
        self._foreign = (RedisError, OSError, TimeoutError, RuntimeError)
        self._down_until = 0.0
        self.last_error: str | None = None
        self._logged = 0.0
        self._closed = False

    async def call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` (one Redis command or script) within the timeout; CountersUnavailable on
        any failure, or at once while a recent failure's retry period lasts."""
        now = time.monotonic()
        if now < self._down_until:
            raise errors.CountersUnavailable(
                f"The shared counters (Redis) are unavailable: {self.last_error}.",
                headers={"retry-after": "1"},
            )
        try:
            async with asyncio.timeout(self.timeout_s):  # no extra task, unlike wait_for
                return await make()
        except self._foreign as exc:
            self._down_until = time.monotonic() + self.retry_s
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {self.timeout_s * 1000:g} ms"
            self.last_error = reason
            if now - self._logged >= _LOG_EVERY_S:
                self._logged = now
                log.error("Redis %s failed: %s (next try in %gs)", what, reason, self.retry_s)
            raise errors.CountersUnavailable(
                f"The shared counters (Redis) are unavailable: {reason}.", headers={"retry-after": "1"}
            ) from exc

    async def aclose(self) -> None:
        """Close the client (once: the rate limiter and the budgets share this link)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.client.aclose()
        except self._foreign:  # closing a link to a dead Redis
            pass


class FailureCount:
    """How often a policy store failed, and what the policy did about it (fail open or closed):
    a few integers, read by ``/metrics`` at scrape time; and a log line every few seconds at most
    while failures go on, so an outage is loud without a line per request."""

    def __init__(self, store: str):
        self.store = store
        self.counts: dict[str, int] = {"open": 0, "closed": 0}
        self._logged = 0.0
        self._since_log = 0

    def failed(self, mode: str, exc: errors.GatewayError, team: str | None) -> None:
        self.counts[mode] += 1
        self._since_log += 1
        now = time.monotonic()
        if now - self._logged >= _LOG_EVERY_S:
            self._logged, n, self._since_log = now, self._since_log, 0
            action = "served WITHOUT the check (fail open)" if mode == "open" else "refused (fail closed)"
            log.warning(
                "%s unavailable: %d request(s) %s since the last report (latest: team %s): %s",
                self.store,
                n,
                action,
                team or "-",
                exc.message,
            )
