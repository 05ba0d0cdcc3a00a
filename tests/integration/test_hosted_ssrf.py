"""SSRF through the hosted path (hardening item 1): a team key that may fall back cannot make the
gateway send the provider's key anywhere else, add headers, or get a canned answer.

A canary server (a second fake upstream on 127.0.0.1) stands for "anywhere": it must see no
request at all. The provider (another fake) must see only the configured key and none of the
client's headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.teams import (
    ADMIN_ENV,
    ADMIN_KEY,
    MSG,
    OPENAI_FAKE,
    OPENAI_KEY_ENV,
    create_key,
    hosted_catalogue,
    use_env,
)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeUpstream, FakeUpstream, FakeUpstream]]:
    with FakeUpstream() as local, FakeUpstream() as cloud, FakeUpstream() as canary:
        yield local, cloud, canary


def _hostile(canary: FakeUpstream, model: str) -> dict[str, object]:
    return {
        "model": model,
        "messages": MSG,
        "max_tokens": 3,
        "base_url": canary.base_url,
        "api_base": canary.base_url,
        "api_key": "sk-client",
        "extra_headers": {"x-canary": "1"},
        "headers": {"x-canary": "1"},
        "extra_body": {"api_base": canary.base_url},
        "mock_response": "canned",
        "custom_llm_provider": "openai",
    }


@pytest.mark.parametrize("stream", [False, True])
def test_client_cannot_redirect_the_provider_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fakes: tuple[FakeUpstream, FakeUpstream, FakeUpstream],
    stream: bool,
) -> None:
    local, cloud, canary = fakes
    use_env(monkeypatch)
    # one hosted model with api_base in the config, one without (litellm then reads OPENAI_API_BASE)
    monkeypatch.setenv("OPENAI_API_BASE", cloud.base_url)
    catalogue = hosted_catalogue(cloud)
    catalogue["models"]["openai/gpt-4.1-nano"] = {"api_key_env": OPENAI_KEY_ENV}
    s = gateway_settings(
        tmp_path,
        [local.base_url],
        hosted=catalogue,
        auth={"mode": "keys", "admin_key_env": ADMIN_ENV},
        teams={
            "t": {"fallback": {"models": [OPENAI_FAKE, "openai/gpt-4.1-nano"], "triggers": ["model_missing"]}}
        },
    )
    with GatewayServer(s) as g:
        key, _ = create_key(g, "t")
        for model in ("fake-model-x", "gpt-4.1-nano"):
            body = _hostile(canary, model) | ({"stream": True} if stream else {})
            r = httpx.post(
                g.base_url + "/chat/completions",
                json=body,
                timeout=20,
                headers={"authorization": f"Bearer {key}", "x-canary": "1"},
            )
            assert r.status_code == 200, r.text
            assert "canned" not in r.text
        assert canary.requests == []
        sent = cloud.requests_to("/v1/chat/completions")
        # fake-model-x -> openai/fake-model; gpt-4.1-nano -> openai/gpt-4.1-nano first (the fake
        # answers 404 for it, at OPENAI_API_BASE: not the canary), then openai/fake-model
        assert [r.body["model"] for r in sent] == ["fake-model", "gpt-4.1-nano", "fake-model"]
        for req in sent:
            assert req.headers["authorization"] == "Bearer sk-fake-openai"
            assert "x-canary" not in req.headers
            assert not {"base_url", "api_base", "api_key", "extra_body", "mock_response"} & set(req.body)
        assert ADMIN_KEY not in str([r.headers for r in sent])
