"""The hosted adapter without litellm loaded: request shaping, response cleaning, error mapping."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import httpx
import openai

from adapters.base import UpstreamConnectError, UpstreamTimeout
from adapters.hosted import HostedError, HostedTarget, _kwargs, _translate, openai_shape

T = HostedTarget("anthropic/claude-haiku-4-5", api_base="http://127.0.0.1:1", api_key="k", params={"top_k": 3})


def test_importing_the_adapter_does_not_import_litellm() -> None:
    assert "adapters.hosted" in sys.modules
    if "litellm" in sys.modules:  # another test of the session may have used it
        return
    assert "litellm" not in sys.modules


def test_provider_and_kwargs() -> None:
    assert T.provider == "anthropic" and HostedTarget("gpt-4.1").provider == "openai"
    kw = _kwargs(T, {"model": "x", "messages": [], "stream": False, "max_tokens": 5,
                     "stream_options": {"include_usage": False}}, stream=True)
    assert kw["model"] == T.model and kw["stream"] is True and kw["stream_options"] == {"include_usage": True}
    assert kw["max_tokens"] == 5 and kw["top_k"] == 3 and kw["api_base"] == T.api_base and kw["max_retries"] == 0
    assert "api_version" not in _kwargs(T, {}, stream=False)


def test_openai_shape_drops_litellm_fields() -> None:
    resp: Any = SimpleNamespace(model_dump=lambda: {
        "id": "x", "object": "chat.completion", "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "provider_specific_fields": {}}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "cost": 0.1,
                  "cache_read_input_tokens": 0}})
    data = openai_shape(resp)
    assert "system_fingerprint" not in data and "provider_specific_fields" not in data["choices"][0]["message"]
    assert data["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_errors_are_translated_by_class() -> None:
    req = httpx.Request("POST", "http://x")
    assert isinstance(_translate(openai.APITimeoutError(req), T), UpstreamTimeout)
    assert isinstance(_translate(openai.APIConnectionError(request=req), T), UpstreamConnectError)
    err = _translate(openai.RateLimitError("slow down", response=httpx.Response(429, request=req), body=None), T)
    assert isinstance(err, HostedError) and err.status == 429 and T.model in str(err)
    assert isinstance(_translate(RuntimeError("?"), T), HostedError)
