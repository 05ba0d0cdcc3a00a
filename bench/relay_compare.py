#!/usr/bin/env python3
"""Which server, HTTP client and JSON parser for the hot path? A minimal relay, measured.

One tiny pure-ASGI relay (read the body, parse it, forward it to the fake upstream, relay the
answer: whole body, or SSE chunks as they arrive) built in several variants that differ in one
choice each from the first:

  aiohttp-orjson   uvicorn + uvloop + httptools, aiohttp client, orjson   (nometer's stack)
  aiohttp-json     ... stdlib json for the body parse
  httpx-orjson     ... httpx client (one AsyncClient, keep-alive pool)
  aiohttp-h11      ... uvicorn's pure-Python h11 HTTP parser instead of httptools
  aiohttp-asyncio  ... the stdlib asyncio event loop instead of uvloop

Each variant runs as its own server, pinned to one core, and bench/run_compare.py drives them all
interleaved against the same fake upstream (gateway CPU ms per request is the figure to compare).

  python bench/relay_compare.py --reps 3 -n 3000 --concurrency 1 16    # all variants, one table
  python bench/relay_compare.py serve --variant httpx-orjson --port 19021   # one server, by hand

Extra flags after the known ones are passed to run_compare.py (e.g. --quiet-wait 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# name -> (client, json, loop, http)
VARIANTS = {
    "aiohttp-orjson": ("aiohttp", "orjson", "uvloop", "httptools"),
    "aiohttp-json": ("aiohttp", "json", "uvloop", "httptools"),
    "httpx-orjson": ("httpx", "orjson", "uvloop", "httptools"),
    "aiohttp-h11": ("aiohttp", "orjson", "uvloop", "h11"),
    "aiohttp-asyncio": ("aiohttp", "orjson", "asyncio", "httptools"),
}
BASE_PORT = 19020
_DROP = frozenset({b"host", b"content-length", b"connection", b"accept-encoding"})


class AiohttpClient:
    def __init__(self, base):
        import aiohttp

        self.base = base
        self.s = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=600),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def open(self, path, body, headers):
        r = await self.s.post(self.base + path, data=body, headers=headers)
        return r.status, r.headers.get("content-type", ""), r

    async def read(self, r):
        try:
            return await r.read()
        finally:
            r.release()

    async def chunks(self, r):
        try:
            async for data in r.content.iter_any():
                yield data
        finally:
            r.release()

    async def close(self):
        await self.s.close()


class HttpxClient:
    def __init__(self, base):
        import httpx

        self.base = base
        self.c = httpx.AsyncClient(
            timeout=httpx.Timeout(600, connect=5),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )

    async def open(self, path, body, headers):
        r = await self.c.send(
            self.c.build_request("POST", self.base + path, content=body, headers=headers), stream=True
        )
        return r.status_code, r.headers.get("content-type", ""), r

    async def read(self, r):
        try:
            return await r.aread()
        finally:
            await r.aclose()

    async def chunks(self, r):
        try:
            async for data in r.aiter_raw():
                yield data
        finally:
            await r.aclose()

    async def close(self):
        await self.c.aclose()


def make_app(client_name, json_name, upstream_root):
    if json_name == "orjson":
        import orjson

        loads = orjson.loads
    else:
        loads = json.loads
    models = json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}).encode()
    state = {}

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    state["client"] = (AiohttpClient if client_name == "aiohttp" else HttpxClient)(
                        upstream_root
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await state["client"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["method"] == "GET":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": models})
            return
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        payload = loads(body)  # what a gateway must do once: model, stream flag
        stream = payload.get("stream") is True
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _DROP]
        client = state["client"]
        status, ctype, r = await client.open(scope["path"], body, headers)
        out_headers = [(b"content-type", ctype.encode("latin-1"))]
        if stream and ctype.startswith("text/event-stream"):
            await send({"type": "http.response.start", "status": status, "headers": out_headers})
            async for data in client.chunks(r):
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            data = await client.read(r)
            out_headers.append((b"content-length", str(len(data)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": out_headers})
            await send({"type": "http.response.body", "body": data})

    return app


def serve(variant, port, upstream_base):
    import uvicorn

    client, js, loop, http = VARIANTS[variant]
    root = upstream_base.rstrip("/")
    root = root.removesuffix("/v1")
    uvicorn.run(
        make_app(client, js, root),
        host="127.0.0.1",
        port=port,
        loop=loop,
        http=http,
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


def main():
    if sys.argv[1:2] == ["serve"]:
        ap = argparse.ArgumentParser(prog="relay_compare.py serve", description="run one relay variant")
        ap.add_argument("--variant", choices=list(VARIANTS), required=True)
        ap.add_argument("--port", type=int, required=True)
        ap.add_argument(
            "--upstream", default=os.environ.get("FAKE_UPSTREAM_BASE", "http://127.0.0.1:19001/v1")
        )
        a = ap.parse_args(sys.argv[2:])
        serve(a.variant, a.port, a.upstream)
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    a, rest = ap.parse_known_args()  # the rest goes to run_compare.py
    cmd = [sys.executable, os.path.join(HERE, "run_compare.py")]
    for i, v in enumerate(a.variants):
        port = BASE_PORT + i
        cmd += [
            "--target",
            f"{v}=http://127.0.0.1:{port}",
            "--start",
            (
                f'{v}=exec "$BENCH_PY" {shlex.quote(os.path.join(HERE, "relay_compare.py"))} '
                f"serve --variant {v} --port {port}"
            ),
        ]
    cmd += rest
    print("# " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
