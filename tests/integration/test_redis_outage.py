"""Redis down or frozen under a live gateway: the configured behaviour, within the timeout, and a
ledger row for every request. The shared Redis is never touched: the gateway reaches it through a
fault-injecting TCP proxy (``tests.support.chaos_proxy``) that the tests break and mend.

Also the hot path's error boundary on a live gateway: an unexpected exception is an OpenAI
envelope (or an in-band error once a stream started), logged, with one ledger row."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from gateway.http.sse import UsageChunkFilter
from tests.support.chaos_proxy import ChaosProxy, Mode
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.teams import MSG, OPENAI_FAKE, hosted_catalogue, use_env

pytestmark = pytest.mark.redis
REDIS_PORT = 6379
# the client waits at most this long: far below the old 5 s socket timeout (times its retries)
CLIENT_TIMEOUT_S = 3.0


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def fault() -> Iterator[ChaosProxy]:
    with ChaosProxy(REDIS_PORT) as p:
        yield p


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"nometer-test-{uuid.uuid4().hex[:8]}"
    yield name
    r = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
    for k in r.scan_iter(f"{name}:*"):
        r.delete(k)
    r.close()


def settings(
    tmp_path: Path, fake: FakeUpstream, fault: ChaosProxy, prefix: str, policy: dict[str, Any], **over: Any
) -> Any:
    limits = {
        "redis_url": f"redis://127.0.0.1:{fault.port}/0",
        "redis_prefix": prefix,
        "redis_timeout_s": 0.5,  # generous: this machine is shared; production default 0.25
        "redis_retry_s": 0.5,
    }
    return gateway_settings(tmp_path, [fake.base_url], limits=limits, policy=policy, **over)


def chat(
    g: GatewayServer, rid: str, model: str = "fake-model", timeout: float = CLIENT_TIMEOUT_S, **extra: Any
) -> httpx.Response:
    return httpx.post(
        g.base_url + "/chat/completions",
        json={"model": model, "messages": MSG, **extra},
        headers={"x-request-id": rid},
        timeout=timeout,
    )


def store_errors(g: GatewayServer, store: str, action: str) -> float:
    text = httpx.get(g.url + "/metrics").text
    want = f'nometer_policy_store_errors_total{{action="{action}",store="{store}"}} '
    line = next((ln for ln in text.splitlines() if ln.startswith(want)), None)
    return float(line.split()[-1]) if line else 0.0


@pytest.mark.parametrize("fault_mode", ["down", "freeze"])
def test_rate_limits_fail_open_by_default(
    tmp_path: Path,
    fake: FakeUpstream,
    fault: ChaosProxy,
    prefix: str,
    fault_mode: Mode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis unreachable: a rate-limited team is served (unlimited), loudly: the metric counts
    every such request and the log says so; each request has its ledger row."""
    policy = {"limits": {"team": {"rpm": 3}}}
    with GatewayServer(settings(tmp_path, fake, fault, prefix, policy)) as g:
        assert chat(g, "before").status_code == 200  # Redis counts this one
        fault.set_mode(fault_mode)
        rids = [f"{fault_mode}-{i}" for i in range(5)]  # more than the 3 rpm: nothing is counted
        for rid in rids:
            r = chat(g, rid)
            assert r.status_code == 200, r.text
        for rid in rids:
            row = g.row(rid)
            assert (row["outcome"], row["status"]) == ("ok", 200)
        assert store_errors(g, "rate_limits", "fail_open") == 5
        assert any("served WITHOUT the check (fail open)" in r.getMessage() for r in caplog.records)
        fault.set_mode("pass")
        time.sleep(0.6)  # the link's retry period (redis_retry_s) runs out
        # limited again: within the 3 rpm a 429 comes (sooner if the frozen commands, held in the
        # network, reached Redis late), and Redis answered every check (no new failure)
        statuses = [chat(g, f"after-{i}").status_code for i in range(3)]
        assert statuses[-1] == 429 and set(statuses) <= {200, 429}
        assert store_errors(g, "rate_limits", "fail_open") == 5


@pytest.mark.parametrize("fault_mode", ["down", "freeze"])
def test_rate_limits_fail_closed_when_the_policy_says_so(
    tmp_path: Path, fake: FakeUpstream, fault: ChaosProxy, prefix: str, fault_mode: Mode
) -> None:
    policy = {"limits": {"team": {"rpm": 100}, "fail": "closed"}}
    with GatewayServer(settings(tmp_path, fake, fault, prefix, policy)) as g:
        fault.set_mode(fault_mode)
        for i in range(3):
            r = chat(g, f"closed-{i}")
            assert r.status_code == 503 and r.headers["content-type"] == "application/json"
            err = r.json()["error"]
            assert err["code"] == "rate_limits_unavailable" and err["type"] == "service_unavailable_error"
            assert r.headers["retry-after"] == "1" and r.headers["x-request-id"] == f"closed-{i}"
            row = g.row(f"closed-{i}")
            assert (row["outcome"], row["status"], row["error"][:11]) == ("refused", 503, "Rate limits")
        assert fake.requests_to("/v1/chat/completions") == []
        assert store_errors(g, "rate_limits", "fail_closed") == 3


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeUpstream]:
    """The "OpenAI" provider of the hosted fallback, with litellm imported before the gateway
    starts (seconds on a loaded machine; once per process)."""
    from adapters.hosted import load

    load()
    use_env(monkeypatch)
    with FakeUpstream() as f:
        yield f


