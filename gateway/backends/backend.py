"""One backend's live state: health, load and the busy-share clock the meter reads."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.base import Upstream


@dataclass(eq=False)
class Backend:
    name: str
    upstream: Upstream
    static_models: tuple[str, ...] | None = None
    models: frozenset[str] = frozenset()
    max_model_len: dict[str, int] = field(default_factory=dict)
    cards: dict[str, dict[str, object]] = field(default_factory=dict)  # GET /v1/models entries, as served
    healthy: bool = False
    probe_timeouts: int = 0  # health probes in a row that timed out (BackendPool.refresh)
    outstanding: int = 0
    last_error: str | None = None
    managed: bool = False
    # A managed backend's proof that its own process answers: None = fine, else why not (see
    # ManagedServer.check_owner); checked before every health probe until it passes.
    guard: Callable[[], str | None] | None = None
    local: bool = False  # on this box (managed or loopback): its GPUs' energy is measurable
    # Load reported by vLLM's /metrics, scraped off the hot path (BackendPool); None = unknown.
    waiting: float | None = None  # vllm:num_requests_waiting
    kv_cache_usage: float | None = None  # vllm:kv_cache_usage_perc, 0..1
    running: float | None = None  # vllm:num_requests_running
    prefix_queries: float | None = None  # vllm:prefix_cache_queries_total (tokens)
    prefix_hits: float | None = None  # vllm:prefix_cache_hits_total (tokens)
    hit_rate: float | None = None  # hits / queries between the last two scrapes that saw queries
    # Passive outlier ejection (gateway/backends/outlier.py): consecutive failed answers, and
    # until when (time.monotonic()) the router skips this backend.
    failures: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    # Each in-flight request's share of this backend's busy time (and energy, when measured):
    # share_clock = integral of dt / n(t) over time, advanced whenever n changes, so a request's
    # share is the clock's difference between its release and acquire: O(1), no timers.
    share_clock: float = 0.0
    energy_clock: float = 0.0
    power_w: float | None = None  # latest measured draw (NVML); None = not measured
    _changed_at: float = 0.0

    @property
    def queue(self) -> float:
        """Requests waiting in vLLM's queue, else (no /metrics) the gateway's own in-flight count."""
        return self.waiting if self.waiting is not None else float(self.outstanding)

    def _advance(self) -> float:
        now = time.perf_counter()
        if self.outstanding > 0:
            dt = (now - self._changed_at) / self.outstanding
            self.share_clock += dt
            if self.power_w is not None:
                self.energy_clock += dt * self.power_w
        self._changed_at = now
        return now

    def acquire(self) -> tuple[float, float]:
        self._advance()
        self.outstanding += 1
        return self.share_clock, self.energy_clock

    def snapshot(self) -> tuple[float, float]:
        """The clocks now, for a request that still holds the backend (its cost priced in-line)."""
        self._advance()
        return self.share_clock, self.energy_clock

    def release(self) -> tuple[float, float]:
        self._advance()
        self.outstanding -= 1
        return self.share_clock, self.energy_clock
