"""The meter with its count cache writes exactly the rows it writes without (an agent's growing
transcript on chat, Responses and Messages requests), and hits the cache on the resent history."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.ledger.events import RequestRecord
from gateway.meter.rows import estimate_prompt_tokens, make_finalizer
from gateway.meter.shadow import ShadowMeter
from gateway.settings import MeterSettings
from pricing.tables import shipped_table
from tests.unit.gateway.meter.test_shapes import RESP_USAGE, USAGE, record
from tests.unit.pricing.test_count_cache import history


def _anthropic(steps: int) -> dict[str, Any]:
    msgs: list[dict[str, Any]] = []
    for i in range(steps):
        msgs.append({"role": "user", "content": [{"type": "text", "text": f"step {i}: read file_{i}.py"}]})
        msgs.append(
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": f"t{i}", "name": "read", "input": {"p": i}}],
            }
        )
        msgs.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "x = 1\n" * i}],
            }
        )
    return {"system": "You are Claude Code.", "messages": msgs, "max_tokens": 64}


def _records(steps: int) -> list[RequestRecord]:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "done"}}], "usage": USAGE}
    anthropic_body = {
        "type": "message",
        "content": [{"type": "text", "text": "ok"}],
        "usage": {"input_tokens": 30, "output_tokens": 2},
    }
    out = []
    for step in range(1, steps):
        out.append(record("/v1/chat/completions", {"messages": history(step)}, body))
        items = [
            {"role": m["role"], "content": m["content"]}
            for m in history(step)
            if isinstance(m["content"], str)
        ]
        out.append(
            record(
                "/v1/responses",
                {"instructions": "Be terse.", "input": items},
                {"output": [], "usage": RESP_USAGE},
            )
        )
        out.append(record("/v1/messages", _anthropic(step), anthropic_body))
    for i, rec in enumerate(out):
        rec.uid, rec.started = f"u{i}", 1_767_000_000.0 + i
    return out


@pytest.mark.parametrize("cache_mode", ["conservative", "none"])
def test_rows_with_the_cache_equal_rows_without(cache_mode: Any) -> None:
    def rows(entries: int) -> tuple[list[Any], ShadowMeter]:
        settings = MeterSettings(count_cache_entries=entries, cache_mode=cache_mode)
        meter = ShadowMeter(settings, shipped_table(), {})
        finalize = make_finalizer(estimate_prompt_tokens, meter)
        batch = [finalize([rec]) for rec in _records(12)]
        return [(b.events, b.shadows) for b in batch], meter

    cached, meter = rows(65_536)
    plain, plain_meter = rows(0)
    assert plain_meter.counts is None
    assert cached == plain
    assert meter.counts is not None and meter.counts.hits > meter.counts.misses > 0
