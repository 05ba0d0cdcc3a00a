"""Backend pool: builds backends from settings, discovers their models and watches their health.

Discovery reads ``GET /v1/models`` (vLLM also reports ``max_model_len`` there); health reads
``GET /health`` (vLLM), falling back to ``/v1/models`` for servers without it. A backend that was
seen once keeps its model list while down, so a request for its model gets 503, not 404.

Load is read apart from health, more often: every ``routing.metrics_interval_s`` a second task
scrapes each healthy backend's ``/metrics`` (``gateway.backends.scrape``) when a routing policy or
an overload rule can use it (several backends, or ``poll_metrics``). A server that has no
``/metrics`` is asked again only every ``_NO_METRICS_RETRY_S``.

A healthy backend is marked down at once when a probe is refused or answers badly, but only after
``PROBE_TIMEOUTS_DOWN`` probes *in a row* time out: one slow ``/health`` (a busy event loop in
vLLM while it prefills, a loaded CPU box) must not turn every request away with 503 for a whole
health interval. Requests that fail still eject it at once (``mark_failed`` and the outlier policy).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from adapters.base import UpstreamError, UpstreamTimeout
from adapters.openai_compat import CompatConfig, OpenAICompatUpstream
from gateway.backends.backend import Backend
from gateway.backends.managed import ManagedServer
from gateway.backends.routing import Router
from gateway.backends.scrape import apply_load, clear_load, parse_vllm_metrics
from gateway.settings import BackendSettings, RoutingSettings, UpstreamTimeouts

log = logging.getLogger("nometer.backends")
_NO_METRICS_RETRY_S = 30.0
PROBE_TIMEOUTS_DOWN = 2  # consecutive timed-out health probes that mark a healthy backend down


def build_backends(
    backends: Sequence[BackendSettings],
    managed: Sequence[ManagedServer],
    t: UpstreamTimeouts,
    pool: int = 1024,  # connections per upstream (routing.max_connections_per_backend)
) -> list[Backend]:
    out: list[Backend] = []
    for i, b in enumerate(backends):
        key = os.environ.get(b.api_key_env) if b.api_key_env else None
        name = b.name or f"backend-{i}"
        up = OpenAICompatUpstream(CompatConfig(b.url, name, key, t.connect_s, t.read_s, pool))
        out.append(
            Backend(
                name=name,
                upstream=up,
                static_models=b.models,
                models=frozenset(b.models or ()),
                local=urlsplit(b.url).hostname in ("127.0.0.1", "localhost", "::1"),
            )
        )
    for m in managed:
        name = f"managed-{m.port}"
        up = OpenAICompatUpstream(
            CompatConfig(f"http://127.0.0.1:{m.port}/v1", name, None, t.connect_s, t.read_s, pool)
        )
        out.append(Backend(name=name, upstream=up, managed=True, local=True, guard=m.check_owner))
    return out


class BackendPool:
    def __init__(self, router: Router, timeouts: UpstreamTimeouts, routing: RoutingSettings):
        self.router = router
        self._health_s = timeouts.health_s
        self._interval = routing.health_interval_s
        self._refresh_every = max(1, round(routing.models_refresh_s / max(self._interval, 0.1)))
        self._metrics_s = routing.metrics_interval_s
        self._task: asyncio.Task[None] | None = None
        self._scraper: asyncio.Task[None] | None = None
        self._no_metrics: dict[str, float] = {}  # backend name -> when to ask again
        self.serving = asyncio.Event()  # set once any backend has been healthy: the gateway can serve
        self.poll_metrics = False  # read vLLM's load from /metrics (set when an overload rule needs it)

    async def refresh(self, backend: Backend, *, discover: bool = True) -> None:
        up = backend.upstream
        try:
            if backend.guard is not None and (problem := backend.guard()) is not None:
                raise UpstreamError(problem)
            status = await up.probe("/health", self._health_s)
            if status == 404:  # not vLLM: a working model list is health enough
                await up.get_json("/v1/models", self._health_s)
            elif status != 200:
                raise UpstreamError(f"/health answered {status}")
            if (discover or not backend.healthy or not backend.models) and backend.static_models is None:
                listing = await up.get_json("/v1/models", self._health_s)
                data = listing.get("data", []) if isinstance(listing, dict) else []
                models = frozenset(str(m["id"]) for m in data if isinstance(m, dict) and "id" in m)
                backend.cards = {str(m["id"]): m for m in data if isinstance(m, dict) and "id" in m}
                backend.max_model_len = {
                    str(m["id"]): int(m["max_model_len"])
                    for m in data
                    if isinstance(m, dict) and isinstance(m.get("max_model_len"), int)
                }
                if models != backend.models:
                    backend.models = models
                    self.router.rebuild()
            if not backend.healthy:
                log.info("backend %s healthy, models: %s", backend.name, sorted(backend.models))
            backend.healthy, backend.last_error, backend.probe_timeouts = True, None, 0
            self.serving.set()
        except UpstreamTimeout as exc:
            backend.probe_timeouts += 1
            if backend.healthy and backend.probe_timeouts < PROBE_TIMEOUTS_DOWN:
                log.info(
                    "backend %s: health probe timed out (%s); down after %d in a row",
                    backend.name,
                    exc,
                    PROBE_TIMEOUTS_DOWN,
                )
                return
            self._down(backend, exc)
        except (UpstreamError, ValueError, KeyError, TypeError) as exc:
            backend.probe_timeouts = 0
            self._down(backend, exc)

    def _down(self, backend: Backend, exc: Exception) -> None:
        if backend.healthy:
            log.warning("backend %s unhealthy: %s", backend.name, exc)
        backend.healthy, backend.last_error = False, str(exc) or type(exc).__name__

    @property
    def scraping(self) -> bool:
        """Whether load is worth reading: a policy can choose among backends, or a rule needs it."""
        return self._metrics_s > 0 and (self.poll_metrics or len(self.router.backends) > 1)

    async def scrape(self, backend: Backend) -> None:
        """Queue, running, KV use and prefix-cache counters from ``/metrics`` (module docstring)."""
        retry_at = self._no_metrics.get(backend.name)
        if retry_at is not None and time.monotonic() < retry_at:
            return
        try:
            text = await backend.upstream.get_text("/metrics", self._health_s)
        except UpstreamError:
            clear_load(backend)
            self._no_metrics[backend.name] = time.monotonic() + _NO_METRICS_RETRY_S
            return
        self._no_metrics.pop(backend.name, None)
        apply_load(backend, parse_vllm_metrics(text))

    async def scrape_all(self) -> None:
        await asyncio.gather(*(self.scrape(b) for b in self.router.backends if b.healthy))

    async def refresh_all(self, *, discover: bool = True) -> None:
        await asyncio.gather(*(self.refresh(b, discover=discover) for b in self.router.backends))

    def mark_failed(self, backend: Backend, reason: str) -> None:
        """Called by the proxy on a connection failure; the next probe may bring it back."""
        backend.healthy, backend.last_error = False, reason

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="nometer-health")
        if self._metrics_s > 0:
            self._scraper = asyncio.create_task(self._scrape_loop(), name="nometer-metrics")

    async def _scrape_loop(self) -> None:
        while True:
            await asyncio.sleep(self._metrics_s)
            if not self.scraping:
                continue
            try:
                await self.scrape_all()
            except Exception:  # never let the scraper die
                log.exception("metrics scrape round failed")

    async def _loop(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(self._interval)
            tick += 1
            try:
                await self.refresh_all(discover=tick % self._refresh_every == 0)
            except Exception:  # never let the watcher die
                log.exception("health check round failed")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._scraper) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(b.upstream.aclose() for b in self.router.backends), return_exceptions=True)
