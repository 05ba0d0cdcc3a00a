"""Signed monthly statements: what the ledger said about a period, and the chain heads it rests on.

A statement is a JSON document: the period, totals per team and reference model (requests, local
cost, hosted spend, cloud-equivalent cost and savings per reference), the chain head of every
writer in the period (``gateway.ledger.chain.Head``), the price tables used (id and the SHA-256 of
the pinned file), and the verification it was made after. It is signed with the gateway's ed25519
key (``gateway.ledger.signing``) over its canonical JSON (orjson, sorted keys, no signature field).

``check`` is what a reviewer runs with the statement, the public key and the ledger: the signature
must hold, the ledger must verify, the totals recomputed from the ledger must equal the statement's,
and every published head must still be in the ledger with the same digest. Published heads are
what catch a re-sealed chain or its newest rows cut off, which the chain alone cannot show.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from gateway.ledger import signing
from gateway.ledger.chain import STATEMENT, Finding
from gateway.ledger.reader import Reader
from gateway.ledger.report import ReportQuery, build, queries
from gateway.meter.audit import Audit

VERSION = 1
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_FIGURES = ("requests", "local_requests", "hosted_requests", "unpriced_requests")
_MONEY = ("local_cost_usd", "hosted_spend_usd", "cloud_cost_usd", "savings_usd")


def month_period(month: str) -> tuple[float, float]:
    """``2026-11`` -> [2026-11-01T00:00Z, 2026-12-01T00:00Z) as unix seconds."""
    m = _MONTH.match(month.strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"not a month: {month!r} (use YYYY-MM, e.g. 2026-11)")
    y, mo = int(m.group(1)), int(m.group(2))
    start = dt.datetime(y, mo, 1, tzinfo=dt.UTC)
    end = dt.datetime(y + mo // 12, mo % 12 + 1, 1, tzinfo=dt.UTC)
    return start.timestamp(), end.timestamp()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def totals(reader: Reader, since: float, until: float) -> dict[str, Any]:
    """Totals per team (and overall), each with its figures per reference model."""
    q = ReportQuery(since=since, until=until, by="team")
    results = {
        name: reader.fetch(sql, params) for name, (sql, params) in queries(q, reader.placeholder).items()
    }
    data = build(q, results, hardware_usd=Decimal(0), primary=None, now=until)

    def pick(g: dict[str, Any]) -> dict[str, Any]:
        return {k: g[k] for k in (*_FIGURES, *_MONEY)}

    return {
        "references": data["references"],
        "teams": [{"team": g["key"], **pick(g)} for g in data["groups"]],
        "total": pick(data["totals"]),
        "price_table_ids": data["price_tables"],
    }


def _price_files(price_dir: Path, ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for table_id in ids:
        digest = None
        for name in (f"{table_id}.json", f"{table_id}.overrides.json"):
            path = price_dir / name
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                break
        out.append({"id": table_id, "file_sha256": digest})
    return out


def canonical(statement: dict[str, Any]) -> bytes:
    """The signed bytes: the statement without its signature, orjson with sorted keys."""
    body = {k: v for k, v in statement.items() if k != "signature"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def make(
    reader: Reader, price_dir: Path, month: str, audit: Audit, key_file: Path, now: float
) -> dict[str, Any]:
    """The signed statement of ``month`` (``audit`` must be the clean audit of that month)."""
    since, until = month_period(month)
    figures = totals(reader, since, until)
    statement: dict[str, Any] = {
        "object": "nometer.statement",
        "version": VERSION,
        "period": {"month": month, "from": _iso(since), "to": _iso(until)},
        "created": _iso(now),
        "references": figures["references"],
        "teams": figures["teams"],
        "total": figures["total"],
        "chain_heads": [h.as_dict() for h in sorted(audit.heads, key=lambda h: h.chain_id)],
        "price_tables": _price_files(price_dir, figures["price_table_ids"]),
        "verification": {
            "rows_checked": audit.rows,
            "receipts": audit.receipts,
            "unchained_rows": audit.unchained,
        },
    }
    key = signing.load_private(key_file)
    public = key.public_key()
    statement["signature"] = {
        "algorithm": signing.ALGORITHM,
        "key_id": signing.key_id(public),
        "public_key": base64.b64encode(signing.raw_public(public)).decode(),
        "value": signing.sign(key, canonical(statement)),
    }
    return statement


def check_signature(statement: dict[str, Any], public_key: bytes) -> list[Finding]:
    key = signing.load_public(public_key)
    sig = statement.get("signature")
    if not isinstance(sig, dict) or sig.get("algorithm") != signing.ALGORITHM:
        return [Finding(STATEMENT, "the statement carries no ed25519 signature")]
    if sig.get("key_id") != signing.key_id(key):
        return [
            Finding(
                STATEMENT,
                f"signed by key {sig.get('key_id')}, not by the given public key {signing.key_id(key)}",
            )
        ]
    if not signing.verify(key, canonical(statement), str(sig.get("value", ""))):
        return [
            Finding(STATEMENT, "the signature does not match the statement's content (edited after signing)")
        ]
    return []


def _diff(path: str, ours: Any, theirs: Any, out: list[str]) -> None:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for k in sorted(set(ours) | set(theirs)):
            _diff(f"{path}.{k}", ours.get(k), theirs.get(k), out)
    elif ours != theirs:
        out.append(f"{path}: statement {theirs!r}, ledger {ours!r}")


def check_against(statement: dict[str, Any], reader: Reader, price_dir: Path, audit: Audit) -> list[Finding]:
    """Findings where the ledger (already audited for the statement's period) disagrees."""
    out: list[Finding] = []
    period = statement.get("period") or {}
    since, until = month_period(str(period.get("month", "")))
    figures = totals(reader, since, until)
    diffs: list[str] = []
    _diff("total", figures["total"], statement.get("total"), diffs)
    _diff("references", figures["references"], statement.get("references"), diffs)
    ours = {t["team"]: t for t in figures["teams"]}
    theirs = {t.get("team"): t for t in statement.get("teams", [])}
    for team in sorted(set(ours) | set(theirs), key=str):
        _diff(f"teams[{team}]", ours.get(team), theirs.get(team), diffs)
    _diff(
        "price_tables",
        _price_files(price_dir, figures["price_table_ids"]),
        statement.get("price_tables"),
        diffs,
    )
    out += [Finding(STATEMENT, f"totals differ: {d}") for d in diffs]
    walked = {h.chain_id: h for h in audit.heads}
    published = {h["chain_id"]: h for h in statement.get("chain_heads", [])}
    for chain_id, h in sorted(published.items()):
        seq, digest = int(h["head_seq"]), h["head_digest"]
        now = walked.get(chain_id)
        stored = _digest_at(reader, chain_id, seq)
        if stored is None:
            out.append(
                Finding(
                    STATEMENT,
                    f"the published head (seq {seq}) is no longer in the ledger: rows up to it were deleted",
                    chain_id=chain_id,
                    seq=seq,
                )
            )
        elif stored != digest:
            out.append(
                Finding(
                    STATEMENT,
                    "the row at the published head has another digest: the chain was rewritten and re-sealed",
                    chain_id=chain_id,
                    seq=seq,
                )
            )
        elif now is not None and now.head_seq != seq:
            out.append(
                Finding(
                    STATEMENT,
                    f"the period's rows now end at seq {now.head_seq}, not at the published head {seq}",
                    chain_id=chain_id,
                    seq=seq,
                )
            )
    for chain_id in sorted(set(walked) - set(published)):
        out.append(
            Finding(
                STATEMENT,
                "this chain has rows in the period but is not in the statement (inserted after signing)",
                chain_id=chain_id,
            )
        )
    return out


def _digest_at(reader: Reader, chain_id: str, seq: int) -> str | None:
    for table in ("usage_events", "shadow_costs"):
        rows = reader.fetch(
            f"SELECT chain_digest FROM {table} WHERE chain_id = {reader.param(1)} AND chain_seq = {reader.param(2)}",
            [chain_id, seq],
        )
        if rows:
            return str(rows[0]["chain_digest"])
    return None
