"""The options every ``nometer`` command shares, described once: ``--db`` and ``--config``.

Every flag's help says what it does and what happens when it is not given; the formatter adds
``(default: X)`` to any flag whose default is a value, so ``--help`` never hides one.
"""

from __future__ import annotations

import argparse
from typing import Any

DB_HELP = (
    "the ledger: a SQLite file or a postgresql:// URL (default: $NOMETER_DB, else the ledger of "
    "--config, else $XDG_DATA_HOME/nometer/ledger.db, i.e. ~/.local/share/nometer/ledger.db)"
)
CONFIG_HELP = "YAML config file (default: $NOMETER_CONFIG, else built-in defaults)"


class Refusal(Exception):
    """A command must not go on; ``code`` is its exit status (2: the request itself is wrong)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help when its default is a value (not None or off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" not in text
            and (action.option_strings or action.nargs == "?")
            and not (default is None or default is False or default == argparse.SUPPRESS)
            and action.nargs != 0
        ):
            text += " (default: %(default)s)"
        return text


def command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` starts with its one-line description and shows defaults."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=help, formatter_class=HelpFormatter
    )
    return parser


def add_ledger(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH|URL", help=DB_HELP)
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)


def add_period(parser: argparse.ArgumentParser) -> None:
    """``--since`` / ``--from`` / ``--to`` (``gateway.ledger.period``)."""
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="start: this long ago (7d, 24h, 30m) or a UTC date/time (2026-11-01, 2026-11-01T12:00) "
        "(default: the whole ledger)",
    )
    parser.add_argument(
        "--from", dest="start", metavar="WHEN", help="start, as --since (default: the whole ledger)"
    )
    parser.add_argument("--to", dest="end", metavar="WHEN", help="end, same forms as --since (default: now)")


def ledger_target(args: argparse.Namespace) -> str:
    """``--db``, else the configured ledger (``$NOMETER_DB``, the config file, the per-user default)."""
    if args.db:
        return str(args.db)
    from gateway.settings import load_settings

    ledger = load_settings(getattr(args, "config", None)).ledger
    return ledger.url or ledger.path
