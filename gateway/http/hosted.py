"""The hosted path: serve one chat request through a hosted model, relay it, and price it.

Called by the proxy once the admission step (or a failed local connect) decided on fallback,
always before any byte reached the client. The team's fallback models are tried in order; a
model that fails to start (connection, provider error), or does not fit the team's budget, gives
way to the next. The client receives OpenAI-shaped JSON or SSE whatever the provider, plus
``x-nometer-route: hosted`` and ``x-nometer-fallback-cause`` headers.

Money: before each attempt the team's budget reserves the worst case (the prompt counted with
the hosted model's tokenizer, plus ``n`` times ``max_tokens`` — capped at
``budget.assume_max_tokens`` when the client set none), at the price table's rates. Afterwards
the provider's reported usage is priced with the same table (the shadow meter's pinned one) and
replaces the reservation. Without reported usage (client gone mid-stream) the streamed chunks
and the prompt estimate are priced.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from starlette.types import Send

from adapters.base import UpstreamError
from adapters.hosted import HostedStream, HostedTarget, HostedUpstream
from gateway import errors
from gateway.http.sse import DONE, error_event
from gateway.ledger import events as ev
from gateway.ledger.events import RequestRecord
from gateway.policy.budget import Budgets, Reservation
from gateway.policy.fallback import candidates, requested_choices, requested_max_tokens
from gateway.policy.rules import PolicyBook, TeamRules
from gateway.settings import FallbackCause
from pricing.cost import CloudUsage, cloud_cost
from pricing.tables import ModelPrice, PriceTable
from pricing.tokens import count_chat_prompt, tokenizer_for

log = logging.getLogger("nometer.hosted")


@dataclass(frozen=True, slots=True)
class Priced:
    target: HostedTarget
    price_key: str  # the name the price table is asked for
    price: ModelPrice | None


def build_targets(book: PolicyBook, table: PriceTable) -> dict[str, Priced]:
    """Every hosted model some policy lists, with its credentials (read from env now) and price."""
    names = {m for r in [book.default, *book.teams.values()] for m in r.policy.fallback.models}
    out = {}
    for name in sorted(names):
        cfg = book.hosted.models.get(name)
        key = None
        if cfg is not None and cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if key is None:
                log.warning("hosted model %s: env var %s is not set", name, cfg.api_key_env)
        target = HostedTarget(
            name,
            cfg.api_base if cfg else None,
            key,
            cfg.api_version if cfg else None,
            cfg.timeout_s if cfg else 600.0,
            dict(cfg.params) if cfg else {},
        )
        price_key = (cfg.price_as if cfg and cfg.price_as else None) or name
        out[name] = Priced(target, price_key, table.lookup(price_key))
        if out[name].price is None:
            log.warning(
                "hosted model %s (priced as %s) is not in price table %s: its spend is unpriced and "
                "teams with a budget cannot use it",
                name,
                price_key,
                table.id,
            )
    return out


def usage_cost(price: ModelPrice | None, usage: dict[str, Any]) -> Decimal | None:
    """A provider's OpenAI-shaped usage priced with the table; None when unpriced."""
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(p, int) or not isinstance(c, int):
        return None
    pd = usage.get("prompt_tokens_details") or {}
    cd = usage.get("completion_tokens_details") or {}
    cached = min(p, int(pd.get("cached_tokens") or 0))
    written = min(p - cached, int(pd.get("cache_creation_tokens") or pd.get("cache_write_tokens") or 0))
    reasoning = min(c, int(cd.get("reasoning_tokens") or 0))
    cost = cloud_cost(price, CloudUsage(p, c, cached, written, reasoning), "conservative")
    return cost.total


def worst_case(price: ModelPrice, prompt_tokens: int, max_tokens: int) -> Decimal:
    cost = cloud_cost(price, CloudUsage(prompt_tokens, max_tokens), "none")
    return cost.total if cost.total is not None else Decimal(0)


