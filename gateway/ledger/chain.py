"""The ledger's hash chain: every row sealed to the one before it, one chain per gateway process.

Sealing. Each gateway process is one writer with its own chain id (made at start). The recorder
seals every batch once, in the gateway process, right after its rows are made and before they are
written: each row (a request's ``usage_events`` row, then each of its ``shadow_costs`` rows) gets
the next sequence number of the chain, the batch's seal time, the previous row's digest and

    digest = sha256(canonical(prev, table, chain_id, seq, sealed_at, content columns))

so a row's digest covers every stored column but the database's own row ``id`` (assigned after
sealing; ``verify`` checks instead that ids grow with the sequence), and, through ``prev``, every
row before it in the same chain. Replicas sharing one PostgreSQL ledger each have their own chain,
so they never contend for a head.

Canonical form: the orjson encoding of the list ``[prev, table, chain_id, seq, sealed_at, *content]``
with the content columns in ledger order (``EVENT_COLUMNS`` / ``SHADOW_COLUMNS``) and trailing
NULLs dropped (a column appended later, NULL in old rows, leaves old digests unchanged). Values of
DOUBLE PRECISION columns are written as floats (SQLite stores an int given to one as a float) in
orjson's shortest round-trip form; NaN, infinities, bytes and any other odd type as a tagged list,
so no edit can alias NULL or another value. Integers, text and NULL are written as they are.

Verifying. ``ChainWalk`` takes one chain's rows in sequence order (both tables merged) and reports
rows whose content no longer matches their digest (changed), sequence gaps (deleted), repeated
sequence numbers (inserted), broken links (a row rewritten and re-sealed), cost rows that do not
follow their own request, and ids out of sequence order (reordered). It keeps O(1) state, so a
month of rows streams through it.

What it cannot see: anyone who can write the ledger and runs this (open) code can re-seal a
chain from an edited row onward, or cut its newest rows. Both change or remove the head; only a
head published earlier (a signed statement, ``gateway.meter.statement``) shows that.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from gateway.ids import new_id
from gateway.ledger import schema
from gateway.ledger.events import EVENT_COLUMNS, SHADOW_COLUMNS
from gateway.ledger.store import LedgerBatchLike, Row

EVENTS: Final = "usage_events"
SHADOWS: Final = "shadow_costs"
CONTENT: Final[Mapping[str, tuple[str, ...]]] = {EVENTS: EVENT_COLUMNS, SHADOWS: SHADOW_COLUMNS}
GENESIS: Final = "0" * 64  # the "previous digest" of a chain's first row

_UID: Final = EVENT_COLUMNS.index("uid")
_EVENT_UID: Final = SHADOW_COLUMNS.index("event_uid")
_INT_RANGE: Final = (-(2**63), 2**64)


def new_chain_id(now: float | None = None) -> str:
    """A writer's chain id: its start time (UTC, sortable) and 48 random bits."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{new_id()[:12]}"


def _value(v: object) -> object:
    """Any value as orjson can write it, tagged where it could alias another (slow path)."""
    t = type(v)
    if t is str or v is None:
        return v
    if t is float:
        return _float(v)
    if t is int:
        return v if _INT_RANGE[0] <= v < _INT_RANGE[1] else ["int", str(v)]  # type: ignore[operator]
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return _value(int(v))
    if isinstance(v, bytes | bytearray | memoryview):
        return ["bytes", bytes(v).hex()]
    if isinstance(v, str):
        return str(v)
    return [t.__name__, str(v)]


def _float(v: object) -> object:
    """A DOUBLE PRECISION column's value: always a float (SQLite stores an int given to a REAL
    column as a float, so 3 and 3.0 must seal alike); NaN and infinities tagged (orjson would
    write them as null)."""
    if v is None:
        return None
    if type(v) is float or type(v) is int:
        try:
            f = float(v)
        except OverflowError:
            return ["int", str(v)]
        return f if math.isfinite(f) else ["float", repr(f)]
    return _value(v)


def _double_columns(table: str) -> frozenset[str]:
    """The DOUBLE PRECISION columns of ``table``, read from the migrations."""
    out: set[str] = set()
    for _, stmts in schema.MIGRATIONS:
        for stmt in stmts:
            created = re.match(rf"\s*CREATE TABLE {table} \((.*)\)\s*$", stmt, re.S)
            if created:
                out |= {c.split()[0] for c in created.group(1).split(",") if "DOUBLE PRECISION" in c}
            added = re.match(rf"\s*ALTER TABLE {table} ADD COLUMN (\w+) DOUBLE PRECISION", stmt)
            if added:
                out.add(added.group(1))
    return frozenset(out)


FLOAT_COLUMNS: Final[Mapping[str, tuple[int, ...]]] = {
    table: tuple(i for i, c in enumerate(cols) if c in _double_columns(table))
    for table, cols in CONTENT.items()
}


