"""Reading a backend's load from vLLM's Prometheus text (``/metrics``), off the hot path.

The pool scrapes every backend once or twice a second and stores the numbers on the ``Backend``;
the router only reads the latest ones. A server without these metrics (another server type)
leaves them ``None``, and the router falls back to the gateway's own in-flight counts.
Gauges and counters are summed over a server's engines (data parallel), but KV-cache use is the
fullest engine's: that engine is the one that queues. Names from vLLM 0.10+, then older ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.backends.backend import Backend

_RUNNING = "vllm:num_requests_running"
_WAITING = "vllm:num_requests_waiting"
_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # current name, then pre-0.10
_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
_SUMMED = frozenset({_RUNNING, _WAITING, *_QUERIES, *_HITS})
_WANTED = _SUMMED | frozenset(_KV_USAGE)


@dataclass(frozen=True, slots=True)
class VllmLoad:
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    prefix_queries: float | None = None
    prefix_hits: float | None = None


def parse_vllm_metrics(text: str) -> VllmLoad:
    sums: dict[str, float] = {}
    maxes: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        brace = line.find("{")
        name = line[:brace] if brace > 0 else line.split(" ", 1)[0]
        if name not in _WANTED:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        if name in _SUMMED:
            sums[name] = sums.get(name, 0.0) + value
        else:
            maxes[name] = max(maxes.get(name, 0.0), value)
    return VllmLoad(
        running=sums.get(_RUNNING),
        waiting=sums.get(_WAITING),
        kv_cache_usage=next((maxes[n] for n in _KV_USAGE if n in maxes), None),
        prefix_queries=next((sums[n] for n in _QUERIES if n in sums), None),
        prefix_hits=next((sums[n] for n in _HITS if n in sums), None),
    )


def apply_load(backend: Backend, load: VllmLoad) -> None:
    """Store a scrape on the backend; the hit rate is over the interval since the last one that
    saw new queries (a restarted server's counters start again: no rate from that step)."""
    q0, h0 = backend.prefix_queries, backend.prefix_hits
    q1, h1 = load.prefix_queries, load.prefix_hits
    if q0 is not None and h0 is not None and q1 is not None and h1 is not None and q1 > q0 and h1 >= h0:
        backend.hit_rate = (h1 - h0) / (q1 - q0)
    elif q1 is None:
        backend.hit_rate = None
    backend.running, backend.waiting = load.running, load.waiting
    backend.kv_cache_usage = load.kv_cache_usage
    backend.prefix_queries, backend.prefix_hits = q1, h1


def clear_load(backend: Backend) -> None:
    backend.running = backend.waiting = backend.kv_cache_usage = None
    backend.prefix_queries = backend.prefix_hits = backend.hit_rate = None
