"""The Anthropic routes' edges, against the fake upstream: nometer's own refusals in Anthropic's
envelope (the Anthropic SDK raises the matching class), ``x-api-key`` as the key in keys mode, and
``anthropic-version`` / ``anthropic-beta`` passed through while the caller's key never is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.teams import ADMIN_ENV, create_key, use_env

MSG = [{"role": "user", "content": "hi"}]
# The SDK warns that claude-sonnet-4-5 reaches end-of-life; it is still the name Claude Code sends.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def gw(tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayServer]:
    use_env(monkeypatch)
    s = gateway_settings(
        tmp_path,
        [fake.base_url],
        auth={"mode": "keys", "admin_key_env": ADMIN_ENV},
        aliases={"claude-sonnet-4-5": "fake-model"},
        teams={"slow": {"limits": {"key": {"rpm": 1}}}},
    )
    with GatewayServer(s) as g:
        yield g


def sdk(gw: GatewayServer, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=10)


def _envelope(r: httpx.Response, kind: str) -> None:
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]
    assert set(body) == {"type", "error"} and set(body["error"]) == {"type", "message"}


def test_refusals_use_anthropics_envelope(gw: GatewayServer) -> None:
    key, _ = create_key(gw, "alpha")
    with pytest.raises(anthropic.AuthenticationError):
        sdk(gw, "not-a-key").messages.create(model="claude-sonnet-4-5", max_tokens=4, messages=MSG)  # type: ignore[arg-type]
    r = httpx.post(
        gw.url + "/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 4, "messages": MSG}
    )
    assert r.status_code == 401
    _envelope(r, "authentication_error")
    with pytest.raises(anthropic.NotFoundError) as nf:
        sdk(gw, key).messages.create(model="claude-opus-9", max_tokens=4, messages=MSG)  # type: ignore[arg-type]
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "claude-opus-9" in nf.value.body["error"]["message"]  # type: ignore[index]
    headers = {"x-api-key": key, "content-type": "application/json"}
    r = httpx.post(gw.url + "/v1/messages", headers=headers, content=b"{not json")
    assert r.status_code == 400
    _envelope(r, "invalid_request_error")
    r = httpx.post(gw.url + "/v1/messages/count_tokens", headers=headers, json={"messages": MSG})
    assert r.status_code == 400
    _envelope(r, "invalid_request_error")
    # the OpenAI routes keep OpenAI's envelope
    r = httpx.post(
        gw.base_url + "/chat/completions", headers=headers, json={"model": "nope", "messages": MSG}
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_rate_limit_is_a_rate_limit_error(gw: GatewayServer) -> None:
    key, _ = create_key(gw, "slow")
    body: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 4, "messages": MSG}
    httpx.post(gw.url + "/v1/messages", headers={"x-api-key": key}, json=body)
    with pytest.raises(anthropic.RateLimitError) as exc:
        sdk(gw, key).messages.create(**body)
    assert exc.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert exc.value.response.headers["retry-after"]


def test_no_backend_is_overloaded_in_anthropic_shape(gw: GatewayServer, fake: FakeUpstream) -> None:
    key, _ = create_key(gw, "alpha")
    fake.stop()
    gw.runtime.pool.mark_failed(gw.runtime.router.backends[0], "stopped by the test")
    r = httpx.post(
        gw.url + "/v1/messages",
        headers={"x-api-key": key},
        json={"model": "claude-sonnet-4-5", "max_tokens": 4, "messages": MSG},
    )
    assert r.status_code == 503 and r.headers["retry-after"]
    _envelope(r, "overloaded_error")


def test_x_api_key_authenticates_and_anthropic_headers_pass_through(
    gw: GatewayServer, fake: FakeUpstream
) -> None:
    key, key_id = create_key(gw, "alpha")
    r = httpx.post(
        gw.url + "/v1/messages?beta=true",
        headers={
            "x-api-key": key,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "prompt-caching-2024-07-31",
        },
        json={"model": "claude-sonnet-4-5", "max_tokens": 4, "messages": MSG},
    )
    assert r.status_code != 401  # the fake serves no /v1/messages: its own answer passes through
    sent = fake.requests_to("/v1/messages")[-1]
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert (
        "x-api-key" not in sent.headers and "authorization" not in sent.headers
    )  # the caller's key stays here
    assert sent.body["model"] == "fake-model"
    row = gw.row(r.headers["x-request-id"])
    assert (row["key_id"], row["team"], row["endpoint"]) == (key_id, "alpha", "/v1/messages")
