"""The hash chain without a database: sealing, the canonical form, and every kind of finding."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from gateway.ledger import chain
from gateway.ledger.chain import (
    CHANGED,
    DELETED,
    EVENTS,
    GENESIS,
    INSERTED,
    REORDERED,
    SHADOWS,
    ChainWalk,
    Sealer,
    canonical,
    row_digest,
)
from gateway.ledger.events import CHAIN_COLUMNS, EVENT_COLUMNS, SHADOW_COLUMNS
from gateway.ledger.sqlite import migrate_sqlite
from gateway.meter.rows import LedgerBatch


def event(uid: str, **over: Any) -> tuple[Any, ...]:
    values: dict[str, Any] = {c: None for c in EVENT_COLUMNS}
    values.update(
        request_id=f"req-{uid}",
        ts=1_767_000_000.25,
        day="2026-11-03",
        endpoint="/v1/chat/completions",
        route="local",
        outcome="ok",
        status=200,
        stream=0,
        prompt_tokens=12,
        usage_source="upstream",
        latency_ms=3.5,
        busy_s=0.002,
        uid=uid,
        price_table_id="2026-11-01-0123456789ab",
        local_energy_pusd=1234,
    )
    values.update(over)
    return tuple(values[c] for c in EVENT_COLUMNS)


def shadow(uid: str, i: int) -> tuple[Any, ...]:
    return (uid, i, f"ref-{i}", f"ref-{i}", "o200k_base", 0, 12, 0, 0, 5, 0, 99, 90, None)


def sealed_rows(n: int = 3, refs: int = 2, sealer: Sealer | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``n`` requests with ``refs`` cost rows each, sealed, as (table, row dict) in chain order,
    with ids as a store would give them."""
    sealer = sealer or Sealer("test-chain", clock=lambda: 1_767_000_001.5)
    batch = LedgerBatch()
    for k in range(n):
        batch.events.append(event(f"u{k}"))
        batch.shadows.extend(shadow(f"u{k}", i) for i in range(refs))
    sealer.seal(batch)
    ids = {EVENTS: 0, SHADOWS: 0}
    out: list[tuple[str, dict[str, Any]]] = []
    shadows = iter(batch.shadows)
    for e in batch.events:
        ids[EVENTS] += 1
        out.append((EVENTS, {"id": ids[EVENTS], **dict(zip(EVENT_COLUMNS + CHAIN_COLUMNS, e, strict=True))}))
        for _ in range(refs):
            ids[SHADOWS] += 1
            s = next(shadows)
            out.append(
                (SHADOWS, {"id": ids[SHADOWS], **dict(zip(SHADOW_COLUMNS + CHAIN_COLUMNS, s, strict=True))})
            )
    return out


def walk(rows: list[tuple[str, dict[str, Any]]], **kw: Any) -> tuple[list[chain.Finding], ChainWalk]:
    w = ChainWalk("test-chain", **kw)
    found = [f for table, row in rows for f in w.feed(table, row)]
    return found, w


def test_seal_links_every_row_in_order() -> None:
    rows = sealed_rows()
    assert [r["chain_seq"] for _, r in rows] == list(range(1, 10))
    assert [t for t, _ in rows] == [EVENTS, SHADOWS, SHADOWS] * 3
    prev = GENESIS
    for table, r in rows:
        assert r["chain_prev"] == prev and r["chain_id"] == "test-chain" and r["sealed_at"] == 1_767_000_001.5
        assert row_digest(table, r) == r["chain_digest"]
        prev = r["chain_digest"]
    assert rows[1][1]["event_uid"] == rows[0][1]["uid"]


def test_a_second_batch_continues_the_chain_and_sealing_twice_is_refused() -> None:
    sealer = Sealer("test-chain")
    first = LedgerBatch(events=[event("a")], shadows=[shadow("a", 0)])
    sealer.seal(first)
    second = LedgerBatch(events=[event("b")])
    sealer.seal(second)
    assert second.events[0][-2] == first.shadows[0][-1] and sealer.seq == 3
    with pytest.raises(ValueError, match="sealed twice"):
        sealer.seal(second)


def test_chain_ids_differ_per_writer_and_sort_by_start() -> None:
    a, b = chain.new_chain_id(1_767_000_000), chain.new_chain_id(1_767_000_060)
    assert a != b and a < b and a.startswith("20251229T092000Z-")


def test_canonical_form() -> None:
    base = list(event("u"))
    ts = EVENT_COLUMNS.index("ts")

    def c(values: list[Any]) -> bytes:
        return canonical(GENESIS, EVENTS, "c", 1, 2.0, values)

    as_int = list(base)
    as_int[ts] = 1_767_000_000
    as_float = list(base)
    as_float[ts] = 1_767_000_000.0
    assert c(as_int) == c(as_float)  # SQLite stores an int given to a REAL column as a float
    nan = list(base)
    nan[EVENT_COLUMNS.index("joules")] = float("nan")
    assert c(nan) != c(base)  # NaN is not NULL
    # a column appended later, NULL in old rows, does not change their digest
    assert c([*base, None, None]) == c(base)
    # but NULL, "", 0 and a value are all different
    tag = EVENT_COLUMNS.index("tag")
    variants = {c([*base[:tag], v, *base[tag + 1 :]]) for v in (None, "", 0, "0", b"0")}
    assert len(variants) == 5
    assert canonical(GENESIS, EVENTS, "c", 1, 2.0, base) != canonical(GENESIS, SHADOWS, "c", 1, 2.0, base)


