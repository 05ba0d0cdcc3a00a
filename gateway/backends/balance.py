"""The choice among a model's usable backends, one function per policy; pure, no I/O.

``prefix`` (see docs/config.md, "Routing"): send a request where its prompt's start was served
last, unless that backend is over its bounded load or its vLLM queue is far longer than the
shortest. A prefix no backend is known to hold goes to the least loaded backend (there is no cache
to win). A known prefix whose backend is full spills along a consistent-hash ring from the
prompt's first key to the first backend under the bound, so a hot prefix spreads to the same few
backends (whose caches then hold it too) rather than everywhere; when none is under it, least
queue.

Bounded load (consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam 2018): a
backend takes a request while its in-flight requests, plus this one, stay within
``load_factor`` times the mean over the candidates (rounded up), so no backend ever carries more
than that share, however hot one prefix is. Queue imbalance: a backend whose
``vllm:num_requests_waiting`` is longer than ``queue_ratio`` times the shortest queue plus
``queue_gap`` is skipped too: vLLM's own queue shows load that other clients, or long prompts, put
there. (An absolute gap alone misfires at saturation, when every queue is long: measured in
bench/route_compare.py.)
"""

from __future__ import annotations

import zlib
from bisect import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gateway.backends.backend import Backend
from gateway.backends.prefix import PrefixTable


@dataclass(frozen=True, slots=True)
class PrefixTuning:
    load_factor: float = 2.0
    queue_ratio: float = 8.0
    queue_gap: float = 128.0
    depth: int = 4  # messages after the system part that the key chain covers


class Ring:
    """A consistent-hash ring: ``vnodes`` points per backend, placed by its name."""

    def __init__(self, backends: Sequence[Backend], vnodes: int = 64):
        points = sorted((zlib.crc32(f"{b.name}#{i}".encode()), i, b) for b in backends for i in range(vnodes))
        self._hashes = [p[0] for p in points]
        self._owners = [p[2] for p in points]
        self.size = len({id(b) for b in backends})

    def walk(self, key: int) -> Iterator[Backend]:
        """Each backend once, in ring order from ``key``'s position."""
        owners = self._owners
        n = len(owners)
        if not n:
            return
        start = bisect(self._hashes, (key * 0x9E3779B1) & 0xFFFFFFFF)  # mixed: any key spreads
        seen: set[int] = set()
        for i in range(n):
            b = owners[(start + i) % n]
            if id(b) not in seen:
                seen.add(id(b))
                yield b
                if len(seen) == self.size:
                    return


def least_loaded(cands: Sequence[Backend], start: int) -> Backend:
    """Fewest in-flight requests from this gateway; ties rotate from ``start``."""
    n = len(cands)
    best = cands[start % n]
    for i in range(1, n):
        b = cands[(start + i) % n]
        if b.outstanding < best.outstanding:
            best = b
    return best


def least_queue(cands: Sequence[Backend], start: int) -> Backend:
    """Shortest vLLM queue (``Backend.queue``), then fewest in flight; ties rotate."""
    n = len(cands)
    best = cands[start % n]
    for i in range(1, n):
        b = cands[(start + i) % n]
        if (b.queue, b.outstanding) < (best.queue, best.outstanding):
            best = b
    return best


def prefix_choice(
    cands: Sequence[Backend],
    keys: Sequence[int],
    table: PrefixTable,
    ring: Ring,
    tuning: PrefixTuning,
    start: int,
) -> Backend:
    """The prefix policy (module docstring). ``keys`` shallowest first, a session key last.
    Remembers the choice under the request's keys (on a spill, only under the new ones)."""
    n = len(cands)
    if n == 1 or not keys:
        only = cands[0] if n == 1 else least_loaded(cands, start)
        if keys:
            table.remember(keys, only)
        return only
    total = 0
    shortest = cands[0].queue
    for b in cands:
        total += b.outstanding
        q = b.queue
        if q < shortest:
            shortest = q
    cap = -(-tuning.load_factor * (total + 1) // n)  # ceil: one request always fits somewhere
    max_queue = shortest * tuning.queue_ratio + tuning.queue_gap
    chosen: Backend | None = None
    known = -1  # index of the deepest key the table knows
    for i in range(len(keys) - 1, -1, -1):  # deepest (most specific) first
        held = table.get(keys[i])
        if held is not None:
            known = i
            if held.outstanding + 1 <= cap and held.queue <= max_queue and held in cands:
                chosen = held
            break  # the deepest known key decides; shallower ones are older news
    if chosen is not None:
        # shallower keys that point elsewhere keep their backend: the tenant's home stays put
        # while one of its conversations lives on another backend
        if known:
            table.fill(keys[:known], chosen)
        table.remember(keys[known:] if known else keys, chosen)
        return chosen
    if known < 0:  # a prefix no backend holds: no cache to win, so the least loaded takes it
        chosen = least_loaded(cands, start)
        table.remember(keys, chosen)
        return chosen
    for b in ring.walk(keys[0]):
        if b.outstanding + 1 <= cap and b.queue <= max_queue and b in cands:
            chosen = b
            break
    if chosen is None:
        chosen = least_queue(cands, start)
    # A spill: the keys already known keep their backend (the tenant's home takes its requests
    # back when it has room); only the deeper, new ones (this conversation) follow the spill.
    table.remember(keys[known + 1 :], chosen)
    return chosen