def hosted_gateway(
    tmp_path: Path, fake: FakeUpstream, fault: ChaosProxy, prefix: str, cloud: FakeUpstream, **budget: Any
) -> GatewayServer:
    policy = {
        "budget": {"usd_per_day": "5", **budget},
        "fallback": {"models": [OPENAI_FAKE], "triggers": ["model_missing"]},
    }
    return GatewayServer(settings(tmp_path, fake, fault, prefix, policy, hosted=hosted_catalogue(cloud)))


def hosted_chat(g: GatewayServer, rid: str) -> httpx.Response:
    return chat(g, rid, model="gpt-4.1-mini", timeout=30, max_tokens=5)  # the first call warms litellm up


@pytest.mark.parametrize("fault_mode", ["down", "freeze"])
def test_hosted_budget_fails_closed_by_default(
    tmp_path: Path, fake: FakeUpstream, fault: ChaosProxy, prefix: str, fault_mode: Mode, cloud: FakeUpstream
) -> None:
    """Nobody can count the money: no hosted request is sent, the client gets a clear 503."""
    with hosted_gateway(tmp_path, fake, fault, prefix, cloud) as g:
        assert hosted_chat(g, "hosted-ok").status_code == 200
        fault.set_mode(fault_mode)
        r = chat(g, "hosted-refused", model="gpt-4.1-mini", max_tokens=5)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "budget_unavailable"
        assert len(cloud.requests_to("/v1/chat/completions")) == 1  # only the first one
        row = g.row("hosted-refused")
        assert (row["outcome"], row["status"], row["route"]) == ("refused", 503, "hosted")
        assert g.row("hosted-ok")["outcome"] == "ok"
        assert store_errors(g, "budgets", "fail_closed") == 1


def test_hosted_budget_may_fail_open(
    tmp_path: Path, fake: FakeUpstream, fault: ChaosProxy, prefix: str, cloud: FakeUpstream
) -> None:
    with hosted_gateway(tmp_path, fake, fault, prefix, cloud, fail="open") as g:
        fault.set_mode("down")
        r = hosted_chat(g, "unbudgeted")
        assert r.status_code == 200 and r.headers["x-nometer-route"] == "hosted"
        row = g.row("unbudgeted")
        assert (row["outcome"], row["route"]) == ("ok", "hosted") and row["hosted_cost_pusd"] > 0
        assert store_errors(g, "budgets", "fail_open") == 1


def test_an_unexpected_error_is_an_envelope_and_a_ledger_row(
    tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with GatewayServer(gateway_settings(tmp_path, [fake.base_url])) as g:

        async def broken_admit(*args: Any) -> Any:
            raise RuntimeError("a bug in admission")

        monkeypatch.setattr(g.runtime.governance.gate, "admit", broken_admit)
        r = chat(g, "bug-1")
        assert r.status_code == 500 and r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == "internal_error" and "a bug" not in r.text
        row = g.row("bug-1")
        assert (row["outcome"], row["status"], row["requested_model"]) == ("gateway_error", 500, "fake-model")
        assert "RuntimeError: a bug in admission" in row["error"]
        logged = [rec for rec in caplog.records if rec.name == "nometer.proxy"]
        assert logged and getattr(logged[-1], "request_id", None) == "bug-1"


def test_an_unexpected_error_mid_stream_is_sent_in_band(
    tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    with GatewayServer(gateway_settings(tmp_path, [fake.base_url])) as g:
        real = UsageChunkFilter.feed
        calls = {"n": 0}

        def feed(self: UsageChunkFilter, data: bytes) -> bytes:
            calls["n"] += 1
            if calls["n"] == 3:
                raise ValueError("a bug in the relay")
            return real(self, data)

        monkeypatch.setattr(UsageChunkFilter, "feed", feed)
        body = {"model": "fake-model", "messages": MSG, "stream": True}
        with httpx.stream(
            "POST",
            g.base_url + "/chat/completions",
            json=body,
            headers={"x-request-id": "bug-2", "x-fake-chunk-delay-ms": "20"},
        ) as r:
            assert r.status_code == 200
            events = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        err = orjson.loads(events[-2][len("data: ") :])["error"]
        assert err["code"] == "internal_error"
        row = g.row("bug-2")
        assert (row["outcome"], row["status"], row["stream"]) == ("gateway_error", 200, 1)
