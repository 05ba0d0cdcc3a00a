"""Routing policies compared on a simulated fleet (not a timed test; results in docs/benchmarks.md).

    PYTHONPATH=. python bench/route_compare.py [--repeats 3] [--requests 1200] [--rates 4,8,...]
    PYTHONPATH=. python bench/route_compare.py --cost-only     # the routing cost per request alone

Four simulated vLLM engines (``tests/support/sim_engine.py``: prefix cache, scheduler, chunked
prefill, batched decode) run in a discrete-event loop in simulated seconds, so a run is
deterministic for a seed and takes seconds of CPU, whatever the wall clock does. Every policy is
the gateway's own code: ``Router.pick`` over real ``Backend`` objects, with their in-flight counts
kept by the loop and their vLLM load written by ``apply_load`` from a simulated ``/metrics``
scrape every ``--scrape-s`` (0.5 s). ``random`` is the only policy made here.

Workloads (Poisson arrivals, several rates up to saturation):

* ``shared``: 40 tenants, each with its own ~6k-token system prompt, short unique questions
  (50 tokens) and short answers (64 tokens): llm-d's multi-tenant benchmark, scaled to 4 backends;
* ``unique``: no shared prefix at all: every prompt is 1,000 fresh tokens.

Per policy and rate, over the requests after the first ``--warmup`` share (the caches start
cold): TTFT p50/p90 (simulated seconds, arrival to first token), output throughput (their
tokens per simulated second, first arrival to last finish) and prefix-cache hit rate (cached
prompt tokens / prompt tokens, vLLM's ``hits / queries``); medians over ``--repeats`` seeds.
The routing cost per request is the median wall time of the hot path's part: building the
prefix keys from a freshly parsed body (prefix only) and ``Router.pick``.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.backends.backend import Backend
from gateway.backends.prefix import prefix_keys
from gateway.backends.routing import Router
from gateway.backends.scrape import VllmLoad, apply_load
from gateway.settings import RoutingSettings
from tests.support.sim_engine import Engine, EngineParams, SimRequest

POLICIES = ("random", "round_robin", "least_outstanding", "least_queue", "prefix")
_GATEWAY_POLICY = {
    "round_robin": "round_robin",
    "least_outstanding": "least_loaded",
    "least_queue": "least_queue",
    "prefix": "prefix",
}
MODEL = "sim"


@dataclass(frozen=True)
class Workload:
    name: str
    tenants: int  # 0: no shared prefix
    prefix_tokens: int
    query_tokens: int
    output_tokens: int


SHARED = Workload("shared", 40, 6_000, 50, 64)
UNIQUE = Workload("unique", 0, 0, 1_000, 64)


@dataclass
class Result:
    ttft_p50: float
    ttft_p90: float
    throughput: float
    hit_rate: float
    route_us: float
    done: int


@dataclass
class _Arrival:
    at: float
    body: bytes
    blocks: list[int]
    prompt_tokens: int
    req: SimRequest | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _arrivals(w: Workload, rate: float, n: int, seed: int, block: int) -> list[_Arrival]:
    rng = random.Random(seed)
    out: list[_Arrival] = []
    systems = [f"tenant {t} " + "policy " * (w.prefix_tokens - 2) for t in range(w.tenants)]
    prefix_blocks = [[hash((t, i)) for i in range(w.prefix_tokens // block)] for t in range(w.tenants)]
    t = 0.0
    for i in range(n):
        t += rng.expovariate(rate)
        query = f"question {seed} {i} " + "word " * (w.query_tokens - 3)
        if w.tenants:
            tenant = rng.randrange(w.tenants)
            messages = [{"role": "system", "content": systems[tenant]}, {"role": "user", "content": query}]
            blocks = prefix_blocks[tenant] + [hash((seed, i, j)) for j in range(w.query_tokens // block)]
            prompt = w.prefix_tokens + w.query_tokens
        else:
            messages = [{"role": "user", "content": query}]
            blocks = [hash((seed, i, j)) for j in range(w.query_tokens // block)]
            prompt = w.query_tokens
        body = orjson.dumps({"model": MODEL, "messages": messages, "max_tokens": w.output_tokens})
        out.append(_Arrival(t, body, blocks, prompt))
    return out


def run(
    policy: str,
    w: Workload,
    rate: float,
    n: int,
    seed: int,
    params: EngineParams,
    scrape_s: float,
    prefix: dict[str, float] | None = None,
    warmup: float = 0.2,
) -> Result:
    engines = [Engine(params) for _ in range(4)]
    up: Any = None
    backends = [Backend(f"b{i}", up, models=frozenset({MODEL}), healthy=True) for i in range(4)]
    index = {id(b): e for b, e in zip(backends, engines, strict=True)}
    routing = RoutingSettings.model_validate(
        {"policy": _GATEWAY_POLICY.get(policy, "round_robin"), "prefix": prefix or {}}
    )
    router = Router(backends, {}, routing)
    rng = random.Random(seed + 1)
    pick: Callable[[dict[str, Any]], Backend]
    if policy == "random":
        pick = lambda _payload: rng.choice(backends)  # noqa: E731
    elif policy == "prefix":
        depth = router.tuning.depth
        pick = lambda payload: router.pick(MODEL, keys=prefix_keys(payload, depth))  # noqa: E731
    else:
        pick = lambda _payload: router.pick(MODEL)  # noqa: E731
    arrivals = _arrivals(w, rate, n, seed, params.block_size)
    route_ns: list[int] = []
    # events: (time, order, kind, payload); kinds: 0 arrival, 1 engine step, 2 scrape
    events: list[tuple[float, int, int, int]] = [(a.at, i, 0, i) for i, a in enumerate(arrivals)]
    heapq.heapify(events)
    order = len(events)
    planned: dict[int, float] = {}
    heapq.heappush(events, (0.0, order, 2, -1))
    order += 1
    finished = 0

    def plan(ei: int) -> None:
        nonlocal order
        end = engines[ei].next_event()
        if end is not None and planned.get(ei) != end:
            planned[ei] = end
            heapq.heappush(events, (end, order, 1, ei))
            order += 1

    while events and finished < n:
        now, _, kind, arg = heapq.heappop(events)
        if kind == 0:
            a = arrivals[arg]
            payload = orjson.loads(a.body)  # as the proxy has it: freshly parsed
            t0 = time.perf_counter_ns()
            backend = pick(payload)
            route_ns.append(time.perf_counter_ns() - t0)
            backend.outstanding += 1
            ei = backends.index(backend)

            def done(_t: float, b: Backend = backend) -> None:
                nonlocal finished
                b.outstanding -= 1
                finished += 1

            a.req = SimRequest(a.blocks, a.prompt_tokens, w.output_tokens, on_done=done)
            engines[ei].run_until(now)
            engines[ei].submit(a.req, now)
            plan(ei)
        elif kind == 1:
            if planned.get(arg) != now:
                continue  # superseded
            del planned[arg]
            engines[arg].run_until(now)
            plan(arg)
        else:
            for b in backends:
                e = index[id(b)]
                e.run_until(now)
                load = VllmLoad(len(e.running), len(e.waiting), e.kv_usage, e.stats.queries, e.stats.hits)
                apply_load(b, load)
            for ei in range(4):
                plan(ei)
            heapq.heappush(events, (now + scrape_s, order, 2, -1))
            order += 1
    measured = [a.req for a in arrivals[int(n * warmup) :] if a.req is not None]
    ttfts = sorted(r.first_token_at - r.arrived for r in measured if r.first_token_at is not None)
    ends = [r.finished_at for r in measured if r.finished_at is not None]
    span = max(ends) - measured[0].arrived
    prompt = sum(r.prompt_tokens for r in measured)
    return Result(
        ttft_p50=ttfts[len(ttfts) // 2],
        ttft_p90=ttfts[int(len(ttfts) * 0.9)],
        throughput=sum(r.generated for r in measured) / span,
        hit_rate=sum(r.cached_tokens for r in measured) / prompt,
        route_us=statistics.median(route_ns) / 1000,
        done=finished,
    )


def _median(results: list[Result]) -> Result:
    def med(attr: str) -> float:
        return float(statistics.median(float(getattr(r, attr)) for r in results))

    return Result(
        med("ttft_p50"),
        med("ttft_p90"),
        med("throughput"),
        med("hit_rate"),
        med("route_us"),
        int(med("done")),
    )


def routing_cost(rounds: int = 5, n: int = 4000) -> None:
    """The hot path's routing cost alone: keys from a freshly parsed body, then ``Router.pick``,
    for each gateway policy on an idle 4-backend fleet; per round the median and p99 over ``n``
    requests (40 tenants' 6k-token prompts), and the lowest of the rounds (the least disturbed
    by other work on the machine)."""
    bodies = [a.body for a in _arrivals(SHARED, 1.0, n, 0, 16)]
    up: Any = None
    print("\n## routing cost per request (us): lowest median / p99 over rounds")
    for policy in ("least_outstanding", "round_robin", "least_queue", "prefix"):
        backends = [Backend(f"b{i}", up, models=frozenset({MODEL}), healthy=True) for i in range(4)]
        router = Router(backends, {}, RoutingSettings.model_validate({"policy": _GATEWAY_POLICY[policy]}))
        depth = router.tuning.depth
        medians, p99s = [], []
        for _ in range(rounds):
            took = []
            for body in bodies:
                payload = orjson.loads(body)  # as the proxy has it: just parsed, in the CPU's cache
                t0 = time.perf_counter_ns()
                keys = prefix_keys(payload, depth) if policy == "prefix" else []
                router.pick(MODEL, keys=keys)
                took.append(time.perf_counter_ns() - t0)
            took.sort()
            medians.append(took[len(took) // 2] / 1000)
            p99s.append(took[int(len(took) * 0.99)] / 1000)
        print(f"{policy:<18} median {min(medians):5.1f}   p99 {min(p99s):6.1f}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--rates", default="4,8,16,24,32,40,48,56", help="arrivals per simulated second")
    ap.add_argument("--unique-rates", default="8,16,24,32,40")
    ap.add_argument("--scrape-s", type=float, default=0.5)
    ap.add_argument("--warmup", type=float, default=0.2, help="share of the first requests not measured")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--load-factor", type=float, help="routing.prefix.load_factor (default: the gateway's)")
    ap.add_argument("--queue-gap", type=float, help="routing.prefix.queue_gap (default: the gateway's)")
    ap.add_argument("--queue-ratio", type=float, help="routing.prefix.queue_ratio (default: the gateway's)")
    ap.add_argument("--cost-only", action="store_true", help="only the routing cost per request")
    args = ap.parse_args(argv)
    tuned = (
        ("load_factor", args.load_factor),
        ("queue_gap", args.queue_gap),
        ("queue_ratio", args.queue_ratio),
    )
    prefix = {k: v for k, v in tuned if v is not None}
    if args.cost_only:
        routing_cost()
        return 0
    params = EngineParams()
    policies = args.policies.split(",")
    print(
        f"# 4 engines, {params.capacity_blocks} KV blocks of {params.block_size} tokens each, "
        f"max_num_seqs {params.max_num_seqs}, prefill {1 / params.prefill_s_per_token:.0f} tok/s; "
        f"{args.requests} requests per run, median of {args.repeats} seeds"
    )
    for w, rates in ((SHARED, args.rates), (UNIQUE, args.unique_rates)):
        print(f"\n## workload {w.name}: {w}")
        print(f"{'rate':>5} {'policy':<18} {'p50 s':>7} {'p90 s':>7} {'tok/s':>7} {'hit':>5} {'route us':>8}")
        for rate in (float(r) for r in rates.split(",")):
            for policy in policies:
                started = time.perf_counter()
                rs = [
                    run(policy, w, rate, args.requests, seed, params, args.scrape_s, prefix, args.warmup)
                    for seed in range(args.repeats)
                ]
                m = _median(rs)
                print(
                    f"{rate:>5.0f} {policy:<18} {m.ttft_p50:>7.2f} {m.ttft_p90:>7.2f} {m.throughput:>7.0f} "
                    f"{m.hit_rate:>5.2f} {m.route_us:>8.1f}   ({time.perf_counter() - started:.1f}s)",
                    flush=True,
                )
    routing_cost()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
