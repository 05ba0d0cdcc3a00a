"""``nometer keys``: create, list, disable and rotate API keys in the ledger database.

Works whether or not the gateway runs: a running gateway notices changes within
``auth.refresh_s`` (one second by default). A new key is printed once and never stored.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from gateway.cli.options import add_ledger, command, ledger_target
from gateway.ledger.keystore import KeyNotFound, KeyRecord, KeyStore, open_key_store


def _store(args: argparse.Namespace) -> KeyStore:
    """The key table lives in the ledger (a SQLite file or PostgreSQL)."""
    db = ledger_target(args)
    return open_key_store(db, db) if db.startswith(("postgresql://", "postgres://")) else KeyStore(db)


def _show(rec: KeyRecord, secret: str | None, fmt: str) -> None:
    if fmt == "json":
        data: dict[str, Any] = rec.public()
        if secret:
            data = {"key": secret, **data}
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
        return
    if secret:
        sys.stdout.write(f"{secret}\n")
        sys.stderr.write(
            f"key {rec.key_id} (team {rec.team}, name {rec.name}): store it now, it is not shown again\n"
        )


def _create(args: argparse.Namespace) -> int:
    secret, rec = _store(args).create(args.team, args.name)
    _show(rec, secret, args.format)
    return 0


def _list(args: argparse.Namespace) -> int:
    keys = _store(args).list(args.team)
    if args.format == "json":
        for k in keys:
            _show(k, None, "json")
        return 0
    cols = ("key_id", "team", "name", "prefix", "created", "state")
    rows = [
        (
            k.key_id,
            k.team,
            k.name,
            k.prefix + "...",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(k.created)),
            _state(k),
        )
        for k in keys
    ]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=False)).rstrip() + "\n")
    for r in rows:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)).rstrip() + "\n")
    return 0


def _state(k: KeyRecord) -> str:
    if k.disabled is not None:
        return "disabled" + (f" (rotated to {k.replaced_by})" if k.replaced_by else "")
    if k.expires is not None:
        left = k.expires - time.time()
        return f"expires in {left:.0f}s (rotated to {k.replaced_by})" if left > 0 else "expired"
    return "active"


def _disable(args: argparse.Namespace) -> int:
    try:
        rec = _store(args).disable(args.key_id)
    except KeyNotFound:
        sys.stderr.write(f"nometer: no key {args.key_id}\n")
        return 1
    sys.stderr.write(f"key {rec.key_id} (team {rec.team}) disabled\n")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    try:
        secret, rec = _store(args).rotate(args.key_id, args.grace_s)
    except KeyNotFound:
        sys.stderr.write(f"nometer: no key {args.key_id}\n")
        return 1
    except ValueError as exc:
        sys.stderr.write(f"nometer: {exc}\n")
        return 1
    _show(rec, secret, args.format)
    return 0


def register(sub: Any) -> None:
    k = command(sub, "keys", "manage API keys (teams)")
    ksub = k.add_subparsers(dest="keys_cmd", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        add_ledger(p)
        p.add_argument(
            "--format", choices=("text", "json"), default="text", help="text for people, or one JSON object"
        )

    c = command(ksub, "create", "create a key for a team; prints it once")
    c.add_argument("--team", required=True, help="the team the key belongs to (required)")
    c.add_argument("--name", help="a label for the key (default: default)")
    common(c)
    c.set_defaults(func=_create)
    ls = command(ksub, "list", "list keys (never the keys themselves)")
    ls.add_argument("--team", help="only this team's keys (default: every team)")
    common(ls)
    ls.set_defaults(func=_list)
    d = command(ksub, "disable", "disable a key; a running gateway refuses it within a second")
    d.add_argument("key_id", help="the key's id, as `keys list` shows it")
    common(d)
    d.set_defaults(func=_disable)
    r = command(ksub, "rotate", "replace a key with a new one (same team and name)")
    r.add_argument("key_id", help="the key's id, as `keys list` shows it")
    r.add_argument(
        "--grace-s",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds the old key keeps working; 0 stops it at once",
    )
    common(r)
    r.set_defaults(func=_rotate)
