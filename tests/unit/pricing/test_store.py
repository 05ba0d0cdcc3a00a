from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import orjson
import pytest

from pricing.overrides import apply_overrides
from pricing.store import PriceStore, TableNotFound
from pricing.tables import PriceTable, PriceTableError, load_table

OLD = {"gpt-4.1": {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06}}
NEW = {"gpt-4.1": {"input_cost_per_token": 1.5e-06, "output_cost_per_token": 6e-06}}


def _file(directory: Path, name: str, document: object) -> Path:
    path = directory / name
    path.write_bytes(orjson.dumps(document))
    return path


@pytest.fixture
def shipped(tmp_path: Path) -> PriceTable:
    path = _file(
        tmp_path, "shipped.json", {"gpt-4.1": {"input_cost_per_token": 9e-06, "output_cost_per_token": 9e-06}}
    )
    return load_table(path, date=dt.date(2024, 1, 1))


@pytest.fixture
def store(tmp_path: Path, shipped: PriceTable) -> PriceStore:
    return PriceStore(tmp_path / "store", shipped=lambda: shipped)


def test_install_copies_the_exact_bytes_under_their_id(tmp_path: Path, store: PriceStore) -> None:
    source = _file(tmp_path, "old.json", OLD)
    table_id = store.install(source, date=dt.date(2025, 1, 1))
    stored = store.directory / f"{table_id}.json"
    assert stored.read_bytes() == source.read_bytes()
    assert table_id == "2025-01-01-" + hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    assert store.get(table_id).id == table_id


def test_install_defaults_to_todays_date(tmp_path: Path, store: PriceStore) -> None:
    table_id = store.install(_file(tmp_path, "old.json", OLD))
    assert table_id.startswith(dt.datetime.now(dt.UTC).date().isoformat())


def test_new_installs_keep_old_ids_loadable_and_unchanged(tmp_path: Path, store: PriceStore) -> None:
    old_id = store.install(_file(tmp_path, "old.json", OLD), date=dt.date(2025, 1, 1))
    old_bytes = (store.directory / f"{old_id}.json").read_bytes()
    new_id = store.install(_file(tmp_path, "new.json", NEW), date=dt.date(2025, 2, 1))
    assert new_id != old_id
    assert store.ids() == [old_id, new_id]
    assert store.current().id == new_id
    assert (store.directory / f"{old_id}.json").read_bytes() == old_bytes
    fresh = PriceStore(store.directory)  # a new process sees the same tables
    assert fresh.get(old_id).models["gpt-4.1"] == store.get(old_id).models["gpt-4.1"]
    assert str(fresh.get(old_id).models["gpt-4.1"].input) == "0.000002"


def test_same_day_installs_order_by_install_time(tmp_path: Path, store: PriceStore) -> None:
    first = store.install(_file(tmp_path, "new.json", NEW), date=dt.date(2025, 1, 1))
    second = store.install(_file(tmp_path, "old.json", OLD), date=dt.date(2025, 1, 1))
    os.utime(store.directory / f"{first}.json", ns=(1_000, 1_000))
    os.utime(store.directory / f"{second}.json", ns=(2_000, 2_000))
    assert store.current().id == second


def test_reinstalling_identical_bytes_is_a_no_op(tmp_path: Path, store: PriceStore) -> None:
    source = _file(tmp_path, "old.json", OLD)
    assert store.install(source, date=dt.date(2025, 1, 1)) == store.install(source, date=dt.date(2025, 1, 1))
    assert len(list(store.directory.iterdir())) == 1


def test_an_existing_snapshot_is_never_overwritten(tmp_path: Path, store: PriceStore) -> None:
    source = _file(tmp_path, "old.json", OLD)
    table_id = PriceStore(tmp_path / "elsewhere").install(source, date=dt.date(2025, 1, 1))
    store.directory.mkdir()
    (store.directory / f"{table_id}.json").write_bytes(b"{}")
    with pytest.raises(PriceTableError, match="never overwritten"):
        store.install(source, date=dt.date(2025, 1, 1))
    assert (store.directory / f"{table_id}.json").read_bytes() == b"{}"


def test_a_modified_snapshot_is_detected(tmp_path: Path, store: PriceStore) -> None:
    table_id = store.install(_file(tmp_path, "old.json", OLD), date=dt.date(2025, 1, 1))
    (store.directory / f"{table_id}.json").write_bytes(orjson.dumps(NEW))
    with pytest.raises(PriceTableError, match="modified"):
        PriceStore(store.directory).get(table_id)


@pytest.mark.parametrize("table_id", ["2025-01-01-000000000000", "../../etc/passwd", "latest", ""])
def test_unknown_ids_are_not_found(store: PriceStore, table_id: str) -> None:
    with pytest.raises(TableNotFound):
        store.get(table_id)


def test_current_falls_back_to_the_shipped_snapshot(store: PriceStore, shipped: PriceTable) -> None:
    assert store.current() is shipped


def test_shipped_snapshot_resolves_by_content_hash_under_any_date(
    store: PriceStore, shipped: PriceTable
) -> None:
    recorded = f"2030-05-05-{shipped.digest[:12]}"
    table = store.get(recorded)
    assert table.id == recorded
    assert table.models["gpt-4.1"] == shipped.models["gpt-4.1"]


def test_pin_copies_a_plain_table_from_its_source(store: PriceStore, shipped: PriceTable) -> None:
    assert store.pin(shipped) == shipped.id
    assert (store.directory / f"{shipped.id}.json").read_bytes() == Path(shipped.source).read_bytes()
    assert store.pin(shipped) == shipped.id  # idempotent


def test_pin_refuses_a_table_whose_source_changed(store: PriceStore, shipped: PriceTable) -> None:
    Path(shipped.source).write_bytes(b"{}")
    with pytest.raises(PriceTableError, match="cannot pin"):
        store.pin(shipped)


def test_pinned_overrides_reload_by_id_in_a_fresh_store(tmp_path: Path, store: PriceStore) -> None:
    base = store.get(store.install(_file(tmp_path, "old.json", OLD), date=dt.date(2025, 1, 1)))
    derived = apply_overrides(base, {"openai/gpt-4.1": {"output_cost_per_token": "7e-6"}})
    assert store.pin(derived) == derived.id
    assert (store.directory / f"{derived.id}.overrides.json").is_file()
    assert store.ids() == [base.id]  # a derived table is pinned, not installed
    reloaded = PriceStore(store.directory).get(derived.id)
    assert reloaded.id == derived.id
    assert reloaded.models["gpt-4.1"] == derived.models["gpt-4.1"]
    assert str(reloaded.models["gpt-4.1"].output) == "0.000007"


def test_pinning_overrides_of_the_shipped_table_also_pins_the_base(
    store: PriceStore, shipped: PriceTable
) -> None:
    derived = apply_overrides(shipped, {"gpt-4.1": {"input_cost_per_token": 1}})
    store.pin(derived)
    assert store.ids() == [shipped.id]
    assert PriceStore(store.directory).get(derived.id).models["gpt-4.1"].input == 1
