"""Hosted fallback through litellm, against local servers speaking the providers' protocols:
a FakeUpstream as "OpenAI" and a FakeAnthropic as "Anthropic" (``api_base`` on 127.0.0.1).

Each trigger (unavailable, overloaded, model_missing, context_too_long), streaming and not, the
ledger (route, provider, cause, cost priced with the meter's table), local_only, and budgets."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.http.hosted import usage_cost
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.teams import (
    CLAUDE,
    MSG,
    OPENAI_FAKE,
    OPENAI_SLOW,
    async_client,
    client,
    create_key,
    hosted_catalogue,
    use_env,
)

ALL = ["unavailable", "overloaded", "model_missing", "context_too_long"]
PICO = Decimal(10) ** 12


@pytest.fixture
def local() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def cloud() -> Iterator[FakeUpstream]:
    """The "OpenAI" provider."""
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as f:
        yield f


def start(
    tmp_path: Path,
    local: FakeUpstream,
    cloud: FakeUpstream,
    anthropic: FakeAnthropic | None,
    policy: dict[str, Any],
    **over: Any,
) -> GatewayServer:
    overload = over.pop("overload", {})
    s = gateway_settings(
        tmp_path,
        [local.base_url],
        hosted=hosted_catalogue(cloud, anthropic, **overload),
        policy=policy,
        **over,
    )
    return GatewayServer(s).start()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, anthropic: FakeAnthropic) -> None:
    use_env(monkeypatch, anthropic)


def priced(gw: GatewayServer, name: str, usage: dict[str, Any]) -> Decimal:
    table = gw.runtime.meter.table
    cost = usage_cost(table.lookup(name), usage)
    assert cost is not None and cost > 0
    return cost


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_model_missing_falls_back_and_ledger_has_route_provider_cause_cost(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, env: None
) -> None:
    with start(tmp_path, local, cloud, None, {"fallback": {"models": [OPENAI_FAKE], "triggers": ALL}}) as g:
        raw = client(g).chat.completions.with_raw_response.create(
            model="gpt-5-nano", messages=MSG, max_tokens=5
        )
        r = raw.parse()
        assert raw.headers["x-nometer-route"] == "hosted"
        assert raw.headers["x-nometer-fallback-cause"] == "model_missing"
        assert r.object == "chat.completion" and r.choices[0].message.content == " w0 w1 w2 w3 w4"
        assert r.usage is not None and r.usage.completion_tokens == 5
        sent = cloud.requests_to("/v1/chat/completions")[-1]
        assert sent.body["model"] == "fake-model" and sent.headers["authorization"] == "Bearer sk-fake-openai"
        assert local.requests_to("/v1/chat/completions") == []
        row = g.row(raw.headers["x-request-id"])
        assert (row["route"], row["provider"], row["fallback_cause"], row["outcome"], row["status"]) == (
            "hosted",
            "openai",
            "model_missing",
            "ok",
            200,
        )
        assert (row["requested_model"], row["served_model"]) == ("gpt-5-nano", OPENAI_FAKE)
        assert row["prompt_tokens"] == r.usage.prompt_tokens and row["completion_tokens"] == 5
        expected = priced(g, "gpt-4.1-mini", r.usage.model_dump())
        assert Decimal(row["hosted_cost_pusd"]) / PICO == expected
        assert row["price_table_id"] is None  # hosted requests are billed, not shadow-metered
        # a served model stays local
        raw = client(g).chat.completions.with_raw_response.create(model="fake-model", messages=MSG)
        assert "x-nometer-route" not in raw.headers
        assert g.row(raw.headers["x-request-id"])["route"] == "local"


def test_model_missing_is_not_a_trigger_by_default(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, env: None
) -> None:
    with start(tmp_path, local, cloud, None, {"fallback": {"models": [OPENAI_FAKE]}}) as g:
        with pytest.raises(openai.NotFoundError) as exc:
            client(g).chat.completions.create(model="gpt-5-nano", messages=MSG)
        assert exc.value.body["code"] == "model_not_found"  # type: ignore[index]
        assert cloud.requests == []


def test_unavailable_backend_falls_back_streaming_through_anthropic(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, anthropic: FakeAnthropic, env: None
) -> None:
    with start(
        tmp_path, local, cloud, anthropic, {"fallback": {"models": [CLAUDE], "triggers": ["unavailable"]}}
    ) as g:
        local.stop()
        wait_for(lambda: not g.runtime.router.backends[0].healthy)
        chunks = list(
            client(g).chat.completions.create(
                model="fake-model",
                messages=MSG,
                stream=True,
                max_tokens=4,
                stream_options={"include_usage": True},
            )
        )
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == " w0 w1 w2 w3"
        usage = chunks[-1].usage
        assert usage is not None and chunks[-1].choices == [] and usage.completion_tokens == 4
        sent = anthropic.requests[-1]
        assert sent.body["model"] == "claude-haiku-4-5" and sent.body["stream"] is True
        assert sent.headers["x-api-key"] == anthropic.config.api_key
        row = g.wait_rows(1)[-1]
        assert (row["route"], row["provider"], row["fallback_cause"], row["stream"]) == (
            "hosted",
            "anthropic",
            "unavailable",
            1,
        )
        assert row["completion_tokens"] == 4 and row["prompt_tokens"] == usage.prompt_tokens
        assert Decimal(row["hosted_cost_pusd"]) / PICO == priced(g, "claude-haiku-4-5", usage.model_dump())
        # without include_usage the client gets no usage chunk; the ledger still gets the usage
        chunks = list(
            client(g).chat.completions.create(model="fake-model", messages=MSG, stream=True, max_tokens=3)
        )
        assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
        assert g.wait_rows(2)[-1]["completion_tokens"] == 3
        # non-streaming, OpenAI-shaped whatever the provider
        r = client(g).chat.completions.create(model="fake-model", messages=MSG, max_tokens=2)
        assert r.object == "chat.completion" and r.choices[0].message.content == " w0 w1"
        assert r.choices[0].finish_reason == "length"


def test_connection_failure_at_send_time_falls_back(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, env: None
) -> None:
    with start(
        tmp_path,
        local,
        cloud,
        None,
        {"fallback": {"models": [OPENAI_FAKE], "triggers": ["unavailable"]}},
        routing={"health_interval_s": 60},
    ) as g:
        local.stop()  # still believed healthy: the proxy finds out when it connects
        raw = client(g).chat.completions.with_raw_response.create(model="fake-model", messages=MSG)
        assert raw.headers["x-nometer-fallback-cause"] == "unavailable"
        row = g.row(raw.headers["x-request-id"])
        assert (row["route"], row["fallback_cause"], row["backend"]) == ("hosted", "unavailable", None)


def test_overloaded_backend_falls_back_from_vllm_metrics(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, env: None
) -> None:
    with start(
        tmp_path,
        local,
        cloud,
        None,
        {"fallback": {"models": [OPENAI_FAKE], "triggers": ["overloaded"]}},
        overload={"max_waiting": 2, "max_kv_cache_usage": 0.9},
    ) as g:
        backend = g.runtime.router.backends[0]
        assert backend.waiting == 0
        local.config.waiting = 5
        wait_for(lambda: backend.waiting == 5)
        raw = client(g).chat.completions.with_raw_response.create(model="fake-model", messages=MSG)
        assert raw.headers["x-nometer-fallback-cause"] == "overloaded"
        local.config.waiting, local.config.kv_cache_usage = 0, 0.95
        wait_for(lambda: backend.waiting == 0)
        raw = client(g).chat.completions.with_raw_response.create(model="fake-model", messages=MSG)
        assert raw.headers["x-nometer-fallback-cause"] == "overloaded"
        local.config.kv_cache_usage = 0.5
        wait_for(lambda: backend.kv_cache_usage == 0.5)
        raw = client(g).chat.completions.with_raw_response.create(model="fake-model", messages=MSG)
        assert "x-nometer-route" not in raw.headers
        causes = [r["fallback_cause"] for r in g.wait_rows(3)]
        assert causes == ["overloaded", "overloaded", None]


def test_prompt_longer_than_max_model_len_falls_back(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, env: None
) -> None:
    local.config.max_model_len = 64
    with start(
        tmp_path,
        local,
        cloud,
        None,
        {"fallback": {"models": [OPENAI_FAKE], "triggers": ["context_too_long"]}},
    ) as g:
        assert g.runtime.router.backends[0].max_model_len["fake-model"] == 64
        c = client(g)
        short = c.chat.completions.with_raw_response.create(model="fake-model", messages=MSG, max_tokens=8)
        assert "x-nometer-route" not in short.headers
        long_prompt: list[ChatCompletionMessageParam] = [{"role": "user", "content": "word " * 100}]
        raw = c.chat.completions.with_raw_response.create(
            model="fake-model", messages=long_prompt, max_tokens=8
        )
        assert raw.headers["x-nometer-fallback-cause"] == "context_too_long"
        # prompt + max_tokens must fit, as vLLM checks it
        raw = c.chat.completions.with_raw_response.create(model="fake-model", messages=MSG, max_tokens=60)
        assert raw.headers["x-nometer-fallback-cause"] == "context_too_long"
        assert len(local.requests_to("/v1/chat/completions")) == 1


def test_next_hosted_model_when_the_first_fails(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, anthropic: FakeAnthropic, env: None
) -> None:
    with start(
        tmp_path,
        local,
        cloud,
        anthropic,
        {"fallback": {"models": ["anthropic/fault-overloaded", OPENAI_FAKE], "triggers": ALL}},
    ) as g:
        r = client(g).chat.completions.create(model="nope", messages=MSG, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in r if c.choices)
        assert [q.body["model"] for q in anthropic.requests] == ["fault-overloaded"]
        row = g.wait_rows(1)[-1]
        assert (row["provider"], row["served_model"], row["outcome"]) == ("openai", OPENAI_FAKE, "ok")
        cloud.stop()  # now both fail: one OpenAI-shaped 502, nothing streamed
        with pytest.raises(openai.APIStatusError) as exc:
            client(g).chat.completions.create(model="nope", messages=MSG, stream=True)
        assert exc.value.status_code == 502
        assert exc.value.body["code"] == "hosted_fallback_failed"  # type: ignore[index]


def test_local_only_team_is_refused_and_nothing_leaves_the_box(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, anthropic: FakeAnthropic, env: None
) -> None:
    team = {"local_only": True, "fallback": {"models": [OPENAI_FAKE, CLAUDE], "triggers": ALL}}
    with start(
        tmp_path,
        local,
        cloud,
        anthropic,
        {"fallback": {"models": [OPENAI_FAKE], "triggers": ALL}},
        auth={"admin_key_env": "NOMETER_TEST_ADMIN_KEY"},
        teams={"private": team},
    ) as g:
        key, key_id = create_key(g, "private")
        c = client(g, key)
        assert c.chat.completions.create(model="fake-model", messages=MSG).choices  # local: fine
        with pytest.raises(openai.InternalServerError) as exc:
            c.chat.completions.create(model="gpt-4.1", messages=MSG)
        assert exc.value.status_code == 503
        assert exc.value.body["code"] == "local_only_unavailable"  # type: ignore[index]
        assert "local_only" in exc.value.body["message"]  # type: ignore[index]
        local.stop()
        wait_for(lambda: not g.runtime.router.backends[0].healthy)
        with pytest.raises(openai.InternalServerError) as exc:
            c.chat.completions.create(model="fake-model", messages=MSG, stream=True)
        assert exc.value.body["code"] == "local_only_unavailable"  # type: ignore[index]
        assert cloud.requests_to("/v1/chat/completions") == [] and anthropic.requests == []
        # an anonymous caller (open mode) gets the default policy, which does fall back
        assert client(g).chat.completions.create(model="fake-model", messages=MSG).choices
        rows = g.wait_rows(4)
        assert [(r["team"], r["route"], r["outcome"]) for r in rows] == [
            ("private", "local", "ok"),
            ("private", "local", "refused"),
            ("private", "local", "refused"),
            (None, "hosted", "ok"),
        ]
        assert rows[1]["status"] == 503 and rows[1]["key_id"] == key_id


def test_budget_holds_under_concurrency(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, env: None
) -> None:
    """Eight concurrent fallbacks against a budget that fits three: exactly three are served, the
    rest get 429 budget_exceeded, and the spend never exceeds the budget plus one reservation."""
    cloud.config.slow_delay_s = 0.5  # all eight are in flight together
    budget = Decimal("0.005")
    team = {"budget": {"usd_per_day": str(budget)}, "fallback": {"models": [OPENAI_SLOW], "triggers": ALL}}
    with start(
        tmp_path,
        local,
        cloud,
        None,
        {},
        auth={"admin_key_env": "NOMETER_TEST_ADMIN_KEY"},
        teams={"research": team},
    ) as g:
        key, _ = create_key(g, "research")
        c = async_client(g, key)

        async def one() -> str:
            try:
                await c.chat.completions.create(model="gpt-4.1-mini", messages=MSG, max_tokens=1000)
                return "ok"
            except openai.RateLimitError as exc:
                assert exc.body["code"] == "budget_exceeded"  # type: ignore[index]
                assert int(exc.response.headers["retry-after"]) > 0
                return "refused"

        async def burst() -> list[str]:
            return await asyncio.gather(*(one() for _ in range(8)))

        outcomes = asyncio.run(burst())
        assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 5
        rows = g.wait_rows(8)
        spent = sum(Decimal(r["hosted_cost_pusd"] or 0) for r in rows) / PICO
        table = g.runtime.meter.table
        reservation = Decimal(1000) * table.lookup("gpt-4.1-mini").output
        assert 0 < spent <= budget + reservation
        assert spent <= budget  # the fake's usage is below the estimate: no overspend at all here
        assert len(cloud.requests_to("/v1/chat/completions")) == 3
        refused = [r for r in rows if r["outcome"] == "refused"]
        assert len(refused) == 5 and all(r["status"] == 429 and r["team"] == "research" for r in refused)
        with httpx.Client(base_url=g.url, headers={"authorization": f"Bearer {key}"}) as h:
            view = h.get("/v1/nometer/usage").json()
        day = next(iter(view["budget"]))
        assert Decimal(view["budget"][day]["committed_usd"]) == spent


def test_budget_without_max_tokens_caps_the_hosted_call(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, env: None
) -> None:
    policy = {
        "budget": {"usd_per_month": "1", "assume_max_tokens": 7},
        "fallback": {"models": [OPENAI_FAKE], "triggers": ALL},
    }
    with start(tmp_path, local, cloud, None, policy) as g:
        r = client(g).chat.completions.create(model="gpt-4.1-mini", messages=MSG)
        assert r.usage is not None and r.usage.completion_tokens == 7
        assert cloud.requests_to("/v1/chat/completions")[-1].body["max_tokens"] == 7


def test_client_leaving_a_hosted_stream_closes_the_provider_connection(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, env: None
) -> None:
    cloud.config.chunk_delay_s = 0.02
    with start(tmp_path, local, cloud, None, {"fallback": {"models": [OPENAI_FAKE], "triggers": ALL}}) as g:
        with httpx.stream(
            "POST",
            g.base_url + "/chat/completions",
            timeout=10,
            json={"model": "nope", "messages": MSG, "stream": True, "max_tokens": 300},
        ) as r:
            for _ in r.iter_raw():
                break
        cloud.wait_for_disconnects(1, timeout=5)
        row = g.wait_rows(1)[-1]
        assert (row["route"], row["outcome"]) == ("hosted", "client_gone")
        assert row["hosted_cost_pusd"] > 0  # what was streamed is charged (estimated)


def test_report_shows_hosted_spend_by_cause_per_team(
    tmp_path: Path, local: FakeUpstream, cloud: FakeUpstream, env: None
) -> None:
    team = {"fallback": {"models": [OPENAI_FAKE], "triggers": ALL}}
    with start(
        tmp_path,
        local,
        cloud,
        None,
        {},
        auth={"admin_key_env": "NOMETER_TEST_ADMIN_KEY"},
        teams={"a": team, "b": team},
        overload={"max_waiting": 1},
    ) as g:
        ka, _ = create_key(g, "a")
        kb, _ = create_key(g, "b")
        client(g, ka).chat.completions.create(model="missing-1", messages=MSG)
        client(g, ka).chat.completions.create(model="missing-2", messages=MSG)
        client(g, kb).chat.completions.create(model="missing-3", messages=MSG)
        local.config.waiting = 3
        wait_for(lambda: g.runtime.router.backends[0].waiting == 3)
        client(g, kb).chat.completions.create(model="fake-model", messages=MSG)
        rows = g.wait_rows(4)
        report = httpx.get(
            g.url + "/v1/nometer/report?by=team", headers={"authorization": "Bearer nm-admin-test-secret"}
        ).json()
        groups = {gr["key"]: gr for gr in report["groups"]}
        assert set(groups["a"]["hosted_spend_by_cause"]) == {"model_missing"}
        assert groups["a"]["hosted_spend_by_cause"]["model_missing"]["requests"] == 2
        assert set(groups["b"]["hosted_spend_by_cause"]) == {"model_missing", "overloaded"}
        total = sum(Decimal(r["hosted_cost_pusd"]) for r in rows) / PICO
        assert Decimal(report["totals"]["hosted_spend_usd"]) == total


def test_no_fallback_configured_never_imports_litellm(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from gateway.app import create_app\n"
        "from gateway.settings import load_settings\n"
        f"s = load_settings(env={{}}, overrides={{'ledger': {{'path': {str(tmp_path / 'l.db')!r}}}}})\n"
        "create_app(s)\n"
        "assert 'litellm' not in sys.modules and 'adapters.hosted' not in sys.modules, 'litellm imported'\n"
        f"s = load_settings(env={{}}, overrides={{'ledger': {{'path': {str(tmp_path / 'l.db')!r}}}, "
        "'policy': {'fallback': {'models': ['openai/gpt-4.1-mini']}}})\n"
        "create_app(s)\n"
        "assert 'adapters.hosted' in sys.modules and 'litellm' not in sys.modules, 'imported before start'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
