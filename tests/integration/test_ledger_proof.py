"""The ledger is a proof: ``verify`` catches every edit, deletion, insertion and reordering.

A real gateway (keys mode, two teams, the fake upstream) writes a real ledger once per database
kind (SQLite, and a private PostgreSQL database); every test works on its own copy of it (a file
copy, or ``CREATE DATABASE ... TEMPLATE``), tampers with it the way someone holding the database
would, and checks what ``verify`` finds, in process (``gateway.meter.audit``) and through the CLI.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger.chain import DELETED, EVENTS, INSERTED, PRICE_TABLE, REORDERED, SHADOWS, Finding
from gateway.meter.audit import Audit
from gateway.meter.statement import month_period
from tests.support.fake_upstream import FakeUpstream
from tests.support.ledgers import PostgresLedger, SQLiteLedger, copy_sqlite, pg_database
from tests.support.proof import Env, build_ledger


@pytest.fixture(scope="module")
def base_postgres(
    tmp_path_factory: pytest.TempPathFactory, proof_fake: FakeUpstream
) -> Iterator[tuple[Path, str]]:
    tmp = tmp_path_factory.mktemp("proof-postgres")
    with pg_database() as url:
        build_ledger(tmp, proof_fake, url)
        yield tmp, url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """A private copy of the base ledger of each kind."""
    import shutil

    if request.param == "sqlite":
        base: Path = request.getfixturevalue("proof_sqlite")
        db = copy_sqlite(base / "ledger.db", tmp_path / "ledger.db")
        for name in ("nometer-signing.key", "nometer-signing.key.pub"):
            shutil.copy2(base / name, tmp_path / name)
        ledger = SQLiteLedger(db)
        try:
            yield Env("sqlite", str(db), tmp_path / "prices", tmp_path / "nometer-signing.key", ledger)
        finally:
            ledger.close()
        return
    base, url = request.getfixturevalue("base_postgres")
    shutil.copytree(base / "prices", tmp_path / "prices")
    for name in ("nometer-signing.key", "nometer-signing.key.pub"):
        shutil.copy2(base / name, tmp_path / name)
    with pg_database(template=url) as copy:
        pg = PostgresLedger(copy)
        try:
            yield Env("postgres", copy, tmp_path / "prices", tmp_path / "nometer-signing.key", pg)
        finally:
            pg.close()


def _request_rows(env: Env, rid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    event = env.ledger.query("SELECT * FROM usage_events WHERE request_id = ?", [rid])[0]
    shadows = env.ledger.query("SELECT * FROM shadow_costs WHERE event_uid = ? ORDER BY id", [event["uid"]])
    return event, shadows


def _kinds(audit: Audit) -> set[str]:
    return {f.kind for f in audit.findings}


# -- an untouched ledger ---------------------------------------------------------------------------


def test_an_untouched_ledger_verifies_clean(env: Env) -> None:
    result = env.audit()
    assert result.clean and result.findings == [], [f.line() for f in result.findings]
    # every request; 3 cost rows for each of the 5 metered chats, 1 for the embedding
    assert result.rows == 7 + 5 * 3 + 1
    assert result.receipts == result.receipts_ok == 6 and result.unchained == 0
    assert len(result.heads) == 1 and result.heads[0].head_seq == result.rows
    out = env.nometer("verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith(
        "CLEAN: 23 rows in 1 chain(s) checked; 6 of 6 receipts recomputed identically"
    )
    assert result.heads[0].head_digest[:16] in out.stdout
    # the report now shows the chain head and that the period is verified
    rep = env.nometer("report", "--format", "json")
    proof = json.loads(rep.stdout)["integrity"]
    assert proof["verify_state"] == "verified"
    assert proof["chain_heads"] == [
        {
            "chain_id": result.heads[0].chain_id,
            "first_seq": 1,
            "head_seq": 23,
            "head_digest": result.heads[0].head_digest,
            "requests": 7,
        }
    ]
    assert proof["unchained"]["requests"] == 0 and proof["unchained"]["note"] is None


# -- every column of every table -------------------------------------------------------------------


def _other(value: Any, kind: str, column: str, big_id: int) -> Any:
    """A different value of the column's type."""
    if column == "id":
        return big_id
    if column == "chain_seq":
        return (value or 0) + 1000  # +1 would collide with the next row's seq
    if value is None:
        return 1 if "int" in kind else 1.5 if ("double" in kind or "real" in kind) else "x"
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 1
    return value + "x"


def _points_at(findings: list[Finding], row: dict[str, Any], new_id: int) -> bool:
    return any(
        f.row_id in (row["id"], new_id)
        or (f.seq is not None and abs(f.seq - row["chain_seq"]) <= 1)
        or f"id {new_id} " in f.detail  # a reordering is reported on the row that now sorts before it
        for f in findings
        if f.tampering
    )


