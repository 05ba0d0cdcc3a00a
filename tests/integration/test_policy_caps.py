"""Per-team caps on what one request may ask for (``n``, ``max_tokens``, body size), checked before
anything is forwarded, locally or to a hosted model; and hosted budgets that reserve every one of
``n`` choices, holding across two replicas that share Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from openai.types.chat import ChatCompletionMessageParam

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.teams import (
    ADMIN_ENV,
    MSG,
    OPENAI_FAKE,
    OPENAI_SLOW,
    create_key,
    hosted_catalogue,
    use_env,
)

PICO = Decimal(10) ** 12
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "say something nice"}]


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeUpstream]:
    """The "OpenAI" provider; litellm imported before a gateway starts (slow on a loaded machine)."""
    from adapters.hosted import load

    load()
    use_env(monkeypatch)
    with FakeUpstream() as f:
        yield f


def post(g: GatewayServer, key: str, body: dict[str, Any] | bytes) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    if isinstance(body, bytes):
        return httpx.post(g.base_url + "/chat/completions", content=body, headers=headers, timeout=30)
    return httpx.post(g.base_url + "/chat/completions", json=body, headers=headers, timeout=30)


def test_caps_refuse_before_forwarding_locally_and_hosted(
    tmp_path: Path, fake: FakeUpstream, cloud: FakeUpstream
) -> None:
    teams = {
        "small": {
            "caps": {"max_n": 4, "max_tokens": 100, "max_body_bytes": 2000},
            "fallback": {"models": [OPENAI_FAKE], "triggers": ["model_missing"]},
        },
        "big": {},  # the default caps: n up to 16, no max_tokens or body cap below the server's
    }
    s = gateway_settings(
        tmp_path,
        [fake.base_url],
        auth={"mode": "keys", "admin_key_env": ADMIN_ENV},
        teams=teams,
        hosted=hosted_catalogue(cloud),
    )
    with GatewayServer(s) as g:
        small, _ = create_key(g, "small")
        big, _ = create_key(g, "big")
        local = {"model": "fake-model", "messages": MSG}
        hosted = {"model": "gpt-4.1-mini", "messages": MSG}
        for body, param, cap in (
            ({**local, "n": 5}, "n", "caps.max_n"),
            ({**hosted, "n": 5}, "n", "caps.max_n"),
            ({**local, "max_tokens": 101}, "max_tokens", "caps.max_tokens"),
            ({**hosted, "max_completion_tokens": 101}, "max_completion_tokens", "caps.max_tokens"),
        ):
            r = post(g, small, body)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert (err["code"], err["type"], err["param"]) == (
                "cap_exceeded",
                "invalid_request_error",
                param,
            )
            assert cap in err["message"] and "team `small`" in err["message"]
        r = post(g, small, {**local, "n": "5"})  # vLLM would coerce the string, past the cap
        assert r.status_code == 400 and r.json()["error"]["param"] == "n"
        r = post(g, big, {**local, "n": 17})
        assert r.status_code == 400 and "cap of 16" in r.json()["error"]["message"]
        assert fake.requests_to("/v1/chat/completions") == []
        assert cloud.requests_to("/v1/chat/completions") == []
        refused = g.wait_rows(5, "WHERE outcome = 'refused'")
        assert len(refused) == 5 and all(row["status"] == 400 for row in refused)

        padding = {**local, "user": "x" * 2500}
        r = post(g, small, padding)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        assert "2000 bytes" in r.json()["error"]["message"]
        assert post(g, big, padding).status_code == 200  # another team, the server's limit
        assert post(g, small, {**local, "n": 4, "max_tokens": 100}).status_code == 200
        assert fake.requests_to("/v1/chat/completions")[-1].body["n"] == 4


@pytest.mark.redis
def test_n_budgets_hold_across_two_replicas_sharing_redis(
    tmp_path: Path, fake: FakeUpstream, cloud: FakeUpstream
) -> None:
    """Eight concurrent n=8 requests, four per replica, against a budget that fits two of them:
    the reservation counts all eight choices, so only what fits is served and the spend stays
    within the budget (counting one choice, all eight fitted and spent about 4x the budget)."""
    cloud.config.slow_delay_s = 0.5  # all eight are in flight together
    prefix = f"nometer-test-{uuid.uuid4().hex[:8]}"
    r = redis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
    n, max_tokens, budget = 8, 1000, Decimal("0.03")
    policy = {
        "budget": {"usd_per_day": str(budget)},
        "fallback": {"models": [OPENAI_SLOW], "triggers": ["model_missing"]},
    }
    limits = {"redis_url": "redis://127.0.0.1:6379/0", "redis_prefix": prefix}
    settings = [
        gateway_settings(
            tmp_path / str(i), [fake.base_url], limits=limits, hosted=hosted_catalogue(cloud), policy=policy
        )
        for i in range(2)
    ]
    try:
        with GatewayServer(settings[0]) as a, GatewayServer(settings[1]) as b:
            # the completion part of one request's worst case; the prompt adds a few tokens
            per_request = n * max_tokens * a.runtime.meter.table.lookup("gpt-4.1-mini").output
            fits = int(budget // per_request)
            assert 1 <= fits < 4  # the budget is meant to refuse most of the burst

            async def one(c: openai.AsyncOpenAI) -> str:
                try:
                    await c.chat.completions.create(
                        model="gpt-4.1-mini", messages=USER, n=n, max_tokens=max_tokens
                    )
                    return "ok"
                except openai.RateLimitError as exc:
                    assert exc.body["code"] == "budget_exceeded"  # type: ignore[index]
                    return "refused"

            async def burst() -> list[str]:
                clients = [
                    openai.AsyncOpenAI(base_url=g.base_url, api_key="x", max_retries=0, timeout=60)
                    for g in (a, b)
                ]
                return await asyncio.gather(*(one(clients[i % 2]) for i in range(8)))

            outcomes = asyncio.run(burst())
            assert sorted(outcomes) == ["ok"] * fits + ["refused"] * (8 - fits)
            sent = cloud.requests_to("/v1/chat/completions")
            assert len(sent) == fits and all(req.body["n"] == n for req in sent)
            rows = a.wait_rows(4) + b.wait_rows(4)
            spent = sum(Decimal(row["hosted_cost_pusd"] or 0) for row in rows) / PICO
            assert per_request * fits <= spent <= budget  # every choice billed, within the budget
            counter = int(r.get(f"{prefix}:budget:-:{rows[0]['day']}") or 0)
            assert abs(Decimal(counter) * 1000 - spent * PICO) < 2000  # both replicas counted in Redis
    finally:
        for k in r.scan_iter(f"{prefix}:*"):
            r.delete(k)
        r.close()
