"""Pure routing decisions: which served model a name means, and which backend takes the request.

No I/O here. Backends carry live state (health, outstanding requests) that the pool and the proxy
update; the router only reads it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.backends.backend import Backend
from gateway.errors import ModelNotFound, NoHealthyBackend


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
            raise NoHealthyBackend(
                f"No healthy backend serves `{served}` right now ({reasons}).", headers={"retry-after": "5"}
            )
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
