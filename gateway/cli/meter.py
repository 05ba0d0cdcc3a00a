"""``nometer report`` and ``nometer prices``: the shadow meter from the shell (``verify``,
``statement`` and ``export`` are in ``gateway.cli.audit``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.cli.options import add_ledger, add_period, command, ledger_target
from gateway.cli.usage import progress
from gateway.ledger import allin, integrity
from gateway.ledger.period import parse_period
from gateway.ledger.reader import Reader, open_reader
from gateway.ledger.report import DIMENSIONS, ReportQuery, build, queries
from gateway.ledger.report_format import TABLE_WIDTH, to_csv, to_table
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


def period(args: argparse.Namespace, now: float | None = None) -> tuple[float | None, float | None]:
    try:
        at = time.time() if now is None else now
        return parse_period(args.since, getattr(args, "start", None), getattr(args, "end", None), at)
    except ValueError as exc:
        raise SystemExit(f"nometer: {exc}") from None


def _report(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    reader = open_reader(ledger_target(args))
    now = time.time()
    lo, hi = period(args, now)
    compare = tuple(m.strip() for m in (args.compare or "").split(",") if m.strip())
    q = ReportQuery(since=lo, until=hi, by=args.by, compare=compare, team=args.team, now=now)
    results = {}
    for name, (sql, params) in queries(q, reader.placeholder).items():
        progress(f"querying the ledger ({name})")
        results[name] = reader.fetch(sql, params)
    proof = report_integrity(reader, q)
    reader.close()
    progress("")
    primary = compare[0] if compare else (settings.meter.references[0] if settings.meter.references else None)
    hw = settings.meter.box.hardware_usd
    boxes = allin.plan(settings.meter, [b.name for b in settings.backends if b.name])
    data = build(
        q,
        results,
        hardware_usd=hw,
        primary=primary,
        now=time.time(),
        order=settings.meter.references,
        boxes=boxes,
    )
    data["integrity"] = proof
    if args.format == "json":
        out = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"
    elif args.format == "csv":
        out = to_csv(data)
    else:
        out = to_table(data, width=None if args.wide else TABLE_WIDTH)
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
    store = _prices(settings, ledger_target(args))
    if args.action == "update":
        if not args.source:
            raise SystemExit(f"nometer: prices update needs --from FILE or --from litellm ({PRICES_HELP})")
        from pricing.tables import PriceTableError

        source = litellm_prices() if args.source == "litellm" else Path(args.source)
        try:
            table_id = store.install(source)
        except (OSError, PriceTableError, ValueError) as exc:
            raise SystemExit(f"nometer: cannot install {source}: {exc}") from None
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


PRICES_HELP = (
    "litellm's model_prices_and_context_window.json: the file at the root of "
    "https://github.com/BerriAI/litellm, or `litellm` for the copy inside the installed litellm package"
)
LITELLM_PRICES = "model_prices_and_context_window_backup.json"  # litellm ships its price map under this name


def litellm_prices() -> Path:
    """The price map inside the installed litellm package (found without importing litellm)."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "nometer: --from litellm needs litellm installed here (pip install litellm), or give the "
            "file: --from model_prices_and_context_window.json (from https://github.com/BerriAI/litellm)"
        )
    path = Path(spec.origin).parent / LITELLM_PRICES
    if not path.is_file():
        raise SystemExit(f"nometer: this litellm has no {LITELLM_PRICES} ({path.parent}); give --from FILE")
    return path


def register(sub: Any) -> None:
    r = command(sub, "report", "savings against cloud prices, per team/key/model/tag/day/backend")
    add_ledger(r)
    add_period(r)
    r.add_argument("--by", choices=sorted(DIMENSIONS), help="one row per group (default: totals only)")
    r.add_argument(
        "--compare",
        metavar="MODELS",
        help="reference cloud models, comma-separated; the first is the headline (default: all recorded)",
    )
    r.add_argument("--team", help="only this team's requests (default: every team)")
    r.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    r.add_argument(
        "--wide",
        action="store_true",
        help=f"table: every reference model's columns (by default the table fits {TABLE_WIDTH} columns)",
    )
    r.set_defaults(func=_report)
    p = command(sub, "prices", "show or install price tables")
    p.add_argument(
        "action",
        choices=("show", "update"),
        nargs="?",
        default="show",
        help="show the tables, or install one",
    )
    p.add_argument(
        "--from", dest="source", metavar="FILE|litellm", help=f"required for update: {PRICES_HELP}"
    )
    add_ledger(p)
    p.set_defaults(func=_prices_cmd)
