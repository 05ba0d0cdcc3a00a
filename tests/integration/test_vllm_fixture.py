"""Smoke tests of the real CPU vLLM fixtures (they get the `vllm` marker from conftest)."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from tests.support.vllm import VllmServer


def _client(server: VllmServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


def _metrics(server: VllmServer) -> str:
    response = httpx.get(f"{server.url}/metrics", timeout=10, trust_env=False)
    response.raise_for_status()
    return response.text


def test_vllm_marker_is_added(request: pytest.FixtureRequest, vllm_chat: VllmServer) -> None:
    assert request.node.get_closest_marker("vllm") is not None


def test_chat_lists_its_model(vllm_chat: VllmServer) -> None:
    with _client(vllm_chat) as client:
        assert [m.id for m in client.models.list()] == ["tiny-llama"]


def test_chat_completion_reports_usage(vllm_chat: VllmServer) -> None:
    with _client(vllm_chat) as client:
        completion = client.chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
        )
    assert completion.choices[0].finish_reason == "length"  # the random model never stops early
    usage = completion.usage
    assert usage is not None and usage.completion_tokens == 4 and usage.prompt_tokens > 0
    assert usage.prompt_tokens_details is not None  # --enable-prompt-tokens-details
    assert usage.prompt_tokens_details.cached_tokens is not None


def test_chat_metrics(vllm_chat: VllmServer) -> None:
    with _client(vllm_chat) as client:
        client.completions.create(model="tiny-llama", prompt="x", max_tokens=1)
    assert "vllm:request_success_total" in _metrics(vllm_chat)


def test_embed_lists_its_model(vllm_embed: VllmServer) -> None:
    with _client(vllm_embed) as client:
        assert [m.id for m in client.models.list()] == ["tiny-embed"]


def test_embeddings(vllm_embed: VllmServer) -> None:
    with _client(vllm_embed) as client:
        result = client.embeddings.create(model="tiny-embed", input=["hello world", "bye"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == len(result.data[1].embedding) == 256  # hidden size
    assert result.usage.prompt_tokens > 0


def test_embed_metrics(vllm_embed: VllmServer) -> None:
    with _client(vllm_embed) as client:
        client.embeddings.create(model="tiny-embed", input="x")
    assert "vllm:request_success_total" in _metrics(vllm_embed)
