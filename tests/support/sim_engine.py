"""A model of one vLLM engine, in simulated seconds: prefix cache, scheduler, prefill and decode.

A simulation, not a stand-in for vLLM (its behaviour is tested against the real one): it exists
so routing policies can be compared on a fleet in seconds. It keeps what decides a request's
time to first token on a real server:

* a **prefix cache**: an LRU of block hashes (``block_size`` tokens each, chained like vLLM's,
  so a block is a hit only when every block before it is too) in ``capacity_blocks`` of KV
  memory. As in vLLM, running requests share the cached blocks of their prompt (pinned: never
  evicted while in use); each also holds private blocks for the prompt blocks it still has to
  compute and for its output; what the running requests leave is the cache;
* a **scheduler**: at most ``max_num_seqs`` running requests, admitted first come first served
  while their KV blocks fit; the others wait (``vllm:num_requests_waiting``);
* **steps**: each step prefills up to ``max_batched_tokens`` uncached prompt tokens (chunked)
  and decodes one token for every request past its prefill; a step lasts
  ``step_s + prefill_s_per_token * prefilled + decode_s_per_seq * decoding``. A request's first
  token comes at the end of the step that finishes its prefill.

No clock here: ``run_until(t)`` advances the engine to simulated time ``t`` and reports what
happened through each request's callbacks, so the same model runs behind HTTP in real time
(``sim_fleet``) and in a discrete-event loop (``bench/route_compare.py``).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineParams:
    block_size: int = 16
    capacity_blocks: int = 6_000  # KV cache: about 16 prompts of 6k tokens
    max_num_seqs: int = 64
    max_batched_tokens: int = 8_192
    step_s: float = 0.004
    prefill_s_per_token: float = 0.000_08  # 12.5k prompt tokens/s
    decode_s_per_seq: float = 0.000_3
    decode_step_s: float = 0.012  # the fixed part of a step that decodes anything


@dataclass(eq=False)
class SimRequest:
    blocks: Sequence[int]  # chained block hashes of the prompt (full blocks only)
    prompt_tokens: int
    max_tokens: int
    on_token: Callable[[int, float], None] | None = None  # (tokens so far, simulated time)
    on_done: Callable[[float], None] | None = None
    cached_tokens: int = 0
    to_prefill: int = 0
    generated: int = 0
    private: int = 0  # KV blocks of its own (not yet cached prompt blocks, output)
    pinned: Sequence[int] = ()  # cached blocks it uses
    arrived: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None


def block_hashes(tokens: Sequence[str], block_size: int, seed: int = 0) -> list[int]:
    """vLLM's chaining: a block's hash covers its tokens and the hash of the block before it."""
    out: list[int] = []
    h = seed
    for i in range(0, len(tokens) - block_size + 1, block_size):
        h = hash((h, tuple(tokens[i : i + block_size])))
        out.append(h)
    return out


@dataclass
class EngineStats:
    queries: int = 0  # prompt tokens looked up in the prefix cache (vllm:prefix_cache_queries)
    hits: int = 0  # of which were cached (vllm:prefix_cache_hits)
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: int = 0


class Engine:
    def __init__(self, params: EngineParams | None = None) -> None:
        self.p = params or EngineParams()
        self.now = 0.0
        self.cache: OrderedDict[int, None] = OrderedDict()
        self.pins: dict[int, int] = {}  # cached block -> running requests using it
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.stats = EngineStats()
        self._private = 0  # blocks held by running requests outside the cache
        self._step: tuple[float, list[tuple[SimRequest, int]]] | None = None  # planned step

    # -- what /metrics exports ----------------------------------------------------------------
    @property
    def kv_usage(self) -> float:
        return min(1.0, (len(self.pins) + self._private) / self.p.capacity_blocks)

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    # -- the engine ---------------------------------------------------------------------------
    def submit(self, req: SimRequest, now: float) -> None:
        if not self.busy:
            self.now = max(self.now, now)
            self._step = None
        req.arrived = now
        self.waiting.append(req)

    def next_event(self) -> float | None:
        """When the step now planned ends (None: idle)."""
        if not self.busy:
            return None
        if self._step is None:
            self._admit()
            self._step = self._plan()
        return self._step[0]

    def run_until(self, t: float) -> None:
        """Run every step that ends by ``t``; a step that would end later stays planned."""
        while True:
            end = self.next_event()
            if end is None:
                self.now = max(self.now, t)
                return
            if end > t:
                return
            assert self._step is not None
            self._commit(*self._step)
            self._step = None

    def _admit(self) -> None:
        p = self.p
        bs = p.block_size
        while self.waiting and len(self.running) < p.max_num_seqs:
            req = self.waiting[0]
            hit = 0
            for h in req.blocks:
                if h not in self.cache:
                    break
                hit += 1
            cached = min(hit * bs, max(req.prompt_tokens - 1, 0))
            need = -(-(req.prompt_tokens - cached) // bs) + -(-req.max_tokens // bs)
            if self.running and len(self.pins) + self._private + need > p.capacity_blocks:
                return  # no KV room: it waits (vLLM would preempt; this model never does)
            self.waiting.popleft()
            req.pinned = req.blocks[:hit]
            self._pin(req.pinned)
            req.cached_tokens = cached
            req.to_prefill = req.prompt_tokens - cached
            req.private = need
            self._private += need
            self.stats.queries += req.prompt_tokens
            self.stats.hits += cached
            self.stats.prompt_tokens += req.prompt_tokens
            self.running.append(req)

    def _plan(self) -> tuple[float, list[tuple[SimRequest, int]]]:
        p = self.p
        budget = p.max_batched_tokens
        work: list[tuple[SimRequest, int]] = []
        decoding = 0
        prefilled = 0
        for req in self.running:
            if req.to_prefill > 0:
                if budget <= 0:
                    continue
                n = min(req.to_prefill, budget)
                budget -= n
                prefilled += n
                work.append((req, n))
            else:
                decoding += 1
                work.append((req, 0))
        dur = p.step_s + prefilled * p.prefill_s_per_token
        if decoding:
            dur += p.decode_step_s + decoding * p.decode_s_per_seq
        return self.now + dur, work

    def _commit(self, end: float, work: list[tuple[SimRequest, int]]) -> None:
        self.now = end
        done: list[SimRequest] = []
        for req, n in work:
            if n:
                req.to_prefill -= n
                if req.to_prefill:
                    continue
                self._cache_prompt(req)
            req.generated += 1  # the prefill's last step yields the first token, as in vLLM
            self.stats.generation_tokens += 1
            if req.first_token_at is None:
                req.first_token_at = end
            if req.on_token is not None:
                req.on_token(req.generated, end)
            if req.generated >= req.max_tokens:
                done.append(req)
        for req in done:
            self.running.remove(req)
            self._unpin(req.pinned)
            self._private -= req.private
            req.finished_at = end
            self.stats.finished += 1
            if req.on_done is not None:
                req.on_done(end)
        self._evict()

    def _cache_prompt(self, req: SimRequest) -> None:
        """The prompt's blocks, computed, join the cache (shared from now on)."""
        fresh = req.blocks[len(req.pinned) :]
        cache = self.cache
        for h in req.pinned:
            cache.move_to_end(h)
        for h in fresh:
            cache[h] = None
            cache.move_to_end(h)
        self._pin(fresh)
        req.pinned = req.blocks
        moved = min(len(fresh), req.private)
        req.private -= moved
        self._private -= moved
        self._evict()

    def _pin(self, blocks: Sequence[int]) -> None:
        pins = self.pins
        for h in blocks:
            pins[h] = pins.get(h, 0) + 1

    def _unpin(self, blocks: Sequence[int]) -> None:
        pins = self.pins
        for h in blocks:
            left = pins[h] - 1
            if left:
                pins[h] = left
            else:
                del pins[h]

    def _evict(self) -> None:
        room = max(self.p.capacity_blocks - self._private, 0)
        cache, pins = self.cache, self.pins
        spins = len(cache)  # each block looked at once at most: pinned ones go to the back
        while len(cache) > room and spins:
            spins -= 1
            h, _ = cache.popitem(last=False)
            if h in pins:
                cache[h] = None
