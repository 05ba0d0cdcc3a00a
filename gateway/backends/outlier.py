"""Passive outlier ejection and the retry budget: what the proxy's own requests teach the router.

Health probes run every few seconds; a backend can fail many requests in between. So the proxy
reports each request's fate: ``consecutive_failures`` answers in a row that are 5xx, timeouts or
connection failures eject the backend (the router skips it) for ``base_s``, doubled for each
ejection since it last stayed healthy, at most ``max_s``; after that it takes requests again
with no probe needed, and one success clears its count. The router never ejects every backend of
a model: when all are ejected it uses them anyway (Envoy's panic mode).

A retry (a request sent to a second backend after the first could not be reached) costs the
fleet a second attempt; when several backends fail, retries can multiply load exactly when it
hurts. ``RetryBudget`` allows retries up to ``ratio`` of the requests of the last one or two
windows (plus ``min_retries`` so a quiet gateway can still retry), as Envoy's retry budgets do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.backends.backend import Backend


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    consecutive_failures: int = 5
    base_s: float = 5.0
    max_s: float = 120.0

    def failed(self, b: Backend, now: float | None = None) -> bool:
        """Count a failure; True when it ejects the backend now."""
        now = time.monotonic() if now is None else now
        if b.ejected_until > now:
            return False  # already out: requests that were in flight when it was ejected
        b.failures += 1
        if b.failures < self.consecutive_failures:
            return False
        if now > b.ejected_until + self.max_s:
            b.ejections = 0  # it stayed fine long enough: start the backoff again
        b.ejected_until = now + min(self.base_s * 2**b.ejections, self.max_s)
        b.ejections += 1
        b.failures = 0
        return True

    @staticmethod
    def succeeded(b: Backend) -> None:
        b.failures = 0


class RetryBudget:
    def __init__(self, ratio: float = 0.2, min_retries: int = 3, window_s: float = 10.0):
        self.ratio = ratio
        self.min_retries = min_retries
        self.window_s = window_s
        self._start = time.monotonic()
        self._requests = [0, 0]  # previous window, this window
        self._retries = [0, 0]

    def _roll(self) -> None:
        now = time.monotonic()
        if now - self._start >= self.window_s:
            stale = now - self._start >= 2 * self.window_s
            self._requests = [0 if stale else self._requests[1], 0]
            self._retries = [0 if stale else self._retries[1], 0]
            self._start = now

    def request(self) -> None:
        self._roll()
        self._requests[1] += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        self._roll()
        if sum(self._retries) >= self.min_retries + self.ratio * sum(self._requests):
            return False
        self._retries[1] += 1
        return True
