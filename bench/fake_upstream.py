#!/usr/bin/env python3
"""Fast fake OpenAI-compatible upstream (stands in for vLLM) for gateway benchmarks.

Stack: raw asyncio Protocol + httptools (the C HTTP parser uvicorn uses) on uvloop,
responses built from pre-encoded byte templates. No framework, no routing layer, no
per-request JSON encoding of streamed chunks: a request costs tens of microseconds, so
the upstream stays negligible next to the gateway under test (aiohttp/uvicorn+FastAPI
would cost several times more CPU per request and per SSE chunk).

Endpoints (OpenAI shapes): GET /v1/models, GET /health, POST /v1/chat/completions,
POST /v1/completions (both with "stream": true -> SSE, plus the final usage chunk when
stream_options.include_usage is true), POST /v1/embeddings (float or base64).

Generated length: `max_tokens` / `max_completion_tokens` from the request if given,
else --tokens. One token per SSE chunk. Latency emulation: --ttft-ms before the first
token (streaming: headers go out at once, like vLLM), --tpot-ms between tokens;
non-streaming responses wait ttft + (n-1)*tpot.

  python bench/fake_upstream.py --port 9001 [--ttft-ms 0 --tpot-ms 0 --tokens 16]
"""

import argparse
import asyncio
import base64
import json
import os
import struct
import time

import httptools

try:
    import orjson

    dumps = orjson.dumps
    loads = orjson.loads
except ImportError:  # pragma: no cover - stdlib fallback

    def dumps(o):
        return json.dumps(o, separators=(",", ":")).encode()

    loads = json.loads

ARGS = None
WORDS = [" lorem", " ipsum", " dolor", " sit", " amet", " consectetur", " adipiscing", " elit"]
WORDS_J = [dumps(w) for w in WORDS]  # pre-encoded JSON strings
EMB_CACHE = {}  # dim -> (float list, base64 string)
_seq = 0


def next_id(prefix):
    global _seq
    _seq += 1
    return f"{prefix}-{os.getpid():x}{_seq:012x}"


