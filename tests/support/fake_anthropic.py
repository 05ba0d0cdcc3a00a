"""A fake Anthropic Messages API on 127.0.0.1: ``POST /v1/messages``, JSON or SSE.

It speaks the wire protocol litellm's ``anthropic/`` provider speaks to api.anthropic.com, so a
gateway's hosted fallback can be tested without the internet (point the hosted model's
``api_base`` at ``url``). Like ``fake_openai``, a "token" is one whitespace-separated word of the
prompt, and one text delta of the answer: ``max_tokens`` of them, unless ``config.tokens`` is set.

Models: any name answers normally, except ``fault-overloaded`` (HTTP 529 ``overloaded_error``,
Anthropic's own shape). A request whose ``x-api-key`` is not ``config.api_key`` gets 401.
Streams follow Anthropic's event sequence: ``message_start`` (with input usage),
``content_block_start``, ``ping``, ``content_block_delta`` x n, ``content_block_stop``,
``message_delta`` (stop reason and output usage), ``message_stop``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from aiohttp import web

from tests.support.fake_openai import count_words, word
from tests.support.ports import HOST


@dataclass
class AnthropicConfig:
    api_key: str = "fake-anthropic-key"
    tokens: int | None = None  # answer length; None = the request's max_tokens
    chunk_delay_s: float = 0.0


@dataclass
class AnthropicRequest:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeAnthropic:
    config: AnthropicConfig = field(default_factory=AnthropicConfig)
    requests: list[AnthropicRequest] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        ready = threading.Event()

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            loop.run_until_complete(self._open())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-anthropic", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake anthropic did not start")
        return self

    async def _open(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOST, 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(AnthropicRequest({k.lower(): v for k, v in request.headers.items()}, body))
        if request.headers.get("x-api-key") != self.config.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if body.get("model") == "fault-overloaded":
            return _error(529, "overloaded_error", "Overloaded")
        system = body.get("system")
        input_tokens = max(
            1, count_words([m.get("content") for m in body.get("messages", [])]) + count_words(system)
        )
        n = self.config.tokens if self.config.tokens is not None else int(body.get("max_tokens") or 16)
        stop = "max_tokens" if self.config.tokens is None else "end_turn"
        msg_id = f"msg_{uuid.uuid4().hex[:20]}"
        if not body.get("stream"):
            text = "".join(word(i) for i in range(n))
            return web.json_response(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model"),
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": n},
                }
            )
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        start = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }
        await resp.write(_event("message_start", {"message": start}))
        await resp.write(
            _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        )
        await resp.write(_event("ping", {}))
        for i in range(n):
            await asyncio.sleep(self.config.chunk_delay_s)
            await resp.write(
                _event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word(i)}})
            )
        await resp.write(_event("content_block_stop", {"index": 0}))
        await resp.write(
            _event(
                "message_delta",
                {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": n}},
            )
        )
        await resp.write(_event("message_stop", {}))
        await resp.write_eof()
        return resp


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


def _error(status: int, err_type: str, message: str) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": err_type, "message": message}}, status=status
    )
