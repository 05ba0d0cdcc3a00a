"""``nometer runs``: agent runs (``X-Nometer-Run``) with their requests, failures, cost and savings."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from gateway.cli.usage import ledger_arg, progress
from gateway.ledger import runs
from gateway.ledger.period import parse_period
from gateway.ledger.reader import open_reader

_COLS = ("last", "run", "requests", "failed", "tokens", "local_usd", "reference", "cloud_usd", "savings_usd")


def _runs(args: argparse.Namespace) -> int:
    try:
        since, _ = parse_period(args.since, None, None, time.time())
    except ValueError as exc:
        raise SystemExit(f"nometer: {exc}") from None
    reader = open_reader(ledger_arg(args))
    progress("reading the ledger")
    (events_sql, shadows_sql), params = runs.queries(
        reader.placeholder, run_id=args.run, since=since, team=args.team
    )
    data = runs.build(reader.fetch(events_sql, params), reader.fetch(shadows_sql, params))[: args.limit]
    reader.close()
    progress("")
    if args.format == "json":
        for run in data:
            sys.stdout.write(orjson.dumps(run).decode() + "\n")
        return 0
    if not data:
        sys.stdout.write("no runs" + (f" since {args.since}" if args.since else "") + "\n")
        return 0 if args.run is None else 1
    rows = [_row(run) for run in data]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLS)]
    sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(_COLS, widths, strict=True)).rstrip() + "\n")
    for r in rows:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
    return 0


def _row(run: dict[str, Any]) -> list[str]:
    """One line per run; the cloud figures are the first reference's (the one the agent asked for
    through an alias, else the first configured)."""
    first = run["references"][0] if run["references"] else None
    return [
        time.strftime("%Y-%m-%d %H:%M", time.localtime(run["last_ts"])),
        run["run_id"],
        str(run["requests"]),
        str(run["failed_requests"]),
        str(run["tokens"]["total"]),
        run["local"]["total_usd"],
        first["model"] if first else "-",
        (first["cloud_usd"] or "unpriced") if first else "-",
        (first["savings_usd"] or "-") if first else "-",
    ]


def register(sub: Any) -> None:
    r = sub.add_parser("runs", help="agent runs (X-Nometer-Run): requests, failures, local cost, cloud cost")
    r.add_argument("run", nargs="?", help="one run id (default: every run)")
    r.add_argument("--since", help="e.g. 24h, 7d (default: all time)")
    r.add_argument("--team", help="only this team's requests")
    r.add_argument("--db", help="SQLite path or postgresql:// URL (default: the configured ledger)")
    r.add_argument("--config")
    r.add_argument("--format", choices=("table", "json"), default="table")
    r.add_argument("--limit", type=int, default=50)
    r.set_defaults(func=_runs)
