"""A fleet of simulated vLLM servers on 127.0.0.1: one ``sim_engine.Engine`` behind each port.

For routing tests and benchmarks only (a simulation: real vLLM behaviour is tested against real
vLLM). Each server speaks what the gateway uses of vLLM: ``/health``, ``/v1/models``,
``/v1/chat/completions`` (JSON or SSE, usage with ``prompt_tokens_details.cached_tokens``) and
``/metrics`` with vLLM's metric names (``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:kv_cache_usage_perc``, ``vllm:prefix_cache_queries_total``, ``vllm:prefix_cache_hits_total``).

A prompt "token" is one whitespace-separated word of the messages (and of the tool definitions),
as in ``fake_openai``. Simulated time runs ``speed`` times faster than the wall clock, so a 6k-token
prefill that takes 0.5 s on the model takes 5 ms here at ``speed=100``. Every answer carries
``x-sim-server`` (the server's name), and a server can be told to fail (``fail_status``) to test
ejection. All servers share one event loop in a daemon thread, like ``fake_upstream``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from aiohttp import web

from tests.support.ports import HOST
from tests.support.sim_engine import Engine, EngineParams, SimRequest, block_hashes

SIM_MODEL = "sim-model"
START_TIMEOUT_S = 10.0


def prompt_words(payload: dict[str, Any]) -> list[str]:
    """The prompt's "tokens": tool definitions first, then each message's role and text."""
    words: list[str] = []
    tools = payload.get("tools")
    if tools:
        words += orjson.dumps(tools).decode().split()
    for m in payload.get("messages") or ():
        if not isinstance(m, dict):
            continue
        words.append(f"<{m.get('role')}>")
        content = m.get("content")
        if isinstance(content, str):
            words += content.split()
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    words += part["text"].split()
    return words


@dataclass(eq=False)
class SimServer:
    name: str
    engine: Engine
    speed: float
    port: int = 0
    fail_status: int | None = None  # answer every chat request with this status (ejection tests)
    served: int = 0  # chat requests answered (not counting failures)
    sessions: dict[str, int] = field(default_factory=dict)  # x-nometer-session -> requests seen
    _wake: asyncio.Event | None = None
    _t0: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def vnow(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    async def drive(self) -> None:
        """Advance the engine with the wall clock: sleep until its next step ends, run it."""
        self._wake = asyncio.Event()
        self._t0 = time.monotonic()
        while True:
            end = self.engine.next_event()
            if end is None:
                await self._wake.wait()
                self._wake.clear()
                continue
            delay = (end - self.vnow()) / self.speed
            if delay > 0:
                await asyncio.sleep(delay)
            self.engine.run_until(self.vnow())

    def submit(self, req: SimRequest) -> None:
        self.engine.submit(req, self.vnow())
        if self._wake is not None:
            self._wake.set()

    def metrics_text(self) -> str:
        e = self.engine
        label = f'{{engine="0",model_name="{SIM_MODEL}"}}'
        rows = [
            ("vllm:num_requests_running", "gauge", float(len(e.running))),
            ("vllm:num_requests_waiting", "gauge", float(len(e.waiting))),
            ("vllm:kv_cache_usage_perc", "gauge", e.kv_usage),
            ("vllm:prefix_cache_queries_total", "counter", float(e.stats.queries)),
            ("vllm:prefix_cache_hits_total", "counter", float(e.stats.hits)),
            ("vllm:prompt_tokens_total", "counter", float(e.stats.prompt_tokens)),
            ("vllm:generation_tokens_total", "counter", float(e.stats.generation_tokens)),
        ]
        out: list[str] = []
        for name, kind, value in rows:
            out += [f"# HELP {name} {name}", f"# TYPE {name} {kind}", f"{name}{label} {value}"]
        return "\n".join(out) + "\n"


class SimFleet:
    """``with SimFleet(4) as fleet:``; point a gateway at ``fleet.urls``."""

    def __init__(self, n: int, params: EngineParams | None = None, speed: float = 100.0) -> None:
        self.servers = [SimServer(f"sim-{i}", Engine(params), speed) for i in range(n)]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def urls(self) -> list[str]:
        return [s.base_url for s in self.servers]

    def by_port(self, port: int) -> SimServer:
        return next(s for s in self.servers if s.port == port)

    def start(self) -> Self:
        started = threading.Event()

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._open())
            finally:
                started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="sim-fleet", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT_S) or not all(s.port for s in self.servers):
            raise RuntimeError("simulated fleet did not start")
        return self

    async def _open(self) -> None:
        for server in self.servers:
            app = web.Application()
            app.router.add_get("/health", _ok)
            app.router.add_get("/v1/models", _models)
            app.router.add_get("/metrics", _bind(_metrics, server))
            app.router.add_post("/v1/chat/completions", _bind(_chat, server))
            runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            server.port = sock.getsockname()[1]
            await web.SockSite(runner, sock).start()
            self._runners.append(runner)
            self._tasks.append(asyncio.create_task(server.drive()))

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for runner in self._runners:
            await runner.cleanup()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _bind(handler: Any, server: SimServer) -> Any:
    async def bound(request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request, server)
        return response

    return bound


async def _ok(request: web.Request) -> web.Response:
    return web.Response()


async def _models(request: web.Request) -> web.Response:
    card = {"id": SIM_MODEL, "object": "model", "owned_by": "sim", "max_model_len": 131_072}
    return web.json_response({"object": "list", "data": [card]})


async def _metrics(request: web.Request, server: SimServer) -> web.Response:
    return web.Response(text=server.metrics_text(), content_type="text/plain")


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "sim_error", "param": None, "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def _chat(request: web.Request, server: SimServer) -> web.StreamResponse:
    if server.fail_status is not None:
        return _error(server.fail_status, f"{server.name} is told to fail")
    payload = orjson.loads(await request.read())
    session = request.headers.get("x-nometer-session")
    if session:
        server.sessions[session] = server.sessions.get(session, 0) + 1
    words = prompt_words(payload)
    max_tokens = int(payload.get("max_completion_tokens") or payload.get("max_tokens") or 16)
    tokens: asyncio.Queue[int | None] = asyncio.Queue()
    req = SimRequest(
        block_hashes(words, server.engine.p.block_size),
        max(len(words), 1),
        max_tokens,
        on_token=lambda n, _t: tokens.put_nowait(n),
        on_done=lambda _t: tokens.put_nowait(None),
    )
    server.submit(req)
    headers = {"x-sim-server": server.name}
    rid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), payload.get("model", SIM_MODEL)
    usage = {"prompt_tokens": req.prompt_tokens}

    def finish_usage() -> dict[str, Any]:
        return {
            **usage,
            "completion_tokens": req.generated,
            "total_tokens": req.prompt_tokens + req.generated,
            "prompt_tokens_details": {"cached_tokens": req.cached_tokens},
        }

    if not payload.get("stream"):
        while await tokens.get() is not None:
            pass
        server.served += 1
        body = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(["tok"] * req.generated)},
                    "finish_reason": "length",
                }
            ],
            "usage": finish_usage(),
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=headers)
    resp = web.StreamResponse(headers={**headers, "content-type": "text/event-stream"})
    await resp.prepare(request)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        c = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
        c["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return b"data: " + orjson.dumps(c) + b"\n\n"

    await resp.write(chunk({"role": "assistant", "content": ""}))
    while (n := await tokens.get()) is not None:
        last = n >= req.max_tokens
        await resp.write(chunk({"content": " tok"}, "length" if last else None))
    opts = payload.get("stream_options")
    if isinstance(opts, dict) and opts.get("include_usage"):
        tail = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
        tail.update(choices=[], usage=finish_usage())
        await resp.write(b"data: " + orjson.dumps(tail) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    server.served += 1
    await resp.write_eof()
    return resp
