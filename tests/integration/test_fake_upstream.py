"""The fake upstream itself: normal answers, each fault mode, the request log."""

from __future__ import annotations

import asyncio
import base64
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from openai import OpenAI

from tests.support.fake_upstream import FAULT_MODELS, FakeUpstream

CHAT = "/v1/chat/completions"


@pytest.fixture
def client(fake_upstream: FakeUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_upstream.url, timeout=5, trust_env=False) as client:
        yield client


def _chat(model: str = "fake-model", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "one two three"}], **extra}


def _events(body: str) -> list[Any]:
    """The data of each SSE event; ``[DONE]`` stays a string."""
    events: list[Any] = []
    for line in body.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else orjson.loads(data))
    return events


def test_health_and_models(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["fake-model", *FAULT_MODELS]


def test_chat_json_usage(client: httpx.Client) -> None:
    body = client.post(CHAT, json=_chat(max_tokens=3)).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == " w0 w1 w2"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 3,
        "total_tokens": 6,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_chat_stream_with_usage_like_vllm(client: httpx.Client) -> None:
    request = _chat(stream=True, stream_options={"include_usage": True})
    events = _events(client.post(CHAT, json=request, headers={"x-fake-chunks": "4"}).text)
    assert events[-1] == "[DONE]"
    first, *content, usage_chunk, _ = events
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in content] == [" w0", " w1", " w2", " w3"]
    assert content[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 4


def test_stream_without_include_usage_has_no_usage_chunk(client: httpx.Client) -> None:
    events = _events(client.post(CHAT, json=_chat(stream=True, max_tokens=2)).text)
    assert len(events) == 1 + 2 + 1
    assert all("usage" not in e for e in events if isinstance(e, dict))


def test_completions_json_and_stream(client: httpx.Client) -> None:
    body = client.post(
        "/v1/completions", json={"model": "fake-model", "prompt": "a b", "max_tokens": 2}
    ).json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == " w0 w1"
    events = _events(
        client.post(
            "/v1/completions",
            json={
                "model": "fake-model",
                "prompt": "a b",
                "max_tokens": 2,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ).text
    )
    assert [e["choices"][0]["text"] for e in events[:2]] == [" w0", " w1"]
    assert events[2]["usage"]["total_tokens"] == 4


def test_embeddings_float_and_base64(client: httpx.Client) -> None:
    as_floats = client.post("/v1/embeddings", json={"model": "fake-model", "input": ["a b", "c"]}).json()
    assert [d["index"] for d in as_floats["data"]] == [0, 1]
    assert as_floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    as_base64 = client.post(
        "/v1/embeddings", json={"model": "fake-model", "input": ["a b", "c"], "encoding_format": "base64"}
    ).json()
    decoded = struct.unpack("<8f", base64.b64decode(as_base64["data"][0]["embedding"]))
    assert decoded == pytest.approx(as_floats["data"][0]["embedding"])


def test_openai_sdk_reads_it(fake_upstream: FakeUpstream) -> None:
    with OpenAI(base_url=fake_upstream.base_url, api_key="x", max_retries=0) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=2,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        vectors = sdk.embeddings.create(model="fake-model", input="hi")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert len(vectors.data[0].embedding) == 8


def test_requests_are_recorded(fake_upstream: FakeUpstream, client: httpx.Client) -> None:
    client.post(
        CHAT, json=_chat(stream=True, stream_options={"include_usage": True}), headers={"X-Trace": "t1"}
    )
    [recorded] = fake_upstream.requests_to(CHAT)
    assert recorded.method == "POST" and recorded.model == "fake-model"
    assert recorded.body["stream_options"] == {"include_usage": True}
    assert recorded.headers["x-trace"] == "t1"
    # the client has the last byte a moment before the handler marks its answer completed
    fake_upstream.wait_until(lambda _: recorded.outcome != "pending")
    assert recorded.outcome == "completed"


def test_unknown_model_is_404(client: httpx.Client) -> None:
    response = client.post(CHAT, json=_chat("nope"))
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "NotFoundError"


@pytest.mark.parametrize(("model", "status"), [("fault-500", 500), ("fault-429", 429)])
def test_error_faults(client: httpx.Client, model: str, status: int) -> None:
    response = client.post(CHAT, json=_chat(model))
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    if status == 429:
        assert response.headers["retry-after"] == "1"


def test_slow_delays_the_first_byte(fake_upstream: FakeUpstream, client: httpx.Client) -> None:
    started = time.monotonic()
    assert client.post(CHAT, json=_chat("fault-slow"), headers={"x-fake-delay-ms": "300"}).is_success
    assert time.monotonic() - started >= 0.3
    fake_upstream.config.slow_delay_s = 0.2
    started = time.monotonic()
    assert client.post(CHAT, json=_chat("fault-slow")).is_success
    assert 0.2 <= time.monotonic() - started < 2


def test_reset_mid_stream(fake_upstream: FakeUpstream, client: httpx.Client) -> None:
    lines: list[str] = []
    with (
        pytest.raises(httpx.ReadError),
        client.stream("POST", CHAT, json=_chat("fault-reset", stream=True, max_tokens=10)) as response,
    ):
        lines.extend(line for line in response.iter_lines() if line)
    assert len(lines) == 1 + 3  # the role chunk, then 3 content chunks
    assert fake_upstream.requests_to(CHAT)[0].outcome == "server_closed"


def test_reset_json(client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadError):
        client.post(CHAT, json=_chat("fault-reset"))


def test_drop_sends_nothing(fake_upstream: FakeUpstream, client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        client.post(CHAT, json=_chat("fault-drop"))
    assert fake_upstream.disconnects == 0


def test_hang_until_the_client_leaves(fake_upstream: FakeUpstream, client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        client.post(CHAT, json=_chat("fault-hang"), timeout=0.2)
    fake_upstream.wait_for_disconnects(1)
    assert fake_upstream.requests_to(CHAT)[0].client_disconnected


def test_client_disconnect_mid_stream_is_counted(fake_upstream: FakeUpstream, client: httpx.Client) -> None:
    fake_upstream.config.chunk_delay_s = 0.01
    with client.stream("POST", CHAT, json=_chat(stream=True, max_tokens=1000)) as response:
        lines = response.iter_lines()
        next(lines)
        next(lines)
    fake_upstream.wait_for_disconnects(1)
    assert fake_upstream.disconnects == 1


async def test_wait_until_async_does_not_block_the_loop(fake_upstream: FakeUpstream) -> None:
    """The request that satisfies the wait is sent from the SAME event loop, after the wait began:
    a blocking wait would starve it and time out."""
    async with httpx.AsyncClient(base_url=fake_upstream.url, trust_env=False) as client:

        async def request_later() -> None:
            await asyncio.sleep(0.05)
            await client.get("/health")

        sender = asyncio.create_task(request_later())
        await fake_upstream.wait_until_async(lambda fake: len(fake.requests) == 1, timeout=3)
        await sender


def test_reset_forgets_requests_and_config(fake_upstream: FakeUpstream, client: httpx.Client) -> None:
    client.get("/health")
    fake_upstream.config.chunks = 1
    fake_upstream.reset()
    assert fake_upstream.requests == [] and fake_upstream.config.chunks == 8


def test_stop_ends_hanging_requests() -> None:
    fake = FakeUpstream().start()
    errors: list[Exception] = []

    def call() -> None:
        try:
            httpx.post(f"{fake.url}{CHAT}", json=_chat("fault-hang"), timeout=10, trust_env=False)
        except httpx.TransportError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    fake.wait_until(lambda f: len(f.requests) == 1)
    started = time.monotonic()
    fake.stop()
    caller.join(5)
    assert time.monotonic() - started < 2
    assert [type(e) for e in errors] == [httpx.ReadError]
