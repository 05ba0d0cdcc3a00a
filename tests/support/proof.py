"""The ledger-proof tests' world (tests/integration/test_ledger_proof.py, test_ledger_legacy.py):
a real gateway (keys mode, two teams, the fake upstream) writes a real ledger once per database
kind, and ``Env`` is one copy of it to tamper with and verify, in process and through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.ledger.keystore import PostgresKeyStore, open_key_store
from gateway.ledger.reader import open_reader
from gateway.meter.audit import Audit, Auditor
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.ledgers import Ledger

ADMIN_ENV = "NOMETER_TEST_PROOF_ADMIN_KEY"
ADMIN_KEY = "admin-secret-proof"
MSG = [{"role": "user", "content": "name three prime numbers"}]
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    """One ledger to work on: its database, its price directory and its signing key."""

    kind: str
    db: str
    prices: Path
    key: Path
    ledger: Ledger

    def audit(self, since: float | None = None, until: float | None = None) -> Audit:
        reader = open_reader(self.db)
        try:
            return Auditor(reader, self.prices, since, until).run()
        finally:
            reader.close()

    def nometer(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "NOMETER_METER__PRICE_DIR": str(self.prices),
            "NOMETER_LEDGER__SIGNING_KEY": str(self.key),
        }
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args, "--db", self.db],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
            cwd=self.prices.parent,
        )


def make_traffic(g: GatewayServer, keys: dict[str, str]) -> None:
    """Chat (plain and streamed), embeddings and an upstream error, from two teams, with tags."""
    with httpx.Client(base_url=g.base_url, timeout=30) as c:

        def post(path: str, team: str, rid: str, body: dict[str, Any], tag: str | None = None) -> None:
            headers = {"authorization": f"Bearer {keys[team]}", "x-request-id": rid}
            if tag:
                headers["x-nometer-tag"] = tag
            c.post(path, json=body, headers=headers)

        for i in range(4):
            team = ("research", "ops")[i % 2]
            post(
                "/chat/completions",
                team,
                f"chat-{i}",
                {"model": "fake-model", "messages": MSG},
                f"run-{i % 2}",
            )
        post(
            "/chat/completions",
            "research",
            "stream-1",
            {"model": "fake-model", "messages": MSG, "stream": True},
        )
        post("/embeddings", "ops", "emb-1", {"model": "fake-model", "input": ["a b c"]}, "index")
        post("/chat/completions", "ops", "err-1", {"model": "fault-500", "messages": MSG})
    deadline = time.monotonic() + 60  # the meter process's first batch waits for it to start
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    while (n := httpx.get(g.url + "/v1/nometer/report", headers=admin).json()["totals"]["requests"]) < 7:
        assert time.monotonic() < deadline, f"the recorder wrote {n} of 7 rows"
        time.sleep(0.05)


def build_ledger(tmp: Path, fake: FakeUpstream, url: str | None) -> None:
    os.environ[ADMIN_ENV] = ADMIN_KEY
    db = tmp / "ledger.db"
    store = open_key_store(db, url)
    keys = {team: store.create(team)[0] for team in ("research", "ops")}
    if isinstance(store, PostgresKeyStore):
        store.close()
    ledger: dict[str, Any] = {"path": str(db)} | ({"url": url} if url else {})
    settings = gateway_settings(
        tmp, [fake.base_url], auth={"mode": "keys", "admin_key_env": ADMIN_ENV}, ledger=ledger
    )
    with GatewayServer(settings) as g:
        make_traffic(g, keys)
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        proof = httpx.get(g.url + "/v1/nometer/report", headers=admin).json()["integrity"]
        assert [h["chain_id"] for h in proof["chain_heads"]] == [g.runtime.recorder.chain.chain_id]
        assert proof["verify_state"] == "unverified"
        bare = httpx.get(g.url + "/v1/nometer/report", params={"integrity": "0"}, headers=admin).json()
        assert "integrity" not in bare
    key = tmp / "nometer-signing.key"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600  # made by the gateway on first start
    assert (tmp / "nometer-signing.key.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
