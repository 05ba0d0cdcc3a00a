#!/usr/bin/env python3
"""Closed-loop load generator for OpenAI-compatible endpoints; prints one JSON line.

C workers share one aiohttp session (keep-alive pool of C connections, uvloop) and
send N requests in total (after --warmup untimed ones). Reports req/s, latency
p50/p90/p99 (request sent -> response fully read) and, with --stream, TTFB (first body
byte) and TTFT (first SSE event carrying non-empty content), p50/p90/p99.

Why not wrk/hey/oha: none of them measures time to first *token* of an SSE stream,
which is the number a gateway must not hurt. The client's own CPU time is reported
(client_cpu_s) so a saturated client can be spotted; bench/wrk_post.lua gives a C-speed
cross-check of req/s for a gateway that outruns this client.

  python bench/load.py --url http://127.0.0.1:4000 -n 2000 -c 16 [--stream] \
      [--api-key sk-...] [--model fake-model] [--max-tokens 16] [--label litellm]
"""

import argparse
import asyncio
import json
import math
import resource
import sys
import time

import aiohttp


def pct(xs, p):
    """Nearest-rank percentile of a sorted list, in ms."""
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))
    return round(xs[k] * 1000, 3)


def body_for(a):
    if a.endpoint == "embeddings":
        return {"model": a.model, "input": a.prompt}
    b = {"model": a.model, "max_tokens": a.max_tokens}
    if a.endpoint == "chat":
        b["messages"] = [{"role": "user", "content": a.prompt}]
    else:
        b["prompt"] = a.prompt
    if a.stream:
        b["stream"] = True
        b["stream_options"] = {"include_usage": True}
    return b


def has_token(line):
    """True if this SSE line carries non-empty generated text (chat or completions)."""
    if not line.startswith(b"data:") or line.startswith(b"data: [DONE]"):
        return False
    try:
        for ch in json.loads(line[5:]).get("choices") or ():
            if (ch.get("delta") or {}).get("content") or ch.get("text"):
                return True
    except ValueError:
        pass
    return False


async def one(sess, url, payload, stream, rec):
    t0 = time.perf_counter()
    ttfb = ttft = None
    events = 0
    async with sess.post(url, data=payload) as r:
        if r.status != 200:
            await r.read()
            rec["errors"][str(r.status)] = rec["errors"].get(str(r.status), 0) + 1
            return
        if stream:
            done = False
            async for line in r.content:  # aiohttp splits on b"\n"
                if ttfb is None:
                    ttfb = time.perf_counter() - t0
                if line.startswith(b"data:"):
                    events += 1
                    if ttft is None and has_token(line):
                        ttft = time.perf_counter() - t0
                    done = done or line.startswith(b"data: [DONE]")
            if not done or ttft is None:
                rec["errors"]["bad_stream"] = rec["errors"].get("bad_stream", 0) + 1
                return
        else:
            data = await r.read()
            ttfb = time.perf_counter() - t0
            if b'"choices"' not in data and b'"data"' not in data:
                rec["errors"]["bad_body"] = rec["errors"].get("bad_body", 0) + 1
                return
    rec["lat"].append(time.perf_counter() - t0)
    rec["ttfb"].append(ttfb)
    if ttft is not None:
        rec["ttft"].append(ttft)
    rec["events"] += events


async def run(a):
    path = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings"}[
        a.endpoint
    ]
    url = a.url.rstrip("/") + path
    payload = json.dumps(body_for(a)).encode()
    headers = {"Content-Type": "application/json"}
    if a.api_key:
        headers["Authorization"] = f"Bearer {a.api_key}"
    conn = aiohttp.TCPConnector(limit=a.concurrency, ttl_dns_cache=3600)
    timeout = aiohttp.ClientTimeout(total=a.timeout)
    async with aiohttp.ClientSession(
        connector=conn, headers=headers, timeout=timeout, auto_decompress=False
    ) as sess:

        async def phase(n):
            rec = {"lat": [], "ttfb": [], "ttft": [], "events": 0, "errors": {}}
            left = [n]

            async def worker():
                while left[0] > 0:
                    left[0] -= 1
                    try:
                        await one(sess, url, payload, a.stream, rec)
                    except (TimeoutError, aiohttp.ClientError) as e:
                        k = type(e).__name__
                        rec["errors"][k] = rec["errors"].get(k, 0) + 1

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(a.concurrency)))
            return rec, time.perf_counter() - t0

        tw = time.perf_counter()
        if a.warmup:
            await phase(a.warmup)
        warmup_s = time.perf_counter() - tw
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        rec, wall = await phase(a.requests)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    lat, ttfb, ttft = sorted(rec["lat"]), sorted(rec["ttfb"]), sorted(rec["ttft"])
    out = {
        "label": a.label,
        "endpoint": a.endpoint,
        "stream": a.stream,
        "c": a.concurrency,
        "n": a.requests,
        "ok": len(lat),
        "errors": rec["errors"],
        "wall_s": round(wall, 3),
        "warmup_s": round(warmup_s, 3),
        "rps": round(len(lat) / wall, 1),
        "lat_p50_ms": pct(lat, 50),
        "lat_p90_ms": pct(lat, 90),
        "lat_p99_ms": pct(lat, 99),
        "lat_mean_ms": round(sum(lat) / len(lat) * 1000, 3) if lat else None,
        "client_cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
    }
    if a.stream:
        out.update(
            {
                "ttfb_p50_ms": pct(ttfb, 50),
                "ttfb_p99_ms": pct(ttfb, 99),
                "ttft_p50_ms": pct(ttft, 50),
                "ttft_p90_ms": pct(ttft, 90),
                "ttft_p99_ms": pct(ttft, 99),
                "sse_events_per_req": round(rec["events"] / max(1, len(lat)), 1),
            }
        )
    out.update(a.tag)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="base URL, without /v1")
    ap.add_argument("-n", "--requests", type=int, default=1000)
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=None, help="untimed requests first (default 2*c, >=20)")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--endpoint", choices=["chat", "completions", "embeddings"], default="chat")
    ap.add_argument("--model", default="fake-model")
    ap.add_argument("--max-tokens", type=int, default=16, help="= SSE content chunks from fake_upstream")
    ap.add_argument("--prompt", default="Say something about benchmarks, please. " * 4)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--label", default="")
    ap.add_argument("--tag", action="append", default=[], help="extra key=value copied into the output")
    a = ap.parse_args()
    if a.warmup is None:
        a.warmup = max(20, 2 * a.concurrency)
    a.tag = dict(t.split("=", 1) for t in a.tag)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(run(a))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
