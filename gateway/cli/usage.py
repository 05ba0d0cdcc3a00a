"""``nometer usage``: recent ledger events and totals, as a table or JSON lines."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from gateway.cli.options import add_ledger, command, ledger_target
from gateway.ledger.reader import open_reader

_TABLE_COLS = (
    "ts",
    "request_id",
    "requested_model",
    "served_model",
    "outcome",
    "status",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "usage_source",
    "latency_ms",
    "team",
    "tag",
)


def _usage(args: argparse.Namespace) -> int:
    reader = open_reader(ledger_target(args))
    progress("reading the ledger")
    rows = reader.fetch(f"SELECT * FROM usage_events ORDER BY id DESC LIMIT {reader.param(1)}", [args.limit])[
        ::-1
    ]
    totals = reader.fetch(
        "SELECT COUNT(*) AS requests, COALESCE(SUM(prompt_tokens),0) AS prompt_tokens, "
        "COALESCE(SUM(completion_tokens),0) AS completion_tokens FROM usage_events"
    )[0]
    reader.close()
    progress("")
    out = sys.stdout
    if args.format == "json":
        for r in rows:
            out.write(orjson.dumps(r).decode() + "\n")
        return 0
    _print_table(rows, _TABLE_COLS, out)
    out.write(
        f"\n{totals['requests']} requests in the ledger; {totals['prompt_tokens']} prompt tokens, "
        f"{totals['completion_tokens']} completion tokens\n"
    )
    return 0


def progress(message: str) -> None:
    """A transient progress line on stderr, only for a person watching a terminal."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + (f"nometer: {message}..." if message else ""))
        sys.stderr.flush()


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
    out.write("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=False)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)).rstrip() + "\n")


def register(sub: Any) -> None:
    u = command(sub, "usage", "list recent usage events and totals")
    add_ledger(u)
    u.add_argument(
        "--format", choices=("table", "json"), default="table", help="table, or one JSON object per line"
    )
    u.add_argument("--limit", type=int, default=50, help="how many of the most recent events")
    u.set_defaults(func=_usage)
