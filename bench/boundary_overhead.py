"""What the hot path's error boundary (gateway/http/boundary.py) costs per request and per
streamed chunk: a trivial ASGI app driven in-process, bare and inside ``ErrorBoundary``, the
difference in CPU time per call. No sockets: only the wrapper's own work is measured.

    PYTHONPATH=. .venv/bin/python bench/boundary_overhead.py [--requests 200000] [--chunks 64]

Prints one JSON line: ns per request (no chunks) and ns per extra chunk, bare and wrapped, medians
of 5 interleaved repetitions (run it on a quiet machine; pin it with taskset for stable figures).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from gateway.http.boundary import ErrorBoundary, hold
from gateway.ledger.events import RequestRecord

SCOPE: Scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream")],
}
CHUNK: Message = {"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True}
END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


def make_app(chunks: int, record: Any) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(START)
        for _ in range(chunks):
            await send(CHUNK)
        await send(END)
        record(RequestRecord("r", "/v1/chat/completions", "m", 0.0, 0.0))

    return app


async def run(app: Any, n: int) -> float:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(msg: Message) -> None:
        pass

    t = time.process_time_ns()
    for _ in range(n):
        await app(SCOPE, receive, send)
    return (time.process_time_ns() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--chunks", type=int, default=64)
    args = ap.parse_args()
    sink: list[RequestRecord] = []

    def record(rec: RequestRecord) -> None:
        sink.clear()

    out: dict[str, list[float]] = {k: [] for k in ("bare_0", "wrapped_0", "bare_n", "wrapped_n")}
    for _ in range(5):
        for chunks, tag in ((0, "0"), (args.chunks, "n")):
            bare = make_app(chunks, record)
            wrapped = ErrorBoundary(make_app(chunks, hold(record)), record, lambda h: None)
            out[f"bare_{tag}"].append(asyncio.run(run(bare, args.requests // (1 + chunks // 8))))
            out[f"wrapped_{tag}"].append(asyncio.run(run(wrapped, args.requests // (1 + chunks // 8))))
    med = {k: statistics.median(v) for k, v in out.items()}
    per_request = med["wrapped_0"] - med["bare_0"]
    per_chunk = ((med["wrapped_n"] - med["bare_n"]) - per_request) / args.chunks
    print(
        orjson.dumps(
            {
                "bare_ns_per_request": round(med["bare_0"]),
                "boundary_ns_per_request": round(per_request),
                "boundary_ns_per_chunk": round(per_chunk),
                "chunks": args.chunks,
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
