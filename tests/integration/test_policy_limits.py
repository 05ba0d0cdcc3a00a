"""Per-team policy on a live gateway: allowed models, request and token rate limits (in memory,
and shared through the real Redis on 127.0.0.1:6379), and a policy reload in the middle of a
stream that must not disturb it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import yaml
from openai.types.chat import ChatCompletionMessageParam

from gateway.settings import load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.ports import free_port
from tests.support.teams import ADMIN_ENV, MSG, admin, client, create_key, use_env


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


def start(tmp_path: Path, fake: FakeUpstream, teams: dict[str, Any], **over: Any) -> GatewayServer:
    s = gateway_settings(
        tmp_path,
        [fake.base_url],
        auth={"mode": "keys", "admin_key_env": ADMIN_ENV},
        teams=teams,
        aliases={"gpt-4.1": "fake-model"},
        **over,
    )
    return GatewayServer(s).start()


def test_allowed_models_and_aliases(
    tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_env(monkeypatch)
    with start(tmp_path, fake, {"web": {"models": ["gpt-4.1", "fault-*"]}}) as g:
        key, _ = create_key(g, "web")
        c = client(g, key)
        assert c.chat.completions.create(model="gpt-4.1", messages=MSG).choices  # the alias is allowed
        with pytest.raises(openai.PermissionDeniedError) as exc:
            c.chat.completions.create(model="fake-model", messages=MSG)  # its target is not
        assert exc.value.body["code"] == "model_not_allowed"  # type: ignore[index]
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(
                model="fault-500", messages=MSG
            )  # a pattern: allowed, and fails upstream
        other, _ = create_key(g, "unlisted")  # a team without an entry gets the default policy: anything
        assert client(g, other).chat.completions.create(model="fake-model", messages=MSG).choices
        listed = {m.id for m in c.models.list().data}  # a team sees only what it may use
        assert "gpt-4.1" in listed and "fault-500" in listed and "fake-model" not in listed
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("fake-model")
        assert "fake-model" in {m.id for m in client(g, other).models.list().data}
        rows = g.wait_rows(4)
        assert [(r["team"], r["outcome"], r["status"]) for r in rows] == [
            ("web", "ok", 200),
            ("web", "refused", 403),
            ("web", "upstream_error", 500),
            ("unlisted", "ok", 200),
        ]


def test_requests_per_minute_per_key_and_per_team(
    tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_env(monkeypatch)
    with start(tmp_path, fake, {"web": {"limits": {"key": {"rpm": 2}, "team": {"rpm": 3}}}}) as g:
        k1, id1 = create_key(g, "web")
        k2, _ = create_key(g, "web")
        c1, c2 = client(g, k1), client(g, k2)
        for _ in range(2):
            c1.chat.completions.create(model="fake-model", messages=MSG)
        with pytest.raises(openai.RateLimitError) as exc:
            c1.chat.completions.create(model="fake-model", messages=MSG)
        body = exc.value.body
        assert body["code"] == "rate_limit_exceeded" and body["type"] == "requests"  # type: ignore[index]
        assert id1 in body["message"]  # type: ignore[index]
        assert 1 <= int(exc.value.response.headers["retry-after"]) <= 60
        c2.chat.completions.create(model="fake-model", messages=MSG)  # the team's third
        with pytest.raises(openai.RateLimitError) as exc:
            c2.chat.completions.create(model="fake-model", messages=MSG)
        assert "team `web`" in exc.value.body["message"]  # type: ignore[index]
        assert len(fake.requests_to("/v1/chat/completions")) == 3


def test_tokens_per_minute(tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    use_env(monkeypatch)
    with start(tmp_path, fake, {"batch": {"limits": {"team": {"tpm": 100}}}}) as g:
        key, _ = create_key(g, "batch")
        c = client(g, key)
        for _ in range(2):  # admitted on the prompt estimate: 60 completion tokens are not known yet
            r = c.chat.completions.create(model="fake-model", messages=MSG, max_tokens=60)
            assert r.usage is not None and r.usage.total_tokens > 60
        # the real usage (2 x (prompt + 60)) was settled after each answer: the minute is spent
        with pytest.raises(openai.RateLimitError) as exc:
            c.chat.completions.create(model="fake-model", messages=MSG, max_tokens=60)
        assert exc.value.body["type"] == "tokens"  # type: ignore[index]
        long: list[ChatCompletionMessageParam] = [{"role": "user", "content": "w " * 500}]
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="fake-model", messages=long)


@pytest.mark.redis
def test_rate_limits_are_shared_between_replicas_through_redis(
    tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_env(monkeypatch)
    prefix = f"nometer-test-{uuid.uuid4().hex[:8]}"
    r = redis.Redis(host="127.0.0.1", port=6379)
    limits = {"redis_url": "redis://127.0.0.1:6379/0", "redis_prefix": prefix}
    teams = {"web": {"limits": {"team": {"rpm": 3}}}}
    a = start(tmp_path / "a", fake, teams, limits=limits)
    ledger = {"path": str(a.db_path), "flush_interval_ms": 20}  # one ledger: the keys are shared too
    b = GatewayServer(
        gateway_settings(
            tmp_path / "b",
            [fake.base_url],
            auth={"mode": "keys", "admin_key_env": ADMIN_ENV},
            teams=teams,
            limits=limits,
            ledger=ledger,
        )
    ).start()
    try:
        key, _ = create_key(a, "web")
        b.runtime.governance.auth.ring = a.runtime.governance.auth.ring  # no need to wait for the refresh
        client(a, key).chat.completions.create(model="fake-model", messages=MSG)
        client(b, key).chat.completions.create(model="fake-model", messages=MSG)
        client(a, key).chat.completions.create(model="fake-model", messages=MSG)
        with pytest.raises(openai.RateLimitError):
            client(b, key).chat.completions.create(model="fake-model", messages=MSG)
        counters = [k.decode() for k in r.scan_iter(f"{prefix}:rl:*")]
        assert counters and all(r.ttl(k) > 0 for k in counters)
    finally:
        a.stop()
        b.stop()
        for k in r.scan_iter(f"{prefix}:*"):
            r.delete(k)
        r.close()


@pytest.mark.redis
def test_budget_is_shared_through_redis(
    tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget counter lives in Redis (integer nano-dollars) when Redis is configured."""
    from tests.support.teams import OPENAI_FAKE, hosted_catalogue

    use_env(monkeypatch)
    prefix = f"nometer-test-{uuid.uuid4().hex[:8]}"
    r = redis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
    with FakeUpstream() as cloud:
        team = {
            "budget": {"usd_per_day": "0.004"},
            "fallback": {"models": [OPENAI_FAKE], "triggers": ["model_missing"]},
        }
        g = start(
            tmp_path,
            fake,
            {"r": team},
            hosted=hosted_catalogue(cloud),
            limits={"redis_url": "redis://127.0.0.1:6379/0", "redis_prefix": prefix},
        )
        try:
            key, _ = create_key(g, "r")
            c = client(g, key)
            c.chat.completions.create(model="gpt-4.1-mini", messages=MSG, max_tokens=1000)
            c.chat.completions.create(model="gpt-4.1-mini", messages=MSG, max_tokens=1000)
            with pytest.raises(openai.RateLimitError) as exc:
                c.chat.completions.create(model="gpt-4.1-mini", messages=MSG, max_tokens=1000)
            assert exc.value.body["code"] == "budget_exceeded"  # type: ignore[index]
            rows = g.wait_rows(3)
            spent_pico = sum(row["hosted_cost_pusd"] or 0 for row in rows)
            day = rows[0]["day"]
            stored = r.get(f"{prefix}:budget:r:{day}")
            assert stored is not None
            nano = int(stored)
            assert abs(nano * 1000 - spent_pico) < 1000 * 2  # the same money, rounded up to nano-dollars
        finally:
            g.stop()
            for k in r.scan_iter(f"{prefix}:*"):
                r.delete(k)
            r.close()


