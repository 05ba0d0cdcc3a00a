"""How long ``nometer verify`` and the report's proof block take on a month of ledger.

    PYTHONPATH=. .venv/bin/python bench/ledger_proof.py [--requests 50000] [--dir /tmp/proof-bench]

Builds a SQLite ledger of N metered chat requests spread over 30 days (one usage_events row and
three shadow_costs rows each, amounts from a real receipt on the shipped price table), sealed as the
recorder seals them, then times: sealing; the full audit (chain walk + every receipt recomputed +
price files); the report's queries with and without the integrity block. Prints CPU and wall
seconds and rates. The ledger is left in --dir for inspection.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

from gateway.ledger.chain import Sealer
from gateway.ledger.events import CHAIN_COLUMNS, EVENT_COLUMNS, SHADOW_COLUMNS
from gateway.ledger.integrity import queries as proof_queries
from gateway.ledger.reader import open_reader
from gateway.ledger.report import ReportQuery, queries
from gateway.ledger.sqlite import migrate_sqlite
from gateway.meter.audit import Auditor
from gateway.meter.rows import LedgerBatch
from gateway.meter.shadow import box_json, pico
from pricing.cost import CloudUsage
from pricing.local import BoxCost
from pricing.receipt import ReceiptInputs, ReferenceTokens, compute_receipt
from pricing.store import PriceStore
from pricing.tables import shipped_table

REFS = ("gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-pro")


def template(prices: PriceStore) -> tuple[dict[str, object], list[tuple[object, ...]]]:
    table = shipped_table()
    prices.pin(table)
    box = BoxCost(Decimal(35), Decimal(170), Decimal("0.17"), Decimal(3999), Decimal(3))
    usage = CloudUsage(1234, 456, cached_tokens=512)
    refs = tuple(ReferenceTokens(m, "o200k_base", m != "gpt-4.1", usage) for m in REFS)
    receipt = compute_receipt(ReceiptInputs(refs, table, "conservative", Decimal("0.812345"), box, None))
    event: dict[str, object] = dict.fromkeys(EVENT_COLUMNS)
    event.update(
        request_id="r",
        ts=0.0,
        day="",
        endpoint="/v1/chat/completions",
        requested_model="qwen3",
        served_model="qwen3",
        backend="box-0",
        route="local",
        outcome="ok",
        status=200,
        stream=1,
        prompt_tokens=1234,
        completion_tokens=456,
        total_tokens=1690,
        cached_tokens=512,
        usage_source="upstream",
        latency_ms=812.345,
        ttft_ms=95.1,
        team="research",
        tag="agent-run",
        uid="u",
        price_table_id=table.id,
        cache_mode="conservative",
        busy_s=0.812345,
        box=box_json(box),
        local_energy_pusd=pico(receipt["local"]["energy_usd"]),
        local_hardware_pusd=pico(receipt["local"]["hardware_share_usd"]),
    )
    shadows = [
        ("u", i, m, ref["price_key"], "o200k_base", int(m != "gpt-4.1"), 1234, 512, 0, 456, 0, *money)
        for i, (m, ref) in enumerate(zip(REFS, receipt["references"], strict=True))
        for money in [(pico(ref["cloud_usd"]), pico(ref["savings_usd"]))]
    ]
    return event, shadows


def build(db: Path, n: int) -> float:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    migrate_sqlite(conn)
    event, shadows = template(PriceStore(db.parent / "prices"))
    sealer = Sealer()
    start = time.time() - 30 * 86400
    seal_cpu = 0.0
    for first in range(0, n, 500):
        batch = LedgerBatch()
        for k in range(first, min(n, first + 500)):
            ts = start + k * (30 * 86400 / n)
            e = dict(
                event,
                request_id=f"r-{k}",
                uid=f"u-{k}",
                ts=ts,
                day=time.strftime("%Y-%m-%d", time.gmtime(ts)),
            )
            batch.events.append(tuple(e[c] for c in EVENT_COLUMNS))
            batch.shadows.extend((f"u-{k}", *s[1:]) for s in shadows)
        t = time.process_time()
        sealer.seal(batch)
        seal_cpu += time.process_time() - t
        conn.execute("BEGIN")
        for table, cols, rows in (
            ("usage_events", EVENT_COLUMNS, batch.events),
            ("shadow_costs", SHADOW_COLUMNS, batch.shadows),
        ):
            names = (*cols, *CHAIN_COLUMNS)
            conn.executemany(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", rows
            )
        conn.execute("COMMIT")
    conn.close()
    return seal_cpu


def timed(label: str, rows: int, fn: object) -> None:
    w, c = time.perf_counter(), time.process_time()
    fn()  # type: ignore[operator]
    w, c = time.perf_counter() - w, time.process_time() - c
    print(f"{label}: {w:.2f} s wall, {c:.2f} s CPU ({rows / c:,.0f} rows per CPU second)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--dir", default="/tmp/nometer-proof-bench")
    args = p.parse_args()
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    db = d / "ledger.db"
    db.unlink(missing_ok=True)
    rows = args.requests * 4
    seal = build(db, args.requests)
    print(f"{args.requests:,} requests, {rows:,} rows; sealing: {seal / rows * 1e6:.2f} us CPU per row")
    reader = open_reader(str(db))
    result = {}

    def audit() -> None:
        result["a"] = Auditor(reader, d / "prices").run()

    timed("verify (all rows, every receipt)", rows, audit)
    a = result["a"]
    assert a.clean and a.receipts == args.requests, a.summary()
    q = ReportQuery(since=time.time() - 30 * 86400, by="day")
    timed("report queries (by day)", rows, lambda: [reader.fetch(s, p) for s, p in queries(q).values()])
    timed("report proof block", rows, lambda: [reader.fetch(s, p) for s, p in proof_queries(q).values()])
    reader.close()


if __name__ == "__main__":
    main()