def canonical(
    prev: object, table: str, chain_id: object, seq: object, sealed_at: object, content: Sequence[object]
) -> bytes:
    """The bytes a row's digest is taken over (see the module docstring)."""
    values = list(content)
    for i in FLOAT_COLUMNS[table]:
        values[i] = _float(values[i])
    while values and values[-1] is None:
        values.pop()
    head = [prev, table, chain_id, seq, _float(sealed_at)]
    try:
        return orjson.dumps([*head, *values])
    except TypeError:  # bytes, a huge int...: only ever read back from an edited row
        return orjson.dumps([_value(v) for v in head] + [_value(v) for v in values])


def digest(
    prev: object, table: str, chain_id: object, seq: object, sealed_at: object, content: Sequence[object]
) -> str:
    return hashlib.sha256(canonical(prev, table, chain_id, seq, sealed_at, content)).hexdigest()


def row_digest(table: str, row: Mapping[str, Any]) -> str:
    """The digest a stored row (a dict of its columns) should carry."""
    return digest(
        row["chain_prev"],
        table,
        row["chain_id"],
        row["chain_seq"],
        row["sealed_at"],
        [row[c] for c in CONTENT[table]],
    )


class Sealer:
    """The chain of one writer: seals batches in order. Not thread-safe: the recorder seals one
    batch at a time (rows are sealed exactly once, in the gateway process, before any write)."""

    def __init__(self, chain_id: str | None = None, *, clock: Callable[[], float] = time.time):
        self.chain_id = chain_id or new_chain_id()
        self.seq = 0  # of the last sealed row
        self.head = GENESIS  # its digest
        self._clock = clock

    def _seal(self, table: str, row: Row, sealed_at: float) -> Row:
        width = len(CONTENT[table])
        if len(row) != width:
            raise ValueError(f"a {table} row has {len(row)} columns, not {width}: sealed twice?")
        self.seq += 1
        d = digest(self.head, table, self.chain_id, self.seq, sealed_at, row)
        sealed = (*row, self.chain_id, self.seq, sealed_at, self.head, d)
        self.head = d
        return sealed

    def seal(self, batch: LedgerBatchLike) -> LedgerBatchLike:
        """Append the chain columns to every row of ``batch`` (in place; returned for chaining):
        each event, then its cost rows, in the batch's order."""
        now = self._clock()
        by_event: dict[object, list[Row]] = {}
        for s in batch.shadows:
            by_event.setdefault(s[_EVENT_UID], []).append(s)
        events: list[Row] = []
        shadows: list[Row] = []
        for e in batch.events:
            events.append(self._seal(EVENTS, e, now))
            shadows.extend(self._seal(SHADOWS, s, now) for s in by_event.pop(e[_UID], ()))
        for rest in by_event.values():  # cost rows without their event (never made so): still sealed
            shadows.extend(self._seal(SHADOWS, s, now) for s in rest)
        batch.events, batch.shadows = events, shadows
        return batch


# -- verifying -----------------------------------------------------------------------------------

CHANGED: Final = "changed"
DELETED: Final = "deleted"
INSERTED: Final = "inserted"
REORDERED: Final = "reordered"
UNCHAINED: Final = "unchained"  # written before the chain existed: not proven, not a tampering
DEAD_LETTER: Final = "dead_letter"  # refused by the store at write time, kept in ledger_dead_letters
PRICE_TABLE: Final = "price_table"
STATEMENT: Final = "statement"
KINDS: Final = (CHANGED, DELETED, INSERTED, REORDERED, PRICE_TABLE, STATEMENT, UNCHAINED, DEAD_LETTER)
NOT_TAMPERING: Final = frozenset({UNCHAINED, DEAD_LETTER})