def n_prompt_tokens(body):
    """Cheap token estimate (~4 chars/token) so usage numbers look plausible."""
    if "messages" in body:
        chars = sum(
            len(m.get("content") or "") if isinstance(m.get("content"), str) else 16 for m in body["messages"]
        )
    else:
        p = body.get("prompt", "")
        chars = len(p) if isinstance(p, str) else 4 * len(p)
    return max(1, chars // 4)


def http_head(status, ctype, length=None, keep=True):
    h = [f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"]
    h.append(f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n")
    if length is None:
        h.append("Cache-Control: no-cache\r\n")
    if not keep:
        h.append("Connection: close\r\n")
    return ("".join(h) + "\r\n").encode()


def json_response(obj, status="200 OK", keep=True):
    b = dumps(obj)
    return http_head(status, "application/json", len(b), keep) + b


def error(status, msg, keep=True):
    return json_response(
        {"error": {"message": msg, "type": "invalid_request_error", "param": None, "code": None}},
        status,
        keep,
    )


def chunked(b):
    return b"%x\r\n%s\r\n" % (len(b), b)


def text_of(n):
    return "".join(WORDS[i % len(WORDS)] for i in range(n))


def usage(p, n):
    return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}


def embeddings(body):
    inp = body.get("input", "")
    items = [inp] if isinstance(inp, str) or (inp and isinstance(inp[0], int)) else list(inp)
    dim = int(body.get("dimensions") or ARGS.embed_dim)
    if dim not in EMB_CACHE:
        vec = [round(((i * 7919) % 1000) / 1000 - 0.5, 6) for i in range(dim)]
        EMB_CACHE[dim] = (vec, base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode())
    vec, b64 = EMB_CACHE[dim]
    emb = b64 if body.get("encoding_format") == "base64" else vec
    ptoks = sum(max(1, len(x) // 4) if isinstance(x, str) else len(x) for x in items)
    return {
        "object": "list",
        "model": body.get("model", "fake"),
        "data": [{"object": "embedding", "index": i, "embedding": emb} for i in range(len(items))],
        "usage": {"prompt_tokens": ptoks, "total_tokens": ptoks},
    }


class Upstream(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.parser = httptools.HttpRequestParser(self)
        self.pending = None  # task of a delayed/streaming response still being written

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.t.write(error("400 Bad Request", "bad http", keep=False))
            self.t.close()

    def connection_lost(self, exc):
        if self.pending and not self.pending.done():
            self.pending.cancel()

    # httptools callbacks
    def on_message_begin(self):
        self.url, self.body = b"", []

    def on_url(self, url):
        self.url += url

    def on_body(self, b):
        self.body.append(b)

    def on_message_complete(self):
        keep = self.parser.should_keep_alive()
        req = (self.parser.get_method(), self.url.split(b"?")[0], b"".join(self.body), keep)
        if self.pending is None or self.pending.done():
            out = self.handle(*req)
            if isinstance(out, bytes):  # fast path: answer synchronously
                self.t.write(out)
                if not keep:
                    self.t.close()
                return
            self.pending = asyncio.ensure_future(out)
        else:  # pipelined request behind an in-flight one: keep response order
            prev = self.pending

            async def after():
                await prev
                if self.t.is_closing():
                    return
                out = self.handle(*req)
                if isinstance(out, bytes):
                    self.t.write(out)
                    if not req[3]:
                        self.t.close()
                else:
                    await out

            self.pending = asyncio.ensure_future(after())

    # routing: returns bytes (immediate) or a coroutine (delayed / streaming)
    def handle(self, method, path, raw, keep):
        if method == b"GET":
            if path == b"/v1/models":
                return json_response(
                    {
                        "object": "list",
                        "data": [
                            {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake-upstream"}
                            for m in ARGS.models
                        ],
                    },
                    keep=keep,
                )
            if path in (b"/health", b"/healthz", b"/"):
                return json_response({"status": "ok"}, keep=keep)
            return error("404 Not Found", "not found", keep)
        if method != b"POST":
            return error("405 Method Not Allowed", "method not allowed", keep)
        try:
            body = loads(raw) if raw else {}
        except ValueError:
            return error("400 Bad Request", "invalid JSON body", keep)
        if path == b"/v1/embeddings":
            return json_response(embeddings(body), keep=keep)
        if path not in (b"/v1/chat/completions", b"/v1/completions"):
            return error("404 Not Found", f"no route {path.decode(errors='replace')}", keep)
        chat = path == b"/v1/chat/completions"
        n = int(body.get("max_completion_tokens") or body.get("max_tokens") or ARGS.tokens)
        n = max(1, min(n, ARGS.max_tokens_cap))
        p = n_prompt_tokens(body)
        model = body.get("model") or ARGS.models[0]
        if body.get("stream"):
            inc_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self.stream(chat, model, p, n, inc_usage, keep)
        rid, created = next_id("chatcmpl" if chat else "cmpl"), int(time.time())
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text_of(n), "refusal": None, "tool_calls": None},
                "logprobs": None,
                "finish_reason": "length",
            }
        else:
            choice = {"index": 0, "text": text_of(n), "logprobs": None, "finish_reason": "length"}
        resp = json_response(
            {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [choice],
                "usage": usage(p, n),
            },
            keep=keep,
        )
        delay = (ARGS.ttft_ms + (n - 1) * ARGS.tpot_ms) / 1000
        if delay <= 0:
            return resp
        return self.later(delay, resp, keep)

    async def later(self, delay, resp, keep):
        await asyncio.sleep(delay)
        if not self.t.is_closing():
            self.t.write(resp)
            if not keep:
                self.t.close()

    async def stream(self, chat, model, p, n, inc_usage, keep):
        t = self.t
        rid, created = next_id("chatcmpl" if chat else "cmpl"), int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        # every chunk = head + payload + tail; only the payload varies
        head = b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":[' % (
            rid.encode(),
            obj.encode(),
            created,
            dumps(model),
        )
        tail_u = b',"usage":null' if inc_usage else b""
        t.write(http_head("200 OK", "text/event-stream", None, keep))
        if ARGS.ttft_ms:
            await asyncio.sleep(ARGS.ttft_ms / 1000)
        if chat:  # OpenAI/vLLM send the role first, with empty content
            t.write(
                chunked(
                    head + b'{"index":0,"delta":{"role":"assistant","content":""},'
                    b'"logprobs":null,"finish_reason":null}]' + tail_u + b"}\n\n"
                )
            )
        for i in range(n):
            if i and ARGS.tpot_ms:
                await asyncio.sleep(ARGS.tpot_ms / 1000)
            if t.is_closing():
                return
            w = WORDS_J[i % len(WORDS_J)]
            last = i == n - 1
            fin = b'"length"' if last else b"null"
            piece = (
                b'{"index":0,"delta":{"content":%s},"logprobs":null,"finish_reason":%s}'
                if chat
                else b'{"index":0,"text":%s,"logprobs":null,"finish_reason":%s}'
            ) % (w, fin)
            t.write(chunked(head + piece + b"]" + tail_u + b"}\n\n"))
        if inc_usage:
            t.write(chunked(head + b'],"usage":' + dumps(usage(p, n)) + b"}\n\n"))
        t.write(chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        if not keep:
            t.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token")
    ap.add_argument("--tpot-ms", type=float, default=0.0, help="delay between tokens (chunks)")
    ap.add_argument("--tokens", type=int, default=16, help="completion tokens when max_tokens is absent")
    ap.add_argument("--max-tokens-cap", type=int, default=4096)
    ap.add_argument("--embed-dim", type=int, default=384)
    ap.add_argument("--models", nargs="+", default=["fake-model"], help="ids listed by /v1/models")
    ARGS = ap.parse_args()
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        print("uvloop not installed; using the stdlib loop (slower)")
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(Upstream, ARGS.host, ARGS.port, backlog=4096))
    print(f"fake upstream on http://{ARGS.host}:{ARGS.port} pid={os.getpid()}", flush=True)
    try:
        loop.run_until_complete(server.serve_forever())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
