"""The shadow meter: what each local request would have cost in the cloud, and what it cost here.

Runs in the recorder's worker thread (never on the event loop). For every local request that a
model server worked on, and for each reference cloud model, it re-counts the request and the
answer in that model's own tokens (pricing.tokens), prices them with the pinned price table, and
prices the local side (the request's share of busy time and energy, plus hardware write-off).
The stored quantities are exactly the inputs of ``pricing.receipt.compute_receipt``, so anyone can
recompute every figure later (``nometer verify``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from functools import lru_cache
from typing import Any

import orjson

from gateway.ledger.events import RequestRecord
from gateway.meter import anthropic
from gateway.meter.answer import Answer
from gateway.meter.prefix import PrefixTracker, cacheable
from gateway.meter.prompt import ChatCounter, prompt_tokens
from gateway.meter.usage import Usage
from gateway.settings import BoxSettings, MeterSettings
from pricing.cost import CloudCost, CloudUsage, cloud_cost, service_price
from pricing.count_cache import CountCache
from pricing.local import BoxCost, LocalCost, request_local_cost
from pricing.money import CONTEXT, as_decimal, decimal_str
from pricing.receipt import ReceiptInputs, ReferenceTokens
from pricing.tables import CloudTier, ModelPrice, PriceTable
from pricing.tokens import (
    REPLY_PRIMING,
    TokenizerSpec,
    count_chat_prompt,
    count_completion,
    count_text,
    is_reasoning_model,
    scale,
    tokenizer_for,
    unscaled,
)

PICO = Decimal(10) ** 12
# entries of the meter's per-name lookups (reference names are few; requested ones are the client's)
_MEMO_MAX = 4096
_CHAT = "/v1/chat/completions"
# the endpoints the shadow meter prices (answers there can carry their cost: gateway/http/cost.py)
METERED = frozenset({_CHAT, "/v1/completions", "/v1/responses", "/v1/embeddings", anthropic.MESSAGES})


@dataclass(frozen=True, slots=True)
class Shadow:
    """A request's metered figures: the receipt's inputs and the amounts computed from them.

    The full receipt (rates, terms, decimal strings) is only built when someone asks for it
    (``pricing.receipt.compute_receipt``, from the stored inputs): the recorder computes just the
    amounts the ledger sums, with the same functions, so ``verify`` finds the same numbers."""

    inputs: ReceiptInputs
    local: LocalCost
    costs: tuple[tuple[str | None, CloudCost, Decimal | None], ...]  # per reference: price key, cost, savings


def box_cost(b: BoxSettings) -> BoxCost:
    return BoxCost(
        idle_watts=b.idle_watts,
        busy_watts=b.busy_watts,
        usd_per_kwh=b.usd_per_kwh,
        hardware_usd=b.hardware_usd,
        lifetime_years=b.lifetime_years,
    )


@lru_cache(maxsize=64)  # BoxCost is immutable and hashable; one or a few boxes per gateway
def box_json(box: BoxCost) -> str:
    return orjson.dumps(
        {
            k: decimal_str(getattr(box, k))
            for k in ("idle_watts", "busy_watts", "usd_per_kwh", "hardware_usd", "lifetime_years")
        }
    ).decode()


def box_from_json(text: str) -> BoxCost:
    d = orjson.loads(text)
    return BoxCost(**{k: as_decimal(v) for k, v in d.items()})


def rounded_busy(seconds: float | None) -> float | None:
    """Busy share as stored in the ledger and used in receipts (microseconds)."""
    return None if seconds is None else round(seconds, 6)


def rounded_joules(joules: float | None) -> float | None:
    return None if joules is None else round(joules, 3)


def pico(value: str | Decimal | None) -> int | None:
    """A dollar amount (Decimal or decimal string) as integer pico-dollars (exact sums in SQL)."""
    return None if value is None else int((Decimal(value) * PICO).to_integral_value(context=CONTEXT))


class ShadowMeter:
    def __init__(self, settings: MeterSettings, table: PriceTable, aliases: Mapping[str, str]):
        self.settings = settings
        self.table = table
        self.aliases = dict(aliases)
        self._default_box = box_cost(settings.box)
        self._boxes = {name: box_cost(b) for name, b in settings.backend_box.items()}
        self.prefixes = PrefixTracker()
        entries = settings.count_cache_entries
        self.counts = CountCache(entries) if entries else None
        self._chat: ChatCounter = self.counts.chat_prompt if self.counts is not None else count_chat_prompt
        self._prices: dict[tuple[str, CloudTier], tuple[str | None, ModelPrice | None]] = {}

    def references(self, rec: RequestRecord) -> list[str]:
        s = self.settings
        if rec.endpoint == "/v1/embeddings":
            refs = list(
                s.model_references.get(rec.requested_model)
                or s.model_references.get(rec.served_model or "")
                or s.embedding_references
            )
        else:
            refs = list(
                s.model_references.get(rec.requested_model)
                or s.model_references.get(rec.served_model or "")
                or s.references
            )
        # A client that asked for a cloud name through an alias compares against that name first
        # (Claude Code asking for claude-sonnet-4-5 is priced as Claude first, whatever the order).
        if rec.requested_model != rec.served_model and self.table.resolve(rec.requested_model) is not None:
            if rec.requested_model in refs:
                refs.remove(rec.requested_model)
            refs.insert(0, rec.requested_model)
        return refs

    def measure(self, rec: RequestRecord, usage: Usage, answer: Answer) -> Shadow | None:
        try:
            return self._measure(rec, usage, answer)
        finally:
            if self.counts is not None:
                self.counts.end_request()

    def _measure(self, rec: RequestRecord, usage: Usage, answer: Answer) -> Shadow | None:
        if (
            rec.route != "local"
            or rec.endpoint not in METERED
            or usage.prompt_tokens is None
            or not rec.request
        ):
            return None
        prefix = None
        if usage.cached_tokens is None:
            digest = self.counts.digest if self.counts is not None else None
            seen = self.prefixes.seen_prefix(rec, digest)  # learns this request's prefixes either way
            if rec.priced_inline:  # priced on the request path: the answer told that figure
                prefix = rec.inline_prefix
            else:
                prefix = rec.inline_prefix = seen
        raw: dict[str, tuple[int, int, int, int | None, bool]] = {}
        refs = tuple(self._count(ref, rec, usage, answer, prefix, raw) for ref in self.references(rec))
        busy = Decimal(repr(rounded_busy(rec.busy_s) or 0.0))
        joules = None if rec.joules is None else Decimal(repr(rounded_joules(rec.joules)))
        inputs = ReceiptInputs(
            references=refs,
            table=self.table,
            cache_mode=self.settings.cache_mode,
            busy_seconds=busy,
            box=self._boxes.get(rec.backend or "", self._default_box),
            joules=joules,
            cloud_tier=_tier(rec.cloud_tier),
        )
        local = request_local_cost(inputs.busy_seconds, inputs.joules, inputs.box)
        costs = []
        for ref in refs:
            key, price = self._price(ref.model, inputs.cloud_tier)
            cost = cloud_cost(price, ref.usage, inputs.cache_mode)
            with localcontext(CONTEXT):
                savings = None if cost.total is None else cost.total - local.total
            costs.append((key, cost, savings))
        return Shadow(inputs, local, tuple(costs))

    def _price(self, ref: str, tier: CloudTier) -> tuple[str | None, ModelPrice | None]:
        """The table key of ``ref`` and the prices of ``tier`` for it. The table is this meter's
        and never changes, so the answer is kept per (name, tier): a receipt recomputes it the
        same way from the same table (``pricing.receipt``)."""
        hit = self._prices.get((ref, tier))
        if hit is None:
            key = self.table.resolve(ref)
            price, _, _ = service_price(None if key is None else self.table.models[key], tier)
            if len(self._prices) >= _MEMO_MAX:  # names are the client's: bounded
                self._prices.clear()
            hit = self._prices[(ref, tier)] = (key, price)
        return hit

    def _count(
        self,
        ref: str,
        rec: RequestRecord,
        usage: Usage,
        answer: Answer,
        prefix: list[Any] | None,
        raw: dict[str, tuple[int, int, int, int | None, bool]],
    ) -> ReferenceTokens:
        """One reference's token counts. Texts are tokenized once per encoding (``raw``), then
        scaled by each family's factor: the same numbers as counting per reference, a third of
        the work for the default references."""
        spec = tokenizer_for(ref)
        if spec.encoding not in raw:
            raw[spec.encoding] = self._raw_counts(unscaled(spec), rec, answer, prefix)
        r_prompt, r_output, r_reasoning, r_prefix, from_ids = raw[spec.encoding]
        prompt, output = scale(r_prompt, spec), scale(r_output, spec)
        reasoning = min(output, scale(r_reasoning, spec))
        hidden = None
        if is_reasoning_model(ref):
            hidden = self.settings.hidden_reasoning
            if hidden == "local" and not r_reasoning and usage.reasoning_tokens:
                # the local model reasoned without showing it: bill the cloud model as many hidden
                # reasoning tokens (vLLM's own count; no text to re-count in the cloud's tokens)
                reasoning = usage.reasoning_tokens
                output += reasoning
        cached = written = 0
        if usage.cached_tokens and usage.prompt_tokens:
            # the cloud would have cached the same share of the prompt that vLLM found cached
            cached = min(prompt, prompt * usage.cached_tokens // usage.prompt_tokens)
        elif r_prefix is not None and self.settings.cache_mode == "conservative":
            # vLLM did not say: the gateway's own prefix tracking (see PrefixTracker)
            cached = cacheable(prompt, scale(r_prefix, spec) - REPLY_PRIMING)
        if usage.cache_write_tokens and usage.prompt_tokens and self.settings.cache_mode == "conservative":
            # and written the same share that vLLM reported as written (Anthropic's cache creation)
            written = min(prompt - cached, prompt * usage.cache_write_tokens // usage.prompt_tokens)
        return ReferenceTokens(
            ref,
            spec.name,
            spec.estimated or from_ids,
            CloudUsage(
                prompt, output, cached_tokens=cached, cache_write_tokens=written, reasoning_tokens=reasoning
            ),
            hidden,
        )

    def _raw_counts(
        self, spec: TokenizerSpec, rec: RequestRecord, answer: Answer, prefix: list[Any] | None
    ) -> tuple[int, int, int, int | None, bool]:
        """Raw (unscaled) counts: prompt, output, reasoning, the seen prefix, and whether the
        prompt was token ids (an estimate). Each choice of an ``n>1`` answer is counted alone."""
        req = rec.request or {}
        messages = req.get("messages")
        if self.counts is not None and rec.endpoint == _CHAT and isinstance(messages, list):
            # one pass over the history: the prompt and the seen prefix from the same per-message
            # counts (the prefix is the prompt's first messages, the very same objects)
            per_message = self.counts.message_counts(messages, spec)
            tools = req.get("tools")
            tool_list = [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
            r_prompt = REPLY_PRIMING + sum(per_message) + (self._chat([], tool_list, spec) - REPLY_PRIMING)
            r_prefix = REPLY_PRIMING + sum(per_message[: len(prefix)]) if prefix else None
            output, reasoning = self._answer_counts(spec, rec, answer)
            return r_prompt, output, reasoning, r_prefix, False
        prompt = prompt_tokens(rec.endpoint, req, spec, self._chat)
        output, reasoning = self._answer_counts(spec, rec, answer)
        r_prefix = self._chat(prefix, None, spec) if prefix else None
        return prompt.tokens, output, reasoning, r_prefix, prompt.from_token_ids

    @staticmethod
    def _answer_counts(spec: TokenizerSpec, rec: RequestRecord, answer: Answer) -> tuple[int, int]:
        output = reasoning = 0
        if rec.endpoint != "/v1/embeddings":
            for a in answer.each():
                output += count_completion(a.reasoning + a.content, list(a.tool_calls) or None, spec)
                reasoning += count_text(a.reasoning, spec) if a.reasoning else 0
        return output, reasoning


def _tier(value: str) -> CloudTier:
    return "batch" if value == "batch" else "flex" if value == "flex" else "standard"
