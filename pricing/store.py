"""Versioned price-table snapshots on disk, addressed by table id.

Layout of the store directory:

* `<id>.json` — an installed price file, byte for byte. Its id is the install date plus the
  first 12 hex of its SHA-256, so `sha256sum` checks it. Written once, never overwritten.
* `<id>.overrides.json` — a pinned derived table: `{"base": <id>, "overrides": {...}}`. Loading
  it re-applies the overrides to the base and checks that the result has the same id.

Why snapshots are immutable: receipts name a table id, and `verify` recomputes a receipt from the
ledger by fetching that id. Replacing a file in place would make old receipts unverifiable, so
new prices always arrive as a new id and `current()` simply picks the newest installed one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import orjson

from pricing.money import decimal_str
from pricing.overrides import apply_overrides
from pricing.tables import PriceTable, PriceTableError, is_table_id, make_table_id, parse_table, shipped_table

_OVERLAY_SUFFIX: Final = ".overrides.json"


class TableNotFound(LookupError):
    """No installed, pinned or shipped table has this id."""


class PriceStore:
    """Price tables installed into `directory`, with the shipped snapshot as the fallback.

    `shipped` is injectable for tests; by default it is the snapshot inside this package.
    """

    def __init__(self, directory: Path, *, shipped: Callable[[], PriceTable] = shipped_table) -> None:
        self._directory = directory
        self._shipped = shipped
        self._loaded: dict[str, PriceTable] = {}

    @property
    def directory(self) -> Path:
        return self._directory

    def install(self, path: Path, *, date: dt.date | None = None) -> str:
        """Copy the price file at `path` into the store and return its id.

        `date` (default: today, UTC) is the install date in the id. Installing identical bytes on
        the same date again is a no-op returning the same id; an existing file is never replaced.
        """
        data = path.read_bytes()
        table = parse_table(data, date=date or dt.datetime.now(dt.UTC).date(), source=str(path))
        self._write_once(f"{table.id}.json", data)
        return table.id

    def pin(self, table: PriceTable) -> str:
        """Make `get(table.id)` return this table later (e.g. for `verify`); return its id.

        A plain table is copied in from its source file (which must still hold the same bytes),
        the shipped snapshot included, so upgrading nometer cannot strand old receipts. A derived
        table (from `apply_overrides`) is stored as an overlay on its pinned base.
        """
        if table.base is not None:
            base_id = self.pin(table.base)
            overlay = {
                "base": base_id,
                "overrides": {
                    model: {name: decimal_str(value) for name, value in fields.items()}
                    for model, fields in table.overrides.items()
                },
            }
            data = orjson.dumps(overlay, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
            self._write_once(f"{table.id}{_OVERLAY_SUFFIX}", data)
            return table.id
        if (self._directory / f"{table.id}.json").is_file():
            return table.id
        source = Path(table.source)
        if not source.is_file() or hashlib.sha256(source.read_bytes()).hexdigest() != table.digest:
            raise PriceTableError(f"cannot pin {table.id}: its source {table.source} is gone or changed")
        return self.install(source, date=table.date)

    def get(self, table_id: str) -> PriceTable:
        """The table with this id; raises `TableNotFound`, or `PriceTableError` on a corrupt file."""
        cached = self._loaded.get(table_id)
        if cached is not None:
            return cached
        if not is_table_id(table_id):
            raise TableNotFound(table_id)
        table = self._load(table_id)
        if table.id != table_id:
            raise PriceTableError(f"stored table {table_id} now hashes to {table.id}: it was modified")
        self._loaded[table_id] = table
        return table

    def ids(self) -> list[str]:
        """Ids of installed (not pinned-derived) tables, oldest first."""
        installed = [
            (path.stem, path.stat().st_mtime_ns)
            for path in self._directory.glob("*.json")
            if is_table_id(path.stem)
        ]
        return [
            table_id for table_id, _ in sorted(installed, key=lambda item: (item[0][:10], item[1], item[0]))
        ]

    def current(self) -> PriceTable:
        """The newest installed table (by install date, then install time); else the shipped one.

        Whoever prices with the result should `pin` it (after any overrides) so its id stays
        resolvable by `get`."""
        installed = self.ids() if self._directory.is_dir() else []
        return self.get(installed[-1]) if installed else self._shipped()

    def _load(self, table_id: str) -> PriceTable:
        date = dt.date.fromisoformat(table_id[:10])
        plain = self._directory / f"{table_id}.json"
        if plain.is_file():
            return parse_table(plain.read_bytes(), date=date, source=str(plain))
        overlay = self._directory / f"{table_id}{_OVERLAY_SUFFIX}"
        if overlay.is_file():
            document = orjson.loads(overlay.read_bytes())
            if not isinstance(document, dict) or not isinstance(document.get("overrides"), Mapping):
                raise PriceTableError(f"{overlay}: not an overrides file")
            return apply_overrides(self.get(str(document.get("base"))), document["overrides"])
        shipped = self._shipped()
        if shipped.digest[:12] == table_id[11:]:
            # The shipped snapshot's date comes from its file mtime, which differs between
            # machines; its content hash does not. Serve it under the id the receipt recorded.
            return dataclasses.replace(shipped, id=make_table_id(date, shipped.digest))
        raise TableNotFound(table_id)

    def _write_once(self, name: str, data: bytes) -> None:
        """Write `name` atomically unless it exists; an existing file must hold the same bytes."""
        target = self._directory / name
        self._directory.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            temporary = self._directory / f".{name}.{uuid.uuid4().hex}.tmp"
            temporary.write_bytes(data)
            try:
                os.link(temporary, target)  # fails instead of replacing if `target` appeared meanwhile
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        if target.read_bytes() != data:
            raise PriceTableError(f"{target} exists with different content; snapshots are never overwritten")
