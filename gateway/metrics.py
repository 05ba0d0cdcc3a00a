"""Prometheus metrics, fed from the recorder after each ledger write (never from the hot path).

Names follow the OpenTelemetry GenAI semantic conventions where they exist
(``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage``,
``gen_ai.server.time_to_first_token``, with ``gen_ai_operation_name`` / ``gen_ai_request_model`` /
``gen_ai_response_model`` labels); money and ledger health are nometer's own (``nometer_*``).
Live gauges (in-flight requests, queue depth, backend health) are read at scrape time.

Label values are bounded: a model label is a name the gateway serves or is configured with
(served models, aliases, hosted fallback models), a team label a configured team or one some key
names; anything else (a client's made-up model name in a refused request, say) is ``other``.
Tags are never labels. So ``/metrics`` cannot grow with what clients send.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from decimal import Decimal
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.ledger.events import EVENT_COLUMNS, SHADOW_COLUMNS
from gateway.ledger.store import LedgerBatchLike

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only add noise to scrapes

_E = {c: i for i, c in enumerate(EVENT_COLUMNS)}
_S = {c: i for i, c in enumerate(SHADOW_COLUMNS)}
PICO = Decimal(10) ** 12
_OPERATION = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "chat",
}
OTHER = "other"  # the label value of any name that is not configured
Names = Callable[[], tuple[Collection[str], Collection[str]]]  # -> (known models, known teams)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


# the recorder's state (``Recorder.state()``): (metric, key, help)
_LEDGER_GAUGES = (
    ("nometer_ledger_queue_depth", "queue_depth", "Usage events waiting in memory to be metered"),
    ("nometer_ledger_dropped_events", "dropped", "Usage events lost for good (the spool full or failing)"),
    ("nometer_ledger_spool_batches", "spool_batches", "Sealed batches in the spool, waiting for the store"),
    ("nometer_ledger_spool_requests", "spool_requests", "Requests the queue had no room for, kept on disk"),
    ("nometer_ledger_spool_bytes", "spool_bytes", "Bytes pending in the ledger spool"),
    ("nometer_ledger_spool_max_bytes", "spool_max_bytes", "ledger.spool_max_bytes"),
    ("nometer_ledger_spool_replaying", "replaying", "1 while spooled batches wait to be replayed"),
    ("nometer_ledger_store_up", "store_ok", "0 after a failed (or stalled) ledger write, until one succeeds"),
)
_LEDGER_COUNTERS = (
    ("nometer_ledger_overflowed_events", "overflowed", "Usage events spooled because the queue was full"),
    ("nometer_ledger_replayed_events", "replayed", "Usage events written from the spool"),
    ("nometer_ledger_dead_letters", "dead_lettered", "Requests the store refused (ledger_dead_letters)"),
)


class _Live(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]]):
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self._read()
        yield GaugeMetricFamily(
            "nometer_inflight_requests", "Requests being proxied now", value=s["inflight"]
        )
        led = s["ledger"]
        for name, key, doc in _LEDGER_GAUGES:
            yield GaugeMetricFamily(name, doc, value=float(led[key]))
        for name, key, doc in _LEDGER_COUNTERS:
            yield CounterMetricFamily(name, doc, value=led[key])
        healthy = GaugeMetricFamily(
            "nometer_backend_healthy", "1 if the backend passes health checks", labels=["backend"]
        )
        outstanding = GaugeMetricFamily(
            "nometer_backend_outstanding_requests", "In-flight requests per backend", labels=["backend"]
        )
        # vLLM's own numbers, as last scraped from each backend's /metrics (absent: unknown)
        waiting = GaugeMetricFamily(
            "nometer_backend_vllm_waiting", "vllm:num_requests_waiting, last scrape", labels=["backend"]
        )
        kv = GaugeMetricFamily(
            "nometer_backend_vllm_kv_cache_usage",
            "vllm:kv_cache_usage_perc (0..1), last scrape",
            labels=["backend"],
        )
        hits = GaugeMetricFamily(
            "nometer_backend_prefix_hit_ratio",
            "vLLM prefix-cache hits / queries over the last scrape interval",
            labels=["backend"],
        )
        ejected = GaugeMetricFamily(
            "nometer_backend_ejected",
            "1 while passive outlier ejection skips the backend",
            labels=["backend"],
        )
        now = time.monotonic()
        for b in s["backends"]:
            healthy.add_metric([b.name], 1.0 if b.healthy else 0.0)
            outstanding.add_metric([b.name], float(b.outstanding))
            if b.waiting is not None:
                waiting.add_metric([b.name], b.waiting)
            if b.kv_cache_usage is not None:
                kv.add_metric([b.name], b.kv_cache_usage)
            if b.hit_rate is not None:
                hits.add_metric([b.name], b.hit_rate)
            ejected.add_metric([b.name], 1.0 if b.ejected_until > now else 0.0)
        yield healthy
        yield outstanding
        yield waiting
        yield kv
        yield hits
        yield ejected
        store_errors = CounterMetricFamily(
            "nometer_policy_store_errors",
            "Requests whose rate-limit or budget counters (Redis) failed, by what the policy did",
            labels=["store", "action"],
        )
        for (store, mode), n in sorted(s.get("policy_failures", {}).items()):
            store_errors.add_metric([store, f"fail_{mode}"], float(n))
        yield store_errors


class Metrics:
    def __init__(self, live: Callable[[], dict[str, Any]], names: Names | None = None):
        self._names = names
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "nometer_requests",
            "Requests that reached routing, by outcome",
            ["model", "team", "backend", "route", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Request duration through nometer",
            ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_response_model", "team"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first body byte",
            ["gen_ai_operation_name", "gen_ai_response_model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request (local counts)",
            ["gen_ai_operation_name", "gen_ai_response_model", "gen_ai_token_type"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("nometer_tokens", "Local tokens", ["model", "team", "type"], registry=r)
        self.cloud = Counter(
            "nometer_cloud_equivalent_cost_usd",
            "What the reference cloud model would have billed",
            ["model", "team", "reference"],
            registry=r,
        )
        # a gauge, not a counter: a request can cost more here than in the cloud (negative savings)
        self.savings = Gauge(
            "nometer_savings_usd",
            "Net savings since start: cloud-equivalent cost minus local cost",
            ["model", "team", "reference"],
            registry=r,
        )
        self.local = Counter(
            "nometer_local_cost_usd",
            "Local cost (energy, hardware write-off)",
            ["model", "team", "kind"],
            registry=r,
        )
        self.hosted = Counter(
            "nometer_hosted_spend_usd", "Spend on hosted fallback", ["model", "team", "cause"], registry=r
        )
        self.written = Counter(
            "nometer_ledger_written_events", "Usage events written to the ledger", registry=r
        )
        r.register(_Live(live))
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(...)`` memoized: prometheus_client validates and locks on every call."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, batch: LedgerBatchLike) -> None:
        """Recorder listener: called once per written batch, in the recorder's worker thread."""
        known_models, known_teams = self._names() if self._names is not None else ((), ())

        def bounded(name: str | None, known: Collection[str]) -> str:
            if not name or self._names is None:
                return name or ""
            return name if name in known else OTHER

        teams: dict[str, tuple[str, str]] = {}
        for row in batch.events:
            requested = bounded(row[_E["requested_model"]], known_models)
            model = bounded(row[_E["served_model"]], known_models) or requested
            team = bounded(row[_E["team"]], known_teams)
            teams[row[_E["uid"]]] = (model, team)
            op = _OPERATION.get(row[_E["endpoint"]], "other")
            self._child(
                self.requests, model, team, row[_E["backend"]] or "", row[_E["route"]], row[_E["outcome"]]
            ).inc()
            if row[_E["latency_ms"]] is not None:
                self._child(self.duration, op, requested, model, team).observe(row[_E["latency_ms"]] / 1000)
            if row[_E["ttft_ms"]] is not None and row[_E["stream"]]:
                self._child(self.ttft, op, model).observe(row[_E["ttft_ms"]] / 1000)
            for kind, col in (("input", "prompt_tokens"), ("output", "completion_tokens")):
                n = row[_E[col]]
                if n is not None:
                    self._child(self.tokens, model, team, kind).inc(n)
                    self._child(self.token_usage, op, model, kind).observe(n)
            for kind, col in (("energy", "local_energy_pusd"), ("hardware", "local_hardware_pusd")):
                if row[_E[col]]:
                    self._child(self.local, model, team, kind).inc(float(Decimal(row[_E[col]]) / PICO))
            if row[_E["hosted_cost_pusd"]]:
                self._child(self.hosted, model, team, row[_E["fallback_cause"]] or "").inc(
                    float(Decimal(row[_E["hosted_cost_pusd"]]) / PICO)
                )
        for s in batch.shadows:
            model, team = teams.get(s[_S["event_uid"]], ("", ""))
            if s[_S["cloud_pusd"]] is not None:
                ref = s[_S["ref_model"]]
                self._child(self.cloud, model, team, ref).inc(float(Decimal(s[_S["cloud_pusd"]]) / PICO))
                self._child(self.savings, model, team, ref).inc(float(Decimal(s[_S["savings_pusd"]]) / PICO))
        self.written.inc(len(batch.events))

    def render(self) -> bytes:
        return generate_latest(self.registry)
