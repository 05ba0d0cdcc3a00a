"""When a request goes to a hosted model instead of the box, and to which one: pure decisions.

Causes, in the order they are checked before sending:

* ``model_missing``: no local backend serves the name (nor an alias of it);
* ``unavailable``: no healthy backend serves it (a connection failure at send time counts too:
  the proxy asks ``decide`` again then, before any byte reached the client);
* ``context_too_long``: the prompt's estimated tokens plus the requested ``max_tokens`` exceed
  the local model's ``max_model_len`` (vLLM would answer 400);
* ``overloaded``: every healthy backend is over a threshold read from vLLM's ``/metrics``
  (``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``); a request that must go to one
  backend (response-id affinity) is overloaded when that one is, and with ``max_queue_gap`` a
  queue far longer than the shortest one counts as overload.

``decide`` turns a cause into a verdict: go hosted, refuse because the team is ``local_only``
(nothing ever leaves the box, even when fallback models are configured), or stay on the local
error when the policy does not allow fallback for that cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from gateway.backends.backend import Backend
from gateway.policy.rules import TeamRules
from gateway.settings import FallbackCause, OverloadSettings

Verdict = Literal["hosted", "local_only", "no_fallback"]

# Endpoints a hosted model can take over (OpenAI chat shape, which every litellm provider speaks).
FALLBACK_ENDPOINTS = frozenset({"/v1/chat/completions"})


def is_overloaded(b: Backend, overload: OverloadSettings, shortest: float | None = None) -> bool:
    """Over an absolute threshold, or (``max_queue_gap``) a vLLM queue longer than ``shortest``,
    the shortest healthy queue among the model's backends, by more than the gap."""
    if overload.max_waiting is not None and b.waiting is not None and b.waiting > overload.max_waiting:
        return True
    gap = overload.max_queue_gap
    if gap is not None and shortest is not None and b.waiting is not None and b.waiting > shortest + gap:
        return True
    return (
        overload.max_kv_cache_usage is not None
        and b.kv_cache_usage is not None
        and b.kv_cache_usage > overload.max_kv_cache_usage
    )


def all_overloaded(
    backends: Sequence[Backend], overload: OverloadSettings, pinned: Backend | None = None
) -> bool:
    """Every backend the request may go to is overloaded: all healthy ones, or only ``pinned``
    when the request must go there (it names a response that backend holds)."""
    healthy = [b for b in backends if b.healthy]
    queues = [b.waiting for b in healthy if b.waiting is not None]
    shortest = min(queues) if queues else None
    targets = [pinned] if pinned is not None and pinned in healthy else healthy
    return bool(targets) and all(is_overloaded(b, overload, shortest) for b in targets)


def context_limit(backends: Sequence[Backend], served: str) -> int | None:
    """The smallest ``max_model_len`` any backend reports for ``served`` (None: unknown)."""
    lens = [b.max_model_len[served] for b in backends if served in b.max_model_len]
    return min(lens) if lens else None


def too_long(prompt_tokens: int, max_tokens: int | None, limit: int | None) -> bool:
    return limit is not None and prompt_tokens + (max_tokens or 0) > limit


def decide(rules: TeamRules, cause: FallbackCause) -> Verdict:
    """What to do about a request the box cannot (or should not) serve for ``cause``."""
    if not rules.falls_back_on(cause):
        return "no_fallback"
    return "local_only" if rules.policy.local_only else "hosted"


def candidates(rules: TeamRules, requested: str) -> tuple[str, ...]:
    """The team's hosted models in order, but one whose name is the requested model goes first
    (``gpt-4.1`` requested, ``openai/gpt-4.1`` listed): a client asking for a hosted model by
    name gets that model when the policy offers it."""
    models = rules.policy.fallback.models
    exact = [m for m in models if m == requested or m.split("/", 1)[-1] == requested]
    return tuple(exact + [m for m in models if m not in exact])


def requested_max_tokens(payload: dict[str, object]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        v = payload.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def requested_choices(payload: dict[str, object]) -> int:
    """How many choices the request asks for (``n``, 1 when unset); the caps bound it."""
    n = payload.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


_WHY: dict[FallbackCause, str] = {
    "unavailable": "no local backend for it is available",
    "overloaded": "the local backends are overloaded",
    "model_missing": "it is not served on this box",
    "context_too_long": "the prompt is longer than the local model's context",
}


def local_only_message(team: str | None, cause: FallbackCause, model: str) -> str:
    """What a local_only team is told when its request would have needed a hosted model."""
    return (
        f"The request for `{model}` cannot be served locally ({_WHY[cause]}), and team `{team or '-'}` "
        "is local_only: requests never leave this box, so no hosted fallback is used."
    )
