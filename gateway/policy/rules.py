"""Team policy, compiled once per (re)load into what the hot path reads: pure, no I/O.

``PolicyBook`` is one immutable snapshot of the policy sections of the settings (``policy``,
``teams``, ``hosted``). A reload builds a new book and swaps one reference: a request keeps the
rules it was admitted with, so in-flight requests and streams are never affected by a reload.

A team listed under ``teams`` gets exactly its own policy (no merging); anonymous callers (open
mode) and teams without an entry get ``policy``. With nothing configured every caller gets the
plain default, and ``TeamRules.plain`` lets the admission step skip all checks.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from gateway.settings import FallbackCause, HostedSettings, Settings, TeamPolicy

_GLOB = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class TeamRules:
    team: str | None
    policy: TeamPolicy
    allowed: frozenset[str] | None  # exact allowed names; None = every name
    patterns: tuple[str, ...]  # fnmatch patterns, when the allow-list has any
    plain: bool  # nothing to check: no allow-list, limits, budget or fallback

    @classmethod
    def build(cls, team: str | None, policy: TeamPolicy) -> TeamRules:
        allowed = patterns = None
        if policy.models is not None:
            allowed = frozenset(m for m in policy.models if not _GLOB & set(m))
            patterns = tuple(m for m in policy.models if _GLOB & set(m))
        lim, bud = policy.limits, policy.budget
        plain = (
            policy.models is None
            and not policy.fallback.models
            and not policy.local_only
            and all(
                v is None
                for v in (
                    lim.key.rpm,
                    lim.key.tpm,
                    lim.team.rpm,
                    lim.team.tpm,
                    bud.usd_per_day,
                    bud.usd_per_month,
                )
            )
        )
        return cls(team, policy, allowed, patterns or (), plain)

    def allows(self, model: str) -> bool:
        if self.allowed is None or model in self.allowed:
            return True
        return any(fnmatch.fnmatchcase(model, p) for p in self.patterns)

    def falls_back_on(self, cause: FallbackCause) -> bool:
        """Whether the policy asks for fallback on ``cause`` (``local_only`` is checked separately)."""
        fb = self.policy.fallback
        return bool(fb.models) and cause in fb.triggers

    @property
    def has_budget(self) -> bool:
        b = self.policy.budget
        return b.usd_per_day is not None or b.usd_per_month is not None

    @property
    def needs_tokens(self) -> bool:
        lim = self.policy.limits
        return lim.key.tpm is not None or lim.team.tpm is not None


class PolicyBook:
    def __init__(self, settings: Settings):
        self.default = TeamRules.build(None, settings.policy)
        self.teams = {name: TeamRules.build(name, p) for name, p in settings.teams.items()}
        self.hosted: HostedSettings = settings.hosted
        every = [self.default, *self.teams.values()]
        # litellm is imported only when some policy could use it
        self.uses_hosted = any(r.policy.fallback.models and not r.policy.local_only for r in every)
        self.uses_metrics = self.hosted.overload.enabled and any(r.falls_back_on("overloaded") for r in every)
        self.plain = all(r.plain for r in every)
        self._unlisted: dict[str, TeamRules] = {}

    def rules(self, team: str | None) -> TeamRules:
        if team is None:
            return self.default
        rules = self.teams.get(team) or self._unlisted.get(team)
        if rules is None:  # a key's team with no entry: the default policy, under the team's name
            d = self.default
            rules = self._unlisted[team] = TeamRules(team, d.policy, d.allowed, d.patterns, d.plain)
        return rules

    def warnings(self) -> list[str]:
        """Configurations that are legal but probably not what was meant."""
        out = []
        for r in [self.default, *self.teams.values()]:
            name = r.team or "policy (default)"
            if r.policy.local_only and r.policy.fallback.models:
                out.append(f"{name}: local_only is set, so its fallback models will never be used")
            if r.has_budget and not r.policy.fallback.models:
                out.append(f"{name}: a hosted budget without fallback models has nothing to limit")
        return out
