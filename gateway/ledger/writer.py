"""Writing one sealed batch: a bounded wait, and a bad row never takes the batch with it.

``write`` tries the batch in one transaction within ``ledger.write_timeout_s``. A failure that is
the store being down, locked or slow answers False: the recorder spools the batch and replays it
later. A failure the store calls a *data error* (a value it refuses even after
``gateway.ledger.sanitize``) would fail every retry, so the batch is written again request by
request (a request's event row with its cost rows, in seal order, each in its own transaction):
the good ones land, and each refused one goes to ``ledger_dead_letters`` (schema migration 7)
with its sealed rows as JSON and the error, for inspection. Its chain position stays empty; that
is what ``nometer verify`` reports as dead-lettered rather than deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import orjson

from gateway.ledger.events import EVENT_COLUMNS, SHADOW_COLUMNS
from gateway.ledger.store import LedgerBatchLike, Row, Store

log = logging.getLogger("nometer.recorder")

_UID = EVENT_COLUMNS.index("uid")
_EVENT_UID = SHADOW_COLUMNS.index("event_uid")


@dataclass
class Unit:
    """One request's sealed rows: its event and its cost rows (``LedgerBatchLike``)."""

    events: list[Row] = field(default_factory=list)
    shadows: list[Row] = field(default_factory=list)


def units(batch: LedgerBatchLike) -> list[Unit]:
    """The batch split per request, in seal order (a cost row follows its event)."""
    by_uid: dict[object, Unit] = {}
    out: list[Unit] = []
    for e in batch.events:
        u = by_uid[e[_UID]] = Unit([e])
        out.append(u)
    for s in batch.shadows:
        owner = by_uid.get(s[_EVENT_UID])
        if owner is None:  # a cost row without its event: alone
            owner = by_uid[s[_EVENT_UID]] = Unit()
            out.append(owner)
        owner.shadows.append(s)
    return out


def dead_letter(unit: Unit, exc: BaseException) -> Row:
    first = unit.events[0] if unit.events else unit.shadows[0]
    width = len(first) - 5  # content columns; then chain_id, chain_seq, sealed_at, prev, digest
    chain_id, chain_seq = first[width], first[width + 1]
    uid = unit.events[0][_UID] if unit.events else unit.shadows[0][_EVENT_UID]
    try:
        payload = orjson.dumps({"events": unit.events, "shadows": unit.shadows}).decode()
    except TypeError:
        payload = ascii({"events": unit.events, "shadows": unit.shadows})
    error = ascii(f"{type(exc).__name__}: {exc}")[1:-1][:2000]
    return (time.time(), chain_id, chain_seq, len(unit.events) + len(unit.shadows), uid, error, payload)


class BatchWriter:
    def __init__(self, store: Store, timeout_s: float):
        self._store = store
        self._timeout = timeout_s
        self.dead_lettered = 0  # requests kept in ledger_dead_letters
        self.last_error: str | None = None

    async def _insert(self, batch: LedgerBatchLike) -> None:
        async with asyncio.timeout(self._timeout):  # no extra task per write, unlike wait_for()
            await self._store.insert_batch(batch)

    async def write(self, batch: LedgerBatchLike) -> bool:
        """True once the batch is in the store (or its refused requests dead-lettered)."""
        try:
            await self._insert(batch)
        except Exception as exc:
            if not self._store.data_error(exc):
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("ledger write of %d requests failed: %s", len(batch.events), self.last_error)
                return False
            log.error(
                "the store refused a value in a batch of %d requests (%s): writing it request by request",
                len(batch.events),
                exc,
            )
            return await self._isolate(batch)
        self.last_error = None
        return True

    async def _isolate(self, batch: LedgerBatchLike) -> bool:
        dead: list[Row] = []
        for unit in units(batch):
            try:
                await self._insert(unit)
            except Exception as exc:
                if not self._store.data_error(exc):  # down mid-way: the whole batch is spooled,
                    self.last_error = f"{type(exc).__name__}: {exc}"  # and replay skips what landed
                    return False
                dead.append(dead_letter(unit, exc))
        if dead:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._store.insert_dead_letters(dead)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("dead letters not written (%s): the batch is spooled", self.last_error)
                return False
            self.dead_lettered += len(dead)
            for d in dead:
                log.error(
                    "LEDGER DEAD LETTER: request uid %s (chain %s seq %s) refused by the store: %s; "
                    "kept in ledger_dead_letters",
                    d[4],
                    d[1],
                    d[2],
                    d[5],
                )
        self.last_error = None
        return True
