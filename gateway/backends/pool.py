"""Backend pool: builds backends from settings, discovers their models and watches their health.

Discovery reads ``GET /v1/models`` (vLLM also reports ``max_model_len`` there); health reads
``GET /health`` (vLLM), falling back to ``/v1/models`` for servers without it. A backend that was
seen once keeps its model list while down, so a request for its model gets 503, not 404.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from urllib.parse import urlsplit

from adapters.base import UpstreamError
from adapters.openai_compat import CompatConfig, OpenAICompatUpstream
from gateway.backends.backend import Backend
from gateway.backends.routing import Router
from gateway.settings import BackendSettings, ManagedSettings, RoutingSettings, UpstreamTimeouts

log = logging.getLogger("nometer.backends")


def build_backends(
    backends: Sequence[BackendSettings],
    managed: Sequence[ManagedSettings],
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
        out.append(Backend(name=name, upstream=up, managed=True, local=True))
    return out


class BackendPool:
    def __init__(self, router: Router, timeouts: UpstreamTimeouts, routing: RoutingSettings):
        self.router = router
        self._health_s = timeouts.health_s
        self._interval = routing.health_interval_s
        self._refresh_every = max(1, round(routing.models_refresh_s / max(self._interval, 0.1)))
        self._task: asyncio.Task[None] | None = None
        self.poll_metrics = False  # read vLLM's load from /metrics (set when an overload rule needs it)

    async def refresh(self, backend: Backend, *, discover: bool = True) -> None:
        up = backend.upstream
        try:
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
            backend.healthy, backend.last_error = True, None
            if self.poll_metrics:
                await self._read_load(backend)
        except (UpstreamError, ValueError, KeyError, TypeError) as exc:
            if backend.healthy:
                log.warning("backend %s unhealthy: %s", backend.name, exc)
            backend.healthy, backend.last_error = False, str(exc) or type(exc).__name__

    async def _read_load(self, backend: Backend) -> None:
        """Queue depth and KV-cache use from ``/metrics``; a server without them reads as unknown."""
        try:
            text = await backend.upstream.get_text("/metrics", self._health_s)
        except UpstreamError:
            backend.waiting = backend.kv_cache_usage = None
            return
        backend.waiting, backend.kv_cache_usage = parse_vllm_load(text)

    async def refresh_all(self, *, discover: bool = True) -> None:
        await asyncio.gather(*(self.refresh(b, discover=discover) for b in self.router.backends))

    def mark_failed(self, backend: Backend, reason: str) -> None:
        """Called by the proxy on a connection failure; the next probe may bring it back."""
        backend.healthy, backend.last_error = False, reason

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="nometer-health")

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
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(b.upstream.aclose() for b in self.router.backends), return_exceptions=True)


_WAITING = "vllm:num_requests_waiting"
_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # current name, then pre-0.10


def parse_vllm_load(text: str) -> tuple[float | None, float | None]:
    """(requests waiting, summed over engines; KV-cache usage 0..1, the highest engine's) from
    vLLM's Prometheus text. Missing metrics give None."""
    waiting: float | None = None
    usage: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0] if "{" in line else line.split(" ", 1)[0]
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        if name == _WAITING:
            waiting = (waiting or 0.0) + value
        elif name in _KV_USAGE:
            usage[name] = max(usage.get(name, 0.0), value)
    kv = next((usage[n] for n in _KV_USAGE if n in usage), None)
    return waiting, kv
