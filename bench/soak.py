"""Soak and chaos: steady load on a gateway (its own process) with a PostgreSQL ledger and Redis
rate limits, and outages of both in the middle, injected by fault proxies (tests/support/
chaos_proxy.py) between the gateway and the shared servers, which are never touched.

    PYTHONPATH=. .venv/bin/python bench/soak.py --minutes 10 --rps 40 [--out bench/results/soak.md]

Timeline (fractions of the run): Redis down 30-40 %, Redis frozen 45-50 %, PostgreSQL down
55-65 %, PostgreSQL frozen 70-75 %, steady otherwise. The load is open-loop (a request every
1/rps seconds, whatever the answers do), 80 % plain and 20 % streamed chat completions against a
fake upstream, each with its own x-request-id. Reported: answers by phase and status (and client
errors), latency, the gateway's RSS every 10 s (trend in MB per minute), and lost rows: requests
the gateway answered for which the PostgreSQL ledger has no row after a graceful stop (the
recorder drains on stop). A private database and Redis key prefix are created and removed.
Measurement tooling, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import asyncpg
import redis

from tests.support.chaos_proxy import ChaosProxy
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_process import GatewayProcess

ADMIN_DSN = "postgresql://127.0.0.1:5432/test"
PHASES = [  # (start fraction, name, proxy, mode)
    (0.00, "steady", None, "pass"),
    (0.30, "redis down", "redis", "down"),
    (0.40, "steady", "redis", "pass"),
    (0.45, "redis frozen", "redis", "freeze"),
    (0.50, "steady", "redis", "pass"),
    (0.55, "postgres down", "pg", "down"),
    (0.65, "steady", "pg", "pass"),
    (0.70, "postgres frozen", "pg", "freeze"),
    (0.75, "steady (after)", "pg", "pass"),
]


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Load:
    def __init__(self, url: str):
        self.url = url
        self.phase = "steady"
        self.results: dict[str, Counter[str]] = defaultdict(Counter)
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.answered: set[str] = set()
        self.sent = 0

    async def one(self, session: aiohttp.ClientSession, n: int) -> None:
        rid = f"soak-{n}"
        phase = self.phase
        stream = n % 5 == 0
        body = {
            "model": "fake-model",
            "messages": [{"role": "user", "content": f"request {n}"}],
            "stream": stream,
        }
        t0 = time.perf_counter()
        try:
            async with session.post(self.url, json=body, headers={"x-request-id": rid}) as r:
                await r.read()
                self.answered.add(rid)
                kind = str(r.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            kind = type(exc).__name__
        self.results[phase][kind] += 1
        self.latency[phase].append(time.perf_counter() - t0)

    async def run(self, seconds: float, rps: float) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as s:
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            while (now := time.monotonic() - start) < seconds:
                task = asyncio.create_task(self.one(s, self.sent))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                self.sent += 1
                await asyncio.sleep(max(0.0, self.sent / rps - now))
            await asyncio.gather(*tasks)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else 0.0


async def soak(minutes: float, rps: float) -> dict[str, Any]:
    seconds = minutes * 60
    db = f"nometer_soak_{uuid.uuid4().hex[:10]}"
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    await admin(f'CREATE DATABASE "{db}"')
    tmp = Path(tempfile.mkdtemp(prefix="nometer-soak-"))
    rss: list[tuple[float, float]] = []
    try:
        with FakeUpstream() as fake, ChaosProxy(5432) as pg, ChaosProxy(6379) as rd:
            config = {
                "backends": [{"url": fake.base_url}],
                "ledger": {"url": f"postgresql://127.0.0.1:{pg.port}/{db}", "path": str(tmp / "ledger.db")},
                "limits": {"redis_url": f"redis://127.0.0.1:{rd.port}/0", "redis_prefix": prefix},
                "policy": {"limits": {"team": {"rpm": 10**7}}},  # every request counts in Redis
            }
            with GatewayProcess(tmp, config) as gw:
                load = Load(gw.base_url + "/chat/completions")
                proxies = {"pg": pg, "redis": rd}
                t0 = time.monotonic()

                async def conductor() -> None:
                    for at, name, proxy, mode in PHASES:
                        await asyncio.sleep(max(0.0, at * seconds - (time.monotonic() - t0)))
                        if proxy is not None:
                            proxies[proxy].set_mode(mode)  # type: ignore[arg-type]
                        load.phase = name
                        print(f"{time.monotonic() - t0:6.0f}s  {name}", flush=True)

                async def sampler() -> None:
                    while time.monotonic() - t0 < seconds:
                        rss.append((time.monotonic() - t0, gw.rss_mb()))
                        await asyncio.sleep(10)

                await asyncio.gather(load.run(seconds, rps), conductor(), sampler())
                pg.set_mode("pass")
                rd.set_mode("pass")
                await asyncio.sleep(15)  # let the recorder catch up with the ledger
                rss.append((time.monotonic() - t0, gw.rss_mb()))
                dropped = gw.metric("nometer_ledger_dropped_events")
                gw.stop()  # graceful: drains the recorder
                log = gw.log_path.read_text(errors="replace")
        conn = await asyncpg.connect(f"postgresql://127.0.0.1:5432/{db}")
        try:
            rows = {r["request_id"] for r in await conn.fetch("SELECT request_id FROM usage_events")}
        finally:
            await conn.close()
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        r = redis.Redis()
        for key in r.scan_iter(f"{prefix}*"):
            r.delete(key)
    lost = sorted(load.answered - rows)
    return {
        "minutes": minutes,
        "rps": rps,
        "sent": load.sent,
        "answered": len(load.answered),
        "ledger_rows": len(rows),
        "lost_rows": len(lost),
        "lost_sample": lost[:5],
        "dropped_metric": dropped,
        "write_gave_up_lines": log.count("LEDGER WRITE GAVE UP"),
        # the gateway's own account of anything that went wrong (a 5xx is a bug to find)
        "log_errors": [line[:2000] for line in log.splitlines() if '"level":"error"' in line][:10],
        "phases": {p: dict(c) for p, c in load.results.items()},
        "latency_ms": {p: {"p50": pct(v, 0.5), "p99": pct(v, 0.99)} for p, v in load.latency.items()},
        "rss_mb": rss,
    }


def trend(rss: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over the run, MB per minute."""
    n = len(rss)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in rss) / n
    mr = sum(r for _, r in rss) / n
    var = sum((t - mt) ** 2 for t, _ in rss)
    return 60 * sum((t - mt) * (r - mr) for t, r in rss) / var if var else 0.0


