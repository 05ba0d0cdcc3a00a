"""The ledger on a REAL PostgreSQL (127.0.0.1:5432, trust auth): two gateway replicas share it,
migrate it once, and the report and CLI read the same numbers as from SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.ledger import schema
from gateway.ledger.report import PICO
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.postgres import PG_PORT, fresh_database

pytestmark = pytest.mark.postgres
MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "count to three"}]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as name:
        yield f"postgresql://127.0.0.1:{PG_PORT}/{name}"


def test_two_replicas_share_one_ledger(tmp_path: Path, pg_url: str) -> None:
    with FakeUpstream() as fake:
        gws = [
            GatewayServer(
                gateway_settings(
                    tmp_path / str(i),
                    [fake.base_url],
                    ledger={"url": pg_url, "path": str(tmp_path / f"{i}.db")},
                )
            ).start()
            for i in range(2)
        ]
        try:
            for i, g in enumerate(gws):
                c = openai.OpenAI(base_url=g.base_url, api_key="x", max_retries=0)
                for _ in range(3):
                    c.chat.completions.create(
                        model="fake-model", messages=MSG, extra_headers={"x-nometer-tag": f"replica-{i}"}
                    )
                list(
                    c.chat.completions.create(
                        model="fake-model",
                        messages=MSG,
                        stream=True,
                        extra_headers={"x-nometer-tag": f"replica-{i}"},
                    )
                )
        finally:
            for g in gws:
                g.stop()  # drains both recorders into PostgreSQL
        with GatewayServer(
            gateway_settings(
                tmp_path / "r", [fake.base_url], ledger={"url": pg_url, "path": str(tmp_path / "r.db")}
            )
        ) as g2:
            rep = httpx.get(g2.url + "/v1/nometer/report", params={"by": "tag"}).json()

    import asyncio

    async def read() -> tuple[int, list[asyncpg.Record], list[asyncpg.Record]]:
        conn = await asyncpg.connect(pg_url)
        try:
            version = await conn.fetchval("SELECT MAX(version) FROM schema_version")
            events = await conn.fetch("SELECT * FROM usage_events")
            shadows = await conn.fetch("SELECT * FROM shadow_costs")
            # migrated once: one row per migration (numbers may have gaps: 7 is reserved)
            assert await conn.fetchval("SELECT COUNT(*) FROM schema_version") == len(schema.MIGRATIONS)
            return version, events, shadows
        finally:
            await conn.close()

    version, events, shadows = asyncio.run(read())
    assert version >= 2 and len(events) == 8 and all(e["usage_source"] == "upstream" for e in events)
    assert [grp["key"] for grp in rep["groups"]] == ["replica-0", "replica-1"]
    assert [grp["requests"] for grp in rep["groups"]] == [4, 4]
    for ref in rep["references"]:
        want = sum(Decimal(s["cloud_pusd"]) for s in shadows if s["ref_model"] == ref) / PICO
        assert Decimal(rep["totals"]["cloud_cost_usd"][ref]) == want > 0
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "report",
            "--db",
            pg_url,
            "--by",
            "tag",
            "--format",
            "json",
            "--config",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    # the all-in figures run to "now", which moved between the two reports: the rest is identical
    marginal = [{k: v for k, v in g.items() if not k.startswith("all_in")} for g in rep["groups"]]
    cli = [
        {k: v for k, v in g.items() if not k.startswith("all_in")} for g in json.loads(out.stdout)["groups"]
    ]
    assert cli == marginal
    usage = subprocess.run(
        [sys.executable, "-m", "gateway", "usage", "--db", pg_url, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert len(usage.stdout.splitlines()) == 8
    verify = subprocess.run(
        [sys.executable, "-m", "gateway", "verify", "--db", pg_url, "--config", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert verify.returncode == 0 and "8 of 8 receipts recomputed identically" in verify.stdout, (
        verify.stdout + verify.stderr
    )
    # two replicas, two chains, no contention
    assert "CLEAN: " in verify.stdout and "in 2 chain(s) checked" in verify.stdout, (
        verify.stdout + verify.stderr
    )


def until_accepted(c: openai.OpenAI, within_s: float = 5.0) -> Any:
    """The first answer once ``c``'s key is accepted (a new key reaches a replica by polling)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return c.chat.completions.create(model="fake-model", messages=MSG)
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "a new key was not accepted within the refresh bound"
            time.sleep(0.1)


def test_replicas_share_keys_through_postgres(tmp_path: Path, pg_url: str) -> None:
    """Keys live in the PostgreSQL ledger: a key made on one replica (or by the CLI) works on
    every replica, and disabling it anywhere stops it everywhere."""
    import os

    env_key = "NOMETER_TEST_ADMIN"
    os.environ[env_key] = "admin-secret-123"
    try:
        with FakeUpstream() as fake:
            gws = [
                GatewayServer(
                    gateway_settings(
                        tmp_path / str(i),
                        [fake.base_url],
                        server={"host": "127.0.0.1"},
                        auth={"mode": "keys", "admin_key_env": env_key, "refresh_s": 0.2},
                        ledger={"url": pg_url, "path": str(tmp_path / f"{i}.db")},
                    )
                ).start()
                for i in range(2)
            ]
            try:
                made = httpx.post(
                    gws[0].url + "/v1/nometer/admin/keys",
                    json={"team": "research"},
                    headers={"authorization": "Bearer admin-secret-123"},
                )
                assert made.status_code == 201, made.text
                key, key_id = made.json()["key"], made.json()["key_id"]
                cli = subprocess.run(
                    [sys.executable, "-m", "gateway", "keys", "create", "--team", "ops", "--db", pg_url],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert cli.returncode == 0, cli.stderr
                cli_key = next(w for w in cli.stdout.split() if w.startswith("nmk-"))
                for g in gws:  # a replica learns of a key made elsewhere within auth.refresh_s
                    for k in (key, cli_key):
                        c = openai.OpenAI(base_url=g.base_url, api_key=k, max_retries=0)
                        assert until_accepted(c).choices
                httpx.post(
                    f"{gws[1].url}/v1/nometer/admin/keys/{key_id}/disable",
                    headers={"authorization": "Bearer admin-secret-123"},
                ).raise_for_status()
                deadline = time.monotonic() + 5
                c0 = openai.OpenAI(base_url=gws[0].base_url, api_key=key, max_retries=0)
                while True:  # replica 0 learns of it by polling the shared revision
                    try:
                        c0.chat.completions.create(model="fake-model", messages=MSG)
                    except openai.AuthenticationError:
                        break
                    assert time.monotonic() < deadline, "disabled key still accepted by the other replica"
                    time.sleep(0.1)
            finally:
                for g in gws:
                    g.stop()
    finally:
        del os.environ[env_key]