class HostedPath:
    def __init__(self, upstream: HostedUpstream, budgets: Budgets, table: PriceTable):
        self.upstream = upstream
        self.budgets = budgets
        self.table = table
        self.targets: dict[str, Priced] = {}

    def swap(self, book: PolicyBook) -> None:
        self.targets = build_targets(book, self.table)

    async def serve(
        self, send: Send, rec: RequestRecord, rules: TeamRules, cause: FallbackCause, payload: dict[str, Any]
    ) -> None:
        """Answer from the first hosted model that works; GatewayError if none does."""
        rec.route, rec.fallback_cause, rec.backend = "hosted", cause, None
        budget = rules.policy.budget
        max_tokens = requested_max_tokens(payload)
        if rules.has_budget and max_tokens is None:
            max_tokens = budget.assume_max_tokens
            payload = {**payload, "max_tokens": max_tokens}
        choices = requested_choices(payload)  # each of `n` choices may use max_tokens
        failures: list[str] = []
        refused: errors.BudgetExceeded | None = None
        for name in candidates(rules, rec.requested_model):
            priced = self.targets.get(name)
            if priced is None:  # listed after the last reload of targets: should not happen
                failures.append(f"{name}: not configured")
                continue
            reservation: Reservation | None = None
            prompt = None
            if rules.has_budget:
                if priced.price is None:
                    failures.append(f"{name}: not in the price table, so it cannot be used under a budget")
                    continue
                prompt = _prompt_tokens(payload, priced.price_key)
                try:
                    reservation = await self.budgets.reserve(
                        rules.team, budget, worst_case(priced.price, prompt, choices * (max_tokens or 0))
                    )
                except errors.BudgetExceeded as exc:
                    refused = refused or exc
                    continue
            rec.provider, rec.served_model = priced.target.provider, name
            try:
                if rec.stream:
                    stream = await self.upstream.stream(priced.target, payload)
                else:
                    data = await self.upstream.complete(priced.target, payload)
            except UpstreamError as exc:
                await self.budgets.settle(reservation, Decimal(0))
                log.warning("hosted fallback %s failed: %s", name, exc)
                failures.append(str(exc))
                continue
            except BaseException:
                await self.budgets.settle(reservation, Decimal(0))
                raise
            tally = _Tally()
            try:
                if rec.stream:
                    await self._relay_stream(send, rec, stream, cause, tally)
                else:
                    await self._relay_body(send, rec, data, cause, tally)
            finally:  # done, failed mid-stream or client gone: charge what was used
                cost = tally.cost(priced, payload, prompt)
                rec.hosted_cost_usd = None if cost is None else str(cost)
                await self.budgets.settle(reservation, cost or Decimal(0))
            return
        rec.provider = rec.served_model = None
        if refused is not None and not failures:
            raise refused
        if not failures:
            raise errors.FallbackUnavailable(
                f"Team `{rules.team or '-'}` has no hosted model to fall back to."
            )
        raise errors.HostedFailed(
            "Every hosted fallback model failed: "
            + "; ".join(failures)
            + (f"; {refused.message}" if refused else "")
        )

    async def _relay_body(
        self, send: Send, rec: RequestRecord, data: dict[str, Any], cause: str, tally: _Tally
    ) -> None:
        body = orjson.dumps(data)
        rec.ttft_s = time.perf_counter() - rec.t0
        rec.status, rec.response = 200, body
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *_headers(rec, cause, b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        usage = data.get("usage")
        tally.usage = usage if isinstance(usage, dict) else None
        await send({"type": "http.response.body", "body": body})

    async def _relay_stream(
        self, send: Send, rec: RequestRecord, stream: HostedStream, cause: str, tally: _Tally
    ) -> None:
        rec.status = 200
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _headers(rec, cause, b"text/event-stream; charset=utf-8"),
            }
        )
        try:
            async for chunk in stream.chunks():
                if rec.ttft_s is None:
                    rec.ttft_s = time.perf_counter() - rec.t0
                event = b"data: " + orjson.dumps(chunk) + b"\n\n"
                rec.chunks.append(event)
                if isinstance(chunk.get("usage"), dict):
                    tally.usage = chunk["usage"]
                    if not chunk.get("choices") and not rec.client_wants_usage:
                        continue
                if chunk.get("choices"):
                    tally.chunks += 1
                await send({"type": "http.response.body", "body": event, "more_body": True})
            tail = DONE
            rec.chunks.append(DONE)
        except UpstreamError as exc:
            rec.outcome, rec.error = ev.UPSTREAM_ERROR, f"hosted model failed mid-stream: {exc}"
            tail = error_event(rec.error, "upstream_error", "upstream_stream_broken")
        finally:
            await stream.aclose()
        await send({"type": "http.response.body", "body": tail, "more_body": False})


@dataclass(slots=True)
class _Tally:
    """What a hosted answer used, as far as it got."""

    usage: dict[str, Any] | None = None
    chunks: int = 0  # streamed chunks with choices (about one token each)

    def cost(self, priced: Priced, payload: dict[str, Any], prompt: int | None) -> Decimal | None:
        if self.usage is not None:
            return usage_cost(priced.price, self.usage)
        if priced.price is None or not self.chunks:  # unpriced, or nothing was generated
            return None
        # the provider reported nothing (client gone, stream broken): price what was streamed
        prompt = prompt if prompt is not None else _prompt_tokens(payload, priced.price_key)
        return worst_case(priced.price, prompt, self.chunks)


def _headers(rec: RequestRecord, cause: str, ctype: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", ctype),
        (b"x-request-id", rec.request_id.encode()),
        (b"x-nometer-receipt-id", rec.uid.encode()),
        (b"x-nometer-route", b"hosted"),
        (b"x-nometer-fallback-cause", cause.encode()),
    ]


def _prompt_tokens(payload: dict[str, Any], price_key: str) -> int:
    messages = payload.get("messages")
    tools = payload.get("tools")
    return count_chat_prompt(
        messages if isinstance(messages, list) else [],
        tools if isinstance(tools, list) else None,
        tokenizer_for(price_key),
    )
