"""A fake OpenAI-compatible upstream on 127.0.0.1, for fault injection and overhead measurement.

It is no stand-in for vLLM (behaviour is tested against the real one): it answers at once, with
predictable text and usage (see ``fake_openai``), and misbehaves on demand, chosen by the
request's model name:

==============  =================================================================================
``fake-model``   normal answers (JSON, or SSE with ``stream``)
``fault-500``    HTTP 500 with an OpenAI error body
``fault-429``    HTTP 429 with an OpenAI error body and ``retry-after``
``fault-slow``   a normal answer whose first byte comes after ``x-fake-delay-ms`` (header), else
                 ``config.slow_delay_s`` (2 s)
``fault-reset``  stream: ``config.reset_after_chunks`` (3) chunks, then a TCP reset;
                 not stream: the headers and half the body, then a TCP reset
``fault-hang``   accepts the request, never answers (until the client leaves or the fake stops)
``fault-drop``   closes the connection (FIN) before any response byte
==============  =================================================================================

A stream has ``x-fake-chunks`` (header) content chunks, else the request's ``max_tokens`` /
``max_completion_tokens``, else ``config.chunks``; one "token" each, ``x-fake-chunk-delay-ms``
(header) or ``config.chunk_delay_s`` apart; ``x-fake-tail-delay-ms`` (header) holds the connection
open that long after ``[DONE]``, as a server finishing its own bookkeeping does. Every request is recorded as it arrives
(``RecordedRequest``); its ``outcome`` says whether the answer was completed or the client went
away first (``client_disconnected``), which lets a test check that a gateway closes its upstream
request when its own client disconnects.

Like vLLM it serves ``/metrics`` (``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``
from ``config.waiting`` / ``config.kv_cache_usage``) and, when ``config.max_model_len`` is set,
reports it per model in ``/v1/models``.

The server runs on its own event loop in a daemon thread, so it serves tests written in any
style, sync or async, and a gateway running in the same process.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Self

import orjson
from aiohttp import web

from tests.support.fake_openai import FAKE_MODEL, Completion, Json, embeddings, error_body, sse
from tests.support.ports import HOST

FAULT_MODELS = ("fault-500", "fault-429", "fault-slow", "fault-reset", "fault-hang", "fault-drop")
MODELS = (FAKE_MODEL, *FAULT_MODELS)
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0

Outcome = Literal["pending", "completed", "client_disconnected", "server_closed"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class RecordedRequest:
    """One request the fake received. ``outcome`` changes while the answer is being written."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON; None when empty or not JSON
    outcome: Outcome = "pending"

    @property
    def model(self) -> str | None:
        model = self.body.get("model") if isinstance(self.body, dict) else None
        return model if isinstance(model, str) else None

    @property
    def client_disconnected(self) -> bool:
        return self.outcome == "client_disconnected"


@dataclass
class FakeConfig:
    """Defaults for answers; a test may change them (``reset()`` restores them)."""

    chunks: int = 8
    chunk_delay_s: float = 0.0
    slow_delay_s: float = 2.0
    reset_after_chunks: int = 3
    retry_after_s: int = 1
    embedding_dim: int = 8
    max_model_len: int | None = None  # reported per model in /v1/models, like vLLM
    waiting: int = 0  # vllm:num_requests_waiting in /metrics
    kv_cache_usage: float = 0.0  # vllm:kv_cache_usage_perc in /metrics
    # extra headers on non-streamed answers, e.g. vLLM's default {"access-control-allow-origin": "*"}
    response_headers: dict[str, str] = field(default_factory=dict)


_RECORD = web.RequestKey("record", RecordedRequest)


