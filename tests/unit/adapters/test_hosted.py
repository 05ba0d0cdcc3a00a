"""The hosted adapter without litellm loaded: request shaping, response cleaning, error mapping."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import httpx2 as httpx  # the openai SDK's own HTTP client types
import openai

from adapters.base import UpstreamConnectError, UpstreamTimeout
from adapters.hosted import HostedError, HostedTarget, _kwargs, _translate, openai_shape

T = HostedTarget(
    "anthropic/claude-haiku-4-5", api_base="http://127.0.0.1:1", api_key="k", params={"top_k": 3}
)


def test_importing_the_adapter_does_not_import_litellm() -> None:
    assert "adapters.hosted" in sys.modules
    if "litellm" in sys.modules:  # another test of the session may have used it
        return
    assert "litellm" not in sys.modules


def test_provider_and_kwargs() -> None:
    assert T.provider == "anthropic" and HostedTarget("gpt-4.1").provider == "openai"
    kw = _kwargs(
        T,
        {
            "model": "x",
            "messages": [],
            "stream": False,
            "max_tokens": 5,
            "stream_options": {"include_usage": False},
        },
        stream=True,
    )
    assert kw["model"] == T.model and kw["stream"] is True and kw["stream_options"] == {"include_usage": True}
    assert (
        kw["max_tokens"] == 5 and kw["top_k"] == 3 and kw["api_base"] == T.api_base and kw["max_retries"] == 0
    )
    assert "api_version" not in _kwargs(T, {}, stream=False)


def test_openai_shape_drops_litellm_fields() -> None:
    resp: Any = SimpleNamespace(
        model_dump=lambda: {
            "id": "x",
            "object": "chat.completion",
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi", "provider_specific_fields": {}},
                }
            ],
            "usage": {
                "prompt_tokens": 1,
                "completion_tokens": 2,
                "total_tokens": 3,
                "cost": 0.1,
                "cache_read_input_tokens": 0,
            },
        }
    )
    data = openai_shape(resp)
    assert (
        "system_fingerprint" not in data and "provider_specific_fields" not in data["choices"][0]["message"]
    )
    assert data["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_errors_are_translated_by_class() -> None:
    req = httpx.Request("POST", "http://x")
    assert isinstance(_translate(openai.APITimeoutError(req), T), UpstreamTimeout)
    assert isinstance(_translate(openai.APIConnectionError(request=req), T), UpstreamConnectError)
    err = _translate(
        openai.RateLimitError("slow down", response=httpx.Response(429, request=req), body=None), T
    )
    assert isinstance(err, HostedError) and err.status == 429 and T.model in str(err)
    assert isinstance(_translate(RuntimeError("?"), T), HostedError)


def test_client_fields_outside_the_allow_list_never_reach_litellm() -> None:
    """SSRF: a client body cannot choose the URL, key or headers the provider's key is sent with."""
    hostile = {
        "model": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "base_url": "http://canary.invalid/v1",
        "api_base": "http://canary.invalid/v1",
        "api_key": "sk-stolen",
        "api_version": "evil",
        "headers": {"x-leak": "1"},
        "extra_headers": {"x-leak": "1"},
        "extra_body": {"api_base": "http://canary.invalid"},
        "mock_response": "free answer",
        "custom_llm_provider": "openai",
        "timeout": 0.001,
        "metadata": {"x": 1},
        "num_retries": 9,
        "litellm_logging_obj": None,
        "aws_region_name": "x",
        "vertex_project": "x",
        "input_cost_per_token": 0,
    }
    kw = _kwargs(HostedTarget("openai/gpt-4.1-mini"), hostile, stream=False)  # no api_base configured
    assert set(kw) == {"model", "messages", "max_tokens", "timeout", "max_retries", "num_retries", "stream"}
    assert kw["timeout"] == 600.0 and kw["num_retries"] == 0
    kw = _kwargs(T, hostile, stream=False)  # configured credentials win; client ones never appear
    assert kw["api_base"] == T.api_base and kw["api_key"] == "k" and "api_version" not in kw
    assert "headers" not in kw and "extra_headers" not in kw and "mock_response" not in kw


def test_every_openai_chat_parameter_is_forwarded() -> None:
    body = {
        k: 1
        for k in (
            "temperature",
            "top_p",
            "n",
            "stop",
            "seed",
            "tools",
            "tool_choice",
            "response_format",
            "logprobs",
            "top_logprobs",
            "user",
            "presence_penalty",
            "frequency_penalty",
            "logit_bias",
            "max_completion_tokens",
            "parallel_tool_calls",
            "reasoning_effort",
        )
    }
    kw = _kwargs(HostedTarget("openai/gpt-4.1-mini"), body, stream=False)
    assert all(kw[k] == 1 for k in body)