@dataclass(frozen=True)
class Finding:
    """One thing ``verify`` found. Every kind but ``unchained`` and ``dead_letter`` means the ledger
    was altered."""

    kind: str
    detail: str
    table: str | None = None
    row_id: int | None = None
    chain_id: str | None = None
    seq: int | None = None
    request_id: str | None = None
    event_uid: str | None = None  # a cost row's request, by uid
    column: str | None = None
    through: int | None = None  # a gap's last missing sequence number (``seq`` is its first)

    @property
    def tampering(self) -> bool:
        return self.kind not in NOT_TAMPERING

    def line(self) -> str:
        where = [
            f"{k}={v}"
            for k, v in (
                ("table", self.table),
                ("id", self.row_id),
                ("chain", self.chain_id),
                ("seq", self.seq),
                ("request", self.request_id),
                ("event_uid", self.event_uid),
                ("column", self.column),
            )
            if v is not None
        ]
        return f"{self.kind.upper()} {' '.join(where)}: {self.detail}".replace(" :", ":")

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Head:
    """Where a chain stands for a period: its last row's sequence number and digest."""

    chain_id: str
    first_seq: int
    head_seq: int
    head_digest: str
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ChainWalk:
    """Checks one chain's rows, fed in ascending ``chain_seq`` order (both tables merged).

    ``after_seq``/``after_digest``: the last row stored before the first one fed (0 and
    ``GENESIS`` at the start of the chain); a gap after it is a deletion too."""

    chain_id: str
    after_seq: int = 0
    after_digest: str | None = GENESIS
    rows: int = 0
    first_seq: int | None = None
    _last_seq: int = field(init=False)
    _last_digest: str | None = field(init=False)
    _last_uid: object = field(init=False, default=None)
    _last_id: dict[str, tuple[int, int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._last_seq, self._last_digest = self.after_seq, self.after_digest

    def _at(self, table: str, row: Mapping[str, Any], kind: str, detail: str, **kw: Any) -> Finding:
        rid, uid = (row.get("request_id"), None) if table == EVENTS else (None, row.get("event_uid"))
        return Finding(
            kind,
            detail,
            table=table,
            row_id=row.get("id"),
            chain_id=self.chain_id,
            seq=row.get("chain_seq"),
            request_id=None if rid is None else str(rid),
            event_uid=None if uid is None else str(uid),
            **kw,
        )

    def feed(self, table: str, row: Mapping[str, Any]) -> list[Finding]:
        out: list[Finding] = []
        seq = row["chain_seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            return [self._at(table, row, CHANGED, f"its chain_seq is not a sequence number: {seq!r}")]
        self.rows += 1
        if self.first_seq is None:
            self.first_seq = seq
        linked = True
        if seq == self._last_seq and self.rows > 1:
            out.append(
                self._at(table, row, INSERTED, f"a second row with sequence number {seq} in this chain")
            )
            linked = False
        elif seq > self._last_seq + 1:
            lo, hi = self._last_seq + 1, seq - 1
            gap = f"seq {lo}" if lo == hi else f"seq {lo}..{hi} ({hi - lo + 1} rows)"
            out.append(
                Finding(DELETED, f"{gap} missing before this row", chain_id=self.chain_id, seq=lo, through=hi)
            )
            linked = False
        sealed_ok = row_digest(table, row) == row["chain_digest"]
        if not sealed_ok:
            out.append(
                self._at(table, row, CHANGED, "its stored content no longer matches its digest (edited)")
            )
        elif linked and row["chain_prev"] != self._last_digest:
            out.append(
                self._at(
                    table,
                    row,
                    CHANGED,
                    f"the chain breaks before this row: the digest it recorded for seq {seq - 1} is not that "
                    f"row's (seq {seq - 1} or this row was rewritten and re-sealed)",
                )
            )
        if table == SHADOWS and sealed_ok and row["event_uid"] != self._last_uid:
            out.append(
                self._at(
                    table,
                    row,
                    CHANGED,
                    f"this cost row belongs to request uid {row['event_uid']}, which does not precede it "
                    "in the chain (its request was deleted, or the row was moved and re-sealed)",
                    column="event_uid",
                )
            )
        rid = row.get("id")
        if rid is not None:
            before = self._last_id.get(table)
            if before is not None and rid < before[0]:
                out.append(
                    self._at(
                        table,
                        row,
                        REORDERED,
                        f"stored before id {before[0]} (seq {before[1]}) although sealed after it",
                        column="id",
                    )
                )
            self._last_id[table] = (rid, seq)
        if table == EVENTS:
            self._last_uid = row["uid"]
        if seq >= self._last_seq:
            self._last_seq, self._last_digest = seq, row["chain_digest"]
        return out

    def close(self, next_seq: int | None, next_prev: str | None) -> list[Finding]:
        """Check the link to the first stored row after the walk (None: the walk reached the head)."""
        if next_seq is None:
            return []
        if next_seq > self._last_seq + 1:
            lo, hi = self._last_seq + 1, next_seq - 1
            gap = f"seq {lo}" if lo == hi else f"seq {lo}..{hi} ({hi - lo + 1} rows)"
            return [Finding(DELETED, f"{gap} missing", chain_id=self.chain_id, seq=lo, through=hi)]
        if next_seq == self._last_seq + 1 and next_prev != self._last_digest:
            return [
                Finding(
                    CHANGED,
                    f"the chain breaks after seq {self._last_seq}: the next row recorded another digest for it",
                    chain_id=self.chain_id,
                    seq=self._last_seq,
                )
            ]
        return []

    def head(self) -> Head | None:
        if self.first_seq is None or self._last_digest is None:
            return None
        return Head(self.chain_id, self.first_seq, self._last_seq, self._last_digest, self.rows)