def markdown(res: dict[str, Any]) -> str:
    out = [
        f"Soak: {res['minutes']:g} min at {res['rps']:g} req/s; {res['sent']} sent, {res['answered']} answered; "
        f"ledger rows {res['ledger_rows']}, **lost rows {res['lost_rows']}** "
        f"(dropped metric {res['dropped_metric']:g}, 'LEDGER WRITE GAVE UP' {res['write_gave_up_lines']}x)",
        "",
        "| phase | answers (status: count; client errors) | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for phase, counts in res["phases"].items():
        lat = res["latency_ms"][phase]
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        out.append(f"| {phase} | {answers} | {lat['p50']:.1f} | {lat['p99']:.1f} |")
    rss = [r for _, r in res["rss_mb"]]
    out += [
        "",
        f"Gateway RSS: {rss[0]:.0f} MB at start, {min(rss):.0f}-{max(rss):.0f} MB, {rss[-1]:.0f} MB at the end; "
        f"trend {trend(res['rss_mb']):+.2f} MB/min over {len(rss)} samples.",
    ]
    if res.get("log_errors"):
        out += [
            "",
            "Gateway log errors (first 10):",
            "",
            *(f"    {line[:600]}" for line in res["log_errors"]),
        ]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rps", type=float, default=40)
    ap.add_argument("--out", help="also write the markdown summary (and a .json beside it) here")
    a = ap.parse_args()
    res = asyncio.run(soak(a.minutes, a.rps))
    text = markdown(res)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
        Path(a.out).with_suffix(".json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
