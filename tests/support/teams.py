"""Helpers for team/key/policy tests: the admin key, keys made through the admin API, and the
hosted-model catalogue pointing litellm at local fake providers (no internet)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer

ADMIN_ENV = "NOMETER_TEST_ADMIN_KEY"
ADMIN_KEY = "nm-admin-test-secret"
OPENAI_KEY_ENV = "NOMETER_TEST_OPENAI_KEY"
ANTHROPIC_KEY_ENV = "NOMETER_TEST_ANTHROPIC_KEY"
MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "say something nice"}]

# litellm names of the fake providers' models, and what they are priced as
OPENAI_FAKE = "openai/fake-model"  # FakeUpstream speaking OpenAI, priced as gpt-4.1-mini
OPENAI_SLOW = "openai/fault-slow"  # same, answering after config.slow_delay_s
CLAUDE = "anthropic/claude-haiku-4-5"  # FakeAnthropic speaking the Messages API


def use_env(monkeypatch: pytest.MonkeyPatch, anthropic: FakeAnthropic | None = None) -> None:
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    monkeypatch.setenv(OPENAI_KEY_ENV, "sk-fake-openai")
    if anthropic is not None:
        monkeypatch.setenv(ANTHROPIC_KEY_ENV, anthropic.config.api_key)


def hosted_catalogue(
    openai_fake: FakeUpstream, anthropic: FakeAnthropic | None = None, **overload: Any
) -> dict[str, Any]:
    models: dict[str, Any] = {
        OPENAI_FAKE: {
            "api_base": openai_fake.base_url,
            "api_key_env": OPENAI_KEY_ENV,
            "price_as": "gpt-4.1-mini",
        },
        OPENAI_SLOW: {
            "api_base": openai_fake.base_url,
            "api_key_env": OPENAI_KEY_ENV,
            "price_as": "gpt-4.1-mini",
        },
    }
    if anthropic is not None:
        models[CLAUDE] = {"api_base": anthropic.url, "api_key_env": ANTHROPIC_KEY_ENV}
        models["anthropic/fault-overloaded"] = {"api_base": anthropic.url, "api_key_env": ANTHROPIC_KEY_ENV}
    return {"models": models, "overload": overload}


def admin(gw: GatewayServer) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)


def create_key(gw: GatewayServer, team: str, name: str | None = None) -> tuple[str, str]:
    """A new key for ``team`` through the admin API: (key, key_id)."""
    with admin(gw) as c:
        r = c.post("/v1/nometer/admin/keys", json={"team": team, "name": name})
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["key_id"]


def client(gw: GatewayServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=20)


def async_client(gw: GatewayServer, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=20)
