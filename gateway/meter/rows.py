"""Records -> ledger rows. Runs in the meter process (or a recorder thread), never on the event loop.

Each record becomes one ``usage_events`` row and, when the shadow meter priced it, one
``shadow_costs`` row per reference cloud model. A record whose response cannot be read still
gets its row (without counts): a usage record is never lost to a parsing problem.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.ledger.events import RequestRecord
from gateway.ledger.store import Row
from gateway.meter import anthropic
from gateway.meter.answer import answer_of
from gateway.meter.shadow import Shadow, ShadowMeter, box_json, pico, rounded_busy, rounded_joules
from gateway.meter.usage import Usage, extract
from pricing.money import decimal_str

log = logging.getLogger("nometer.recorder")


@dataclass
class LedgerBatch:
    events: list[Row] = field(default_factory=list)
    shadows: list[Row] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events)


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def to_row(rec: RequestRecord, usage: Usage, uid: str, shadow: Shadow | None) -> Row:
    busy, joules = rounded_busy(rec.busy_s), rounded_joules(rec.joules)
    if shadow is not None:
        meter: tuple[object, ...] = (
            shadow.inputs.table.id,
            shadow.inputs.cache_mode,
            busy,
            joules,
            box_json(shadow.inputs.box),
            pico(shadow.local.energy_usd),
            pico(shadow.local.hardware_usd),
        )
    else:
        meter = (None, None, busy, joules, None, None, None)
    return (
        rec.request_id,
        rec.started,
        _day(rec.started),
        rec.endpoint,
        rec.requested_model,
        rec.served_model,
        rec.backend,
        rec.route,
        rec.provider,
        rec.fallback_cause,
        rec.outcome,
        rec.status,
        int(rec.stream),
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
        usage.source,
        None if rec.latency_s is None else round(rec.latency_s * 1000, 3),
        None if rec.ttft_s is None else round(rec.ttft_s * 1000, 3),
        rec.key_id,
        rec.team,
        rec.tag,
        rec.error,
        uid,
        *meter,
        pico(rec.hosted_cost_usd),
        rec.run,
        rec.session,
    )


def shadow_rows(uid: str, shadow: Shadow) -> list[Row]:
    out: list[Row] = []
    for i, (ref, (key, cost, savings)) in enumerate(zip(shadow.inputs.references, shadow.costs, strict=True)):
        u = ref.usage
        out.append(
            (
                uid,
                i,
                ref.model,
                key,
                ref.tokenizer,
                int(ref.estimated),
                u.input_tokens,
                u.cached_tokens,
                u.cache_write_tokens,
                u.output_tokens,
                u.reasoning_tokens,
                pico(cost.total),
                pico(savings),
            )
        )
    return out


def estimate_prompt_tokens(text: str) -> int:
    """Prompt tokens of a request whose upstream reported none: an o200k count (labelled estimated)."""
    from pricing.tokens import count_text, tokenizer_for

    return count_text(text, tokenizer_for("gpt-4o"))


def make_measure(
    count_tokens: Callable[[str], int] | None, meter: ShadowMeter | None = None
) -> Callable[[RequestRecord], tuple[Usage, Shadow | None]]:
    """One record's counts and shadow figures: what its ledger rows (and receipt) will say.

    Raises on a response it cannot read; the finaliser records the request without counts then."""

    def measure(rec: RequestRecord) -> tuple[Usage, Shadow | None]:
        usage, events = extract(rec, count_tokens)
        if meter is None:
            return usage, None
        answer = (anthropic.answer_of if rec.endpoint == anthropic.MESSAGES else answer_of)(rec, events)
        return usage, meter.measure(rec, usage, answer)

    return measure


def make_pricer(
    measure: Callable[[RequestRecord], tuple[Usage, Shadow | None]],
) -> Callable[[RequestRecord], dict[str, Any]]:
    """The ``usage.nometer`` object of a record priced on the request path (gateway/http/cost.py):
    the receipt's own figures, since its row is later built from the same inputs."""

    def price(rec: RequestRecord) -> dict[str, Any]:
        shadow = None
        try:
            shadow = measure(rec)[1]
        except Exception:  # its row is recorded without counts too (make_finalizer)
            log.exception("could not meter %s in-line", rec.request_id)
        rec.priced_inline = True
        out: dict[str, Any] = {"receipt_id": rec.uid, "basis": "marginal"}
        if shadow is None or not shadow.costs:
            return out | {
                "local_cost_usd": None,
                "reference": None,
                "cloud_cost_usd": None,
                "savings_usd": None,
            }
        _, cost, savings = shadow.costs[0]
        return out | {
            "local_cost_usd": decimal_str(shadow.local.total),
            "reference": shadow.inputs.references[0].model,
            "cloud_cost_usd": None if cost.total is None else decimal_str(cost.total),
            "savings_usd": None if savings is None else decimal_str(savings),
        }

    return price


def make_finalizer(
    count_tokens: Callable[[str], int] | None, meter: ShadowMeter | None = None
) -> Callable[[list[RequestRecord]], LedgerBatch]:
    measure = make_measure(count_tokens, meter)

    def finalize(batch: list[RequestRecord]) -> LedgerBatch:
        out = LedgerBatch()
        for rec in batch:
            uid = rec.uid
            usage, shadow = Usage(), None
            try:
                usage, shadow = measure(rec)
            except Exception:  # a malformed response must not cost the request its ledger row
                log.exception("could not meter %s; recording it without counts", rec.request_id)
            out.events.append(to_row(rec, usage, uid, shadow))
            if shadow is not None:
                out.shadows.extend(shadow_rows(uid, shadow))
        return out

    return finalize