def test_reload_in_the_middle_of_a_stream(
    tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rewrite the config and reload while a stream is running: the stream finishes untouched,
    the next request gets the new policy."""
    use_env(monkeypatch)
    cfg = tmp_path / "nometer.yaml"
    cfg.write_text(yaml.safe_dump({"teams": {"web": {"models": ["fake-model"]}}}))
    overrides = {
        "server": {"port": free_port()},
        "backends": [{"url": fake.base_url}],
        "ledger": {"path": str(tmp_path / "ledger.db"), "flush_interval_ms": 20},
        "routing": {"health_interval_s": 0.5},
        "auth": {"mode": "keys", "admin_key_env": ADMIN_ENV},
    }
    with GatewayServer(load_settings(cfg, env={}, overrides=overrides)) as g:
        key, _ = create_key(g, "web")
        fake.config.chunks, fake.config.chunk_delay_s = 30, 0.05
        reloaded = threading.Event()
        result: dict[str, Any] = {}

        def reload_now() -> None:
            cfg.write_text(
                yaml.safe_dump(
                    {"teams": {"web": {"models": ["other-model"], "limits": {"key": {"rpm": 100}}}}}
                )
            )
            with admin(g) as a:
                result["reload"] = a.post("/v1/nometer/admin/reload").json()
            reloaded.set()

        text: list[str] = []
        stream = client(g, key).chat.completions.create(model="fake-model", messages=MSG, stream=True)
        for i, chunk in enumerate(stream):
            if i == 2:
                threading.Thread(target=reload_now).start()
                assert reloaded.wait(5)
            text.extend(ch.delta.content or "" for ch in chunk.choices)
        assert "".join(text) == "".join(f" w{i}" for i in range(30))  # every chunk, after the reload too
        assert result["reload"]["teams"] == ["web"]
        with pytest.raises(openai.PermissionDeniedError):
            client(g, key).chat.completions.create(model="fake-model", messages=MSG)
        rows = g.wait_rows(2)
        assert (rows[0]["outcome"], rows[0]["completion_tokens"]) == ("ok", 30)
        # a broken file is refused and the running policy stays
        cfg.write_text("teams: [not, a, mapping")
        with admin(g) as a:
            bad = a.post("/v1/nometer/admin/reload")
        assert bad.status_code == 400 and "not reloaded" in bad.json()["error"]["message"]
        with pytest.raises(openai.PermissionDeniedError):
            client(g, key).chat.completions.create(model="fake-model", messages=MSG)


def test_without_policy_nothing_changes(tmp_path: Path, fake: FakeUpstream) -> None:
    """No keys, no teams: any key or none works, no ledger row has a team."""
    with GatewayServer(gateway_settings(tmp_path, [fake.base_url])) as g:
        for key in ("unused", "sk-anything"):
            assert client(g, key).chat.completions.create(model="fake-model", messages=MSG).choices
        assert (
            httpx.post(
                g.base_url + "/chat/completions", json={"model": "fake-model", "messages": MSG}
            ).status_code
            == 200
        )
        assert [r["team"] for r in g.wait_rows(3)] == [None, None, None]
        assert g.runtime.governance.gate.hosted is None
        t0 = time.monotonic()
        assert httpx.get(g.url + "/v1/nometer/usage").status_code == 200
        assert time.monotonic() - t0 < 5
