"""The admit step of the hot path: who is calling, and what team policy makes of the request.

``Gate.admit`` returns a ``Plan``: serve locally, or fall back to a hosted model now (with the
cause); or it raises an OpenAI-shaped refusal (``model_not_allowed``, ``rate_limit_exceeded``,
``local_only_unavailable``, ...). The decisions themselves are the pure functions of
``rules.py`` and ``fallback.py``; this module only gathers their inputs (rate-limit counters,
the backends' live state, a prompt-token estimate when some rule needs one).

Cheap by construction: with no policy configured, ``admit`` is one dict lookup and the router's
resolve, exactly what the proxy did before. The prompt is counted (o200k) only for a team with a
token limit or a context-length fallback, in a worker thread when it is long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from starlette.types import Send

from gateway import errors
from gateway.backends.backend import Backend
from gateway.backends.routing import Route, Router
from gateway.ledger.events import RequestRecord
from gateway.meter.usage import request_text
from gateway.policy.auth import Authenticator, Identity
from gateway.policy.budget import ANONYMOUS, Budgets
from gateway.policy.fallback import (
    FALLBACK_ENDPOINTS,
    all_overloaded,
    context_limit,
    decide,
    local_only_message,
    requested_max_tokens,
    too_long,
)
from gateway.policy.limits import RateLimiter, Ticket
from gateway.policy.rules import PolicyBook, TeamRules
from gateway.settings import FallbackCause
from pricing.tables import PriceTable


class HostedService(Protocol):
    """The hosted path (``gateway.http.hosted.HostedPath``, wired by the app): serves a request the
    admit step (or a failed local connect) sent to a hosted model."""

    def swap(self, book: PolicyBook) -> None:
        """Take the hosted models of a (re)loaded policy."""
        ...

    async def serve(
        self, send: Send, rec: RequestRecord, rules: TeamRules, cause: FallbackCause, payload: dict[str, Any]
    ) -> None: ...


HostedFactory = Callable[[Budgets, PriceTable], HostedService]

_THREAD_CHARS = 32_000  # count longer prompts off the event loop


@dataclass(slots=True)
class Plan:
    identity: Identity | None
    rules: TeamRules
    route: Route | None  # the local route; None when the model is not served here
    cause: FallbackCause | None = None  # set: go to a hosted model now
    prompt_tokens: int | None = None  # the o200k estimate, when a rule needed it
    ticket: Ticket | None = None  # token-rate counters to settle with the real usage

    def fallback_after(self, cause: FallbackCause, path: str) -> bool:
        """May a failure found while connecting (``unavailable``) still fall back? Raises the
        local_only refusal when the policy would have fallen back but the team is local_only."""
        if path not in FALLBACK_ENDPOINTS:
            return False
        verdict = decide(self.rules, cause)
        if verdict == "local_only":
            raise errors.LocalOnlyUnavailable(
                local_only_message(self.rules.team, cause, self.route.requested if self.route else "?")
            )
        return verdict == "hosted"


class Gate:
    def __init__(self, auth: Authenticator, book: PolicyBook, router: Router, limiter: RateLimiter):
        self.auth = auth
        self.book = book
        self.router = router
        self.limiter = limiter
        self.hosted: HostedService | None = None  # set when some policy has fallback models

    def identify(self, headers: list[tuple[bytes, bytes]]) -> Identity | None:
        return self.auth.identify(headers)

    def body_limit(self, ident: Identity | None, server_max: int) -> int:
        """The largest body this caller may send: the server's limit, or its team's cap below it."""
        cap = self.book.rules(ident.team if ident is not None else None).policy.caps.max_body_bytes
        return server_max if cap is None else min(cap, server_max)

    async def admit(
        self,
        ident: Identity | None,
        path: str,
        payload: dict[str, Any] | None,
        model: str,
        pinned: Backend | None = None,
    ) -> Plan:
        book = self.book  # one snapshot for the whole decision, whatever a reload does meanwhile
        rules = book.rules(ident.team if ident is not None else None)
        if payload is not None:
            check_caps(rules, payload)  # before anything is counted or forwarded, locally or hosted
        if rules.plain:
            return Plan(ident, rules, self.router.resolve(model))
        if not rules.allows(model):
            raise errors.ModelNotAllowed(
                f"Team `{rules.team or '-'}` may not use the model `{model}`.", param="model"
            )
        chat = path in FALLBACK_ENDPOINTS and payload is not None
        estimate = None
        if payload is not None and (rules.needs_tokens or (chat and rules.falls_back_on("context_too_long"))):
            estimate = await _estimate(payload)
        lim = rules.policy.limits
        ticket = await self.limiter.admit(
            ident.key_id if ident else None, rules.team or ANONYMOUS, lim, estimate or 0
        )
        plan = Plan(ident, rules, None, prompt_tokens=estimate, ticket=ticket)
        try:
            plan.route = self.router.resolve(model)
        except errors.ModelNotFound:
            if not chat or not self._fallback(plan, "model_missing", model):
                raise
            return plan
        if chat:
            assert payload is not None
            backends = self.router.served_by(plan.route.served)
            cause: FallbackCause | None = None
            if not any(b.healthy for b in backends):
                cause = "unavailable"
            elif (
                rules.falls_back_on("context_too_long")
                and estimate is not None
                and too_long(
                    estimate, requested_max_tokens(payload), context_limit(backends, plan.route.served)
                )
            ):
                cause = "context_too_long"
            elif rules.falls_back_on("overloaded") and all_overloaded(backends, book.hosted.overload, pinned):
                cause = "overloaded"
            if cause is not None:
                self._fallback(plan, cause, model)
        return plan

    def _fallback(self, plan: Plan, cause: FallbackCause, model: str) -> bool:
        verdict = decide(plan.rules, cause)
        if verdict == "local_only":
            raise errors.LocalOnlyUnavailable(local_only_message(plan.rules.team, cause, model))
        if verdict == "hosted":
            plan.cause = cause
            return True
        return False

    async def finish(self, plan: Plan, rec: RequestRecord) -> None:
        """Settle token-rate counters with the tokens the request really used."""
        if plan.ticket is not None:
            await self.limiter.settle(plan.ticket, total_tokens(rec))


_N_FIELDS = ("n", "best_of")  # choices generated for one request (chat, completions)
_MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def check_caps(rules: TeamRules, payload: dict[str, Any]) -> None:
    """Refuse a request that asks for more than the team's ``caps``: 400 ``cap_exceeded`` naming
    the field and the cap. A capped field must be an integer (a string or float would be coerced
    by vLLM's validation, past the cap)."""
    caps = rules.policy.caps
    for fields, cap, setting in (
        (_N_FIELDS, caps.max_n, "max_n"),
        (_MAX_TOKEN_FIELDS, caps.max_tokens, "max_tokens"),
    ):
        if cap is None:
            continue
        for f in fields:
            v = payload.get(f)
            if v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool):
                raise errors.InvalidRequest(f"`{f}` must be an integer.", param=f)
            if v > cap:
                raise errors.CapExceeded(
                    f"`{f}` is {v}, above the cap of {cap} for team `{rules.team or '-'}` "
                    f"(policy caps.{setting}).",
                    param=f,
                )


