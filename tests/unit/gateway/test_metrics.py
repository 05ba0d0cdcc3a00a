"""Metric label values stay bounded whatever names clients send."""

from __future__ import annotations

import random
import string

from gateway.ledger import events as ev
from gateway.ledger.events import RequestRecord
from gateway.meter.rows import LedgerBatch, to_row
from gateway.meter.usage import Usage
from gateway.metrics import OTHER, Metrics

MODELS = {"qwen3-32b", "gpt-4.1", "openai/gpt-4.1-mini"}
TEAMS = frozenset({"research", "ops"})


def live() -> dict[str, object]:
    ledger = {
        "queue_depth": 0,
        "dropped": 0,
        "spool_batches": 0,
        "spool_requests": 0,
        "spool_bytes": 0,
        "spool_max_bytes": 1,
        "replaying": False,
        "store_ok": True,
        "overflowed": 0,
        "replayed": 0,
        "dead_lettered": 0,
    }
    return {"inflight": 0, "ledger": ledger, "backends": [], "policy_failures": {}}


def junk(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "-/.", k=rng.randint(1, 40)))


def batch(recs: list[RequestRecord]) -> LedgerBatch:
    out = LedgerBatch()
    out.events = [to_row(r, Usage(), f"uid-{i}", None) for i, r in enumerate(recs)]
    return out


def test_thousands_of_random_names_add_no_series() -> None:
    m = Metrics(live, lambda: (MODELS, TEAMS))
    rng = random.Random(7)
    known = [
        RequestRecord(
            "a", "/v1/chat/completions", "gpt-4.1", 0.0, 0.0, served_model="qwen3-32b", team="research"
        ),
        RequestRecord("b", "/v1/chat/completions", "qwen3-32b", 0.0, 0.0, team="ops", outcome=ev.REFUSED),
    ]
    for r in known:
        r.latency_s, r.status = 0.01, 200
    m.observe(batch(known))
    before = m.render()
    refused = []
    for _ in range(5000):  # refusals of made-up names, from made-up teams (keys of deleted teams...)
        r = RequestRecord(junk(rng), "/v1/chat/completions", junk(rng), 0.0, 0.0, team=junk(rng))
        r.outcome, r.status, r.latency_s, r.tag = ev.REFUSED, 403, 0.001, junk(rng)
        refused.append(r)
    m.observe(batch(refused))
    after = m.render()
    series = {line.split(" ")[0] for line in after.decode().splitlines() if not line.startswith("#")}
    assert len(after) < 2 * len(before) + 20_000  # the same series, other counts
    assert len(series) < 200
    assert not any(r.requested_model in after.decode() for r in refused[:200] if len(r.requested_model) > 8)
    text = after.decode()
    assert f'model="{OTHER}"' in text and f'team="{OTHER}"' in text
    assert 'model="qwen3-32b",team="research"' in text  # configured names are kept as they are
    assert 'gen_ai_request_model="gpt-4.1"' in text


def test_without_a_vocabulary_labels_are_the_names() -> None:
    m = Metrics(live)
    m.observe(batch([RequestRecord("a", "/v1/embeddings", "anything", 0.0, 0.0, team="t")]))
    assert b'model="anything"' in m.render()


def test_backends_export_vllms_numbers_only_when_known() -> None:
    import time
    from typing import Any

    from gateway.backends.backend import Backend

    up: Any = object()
    scraped = Backend("box-a", up, healthy=True, waiting=3.0, kv_cache_usage=0.25, hit_rate=0.75)
    unknown = Backend("box-b", up, healthy=True, ejected_until=time.monotonic() + 60)
    m = Metrics(lambda: {**live(), "backends": [scraped, unknown]})
    text = m.render().decode()
    assert 'nometer_backend_vllm_waiting{backend="box-a"} 3.0' in text
    assert 'nometer_backend_vllm_kv_cache_usage{backend="box-a"} 0.25' in text
    assert 'nometer_backend_prefix_hit_ratio{backend="box-a"} 0.75' in text
    assert 'nometer_backend_vllm_waiting{backend="box-b"}' not in text  # not vLLM: no number
    assert 'nometer_backend_ejected{backend="box-b"} 1.0' in text
    assert 'nometer_backend_ejected{backend="box-a"} 0.0' in text
