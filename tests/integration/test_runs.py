"""Agent runs have a price: ``X-Nometer-Run`` per row, ``GET /v1/nometer/runs/{id}`` and
``nometer runs`` equal to the sum of the run's receipts, failed requests included."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.meter.shadow import pico
from tests.support.agents import receipt_totals
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.teams import ADMIN_ENV, ADMIN_KEY, create_key, use_env
from tests.support.vllm import VllmServer

MSG = [{"role": "user", "content": "Write a haiku about ledgers."}]


def test_run_totals_equal_the_sum_of_its_receipts(vllm_chat: VllmServer, tmp_path: Path) -> None:
    settings = gateway_settings(
        tmp_path,
        [vllm_chat.base_url],
        aliases={"gpt-4.1": "tiny-llama"},
        timeouts={"connect_s": 2, "read_s": 60},
    )
    run = "nightly-42"
    tag = {"x-nometer-run": run}
    with GatewayServer(settings) as gw, httpx.Client(base_url=gw.url, timeout=60) as c:
        chat = {"model": "gpt-4.1", "messages": MSG, "max_tokens": 6}
        ok = [
            c.post("/v1/chat/completions", json=chat, headers={**tag, "x-nometer-session": "s1"}),
            c.post(
                "/v1/chat/completions",
                json={**chat, "stream": True},
                headers={**tag, "x-nometer-session": "s1"},
            ),
            c.post(
                "/v1/messages",
                json={**chat, "model": "tiny-llama"},
                headers={**tag, "x-nometer-session": "s2"},
            ),
            c.post("/v1/messages/count_tokens", json={"model": "tiny-llama", "messages": MSG}, headers=tag),
        ]
        assert [r.status_code for r in ok] == [200, 200, 200, 200]
        too_long = c.post("/v1/chat/completions", json={**chat, "max_tokens": 10**6}, headers=tag)
        assert too_long.status_code == 400  # vLLM refuses it: a failed request of the run
        with c.stream(
            "POST", "/v1/chat/completions", json={**chat, "max_tokens": 400, "stream": True}, headers=tag
        ) as r:
            next(r.iter_raw())  # the client leaves mid-answer: failed (client_gone), estimated, metered
        c.post("/v1/chat/completions", json=chat, headers={"x-nometer-run": "another-run"})
        rows = gw.wait_rows(7, "WHERE run_id IS NOT NULL")
        assert len(rows) == 7, rows
        requests, failed, cloud, local = receipt_totals(gw, run)
        assert (requests, failed) == (6, 2)
        totals = c.get(f"/v1/nometer/runs/{run}").json()
        assert totals["requests"] == requests and totals["failed_requests"] == failed
        assert totals["sessions"] == 2 and totals["metered_requests"] == 4
        assert pico(totals["local"]["total_usd"]) == local
        assert {r["model"]: pico(r["cloud_usd"]) for r in totals["references"]} == cloud
        assert totals["references"][0]["model"] == "gpt-4.1"
        assert all(
            Decimal(r["savings_usd"]) == Decimal(r["cloud_usd"]) - Decimal(totals["local"]["total_usd"])
            for r in totals["references"]
        )
        assert totals["tokens"]["total"] == sum(
            (r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0)
            for r in gw.rows("WHERE run_id = ?", (run,))
        )
        assert c.get("/v1/nometer/runs/no-such-run").status_code == 404
    cli = subprocess.run(
        [sys.executable, "-m", "gateway", "runs", "--db", str(gw.db_path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = [orjson.loads(line) for line in cli.stdout.splitlines()]
    assert {r["run_id"] for r in listed} == {run, "another-run"}
    assert next(r for r in listed if r["run_id"] == run) == totals
    table = subprocess.run(
        [sys.executable, "-m", "gateway", "runs", "--db", str(gw.db_path), "--since", "1h"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert run in table and "gpt-4.1" in table and totals["local"]["total_usd"] in table


@pytest.fixture
def keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GatewayServer, FakeUpstream]]:
    use_env(monkeypatch)
    with FakeUpstream() as fake:
        s = gateway_settings(tmp_path, [fake.base_url], auth={"mode": "keys", "admin_key_env": ADMIN_ENV})
        with GatewayServer(s) as gw:
            yield gw, fake


def test_a_team_key_sees_only_its_teams_requests_of_a_run(keyed: tuple[GatewayServer, FakeUpstream]) -> None:
    gw, _ = keyed
    alpha, _ = create_key(gw, "alpha")
    beta, _ = create_key(gw, "beta")
    body = {"model": "fake-model", "messages": MSG}
    for key in (alpha, alpha, beta):
        r = httpx.post(
            gw.base_url + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}", "x-nometer-run": "shared"},
        )
        assert r.status_code == 200
    gw.wait_rows(3)
    see = {
        name: httpx.get(gw.url + "/v1/nometer/runs/shared", headers={"authorization": f"Bearer {key}"})
        for name, key in (("alpha", alpha), ("beta", beta), ("admin", ADMIN_KEY))
    }
    assert {k: r.json()["requests"] for k, r in see.items()} == {"alpha": 2, "beta": 1, "admin": 3}
    assert httpx.get(gw.url + "/v1/nometer/runs/shared").status_code == 401  # keys mode: no key, no data
