from __future__ import annotations

from typing import Any

from gateway.backends.backend import Backend
from gateway.backends.scrape import VllmLoad, apply_load, clear_load, parse_vllm_metrics

VLLM = """# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 3.0
vllm:num_requests_waiting{engine="1",model_name="tiny"} 1.0
vllm:num_requests_running{engine="0",model_name="tiny"} 8.0
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="tiny"} 0.75
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 1000.0
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 250.0
vllm:prefix_cache_hits_created 1.7e9
"""


def test_vllm_load_from_metrics() -> None:
    assert parse_vllm_metrics(VLLM) == VllmLoad(8.0, 4.0, 0.75, 1000.0, 250.0)
    old = parse_vllm_metrics("vllm:gpu_cache_usage_perc 0.5\nvllm:gpu_prefix_cache_queries_total 7\n")
    assert old == VllmLoad(kv_cache_usage=0.5, prefix_queries=7.0)  # vLLM before 0.10
    assert parse_vllm_metrics("# nothing here\n") == VllmLoad()


def test_hit_rate_is_over_the_last_interval() -> None:
    up: Any = object()
    b = Backend("a", up)
    apply_load(b, VllmLoad(0, 0, 0.1, 1000, 250))
    assert b.hit_rate is None  # one scrape: no interval yet
    apply_load(b, VllmLoad(2, 1, 0.2, 2000, 1150))
    assert b.hit_rate == 0.9 and (b.running, b.waiting, b.kv_cache_usage) == (2, 1, 0.2)
    apply_load(b, VllmLoad(0, 0, 0.2, 2000, 1150))
    assert b.hit_rate == 0.9  # no new queries: the rate stands
    apply_load(b, VllmLoad(0, 0, 0.0, 10, 0))
    assert b.hit_rate == 0.9  # counters went back (a restart): no rate from that step
    clear_load(b)
    assert (b.waiting, b.hit_rate, b.queue) == (None, None, 0.0)
    b.outstanding = 3
    assert b.queue == 3.0  # no /metrics: the gateway's own in-flight count


class _Upstream:
    """Answers /metrics with ``text``, or fails like a server without it (404 -> UpstreamError)."""

    def __init__(self, text: str | None) -> None:
        self.text = text
        self.asked = 0

    async def get_text(self, path: str, timeout_s: float) -> str:
        from adapters.base import UpstreamError

        self.asked += 1
        if self.text is None:
            raise UpstreamError(f"GET {path} -> 404")
        return self.text


async def test_scrape_fills_the_backend_and_a_server_without_metrics_is_asked_rarely() -> None:
    from gateway.backends.pool import BackendPool
    from gateway.backends.routing import Router
    from gateway.settings import RoutingSettings, UpstreamTimeouts

    vllm, other = _Upstream(VLLM), _Upstream(None)
    a = Backend("a", vllm, healthy=True)  # type: ignore[arg-type]
    b = Backend("b", other, healthy=True, outstanding=2)  # type: ignore[arg-type]
    pool = BackendPool(Router([a, b], {}), UpstreamTimeouts(), RoutingSettings())
    assert pool.scraping  # two backends: a policy can use the load
    await pool.scrape_all()
    await pool.scrape_all()
    assert (a.waiting, a.running, a.kv_cache_usage) == (4.0, 8.0, 0.75)
    assert b.waiting is None and b.queue == 2.0  # unknown: the gateway's own in-flight count
    assert vllm.asked == 2 and other.asked == 1  # not asked again for a while
    assert not BackendPool(Router([a], {}), UpstreamTimeouts(), RoutingSettings()).scraping


class _Probed:
    """Answers /health with what ``script`` says next: a status, or an exception to raise."""

    def __init__(self, *script: int | Exception) -> None:
        self.script = list(script)

    async def probe(self, path: str, timeout_s: float) -> int:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


async def test_one_timed_out_probe_keeps_a_healthy_backend_two_mark_it_down() -> None:
    from adapters.base import UpstreamConnectError, UpstreamTimeout
    from gateway.backends.pool import PROBE_TIMEOUTS_DOWN, BackendPool
    from gateway.backends.routing import Router
    from gateway.settings import RoutingSettings, UpstreamTimeouts

    slow = UpstreamTimeout("GET /health: timed out")
    up = _Probed(200, slow, 200, slow, slow, 200, UpstreamConnectError("refused"), slow)
    b = Backend("a", up, static_models=("m",), models=frozenset({"m"}))  # type: ignore[arg-type]
    pool = BackendPool(Router([b], {}), UpstreamTimeouts(), RoutingSettings())
    seen = []
    for _ in range(len(up.script)):
        await pool.refresh(b)
        seen.append(b.healthy)
    assert PROBE_TIMEOUTS_DOWN == 2
    # up; one timeout tolerated; up; two in a row: down; back; refused: down at once;
    # a timeout while down keeps it down
    assert seen == [True, True, True, True, False, True, False, False]
    assert b.last_error is not None and "timed out" in b.last_error
