"""CPU cost of sealing ledger rows into the hash chain (gateway/ledger/chain.py), per row.

    PYTHONPATH=. .venv/bin/python bench/chain_seal.py

Builds realistic batches (one usage_events row and three shadow_costs rows per request, as the
meter makes them with three reference models), seals them with ``Sealer.seal`` and prints the
process CPU time per row and per request (best of 5 runs of 20,000 requests).
"""

from __future__ import annotations

import time

from gateway.ledger.chain import Sealer
from gateway.ledger.events import EVENT_COLUMNS, SHADOW_COLUMNS
from gateway.meter.rows import LedgerBatch

EVENT = dict(
    zip(
        EVENT_COLUMNS,
        (
            "0123456789abcdef0123456789abcdef",
            1767000000.123456,
            "2026-11-03",
            "/v1/chat/completions",
            "gpt-4o",
            "qwen3-32b",
            "backend-0",
            "local",
            None,
            None,
            "ok",
            200,
            1,
            1234,
            456,
            1690,
            512,
            None,
            "upstream",
            812.345,
            95.123,
            "k_abcdef",
            "research",
            "agent-run-1842",
            None,
            "uid",
            "2026-11-01-0123456789ab",
            "conservative",
            0.812345,
            None,
            '{"idle_watts":"35","busy_watts":"170","usd_per_kwh":"0.17","hardware_usd":"3999","lifetime_years":"3"}',
            6522222,
            34333333,
            None,
        ),
        strict=True,
    )
)
REFS = ("gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-pro")
SHADOW = (0, "m", "m", "o200k_base", 0, 1234, 512, 0, 456, 0, 3021000000, 2980000000)


def batches(requests: int, size: int = 100) -> list[LedgerBatch]:
    out = []
    for b in range(requests // size):
        lb = LedgerBatch()
        for i in range(size):
            uid = f"{b:08x}{i:024x}"
            lb.events.append(tuple(uid if c == "uid" else v for c, v in EVENT.items()))
            lb.shadows.extend((uid, k, m, m, *SHADOW[3:]) for k, m in enumerate(REFS))
        out.append(lb)
    return out


def main() -> None:
    assert len(SHADOW) + 1 == len(SHADOW_COLUMNS)
    n = 20_000
    best = float("inf")
    for _ in range(5):
        work = batches(n)
        sealer = Sealer()
        t = time.process_time()
        for lb in work:
            sealer.seal(lb)
        best = min(best, time.process_time() - t)
    rows = n * (1 + len(REFS))
    print(
        f"{best / rows * 1e6:.2f} us CPU per row; {best / n * 1e6:.2f} us per request (1 event + 3 cost rows)"
    )


if __name__ == "__main__":
    main()
