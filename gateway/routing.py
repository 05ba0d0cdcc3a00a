"""Pure routing decisions: which served model a name means, and which backend takes the request.

No I/O here. Backends carry live state (health, outstanding requests) that the pool and the proxy
update; the router only reads it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from adapters.base import Upstream
from gateway.errors import ModelNotFound, NoHealthyBackend


@dataclass(eq=False)
class Backend:
    name: str
    upstream: Upstream
    static_models: tuple[str, ...] | None = None
    models: frozenset[str] = frozenset()
    max_model_len: dict[str, int] = field(default_factory=dict)
    healthy: bool = False
    outstanding: int = 0
    last_error: str | None = None
    managed: bool = False
    local: bool = False  # on this box (managed or loopback): its GPUs' energy is measurable
    # Load reported by vLLM's /metrics (polled with health when an overload threshold is set).
    waiting: float | None = None  # vllm:num_requests_waiting
    kv_cache_usage: float | None = None  # vllm:kv_cache_usage_perc, 0..1
    # Each in-flight request's share of this backend's busy time (and energy, when measured):
    # share_clock = integral of dt / n(t) over time, advanced whenever n changes, so a request's
    # share is the clock's difference between its release and acquire: O(1), no timers.
    share_clock: float = 0.0
    energy_clock: float = 0.0
    power_w: float | None = None  # latest measured draw (NVML); None = not measured
    _changed_at: float = 0.0

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

    def release(self) -> tuple[float, float]:
        self._advance()
        self.outstanding -= 1
        return self.share_clock, self.energy_clock


@dataclass(frozen=True, slots=True)
class Route:
    requested: str  # what the client sent
    served: str  # what the backend serves
    alias: bool


class Router:
    def __init__(self, backends: Iterable[Backend], aliases: Mapping[str, str]):
        self.backends = list(backends)
        self.aliases = dict(aliases)
        self._by_model: dict[str, list[Backend]] = {}
        self._tiebreak = itertools.count()
        self.rebuild()

    def rebuild(self) -> None:
        """Re-index after discovery changed a backend's model set (swap, never mutate in place)."""
        index: dict[str, list[Backend]] = {}
        for b in self.backends:
            for m in b.models:
                index.setdefault(m, []).append(b)
        self._by_model = index

    def resolve(self, model: str) -> Route:
        served = self.aliases.get(model)
        if served is not None:
            if served not in self._by_model:
                raise ModelNotFound(
                    f"The model `{model}` is an alias of `{served}`, which no backend serves. "
                    f"Available: {', '.join(self.model_names()) or 'none'}.", param="model")
            return Route(model, served, True)
        if model not in self._by_model:
            raise ModelNotFound(
                f"The model `{model}` does not exist or is not served here. "
                f"Available: {', '.join(self.model_names()) or 'none'}.", param="model")
        return Route(model, model, False)

    def pick(self, served: str, exclude: frozenset[Backend] | set[Backend] = frozenset()) -> Backend:
        """Least outstanding requests among healthy backends; ties rotate."""
        best: Backend | None = None
        candidates = self._by_model.get(served, ())
        n = len(candidates)
        if n:
            start = next(self._tiebreak) % n
            for i in range(n):
                b = candidates[(start + i) % n]
                if b.healthy and b not in exclude and (best is None or b.outstanding < best.outstanding):
                    best = b
        if best is None:
            reasons = "; ".join(f"{b.name}: {b.last_error or 'unhealthy'}" for b in candidates) or "none"
            raise NoHealthyBackend(f"No healthy backend serves `{served}` right now ({reasons}).",
                                   headers={"retry-after": "5"})
        return best

    def model_names(self) -> list[str]:
        names = set(self._by_model)
        names.update(a for a, t in self.aliases.items() if t in self._by_model)
        return sorted(names)

    def served_by(self, served: str) -> list[Backend]:
        return list(self._by_model.get(served, ()))
