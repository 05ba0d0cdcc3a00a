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
from typing import Any

import orjson

from gateway.ledger.events import RequestRecord
from gateway.meter import anthropic
from gateway.meter.answer import Answer
from gateway.meter.prefix import PrefixTracker, cacheable
from gateway.meter.usage import Usage
from gateway.settings import BoxSettings, MeterSettings
from pricing.cost import CloudCost, CloudUsage, cloud_cost
from pricing.local import BoxCost, LocalCost, request_local_cost
from pricing.money import CONTEXT, as_decimal, decimal_str
from pricing.receipt import ReceiptInputs, ReferenceTokens
from pricing.tables import PriceTable
from pricing.tokens import (
    REPLY_PRIMING,
    count_chat_prompt,
    count_completion,
    count_text,
    scale,
    tokenizer_for,
    unscaled,
)

PICO = Decimal(10) ** 12
_CHAT = "/v1/chat/completions"
_METERED = frozenset({_CHAT, "/v1/completions", "/v1/responses", "/v1/embeddings", anthropic.MESSAGES})


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
        if (
            rec.route != "local"
            or rec.endpoint not in _METERED
            or usage.prompt_tokens is None
            or not rec.request
        ):
            return None
        prefix = None
        if usage.cached_tokens is None:
            seen = self.prefixes.seen_prefix(rec)  # learns this request's prefixes either way
            if rec.priced_inline:  # priced on the request path: the answer told that figure
                prefix = rec.inline_prefix
            else:
                prefix = rec.inline_prefix = seen
        raw: dict[str, tuple[int, int, int, int | None]] = {}
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
        )
        local = request_local_cost(inputs.busy_seconds, inputs.joules, inputs.box)
        costs = []
        for ref in refs:
            key = self.table.resolve(ref.model)
            cost = cloud_cost(None if key is None else self.table.models[key], ref.usage, inputs.cache_mode)
            with localcontext(CONTEXT):
                savings = None if cost.total is None else cost.total - local.total
            costs.append((key, cost, savings))
        return Shadow(inputs, local, tuple(costs))

    def _count(
        self,
        ref: str,
        rec: RequestRecord,
        usage: Usage,
        answer: Answer,
        prefix: list[Any] | None,
        raw: dict[str, tuple[int, int, int, int | None]],
    ) -> ReferenceTokens:
        """One reference's token counts. Texts are tokenized once per encoding (``raw``), then
        scaled by each family's factor: the same numbers as counting per reference, a third of
        the work for the default references."""
        spec = tokenizer_for(ref)
        if spec.encoding not in raw:
            raw[spec.encoding] = self._raw_counts(unscaled(spec), rec, answer, prefix)
        r_prompt, r_output, r_reasoning, r_prefix = raw[spec.encoding]
        prompt, output = scale(r_prompt, spec), scale(r_output, spec)
        reasoning = min(output, scale(r_reasoning, spec))
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
            spec.estimated,
            CloudUsage(
                prompt, output, cached_tokens=cached, cache_write_tokens=written, reasoning_tokens=reasoning
            ),
        )

    def _raw_counts(
        self, spec: Any, rec: RequestRecord, answer: Answer, prefix: list[Any] | None
    ) -> tuple[int, int, int, int | None]:
        req = rec.request or {}
        if rec.endpoint == _CHAT:
            raw_messages, raw_tools = req.get("messages"), req.get("tools")
            messages = (
                [m for m in raw_messages if isinstance(m, dict)] if isinstance(raw_messages, list) else []
            )
            tools = [t for t in raw_tools if isinstance(t, dict)] if isinstance(raw_tools, list) else None
            prompt = count_chat_prompt(messages, tools, spec)
        elif rec.endpoint == "/v1/responses":
            prompt = _responses_prompt(req, spec)
        elif rec.endpoint == anthropic.MESSAGES:
            prompt = anthropic.prompt_tokens(req, spec)
        else:  # completions: prompt; embeddings: input
            prompt = sum(count_text(t, spec) for t in _texts(req.get("prompt", req.get("input"))))
        output = (
            0
            if rec.endpoint == "/v1/embeddings"
            else count_completion(answer.reasoning + answer.content, list(answer.tool_calls) or None, spec)
        )
        reasoning = count_text(answer.reasoning, spec) if answer.reasoning else 0
        r_prefix = count_chat_prompt(prefix, None, spec) if prefix else None
        return prompt, output, reasoning, r_prefix


def _texts(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [x for x in v if isinstance(x, str)]  # token-id prompts are not text: not counted
    return []


def _responses_prompt(req: dict[str, Any], spec: Any) -> int:
    inp = req.get("input")
    n = count_text(req["instructions"], spec) if isinstance(req.get("instructions"), str) else 0
    if isinstance(inp, str):
        return n + count_chat_prompt([{"role": "user", "content": inp}], None, spec)
    if isinstance(inp, list):
        msgs = [m for m in inp if isinstance(m, dict) and "role" in m]
        return n + count_chat_prompt(
            msgs, req.get("tools") if isinstance(req.get("tools"), list) else None, spec
        )
    return n
