"""``nometer report`` and ``nometer prices``: the shadow meter from the shell (``verify``,
``statement`` and ``export`` are in ``gateway.cli.audit``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.cli.usage import ledger_arg, progress
from gateway.ledger import integrity
from gateway.ledger.period import parse_period
from gateway.ledger.reader import Reader, open_reader
from gateway.ledger.report import DIMENSIONS, ReportQuery, build, queries
from gateway.ledger.report_format import to_csv, to_table
from gateway.meter.tables import price_dir
from gateway.settings import Settings, load_settings
from pricing.store import PriceStore


def settings_of(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def price_path(settings: Settings, db: str) -> Path:
    """Where the pinned price tables of this ledger live."""
    local = settings.ledger.path if db.startswith(("postgresql://", "postgres://")) else db
    return price_dir(settings.meter.price_dir, local)


def _prices(settings: Settings, db: str) -> PriceStore:
    return PriceStore(price_path(settings, db))


def period(args: argparse.Namespace) -> tuple[float | None, float | None]:
    try:
        return parse_period(args.since, getattr(args, "start", None), getattr(args, "end", None), time.time())
    except ValueError as exc:
        raise SystemExit(f"nometer: {exc}") from None


def _report(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    reader = open_reader(ledger_arg(args))
    lo, hi = period(args)
    compare = tuple(m.strip() for m in (args.compare or "").split(",") if m.strip())
    q = ReportQuery(since=lo, until=hi, by=args.by, compare=compare, team=args.team)
    results = {}
    for name, (sql, params) in queries(q, reader.placeholder).items():
        progress(f"querying the ledger ({name})")
        results[name] = reader.fetch(sql, params)
    proof = report_integrity(reader, q)
    reader.close()
    progress("")
    primary = compare[0] if compare else (settings.meter.references[0] if settings.meter.references else None)
    hw = settings.meter.box.hardware_usd
    data = build(
        q, results, hardware_usd=hw, primary=primary, now=time.time(), order=settings.meter.references
    )
    data["integrity"] = proof
    out = {
        "json": lambda d: orjson.dumps(d, option=orjson.OPT_INDENT_2).decode() + "\n",
        "csv": to_csv,
        "table": to_table,
    }[args.format](data)
    sys.stdout.write(out)
    return 0


def report_integrity(reader: Reader, q: ReportQuery) -> dict[str, Any]:
    """Chain heads, unchained rows and verify state of the report's period (gateway.ledger.integrity)."""
    ph = reader.placeholder
    results = {name: reader.fetch(sql, params) for name, (sql, params) in integrity.queries(q, ph).items()}
    digests = {}
    for chain_id, seq in integrity.heads_wanted(results):
        rows = reader.fetch(integrity.digest_sql(ph), integrity.digest_params(ph, chain_id, seq))
        digests[(chain_id, seq)] = rows[0]["chain_digest"] if rows else None
    return integrity.summary(q, results, digests)


def _prices_cmd(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    store = _prices(settings, ledger_arg(args))
    if args.action == "update":
        if not args.source:
            raise SystemExit("nometer: prices update needs --from FILE")
        from pricing.tables import PriceTableError

        try:
            table_id = store.install(Path(args.source))
        except (OSError, PriceTableError, ValueError) as exc:
            raise SystemExit(f"nometer: cannot install {args.source}: {exc}") from None
        print(
            f"installed price table {table_id} into {store.directory}; new requests use it after a restart "
            "(old receipts keep their own table)"
        )
    else:
        current = store.current()
        print(f"current: {current.id} ({len(current.models)} models, from {current.source})")
        for tid in store.ids():
            print(f"installed: {tid}")
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("report", help="savings against cloud prices, per team/key/model/tag/day/backend")
    r.add_argument("--db")
    r.add_argument("--config")
    r.add_argument("--since", help="e.g. 7d, 24h, 2026-11-01")
    r.add_argument("--from", dest="start")
    r.add_argument("--to", dest="end")
    r.add_argument("--by", choices=sorted(DIMENSIONS))
    r.add_argument("--compare", help="reference cloud models, comma-separated (default: all recorded)")
    r.add_argument("--team")
    r.add_argument("--format", choices=("table", "json", "csv"), default="table")
    r.set_defaults(func=_report)
    p = sub.add_parser("prices", help="show or install price tables")
    p.add_argument("action", choices=("show", "update"), nargs="?", default="show")
    p.add_argument("--from", dest="source", help="a litellm model_prices_and_context_window.json")
    p.add_argument("--db")
    p.add_argument("--config")
    p.set_defaults(func=_prices_cmd)