def test_every_stored_column_edited_or_nulled_is_caught(env: Env) -> None:
    missed: list[str] = []
    cases = 0
    for table in (EVENTS, SHADOWS):
        nullable, types = env.ledger.nullable(table), env.ledger.types(table)
        rows = env.ledger.query(
            f"SELECT * FROM {table} WHERE price_table_id IS NOT NULL ORDER BY chain_seq"
            if table == EVENTS
            else f"SELECT * FROM {table} ORDER BY chain_seq"
        )
        target = rows[len(rows) // 2]
        big_id = max(r["id"] for r in rows) + 1000
        assert set(nullable) == set(target)
        for column in sorted(nullable):
            original = target[column]
            values = [_other(original, types[column], column, big_id)]
            if nullable[column] and original is not None:
                values.append(None)  # NULL each nullable field
            for value in values:
                cases += 1
                where_id = big_id if column == "id" else target["id"]
                env.ledger.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", [value, target["id"]])
                try:
                    result = env.audit()
                finally:
                    env.ledger.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", [original, where_id])
                if result.clean or not _points_at(result.findings, target, big_id):
                    missed.append(f"{table}.{column} = {value!r}: {[f.line() for f in result.findings]}")
    assert missed == []
    assert cases > 70
    assert env.audit().clean  # every edit undone: clean again


def test_the_issue_attack_is_caught_and_named(env: Env) -> None:
    """Issue 9: NULL a row's price_table_id (it dropped out of verify) and multiply its cloud cost by
    1000 (the report summed it): verify now fails and names the row."""
    event, shadows = _request_rows(env, "chat-1")
    env.ledger.execute("UPDATE usage_events SET price_table_id = NULL WHERE id = ?", [event["id"]])
    env.ledger.execute(
        "UPDATE shadow_costs SET cloud_pusd = cloud_pusd * 1000 WHERE id = ?", [shadows[0]["id"]]
    )
    out = env.nometer("verify")
    assert out.returncode == 1, out.stdout
    lines = out.stdout.splitlines()
    assert any(line.startswith("CHANGED table=usage_events") and "request=chat-1" in line for line in lines)
    assert any(
        line.startswith("CHANGED table=shadow_costs") and f"id={shadows[0]['id']}" in line for line in lines
    )
    assert "FINDING(S): the ledger was altered" in out.stdout


# -- deleted, inserted, reordered rows -------------------------------------------------------------


def test_deleted_rows_are_caught(env: Env) -> None:
    event, shadows = _request_rows(env, "chat-2")
    env.ledger.execute("DELETE FROM shadow_costs WHERE id = ?", [shadows[1]["id"]])
    result = env.audit()
    assert [(f.kind, f.seq) for f in result.findings] == [(DELETED, shadows[1]["chain_seq"])]
    # the whole request, as someone hiding it would
    env.ledger.execute("DELETE FROM shadow_costs WHERE event_uid = ?", [event["uid"]])
    env.ledger.execute("DELETE FROM usage_events WHERE id = ?", [event["id"]])
    result = env.audit()
    assert [(f.kind, f.seq) for f in result.findings] == [(DELETED, event["chain_seq"])]
    assert "(4 rows)" in result.findings[0].detail


def test_deleting_a_periods_first_request_is_caught_by_a_period_verify(env: Env) -> None:
    event, _ = _request_rows(env, "chat-2")
    since = float(event["ts"])
    assert env.audit(since=since).clean
    env.ledger.execute("DELETE FROM shadow_costs WHERE event_uid = ?", [event["uid"]])
    env.ledger.execute("DELETE FROM usage_events WHERE id = ?", [event["id"]])
    result = env.audit(since=since)
    assert DELETED in _kinds(result), [f.line() for f in result.findings]


def test_inserted_rows_are_caught(env: Env) -> None:
    event, shadows = _request_rows(env, "chat-3")
    content = [
        c
        for c in event
        if c not in ("id", "chain_id", "chain_seq", "sealed_at", "chain_prev", "chain_digest")
    ]
    # a fabricated request outside any chain
    fake = {**{c: event[c] for c in content}, "uid": "f" * 32, "request_id": "forged-1"}
    cols = ", ".join(fake)
    env.ledger.execute(
        f"INSERT INTO usage_events ({cols}) VALUES ({', '.join('?' * len(fake))})", list(fake.values())
    )
    result = env.audit()
    assert [(f.kind, f.request_id) for f in result.findings] == [(INSERTED, "forged-1")]
    env.ledger.execute("DELETE FROM usage_events WHERE request_id = 'forged-1'")
    # a copy of a sealed cost row, chain columns and all (the unique index dropped first)
    env.ledger.execute("DROP INDEX shadow_costs_chain")
    s = {k: v for k, v in shadows[0].items() if k != "id"}
    env.ledger.execute(
        f"INSERT INTO shadow_costs ({', '.join(s)}) VALUES ({', '.join('?' * len(s))})", list(s.values())
    )
    result = env.audit()
    assert INSERTED in _kinds(result) and result.counts[INSERTED] == 1, [f.line() for f in result.findings]


def test_reordered_rows_are_caught(env: Env) -> None:
    a, _ = _request_rows(env, "chat-0")
    b, _ = _request_rows(env, "chat-3")
    big = 10_000
    for src, dst in ((a["id"], big), (b["id"], a["id"]), (big, b["id"])):
        env.ledger.execute("UPDATE usage_events SET id = ? WHERE id = ?", [dst, src])
    result = env.audit()
    assert _kinds(result) == {REORDERED} and all(f.column == "id" for f in result.findings)


def test_an_edited_price_file_is_caught(env: Env) -> None:
    (pinned,) = [p for p in env.prices.glob("*.json") if not p.name.startswith(".")]
    pinned.write_bytes(pinned.read_bytes() + b" ")  # still valid JSON; no longer the bytes its id names
    out = env.nometer("verify")
    assert out.returncode == 1
    assert any(
        line.startswith("PRICE_TABLE") and pinned.name.removesuffix(".json") in line and "edited" in line
        for line in out.stdout.splitlines()
    ), out.stdout
    result = env.audit()
    assert _kinds(result) == {PRICE_TABLE} and result.price_tables == []


def reseal_from(env: Env, request_id: str, prompt_tokens_delta: int) -> None:
    """Edit a request's prompt_tokens and re-seal its chain from there to the head, with the open
    code, as someone holding the database could."""
    from gateway.ledger.chain import row_digest

    event, _ = _request_rows(env, request_id)
    rows: list[tuple[str, dict[str, Any]]] = []
    for table in (EVENTS, SHADOWS):
        rows += [
            (table, r)
            for r in env.ledger.query(f"SELECT * FROM {table} WHERE chain_seq >= ?", [event["chain_seq"]])
        ]
    rows.sort(key=lambda tr: tr[1]["chain_seq"])
    prev = rows[0][1]["chain_prev"]
    rows[0][1]["prompt_tokens"] += prompt_tokens_delta
    for table, r in rows:
        r["chain_prev"] = prev
        r["chain_digest"] = prev = row_digest(table, r)
        if table == EVENTS:
            env.ledger.execute(
                "UPDATE usage_events SET prompt_tokens = ?, chain_prev = ?, chain_digest = ? WHERE id = ?",
                [r["prompt_tokens"], r["chain_prev"], r["chain_digest"], r["id"]],
            )
        else:
            env.ledger.execute(
                "UPDATE shadow_costs SET chain_prev = ?, chain_digest = ? WHERE id = ?",
                [r["chain_prev"], r["chain_digest"], r["id"]],
            )


def test_a_resealed_chain_passes_alone(env: Env) -> None:
    """The limit of an unkeyed chain: an edit re-sealed to the head is consistent again (the
    statement test shows what catches it: a head published before)."""
    reseal_from(env, "chat-1", 1000)
    assert env.audit().clean


# -- statements ------------------------------------------------------------------------------------


def _month(env: Env) -> str:
    ts = env.ledger.query("SELECT MIN(ts) AS t FROM usage_events")[0]["t"]
    return time.strftime("%Y-%m", time.gmtime(ts))


def test_a_statement_verifies_against_its_ledger_and_fails_after_any_edit(env: Env, tmp_path: Path) -> None:
    month = _month(env)
    path, pub = tmp_path / "statement.json", env.key.with_name(env.key.name + ".pub")
    made = env.nometer("statement", "--month", month, "--out", str(path))
    assert made.returncode == 0, made.stdout + made.stderr
    doc = json.loads(path.read_bytes())
    audit = env.audit(*month_period(month))
    assert doc["period"]["month"] == month and doc["signature"]["algorithm"] == "ed25519"
    assert [t["team"] for t in doc["teams"]] == ["ops", "research"]
    assert sum(t["requests"] for t in doc["teams"]) == doc["total"]["requests"] == 7
    assert set(doc["total"]["cloud_cost_usd"]) == set(doc["references"]) >= {"gpt-4.1"}
    assert doc["chain_heads"] == [h.as_dict() for h in audit.heads]
    assert [p["id"] for p in doc["price_tables"]] == audit.price_tables and doc["price_tables"][0][
        "file_sha256"
    ]

    def check(statement: Path, key: Path) -> subprocess.CompletedProcess[str]:
        return env.nometer("verify", "--statement", str(statement), "--public-key", str(key))

    ok = check(path, pub)
    assert ok.returncode == 0 and "statement signature: OK" in ok.stdout, ok.stdout + ok.stderr
    assert "statement: matches the ledger" in ok.stdout
    raw = tmp_path / "key.b64"  # the raw public key, as the statement prints it, works too
    raw.write_text(doc["signature"]["public_key"] + "\n")
    assert check(path, raw).returncode == 0

    # the statement edited after signing
    edited = json.loads(path.read_bytes())
    edited["total"]["savings_usd"]["gpt-4.1"] = "1000000"
    (tmp_path / "edited.json").write_bytes(json.dumps(edited).encode())
    bad = check(tmp_path / "edited.json", pub)
    assert bad.returncode == 1 and "statement signature: INVALID" in bad.stdout
    # checked with another key
    from gateway.ledger import signing

    signing.ensure_key(tmp_path / "other.key")
    bad = check(path, tmp_path / "other.key.pub")
    assert bad.returncode == 1 and "not by the given public key" in bad.stdout

    # a ledger row edited: the chain fails, and so do the statement's totals
    _, shadows = _request_rows(env, "chat-2")
    env.ledger.execute("UPDATE shadow_costs SET cloud_pusd = ? WHERE id = ?", [1, shadows[0]["id"]])
    bad = check(path, pub)
    assert bad.returncode == 1 and "CHANGED table=shadow_costs" in bad.stdout
    assert "STATEMENT" in bad.stdout and "totals differ: teams[" in bad.stdout
    refused = env.nometer("statement", "--month", month, "--out", str(tmp_path / "no.json"))
    assert refused.returncode == 1 and "refusing to sign" in refused.stderr
    env.ledger.execute(
        "UPDATE shadow_costs SET cloud_pusd = ? WHERE id = ?", [shadows[0]["cloud_pusd"], shadows[0]["id"]]
    )
    assert check(path, pub).returncode == 0

    # the newest request cut off: the chain alone cannot tell, the published head can
    last, last_shadows = _request_rows(env, "err-1")
    env.ledger.execute("DELETE FROM usage_events WHERE id = ?", [last["id"]])
    assert env.audit().clean
    bad = check(path, pub)
    assert bad.returncode == 1 and "published head" in bad.stdout and "deleted" in bad.stdout, bad.stdout
    assert last_shadows == []
    cols = list(last)
    env.ledger.execute(
        f"INSERT INTO usage_events ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        list(last.values()),
    )
    assert check(path, pub).returncode == 0

    # an edit re-sealed to the head: the chain is consistent, the published head is not
    reseal_from(env, "chat-1", 1000)
    assert env.audit().clean
    bad = check(path, pub)
    assert bad.returncode == 1 and "rewritten and re-sealed" in bad.stdout, bad.stdout


# -- the FOCUS export ------------------------------------------------------------------------------


def test_focus_export_adds_up_to_the_report(env: Env, tmp_path: Path) -> None:
    import csv
    from decimal import Decimal

    from gateway.ledger.focus import COLUMNS

    month = _month(env)
    out = env.nometer("export", "--format", "focus", "--month", month, "--reference", "gpt-4.1")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(out.stdout.splitlines()))
    assert list(rows[0]) == list(COLUMNS)
    report = json.loads(env.nometer("report", "--format", "json", "--by", "team").stdout)
    total = report["totals"]
    assert sum(Decimal(r["BilledCost"]) for r in rows) == Decimal(total["local_cost_usd"]["total"])
    assert sum(Decimal(r["x_CloudEquivalentCost"] or 0) for r in rows) == Decimal(
        total["cloud_cost_usd"]["gpt-4.1"]
    )
    assert sum(Decimal(r["x_Savings"] or 0) for r in rows) == Decimal(total["savings_usd"]["gpt-4.1"])
    assert sum(int(r["x_Requests"]) for r in rows) == 7
    for r in rows:
        assert r["BilledCost"] == r["EffectiveCost"] == r["ListCost"] == r["ContractedCost"]
        assert r["BillingCurrency"] == "USD" and r["ChargeCategory"] == "Usage"
        assert (
            r["ChargePeriodStart"].endswith("T00:00:00Z")
            and r["BillingPeriodStart"] == f"{month}-01T00:00:00Z"
        )
        assert r["ServiceCategory"] == "AI and Machine Learning" and r["ProviderName"]
        assert json.loads(r["Tags"])["nometer/team"] == r["SubAccountId"] in ("research", "ops")
        assert r["x_UnchainedRequests"] == "0"
    by_team = {g["key"]: g for g in report["groups"]}
    for team in ("research", "ops"):
        mine = [r for r in rows if r["SubAccountId"] == team]
        assert sum(Decimal(r["BilledCost"]) for r in mine) == Decimal(
            by_team[team]["local_cost_usd"]["total"]
        )
