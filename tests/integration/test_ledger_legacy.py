"""A ledger from before the hash chain (schema 4): its rows stay readable and summed, but
``verify`` calls them unchained and the report flags them, never as proven. Built from a copy of
the proof tests' SQLite ledger (tests/support/proof.py)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.ledgers import SQLiteLedger
from tests.support.proof import MSG, Env


def test_an_old_ledger_is_reported_unchained_never_as_proven(
    tmp_path: Path, proof_fake: FakeUpstream, proof_sqlite: Path
) -> None:
    """Rows written before the chain existed (schema 4) stay readable and summed, but verify calls
    them unchained and the report flags them with the amounts they carry."""
    import shutil
    import sqlite3

    from gateway.ledger import schema

    db = tmp_path / "ledger.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version in (1, 2, 3, 4):
        for stmt in schema.statements("sqlite", version):
            conn.execute(stmt)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    src = SQLiteLedger(proof_sqlite / "ledger.db")
    chained = ("id", "chain_id", "chain_seq", "sealed_at", "chain_prev", "chain_digest")
    # only the columns a schema-4 ledger had (later migrations added more)
    old_cols = {
        t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in ("usage_events", "shadow_costs")
    }
    legacy_cloud = 0
    for rid in ("chat-0", "chat-1"):  # as a gateway before the chain wrote them
        e = {k: v for k, v in src.query("SELECT * FROM usage_events WHERE request_id = ?", [rid])[0].items()}
        for s in src.query("SELECT * FROM shadow_costs WHERE event_uid = ?", [e["uid"]]):
            row = {k: v for k, v in s.items() if k not in chained and k in old_cols["shadow_costs"]} | {
                "event_uid": f"legacy-{e['uid']}"
            }
            conn.execute(
                f"INSERT INTO shadow_costs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
            legacy_cloud += s["cloud_pusd"] if s["ref_model"] == "gpt-4.1" else 0
        row = {k: v for k, v in e.items() if k not in chained and k in old_cols["usage_events"]} | {
            "uid": f"legacy-{e['uid']}",
            "request_id": f"legacy-{rid}",
        }
        conn.execute(
            f"INSERT INTO usage_events ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
    conn.close()
    src.close()
    shutil.copytree(proof_sqlite / "prices", tmp_path / "prices")
    with GatewayServer(gateway_settings(tmp_path, [proof_fake.base_url])) as g:
        httpx.post(
            g.base_url + "/chat/completions",
            json={"model": "fake-model", "messages": MSG},
            headers={"x-request-id": "new-1"},
        )
        g.wait_rows(3)
    env = Env("sqlite", str(db), tmp_path / "prices", tmp_path / "nometer-signing.key", SQLiteLedger(db))
    try:
        out = env.nometer("verify")
        assert out.returncode == 0, out.stdout  # not a tampering...
        assert (
            "UNCHAINED table=usage_events: 2 rows (ids 1..2) were written before the hash chain existed"
            in out.stdout
        )
        assert "UNCHAINED table=shadow_costs: 6 rows (ids 1..6)" in out.stdout
        assert (
            "8 rows UNCHAINED (written before the chain existed: not proven)" in out.stdout
        )  # ...nor proven
        rep = json.loads(env.nometer("report", "--format", "json").stdout)
        assert rep["totals"]["requests"] == 3  # still summed, and flagged with what they carry
        un = rep["integrity"]["unchained"]
        assert (un["requests"], un["cost_rows"]) == (2, 6) and "not proven" in un["note"]
        from decimal import Decimal

        assert Decimal(un["cloud_cost_usd"]["gpt-4.1"]) == Decimal(legacy_cloud) / 10**12
        assert len(rep["integrity"]["chain_heads"]) == 1
        table = env.nometer("report").stdout
        assert "WARNING: 2 requests and 6 cost rows in this period are outside the hash chain" in table
        assert "ledger proof: verified" in table
        # a row added later without a chain is no legacy row: it is an insertion
        e = env.ledger.query("SELECT * FROM usage_events WHERE request_id = 'legacy-chat-0'")[0]
        row = {k: v for k, v in e.items() if k not in chained} | {"uid": "forged", "request_id": "forged-1"}
        env.ledger.execute(
            f"INSERT INTO usage_events ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
        out = env.nometer("verify")
        assert out.returncode == 1 and "INSERTED table=usage_events id=4 request=forged-1" in out.stdout, (
            out.stdout
        )
        assert "VERIFICATION FAILED" in env.nometer("report").stdout
    finally:
        env.ledger.close()