def test_float_columns_come_from_the_schema() -> None:
    names = {EVENT_COLUMNS[i] for i in chain.FLOAT_COLUMNS[EVENTS]}
    assert names == {"ts", "latency_ms", "ttft_ms", "busy_s", "joules"}
    assert chain.FLOAT_COLUMNS[SHADOWS] == ()


def test_the_digest_covers_every_stored_column() -> None:
    """Every column the schema creates is content, chain state, or the store's own row id."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate_sqlite(conn)
    for table, content in chain.CONTENT.items():
        stored = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        assert stored == {"id", *content, *CHAIN_COLUMNS}, table


def test_clean_walk_and_its_head() -> None:
    rows = sealed_rows()
    found, w = walk(rows)
    assert found == []
    head = w.head()
    assert head is not None and (head.first_seq, head.head_seq, head.rows) == (1, 9, 9)
    assert head.head_digest == rows[-1][1]["chain_digest"]
    assert w.close(None, None) == []
    assert w.close(10, rows[-1][1]["chain_digest"]) == []


def _edited(value: Any) -> Any:
    if value is None:
        return "x"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 1
    return value + "x"


@pytest.mark.parametrize(
    ("table", "column"),
    [(EVENTS, c) for c in EVENT_COLUMNS + CHAIN_COLUMNS if c != "chain_seq"]
    + [(SHADOWS, c) for c in SHADOW_COLUMNS + CHAIN_COLUMNS if c != "chain_seq"],
)
def test_an_edit_of_any_column_is_caught_on_its_row(table: str, column: str) -> None:
    rows = sealed_rows()
    k = next(i for i, (t, _) in enumerate(rows) if t == table and i >= 3)
    target = rows[k][1]
    for value in {_edited(target[column]), None} - {target[column]}:
        tampered = [(t, dict(r)) for t, r in rows]
        tampered[k][1][column] = value
        found, _ = walk(tampered)
        assert found, (column, value)
        if column != "chain_prev":  # an edited prev shows where the row's own digest breaks
            assert any(f.kind == CHANGED and f.seq == target["chain_seq"] for f in found), (column, found)


def test_deleted_rows_are_a_gap() -> None:
    rows = sealed_rows()
    found, _ = walk(rows[:3] + rows[6:])
    assert [(f.kind, f.seq) for f in found] == [(DELETED, 4)]
    assert "seq 4..6 (3 rows)" in found[0].detail
    found, _ = walk(rows[1:])  # the first row of the chain
    assert found[0].kind == DELETED and found[0].seq == 1


def test_deleted_request_leaves_orphan_cost_rows() -> None:
    rows = sealed_rows()
    found, _ = walk(rows[:3] + rows[4:])
    kinds = [f.kind for f in found]
    assert kinds[0] == DELETED and kinds.count(CHANGED) == 2  # its two cost rows follow another request
    assert all(f.column == "event_uid" for f in found[1:])


def test_deleting_the_newest_rows_is_only_seen_against_a_published_head() -> None:
    rows = sealed_rows()
    found, w = walk(rows[:-3])
    assert found == [] and w.close(None, None) == []
    head = w.head()
    assert head is not None and head.head_seq == 6 != rows[-1][1]["chain_seq"]


def test_a_gap_after_the_walk_is_a_deletion_too() -> None:
    rows = sealed_rows()
    _, w = walk(rows[:3])
    assert [f.kind for f in w.close(6, rows[5][1]["chain_prev"])] == [DELETED]
    assert [f.kind for f in w.close(4, "f" * 64)] == [CHANGED]


def test_a_copied_row_is_an_insertion() -> None:
    rows = sealed_rows()
    copy = dict(rows[3][1], id=99)
    found, _ = walk([*rows[:4], (EVENTS, copy), *rows[4:]])
    assert any(f.kind == INSERTED and f.row_id == 99 for f in found)


def test_ids_out_of_sequence_order_are_a_reordering() -> None:
    rows = sealed_rows()
    swapped = [(t, dict(r)) for t, r in rows]
    swapped[0][1]["id"], swapped[3][1]["id"] = swapped[3][1]["id"], swapped[0][1]["id"]
    found, _ = walk(swapped)
    assert [(f.kind, f.column) for f in found] == [(REORDERED, "id")]


def test_a_rewritten_and_resealed_row_breaks_the_next_link() -> None:
    rows = [(t, dict(r)) for t, r in sealed_rows()]
    r = rows[3][1]
    r["prompt_tokens"] = 10_000
    r["chain_digest"] = row_digest(EVENTS, r)  # re-sealed with the open code, but not its successors
    found, _ = walk(rows)
    assert [(f.kind, f.seq) for f in found] == [(CHANGED, 5)]
    assert "re-sealed" in found[0].detail


def test_a_walk_may_start_mid_chain() -> None:
    rows = sealed_rows()
    found, w = walk(rows[3:], after_seq=3, after_digest=rows[2][1]["chain_digest"])
    assert found == [] and w.head() is not None
    found, _ = walk(rows[3:], after_seq=3, after_digest="0" * 63 + "1")
    assert [f.kind for f in found] == [CHANGED]


def test_a_non_numeric_sequence_number_is_reported_not_raised() -> None:
    rows = [(t, dict(r)) for t, r in sealed_rows()]
    rows[3][1]["chain_seq"] = "four"
    found, _ = walk(rows)
    assert found[0].kind == CHANGED and "not a sequence number" in found[0].detail
