"""``nometer usage``: recent ledger events and totals, as a table or JSON lines."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import Any

import orjson

from gateway.accounting.store import migrate_sqlite

_TABLE_COLS = ("ts", "request_id", "requested_model", "served_model", "outcome", "status", "stream",
               "prompt_tokens", "completion_tokens", "usage_source", "latency_ms", "team", "tag")


def connect(path: str) -> sqlite3.Connection:
    if not os.path.exists(path):
        raise SystemExit(f"nometer: no ledger at {path}")
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    migrate_sqlite(conn)
    return conn


def _usage(args: argparse.Namespace) -> int:
    conn = connect(args.db)
    rows = [dict(r) for r in conn.execute(
        "SELECT * FROM usage_events ORDER BY id DESC LIMIT ?", (args.limit,)).fetchall()][::-1]
    totals = dict(conn.execute(
        "SELECT COUNT(*) AS requests, COALESCE(SUM(prompt_tokens),0) AS prompt_tokens, "
        "COALESCE(SUM(completion_tokens),0) AS completion_tokens FROM usage_events").fetchone())
    out = sys.stdout
    if args.format == "json":
        for r in rows:
            out.write(orjson.dumps(r).decode() + "\n")
        return 0
    _print_table(rows, _TABLE_COLS, out)
    out.write(f"\n{totals['requests']} requests in the ledger; {totals['prompt_tokens']} prompt tokens, "
              f"{totals['completion_tokens']} completion tokens\n")
    return 0


def _fmt(v: Any, col: str) -> str:
    if v is None:
        return "-"
    if col == "ts":
        import time
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v))
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def _print_table(rows: list[dict[str, Any]], cols: tuple[str, ...], out: Any) -> None:
    cells = [[_fmt(r.get(c), c) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    out.write("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")


def register(sub: Any) -> None:
    u = sub.add_parser("usage", help="list recent usage events and totals")
    u.add_argument("--db", default=os.environ.get("NOMETER_DB", "nometer.db"))
    u.add_argument("--format", choices=("table", "json"), default="table")
    u.add_argument("--limit", type=int, default=50)
    u.set_defaults(func=_usage)
