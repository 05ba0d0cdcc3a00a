"""Pure routing decisions: which served model a name means, and which backend takes the request.

No I/O here. Backends carry live state (health, in-flight requests, vLLM's queue and KV use from
``/metrics``, ejection) that the pool and the proxy update; the router only reads it. Each
served model has a policy (``routing.policy``, ``routing.policies``; ``gateway.backends.balance``);
backends that are unhealthy or ejected (``gateway.backends.outlier``) are skipped, but ejection
never leaves a model with no backend.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.backends.backend import Backend
from gateway.backends.balance import PrefixTuning, Ring, least_queue, prefix_choice
from gateway.backends.prefix import PrefixTable
from gateway.errors import ModelNotFound, NoHealthyBackend
from gateway.settings import RoutingPolicy, RoutingSettings


@dataclass(frozen=True, slots=True)
class Route:
    requested: str  # what the client sent
    served: str  # what the backend serves
    alias: bool


class Router:
    def __init__(
        self,
        backends: Iterable[Backend],
        aliases: Mapping[str, str],
        routing: RoutingSettings | None = None,
    ):
        routing = routing or RoutingSettings()
        self.backends = list(backends)
        self.aliases = dict(aliases)
        self.default_policy: RoutingPolicy = routing.policy
        self.policies: dict[str, RoutingPolicy] = dict(routing.policies)
        p = routing.prefix
        self.tuning = PrefixTuning(p.load_factor, p.queue_ratio, p.queue_gap, p.depth)
        self.table = PrefixTable(p.max_entries)
        self._by_model: dict[str, list[Backend]] = {}
        self._rings: dict[str, Ring] = {}
        self._tiebreak = itertools.count()
        self.rebuild()

    def rebuild(self) -> None:
        """Re-index after discovery changed a backend's model set (swap, never mutate in place)."""
        index: dict[str, list[Backend]] = {}
        for b in self.backends:
            for m in b.models:
                index.setdefault(m, []).append(b)
        self._rings = {m: Ring(bs) for m, bs in index.items()}
        self._by_model = index

    def policy_of(self, served: str) -> RoutingPolicy:
        return self.policies.get(served, self.default_policy)

    def wants_keys(self, served: str) -> bool:
        """Whether ``pick`` can use prefix keys for ``served`` (worth computing them)."""
        return len(self._by_model.get(served, ())) > 1 and self.policy_of(served) == "prefix"

    def resolve(self, model: str) -> Route:
        served = self.aliases.get(model)
        if served is not None:
            if served not in self._by_model:
                raise ModelNotFound(
                    f"The model `{model}` is an alias of `{served}`, which no backend serves. "
                    f"Available: {', '.join(self.model_names()) or 'none'}.",
                    param="model",
                )
            return Route(model, served, True)
        if model not in self._by_model:
            raise ModelNotFound(
                f"The model `{model}` does not exist or is not served here. "
                f"Available: {', '.join(self.model_names()) or 'none'}.",
                param="model",
            )
        return Route(model, model, False)

    def pick(
        self,
        served: str,
        exclude: frozenset[Backend] | set[Backend] = frozenset(),
        keys: Sequence[int] = (),
    ) -> Backend:
        """A healthy, not ejected backend for ``served`` by the model's policy (``keys``: the
        request's prefix keys, for ``prefix``; see ``gateway.backends.prefix``)."""
        candidates = self._by_model.get(served, ())
        policy = self.policies.get(served, self.default_policy)
        start = next(self._tiebreak)
        if policy == "least_loaded":  # the default: one pass, no list (the hot path's common case)
            return self._least_loaded(served, candidates, exclude, start)
        usable = [b for b in candidates if b.healthy and b not in exclude]
        if not usable:
            raise _none_healthy(served, candidates)
        if len(usable) > 1:
            now = time.monotonic()
            usable = [b for b in usable if b.ejected_until <= now] or usable  # never eject them all
        if len(usable) == 1:
            return usable[0]
        if policy == "prefix":
            return prefix_choice(usable, keys, self.table, self._rings[served], self.tuning, start)
        if policy == "least_queue":
            return least_queue(usable, start)
        return usable[start % len(usable)]  # round_robin

    @staticmethod
    def _least_loaded(
        served: str, candidates: Sequence[Backend], exclude: frozenset[Backend] | set[Backend], start: int
    ) -> Backend:
        best: Backend | None = None
        ejected: Backend | None = None  # the best of the ejected, used only when all are
        now = 0.0
        n = len(candidates)
        for i in range(n):
            b = candidates[(start + i) % n]
            if not b.healthy or b in exclude:
                continue
            if b.ejected_until:
                now = now or time.monotonic()
                if b.ejected_until > now:
                    if ejected is None or b.outstanding < ejected.outstanding:
                        ejected = b
                    continue
            if best is None or b.outstanding < best.outstanding:
                best = b
        best = best or ejected
        if best is None:
            raise _none_healthy(served, candidates)
        return best

    def model_names(self) -> list[str]:
        names = set(self._by_model)
        names.update(a for a, t in self.aliases.items() if t in self._by_model)
        return sorted(names)

    def served_names(self) -> list[str]:
        """The models backends serve (aliases not included), sorted."""
        return sorted(self._by_model)

    def served_by(self, served: str) -> list[Backend]:
        return list(self._by_model.get(served, ()))


def _none_healthy(served: str, candidates: Sequence[Backend]) -> NoHealthyBackend:
    reasons = "; ".join(f"{b.name}: {b.last_error or 'unhealthy'}" for b in candidates) or "none"
    return NoHealthyBackend(
        f"No healthy backend serves `{served}` right now ({reasons}).", headers={"retry-after": "5"}
    )
