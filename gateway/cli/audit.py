"""``nometer verify``, ``nometer statement`` and ``nometer export``: the ledger as a proof.

``verify`` walks the hash chains of a period, recomputes every receipt and checks the price files
(``gateway.meter.audit``); with ``--statement`` it also checks a signed statement against the
ledger (``gateway.meter.statement``). Exit 1 on any finding. ``statement`` signs a month that
verifies clean. ``export --format focus`` writes FinOps FOCUS 1.2 rows (``gateway.ledger.focus``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.cli.meter import period, price_path, settings_of
from gateway.cli.usage import ledger_arg, progress
from gateway.ledger import focus, signing
from gateway.ledger.chain import Finding
from gateway.ledger.reader import open_reader
from gateway.ledger.report import ReportQuery
from gateway.meter import statement
from gateway.meter.audit import Audit, Auditor, record


def _say(f: Finding) -> None:
    print(f.line(), flush=True)


def _as_json(audit: Audit, extra: list[Finding]) -> str:
    data = {
        "object": "nometer.verification",
        "clean": audit.clean and not extra,
        "rows_checked": audit.rows,
        "receipts": audit.receipts,
        "receipts_ok": audit.receipts_ok,
        "unchained_rows": audit.unchained,
        "price_tables": audit.price_tables,
        "counts": dict(audit.counts),
        "findings": [f.as_dict() for f in [*audit.findings, *extra]],
        "chain_heads": [h.as_dict() for h in audit.heads],
    }
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"


def _load_statement(args: argparse.Namespace) -> tuple[dict[str, Any], list[Finding]]:
    if not args.public_key:
        raise SystemExit(
            "nometer: --statement needs --public-key KEY (the gateway's nometer-signing.key.pub)"
        )
    try:
        doc = orjson.loads(Path(args.statement).read_bytes())
        key = Path(args.public_key).read_bytes()
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SystemExit(f"nometer: cannot read the statement or the key: {exc}") from None
    if not isinstance(doc, dict) or doc.get("object") != "nometer.statement":
        raise SystemExit(f"nometer: {args.statement} is not a nometer statement")
    try:
        return doc, statement.check_signature(doc, key)
    except signing.SigningKeyError as exc:
        raise SystemExit(f"nometer: {exc}") from None


def _verify(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    db = ledger_arg(args)
    quiet = args.format == "json"
    doc: dict[str, Any] | None = None
    extra: list[Finding] = []
    lo: float | None
    hi: float | None
    if args.statement:
        doc, extra = _load_statement(args)
        if not quiet:
            print("statement signature: " + ("OK" if not extra else "INVALID"))
            for f in extra:
                _say(f)
        try:
            lo, hi = statement.month_period(str((doc.get("period") or {}).get("month", "")))
        except ValueError as exc:
            raise SystemExit(f"nometer: the statement's period: {exc}") from None
    else:
        lo, hi = period(args)
    reader = open_reader(db)
    prices = price_path(settings, db)
    progress("walking the hash chains")
    audit = Auditor(reader, prices, lo, hi, on_finding=None if quiet else _say).run()
    if doc is not None:
        against = statement.check_against(doc, reader, prices, audit)
        if not quiet:
            for f in against:
                _say(f)
        extra += against
    elif not args.no_record:
        try:
            record(reader, audit)
        except Exception as exc:  # a read-only copy of the ledger still verifies
            print(f"nometer: verification not recorded in the ledger: {exc}", file=sys.stderr)
    reader.close()
    progress("")
    if quiet:
        sys.stdout.write(_as_json(audit, extra))
    else:
        print(audit.summary())
        if doc is not None:
            print("statement: " + ("matches the ledger" if not extra else f"{len(extra)} FINDING(S)"))
    return 0 if audit.clean and not extra else 1


def _statement(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    db = ledger_arg(args)
    try:
        lo, hi = statement.month_period(args.month)
    except ValueError as exc:
        raise SystemExit(f"nometer: {exc}") from None
    key = Path(args.key) if args.key else signing.key_path(settings.ledger)
    if not key.is_file():
        raise SystemExit(f"nometer: no signing key at {key} (the gateway creates it on first start)")
    now = time.time()
    if hi > now:
        print(
            f"nometer: {args.month} is not over: requests recorded after now are not in this statement",
            file=sys.stderr,
        )
    reader = open_reader(db)
    prices = price_path(settings, db)
    progress("verifying the month")
    audit = Auditor(reader, prices, lo, hi, on_finding=lambda f: print(f.line(), file=sys.stderr)).run()
    if not audit.clean:
        reader.close()
        progress("")
        print(audit.summary(), file=sys.stderr)
        print("nometer: refusing to sign a month that does not verify", file=sys.stderr)
        return 1
    try:
        doc = statement.make(reader, prices, args.month, audit, key, now)
        record(reader, audit, now)
    except signing.SigningKeyError as exc:
        raise SystemExit(f"nometer: {exc}") from None
    finally:
        reader.close()
        progress("")
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    if args.out:
        Path(args.out).write_bytes(data)
        print(
            f"signed statement of {args.month} written to {args.out} (key {doc['signature']['key_id']}; "
            f"public key: {signing.public_path(key)})",
            file=sys.stderr,
        )
    else:
        sys.stdout.buffer.write(data)
    return 0


def _export(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    lo: float | None
    hi: float | None
    if args.month:
        if args.since or args.start or args.end:
            raise SystemExit("nometer: give either --month or --since/--from/--to")
        try:
            lo, hi = statement.month_period(args.month)
        except ValueError as exc:
            raise SystemExit(f"nometer: {exc}") from None
    else:
        lo, hi = period(args)
    reader = open_reader(ledger_arg(args))
    q = ReportQuery(since=lo, until=hi)
    progress("reading the ledger")
    results = {name: reader.fetch(sql, p) for name, (sql, p) in focus.queries(q, reader.placeholder).items()}
    reader.close()
    progress("")
    refs = settings.meter.references
    reference = args.reference or (refs[0] if refs else None)
    text = focus.to_csv(focus.rows(results, reference, args.account))
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _period_args(p: Any) -> None:
    p.add_argument("--db", help="SQLite path or postgresql:// URL (default: the configured ledger)")
    p.add_argument("--config")
    p.add_argument("--since", help="e.g. 30d, 2026-11-01")
    p.add_argument("--from", dest="start")
    p.add_argument("--to", dest="end")


def register(sub: Any) -> None:
    v = sub.add_parser(
        "verify",
        help="walk the hash chains, recompute receipts, check price files (and a statement); exit 1 on findings",
    )
    _period_args(v)
    v.add_argument("--statement", help="a signed statement to check against the ledger (its period is used)")
    v.add_argument("--public-key", help="the gateway's public key (PEM, or base64 of the raw 32 bytes)")
    v.add_argument("--format", choices=("text", "json"), default="text")
    v.add_argument("--no-record", action="store_true", help="do not keep the result in the ledger")
    v.set_defaults(func=_verify)
    s = sub.add_parser("statement", help="sign a month's totals and chain heads (the month must verify)")
    s.add_argument("--month", required=True, help="YYYY-MM, UTC")
    s.add_argument("--out", help="file to write (default: stdout)")
    s.add_argument("--key", help="the private signing key (default: ledger.signing_key)")
    s.add_argument("--db")
    s.add_argument("--config")
    s.set_defaults(func=_statement)
    e = sub.add_parser("export", help="the ledger as FinOps FOCUS 1.2 cost rows (CSV)")
    e.add_argument("--format", choices=("focus",), required=True)
    _period_args(e)
    e.add_argument("--month", help="YYYY-MM, UTC")
    e.add_argument("--reference", help="reference model of the x_CloudEquivalentCost/x_Savings columns")
    e.add_argument("--account", default="nometer", help="BillingAccountId (default: nometer)")
    e.add_argument("--out", help="file to write (default: stdout)")
    e.set_defaults(func=_export)