class FakeUpstream:
    """Start with ``start()`` or ``with FakeUpstream() as fake:``; point a gateway at ``url``."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self._defaults = config or FakeConfig()
        self.config = replace(self._defaults)
        self._records: list[RecordedRequest] = []
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._open())
            except OSError as exc:  # reported to start(), which raises it
                failure.append(exc)
                loop.close()
                return
            finally:
                started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-upstream", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT_S):
            raise RuntimeError(f"fake upstream did not start within {START_TIMEOUT_S}s")
        if failure or not self.port:
            raise RuntimeError("fake upstream failed to start") from (failure[0] if failure else None)
        return self

    async def _open(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        # handler_cancellation: a client that leaves cancels its handler, which is how we see it.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOST, 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _close(self) -> None:
        assert self._closing is not None and self._runner is not None
        self._closing.set()  # hanging handlers return now
        await self._runner.cleanup()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(STOP_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # -- what tests read -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since the last ``reset()``, oldest first (a copy)."""
        with self._changed:
            return list(self._records)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    @property
    def disconnects(self) -> int:
        """Requests whose client went away before the answer was complete."""
        return sum(r.client_disconnected for r in self.requests)

    def reset(self) -> None:
        """Forget recorded requests and restore the default config."""
        with self._changed:
            self._records.clear()
        self.config = replace(self._defaults)

    def wait_until(self, predicate: Callable[[FakeUpstream], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate(self)`` holds (re-checked on every change); else TimeoutError."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self), timeout):
                raise TimeoutError(
                    f"fake upstream: condition not met in {timeout}s; requests: {self._records}"
                )

    def wait_for_disconnects(self, count: int = 1, timeout: float = 5.0) -> None:
        self.wait_until(lambda fake: fake.disconnects >= count, timeout)

    async def wait_until_async(self, predicate: Callable[[FakeUpstream], bool], timeout: float = 5.0) -> None:
        """``wait_until`` without blocking the caller's event loop."""
        await asyncio.to_thread(self.wait_until, predicate, timeout)

    def _set_outcome(self, record: RecordedRequest, outcome: Outcome) -> None:
        with self._changed:
            if record.outcome == "pending":
                record.outcome = outcome
            self._changed.notify_all()

    # -- serving ---------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        record = RecordedRequest(request.method, request.path, headers, body)
        request[_RECORD] = record
        with self._changed:
            self._records.append(record)
            self._changed.notify_all()
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            assert self._closing is not None
            if not self._closing.is_set():
                self._set_outcome(record, "client_disconnected")
            raise
        except ConnectionResetError:  # a write after the client left (aiohttp's subclasses it)
            self._set_outcome(record, "client_disconnected")
            return web.Response(status=499)  # never sent: aiohttp drops it quietly
        self._set_outcome(record, "completed")
        if not response.prepared:
            response.headers.update(self.config.response_headers)
        return response

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response()

    async def _models(self, request: web.Request) -> web.StreamResponse:
        data: list[Json] = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in MODELS]
        if self.config.max_model_len is not None:
            for m in data:
                m["max_model_len"] = self.config.max_model_len
        return _json(200, {"object": "list", "data": data})

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        """The two load gauges vLLM exports, in Prometheus text format."""
        labels = f'{{engine="0",model_name="{FAKE_MODEL}"}}'
        text = (
            f"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{labels} {float(self.config.waiting)}\n"
            f"# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{labels} {self.config.kv_cache_usage}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._fault(request)
        if early is not None:
            return early
        return await self._send(request, orjson.dumps(embeddings(body, self.config.embedding_dim)))

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        body, early = await self._fault(request)
        if early is not None:
            return early
        header = request.headers.get("x-fake-chunks")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        n_tokens = int(header) if header else int(limit) if limit else self.config.chunks
        finish = "length" if limit and not header else "stop"
        completion = Completion(body, chat=chat, n_tokens=n_tokens, finish_reason=finish)
        if body.get("stream"):
            return await self._stream(request, completion)
        return await self._send(request, orjson.dumps(completion.full()))

    async def _fault(self, request: web.Request) -> tuple[Json, web.StreamResponse | None]:
        """The body, and the answer when the model's fault mode decides it before any content."""
        record = request[_RECORD]
        body = record.body
        if not isinstance(body, dict):
            return {}, _json(400, error_body(400, "the body must be a JSON object", "BadRequestError"))
        model = body.get("model")
        if model == "fault-500":
            return body, _json(500, error_body(500, "fake upstream failure", "InternalServerError"))
        if model == "fault-429":
            return body, _json(
                429,
                error_body(429, "fake rate limit", "requests", "rate_limit_exceeded"),
                {"retry-after": str(self.config.retry_after_s)},
            )
        if model == "fault-drop":
            self._set_outcome(record, "server_closed")
            assert request.transport is not None
            request.transport.close()
            return body, web.Response()  # never sent: the transport is closed
        if model == "fault-hang":
            assert self._closing is not None
            await self._closing.wait()
            self._set_outcome(record, "server_closed")
            _reset_connection(request)
            return body, web.Response()
        if model == "fault-slow":
            await asyncio.sleep(_ms_header(request, "x-fake-delay-ms", self.config.slow_delay_s))
        elif model not in MODELS:
            return body, _json(404, error_body(404, f"The model `{model}` does not exist.", "NotFoundError"))
        return body, None

    async def _send(self, request: web.Request, payload: bytes) -> web.StreamResponse:
        """A JSON answer; for ``fault-reset``, half of it then a TCP reset."""
        if request[_RECORD].model != "fault-reset":
            return web.Response(body=payload, content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        self._set_outcome(request[_RECORD], "server_closed")
        _reset_connection(request)
        return response

    async def _stream(self, request: web.Request, completion: Completion) -> web.StreamResponse:
        reset_after = self.config.reset_after_chunks if completion.model == "fault-reset" else None
        delay = _ms_header(request, "x-fake-chunk-delay-ms", self.config.chunk_delay_s)
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        )
        await response.prepare(request)
        first = completion.first_chunk()
        if first is not None:
            await response.write(sse(first))
        for i in range(completion.n_tokens):
            if i == reset_after:
                self._set_outcome(request[_RECORD], "server_closed")
                _reset_connection(request)
                return response
            await asyncio.sleep(delay)  # also lets a disconnect be noticed between chunks
            await response.write(sse(completion.chunk(i)))
        if completion.include_usage:
            await response.write(sse(completion.usage_chunk()))
        await response.write(sse("[DONE]"))
        await asyncio.sleep(_ms_header(request, "x-fake-tail-delay-ms", 0.0))
        await response.write_eof()
        return response


def _json(status: int, payload: Json, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), headers=headers, content_type="application/json"
    )


def _ms_header(request: web.Request, name: str, default_s: float) -> float:
    value = request.headers.get(name)
    return int(value) / 1000 if value else default_s


def _reset_connection(request: web.Request) -> None:
    """Abort with a TCP RST (SO_LINGER 0), not a FIN: what a crashed upstream looks like."""
    transport = request.transport
    if transport is None:
        return
    sock: socket.socket | None = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