async def _estimate(payload: dict[str, Any]) -> int:
    from pricing.tokens import count_chat_prompt, count_text, tokenizer_for

    spec = tokenizer_for("gpt-4o")  # o200k, factor 1
    messages = payload.get("messages")
    if isinstance(messages, list):
        tools = payload.get("tools")

        def count() -> int:
            return count_chat_prompt(messages, tools if isinstance(tools, list) else None, spec)

        size = sum(len(str(m.get("content") or "")) for m in messages if isinstance(m, dict))
    else:
        text = request_text(payload)

        def count() -> int:
            return count_text(text, spec)

        size = len(text)
    return await asyncio.to_thread(count) if size > _THREAD_CHARS else count()


def total_tokens(rec: RequestRecord) -> int | None:
    """Total tokens from the usage the upstream reported, read cheaply (the last usage event of a
    stream, or the body's usage); None when nothing was reported."""
    if rec.chunks:
        for chunk in reversed(rec.chunks):
            at = chunk.rfind(b'"usage":{')
            if at < 0:
                continue
            start = chunk.rfind(b"data:", 0, at)
            end = chunk.find(b"\n\n", at)
            try:
                event = orjson.loads(chunk[start + 5 : end if end >= 0 else None])
            except orjson.JSONDecodeError:
                return None
            return _total(event.get("usage") if isinstance(event, dict) else None)
        return None
    if rec.response:
        try:
            body = orjson.loads(rec.response)
        except orjson.JSONDecodeError:
            return None
        return _total(body.get("usage") if isinstance(body, dict) else None)
    return None


def _total(usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    p, c = (
        usage.get("prompt_tokens", usage.get("input_tokens")),
        usage.get("completion_tokens", usage.get("output_tokens")),
    )
    return p + (c or 0) if isinstance(p, int) else None
