"""``nometer verify``: the proof that a period of the ledger is what the gateway wrote.

For the requests of a period (``ts`` in [from, to)) the audit

1. walks every hash chain with rows in the period (``gateway.ledger.chain.ChainWalk``), from the
   first row sealed after the period began (less ``SLACK_S`` for clock steps; a request is sealed
   after it ends, so no row of the period is sealed earlier) to the period's last row, and checks
   the links to the rows just outside; both tables stream merged in sequence order, a page at a
   time, so a month never sits in memory;
2. recomputes every receipt of the period from its stored inputs and compares every amount;
3. checks every price table the period uses, and every file in the price directory, against the
   content hash in its id;
4. finds rows outside any chain: written before the chain existed (``unchained``: not proven, not
   a tampering), or since (``inserted``).

The chain heads it ends on (last sequence number and digest per chain) are what a statement
publishes; the result can be recorded in the ledger for the report (``record``).
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.ledger.chain import (
    CHANGED,
    DEAD_LETTER,
    DELETED,
    EVENTS,
    GENESIS,
    INSERTED,
    NOT_TAMPERING,
    PRICE_TABLE,
    SHADOWS,
    UNCHAINED,
    ChainWalk,
    Finding,
    Head,
)
from gateway.ledger.reader import Reader
from gateway.meter import receipts
from pricing.store import PriceStore, TableNotFound
from pricing.tables import is_table_id

SLACK_S = 300.0
PAGE = 1000
LISTED = 200  # findings kept per kind in the result (all are counted, and all reach on_finding)
_UNSEALED = "({a}.chain_id IS NULL OR {a}.chain_seq IS NULL)"


@dataclass
class Audit:
    since: float | None
    until: float | None
    findings: list[Finding] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    heads: list[Head] = field(default_factory=list)
    rows: int = 0  # chained rows checked
    receipts: int = 0
    receipts_ok: int = 0
    unchained: int = 0
    price_tables: list[str] = field(default_factory=list)

    @property
    def tampered(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind not in NOT_TAMPERING)

    @property
    def clean(self) -> bool:
        return self.tampered == 0

    def summary(self) -> str:
        chains = ", ".join(f"{h.chain_id} seq {h.head_seq} {h.head_digest[:16]}" for h in self.heads)
        parts = [
            f"{self.rows} rows in {len(self.heads)} chain(s) checked",
            f"{self.receipts_ok} of {self.receipts} receipts recomputed identically",
            f"{len(self.price_tables)} price table(s) match their ids",
        ]
        if self.unchained:
            parts.append(f"{self.unchained} rows UNCHAINED (written before the chain existed: not proven)")
        if self.counts[DEAD_LETTER]:
            parts.append(
                f"{self.counts[DEAD_LETTER]} request(s) DEAD-LETTERED (refused by the store when written: "
                "in ledger_dead_letters, not in the totals)"
            )
        verdict = "CLEAN" if self.clean else f"{self.tampered} FINDING(S): the ledger was altered"
        return f"{verdict}: {'; '.join(parts)}\nheads: {chains or '-'}"


class Auditor:
    def __init__(
        self,
        reader: Reader,
        price_dir: Path,
        since: float | None = None,
        until: float | None = None,
        *,
        on_finding: Callable[[Finding], None] | None = None,
        page: int = PAGE,
    ):
        self._r = reader
        self._price_dir = price_dir
        self._lo, self._hi = since, until
        self._on_finding = on_finding
        self._page = page
        self._bad_tables: set[str] = set()
        self._prices = PriceStore(price_dir)
        self.result = Audit(since, until)
        self._dead: dict[tuple[str, int], int] | None = None

    # -- plumbing --------------------------------------------------------------------------------

    def _p(self, n: int) -> str:
        return self._r.param(n)

    def _period(self, alias: str = "e", first: int = 1) -> tuple[str, list[Any]]:
        clauses, params = ["1=1"], []
        for cond, value in ((f"{alias}.ts >= ", self._lo), (f"{alias}.ts < ", self._hi)):
            if value is not None:
                params.append(value)
                clauses.append(cond + self._p(first + len(params) - 1))
        return " AND ".join(clauses), params

    def _dead_letters(self) -> dict[tuple[str, int], int]:
        """(chain, first seq) -> rows of each request the store refused (schema 7; none before)."""
        if self._dead is None:
            try:
                rows = self._r.fetch("SELECT chain_id, chain_seq, rows_count FROM ledger_dead_letters")
            except Exception:  # a ledger older than migration 7
                rows = []
            self._dead = {(r["chain_id"], int(r["chain_seq"])): int(r["rows_count"]) for r in rows}
        return self._dead

    def _dead_lettered(self, f: Finding) -> Finding:
        """A gap that is exactly requests kept in ledger_dead_letters is named so, not deleted."""
        if f.kind != DELETED or f.chain_id is None or f.seq is None or f.through is None:
            return f
        dead, seq = self._dead_letters(), f.seq
        while seq <= f.through and (f.chain_id, seq) in dead:
            seq += dead[(f.chain_id, seq)]
        if seq != f.through + 1:
            return f
        return Finding(
            DEAD_LETTER,
            f"{f.detail.split(' missing')[0]}: refused by the store when written (a data error), kept in "
            "ledger_dead_letters",
            chain_id=f.chain_id,
            seq=f.seq,
            through=f.through,
        )

    def _emit(self, finding: Finding) -> None:
        finding = self._dead_lettered(finding)
        self.result.counts[finding.kind] += 1
        if self.result.counts[finding.kind] <= LISTED:
            self.result.findings.append(finding)
        if self._on_finding is not None:
            self._on_finding(finding)

    def run(self) -> Audit:
        self._check_prices()
        for chain_id, (start, end) in sorted(self._chains().items()):
            self._walk(chain_id, start, end)
        self._find_unchained()
        return self.result

    # -- 1. chains -------------------------------------------------------------------------------

    def _chains(self) -> dict[str, tuple[int, int | None]]:
        """chain id -> (first seq to walk, seq of the period's last request in it; None: to the end)."""
        where, params = self._period()
        first: dict[str, int] = {}
        last: dict[str, int | None] = {}
        for r in self._r.fetch(
            "SELECT e.chain_id AS c, MIN(e.chain_seq) AS a, MAX(e.chain_seq) AS b FROM usage_events e "
            f"WHERE {where} AND NOT {_UNSEALED.format(a='e')} GROUP BY e.chain_id",
            params,
        ):
            first[r["c"]], last[r["c"]] = int(r["a"]), int(r["b"])
        if self._lo is None and self._hi is None:  # every chain, from its first row to its head
            chains = set(first)
            for table in (EVENTS, SHADOWS):
                chains |= {
                    r["c"]
                    for r in self._r.fetch(
                        f"SELECT chain_id AS c FROM {table} WHERE chain_id IS NOT NULL GROUP BY chain_id"
                    )
                }
            return {c: (1, None) for c in chains}
        # rows sealed around the period: its first request, or a chain whose period rows are all gone
        clauses, params = ["1=1"], []
        if self._lo is not None:
            params.append(self._lo - SLACK_S)
            clauses.append(f"sealed_at >= {self._p(len(params))}")
        if self._hi is not None:
            params.append(self._hi + SLACK_S)
            clauses.append(f"sealed_at < {self._p(len(params))}")
        for r in self._r.fetch(
            "SELECT chain_id AS c, MIN(chain_seq) AS a FROM usage_events e "
            f"WHERE {' AND '.join(clauses)} AND NOT {_UNSEALED.format(a='e')} GROUP BY chain_id",
            params,
        ):
            a = int(r["a"])
            first[r["c"]] = min(first.get(r["c"], a), a)
            last.setdefault(r["c"], a - 1)  # no request of the period: only check the link before it
        return {
            c: (1 if self._lo is None else a, None if self._hi is None else last[c]) for c, a in first.items()
        }

    def _before(self, chain_id: str, seq: int) -> tuple[int, str | None]:
        """The last stored row before ``seq`` in the chain: (its seq, its digest); (0, GENESIS) if none."""
        best: tuple[int, str | None] = (0, GENESIS)
        for table in (EVENTS, SHADOWS):
            rows = self._r.fetch(
                f"SELECT chain_seq, chain_digest FROM {table} WHERE chain_id = {self._p(1)} "
                f"AND chain_seq < {self._p(2)} ORDER BY chain_seq DESC LIMIT 1",
                [chain_id, seq],
            )
            if rows and rows[0]["chain_seq"] > best[0]:
                best = (rows[0]["chain_seq"], rows[0]["chain_digest"])
        return best

    def _table_rows(self, table: str, chain_id: str, start: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """One table's rows of a chain from ``start`` on, in (seq, id) order, a page at a time."""
        after: tuple[int, int] | None = None
        while True:
            if after is None:
                cond, params = f"chain_seq >= {self._p(2)}", [chain_id, start]
            else:
                cond, params = f"(chain_seq, id) > ({self._p(2)}, {self._p(3)})", [chain_id, *after]
            rows = self._r.fetch(
                f"SELECT * FROM {table} WHERE chain_id = {self._p(1)} AND {cond} "
                f"ORDER BY chain_seq, id LIMIT {int(self._page)}",
                params,
            )
            for row in rows:
                yield table, row
            if len(rows) < self._page:
                return
            after = (rows[-1]["chain_seq"], rows[-1]["id"])

    def _walk(self, chain_id: str, start: int, end: int | None) -> None:
        after_seq, after_digest = self._before(chain_id, start)
        walk = ChainWalk(chain_id, after_seq, after_digest)
        stream = heapq.merge(
            self._table_rows(EVENTS, chain_id, start),
            self._table_rows(SHADOWS, chain_id, start),
            key=_order,
        )
        group: tuple[dict[str, Any], list[dict[str, Any]]] | None = None
        following: dict[str, Any] | None = None
        for table, row in stream:
            if end is not None and table == EVENTS and row["chain_seq"] > end:
                following = row  # the first request after the period: only its link is checked
                break
            for f in walk.feed(table, row):
                self._emit(f)
            if table == EVENTS:
                self._check_receipt(group)
                group = (row, [])
            elif group is not None and row["event_uid"] == group[0]["uid"]:
                group[1].append(row)
        self._check_receipt(group)
        nxt = None if following is None else (following["chain_seq"], following["chain_prev"])
        for f in walk.close(*(nxt or (None, None))):
            self._emit(f)
        self.result.rows += walk.rows
        head = walk.head()
        if head is not None:
            self.result.heads.append(head)

    # -- 2. receipts -----------------------------------------------------------------------------

    def _in_period(self, ts: Any) -> bool:
        if not isinstance(ts, int | float):
            return False
        return (self._lo is None or ts >= self._lo) and (self._hi is None or ts < self._hi)

    def _check_receipt(self, group: tuple[dict[str, Any], list[dict[str, Any]]] | None) -> None:
        if group is None:
            return
        event, shadows = group
        table_id = event.get("price_table_id")
        if table_id is None or table_id in self._bad_tables or not self._in_period(event.get("ts")):
            return
        self.result.receipts += 1
        result = receipts.check(event, shadows, self._prices)
        if result.ok:
            self.result.receipts_ok += 1
            return
        self._emit(
            Finding(
                CHANGED,
                f"receipt: {result.problem}",
                table=result.table,
                row_id=event.get("id") if result.table == EVENTS else None,
                chain_id=event.get("chain_id"),
                seq=event.get("chain_seq"),
                request_id=result.request_id,
                column=result.column,
            )
        )

    # -- 3. price tables -------------------------------------------------------------------------

    def _check_prices(self) -> None:
        where, params = self._period()
        used = sorted(
            r["t"]
            for r in self._r.fetch(
                f"SELECT DISTINCT e.price_table_id AS t FROM usage_events e WHERE {where} "
                "AND e.price_table_id IS NOT NULL",
                params,
            )
        )
        pinned = sorted(
            {
                p.name.removesuffix(".json").removesuffix(".overrides")
                for p in (self._price_dir.glob("*.json") if self._price_dir.is_dir() else ())
            }
        )
        for table_id in dict.fromkeys([*used, *(t for t in pinned if is_table_id(t))]):
            problem = None
            try:
                PriceStore(self._price_dir).get(table_id)  # a fresh store: nothing cached
            except TableNotFound:
                problem = "no pinned price file has this id (deleted?): receipts priced with it cannot be recomputed"
            except (ValueError, OSError) as exc:
                problem = f"its pinned file no longer matches its id (edited): {exc}"
            if problem is not None:
                self._bad_tables.add(table_id)
                self._emit(Finding(PRICE_TABLE, f"price table {table_id}: {problem}"))
        self.result.price_tables = [t for t in used if t not in self._bad_tables]

    # -- 4. rows outside every chain -------------------------------------------------------------

    def _find_unchained(self) -> None:
        legacy = {r["tbl"]: int(r["max_id"]) for r in self._r.fetch("SELECT tbl, max_id FROM chain_legacy")}
        where, params = self._period()
        unsealed = _UNSEALED.format(a="e")
        self._outside(
            EVENTS,
            "SELECT e.id AS id, e.request_id AS rid, NULL AS uid FROM usage_events e "
            f"WHERE {where} AND {unsealed}",
            params,
            legacy.get(EVENTS, 0),
        )
        self._outside(
            SHADOWS,
            "SELECT s.id AS id, NULL AS rid, s.event_uid AS uid FROM shadow_costs s "
            f"JOIN usage_events e ON e.uid = s.event_uid WHERE {where} AND {_UNSEALED.format(a='s')}",
            params,
            legacy.get(SHADOWS, 0),
        )
        if self._lo is None and self._hi is None:  # cost rows whose request is not in the ledger at all
            self._outside(
                SHADOWS,
                "SELECT s.id AS id, NULL AS rid, s.event_uid AS uid FROM shadow_costs s LEFT JOIN usage_events e "
                f"ON e.uid = s.event_uid WHERE e.uid IS NULL AND {_UNSEALED.format(a='s')}",
                [],
                legacy.get(SHADOWS, 0),
            )

    def _outside(self, table: str, select: str, params: list[Any], legacy_max: int) -> None:
        n = len(params)
        old = self._r.fetch(
            f"SELECT COUNT(*) AS n, MIN(id) AS a, MAX(id) AS b FROM ({select}) AS q WHERE id <= {self._p(n + 1)}",
            [*params, legacy_max],
        )[0]
        if old["n"]:
            self.result.unchained += int(old["n"])
            self._emit(
                Finding(
                    UNCHAINED,
                    f"{old['n']} rows (ids {old['a']}..{old['b']}) were written before the hash chain existed: "
                    "not proven",
                    table=table,
                )
            )
        for r in self._r.fetch(
            f"SELECT id, rid, uid FROM ({select}) AS q WHERE id > {self._p(n + 1)} ORDER BY id LIMIT {LISTED * 50}",
            [*params, legacy_max],
        ):
            self._emit(
                Finding(
                    INSERTED,
                    "not in any chain: inserted after the chain existed, or its chain columns were cleared",
                    table=table,
                    row_id=r["id"],
                    request_id=None if r["rid"] is None else str(r["rid"]),
                    event_uid=None if r["uid"] is None else str(r["uid"]),
                )
            )


def _order(item: tuple[str, dict[str, Any]]) -> tuple[float, bool, int]:
    seq = item[1]["chain_seq"]  # an edited, non-integer seq sorts last (and is reported by the walk)
    return (seq if isinstance(seq, int) else float("inf"), item[0] != EVENTS, item[1]["id"])


def record(reader: Reader, audit: Audit, now: float | None = None) -> None:
    """Keep the result in the ledger, for the report's verify state."""
    p = [reader.param(i) for i in range(1, 10)]
    reader.execute(
        "INSERT INTO ledger_verifications (ts, period_from, period_to, clean, rows_checked, receipts, "
        f"findings, unchained, heads) VALUES ({', '.join(p)})",
        [
            time.time() if now is None else now,
            audit.since,
            audit.until,
            int(audit.clean),
            audit.rows,
            audit.receipts,
            audit.tampered,
            audit.unchained,
            orjson.dumps([h.as_dict() for h in audit.heads]).decode(),
        ],
    )
