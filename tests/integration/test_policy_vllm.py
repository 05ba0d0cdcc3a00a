"""Fallback signals read from a REAL vLLM (CPU build, tiny model): its ``/metrics`` load gauges
and the ``max_model_len`` it reports, driving the overloaded and context_too_long triggers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.teams import OPENAI_FAKE, hosted_catalogue, use_env
from tests.support.vllm import VllmServer

MSG: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a Python function that adds two numbers."}
]


@pytest.fixture
def gw(
    tmp_path: Path, vllm_chat: VllmServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[GatewayServer, FakeUpstream]]:
    use_env(monkeypatch)
    with FakeUpstream() as cloud:
        policy = {"fallback": {"models": [OPENAI_FAKE], "triggers": ["overloaded", "context_too_long"]}}
        s = gateway_settings(
            tmp_path,
            [vllm_chat.base_url],
            timeouts={"read_s": 120},
            policy=policy,
            hosted=hosted_catalogue(cloud, max_waiting=100, max_kv_cache_usage=0.99),
        )
        g = GatewayServer(s).start()
        yield g, cloud
        g.stop()


def test_load_and_context_come_from_vllm(gw: tuple[GatewayServer, FakeUpstream]) -> None:
    g, cloud = gw
    backend = g.runtime.router.backends[0]
    assert backend.waiting == 0  # vllm:num_requests_waiting, read with the health probe
    assert backend.kv_cache_usage is not None and 0 <= backend.kv_cache_usage < 0.99
    limit = backend.max_model_len["tiny-llama"]
    c = openai.OpenAI(base_url=g.base_url, api_key="unused", max_retries=0, timeout=120)
    raw = c.chat.completions.with_raw_response.create(model="tiny-llama", messages=MSG, max_tokens=4)
    assert "x-nometer-route" not in raw.headers and raw.parse().usage.completion_tokens == 4  # type: ignore[union-attr]
    long: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello " * (limit + 10)}]
    raw = c.chat.completions.with_raw_response.create(model="tiny-llama", messages=long, max_tokens=4)
    assert raw.headers["x-nometer-fallback-cause"] == "context_too_long"
    assert len(cloud.requests_to("/v1/chat/completions")) == 1
    rows = g.wait_rows(2)
    assert [(r["route"], r["fallback_cause"]) for r in rows] == [
        ("local", None),
        ("hosted", "context_too_long"),
    ]
