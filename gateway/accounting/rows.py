"""Records -> ledger rows. Runs in the recorder's worker thread, never on the event loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gateway.accounting.events import RequestRecord
from gateway.accounting.store import Row
from gateway.accounting.usage import Usage, extract

log = logging.getLogger("nometer.recorder")


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def to_row(rec: RequestRecord, usage: Usage) -> Row:
    return (
        rec.request_id, rec.started, _day(rec.started), rec.endpoint, rec.requested_model,
        rec.served_model, rec.backend, rec.route, rec.provider, rec.fallback_cause, rec.outcome,
        rec.status, int(rec.stream), usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
        usage.cached_tokens, usage.reasoning_tokens, usage.source,
        None if rec.latency_s is None else round(rec.latency_s * 1000, 3),
        None if rec.ttft_s is None else round(rec.ttft_s * 1000, 3),
        rec.key_id, rec.team, rec.tag, rec.error,
    )


def make_finalizer(count_tokens: Callable[[str], int] | None) -> Callable[[list[RequestRecord]], list[Row]]:
    def finalize(batch: list[RequestRecord]) -> list[Row]:
        rows = []
        for rec in batch:
            try:
                usage = extract(rec, count_tokens)[0]
            except Exception:  # a malformed response must not cost the request its ledger row
                log.exception("could not read usage of %s; recording it without counts", rec.request_id)
                usage = Usage()
            rows.append(to_row(rec, usage))
        return rows

    return finalize
