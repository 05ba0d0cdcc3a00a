from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from gateway.ledger.keystore import KEY_PREFIX, KeyNotFound, KeyStore, digest
from gateway.policy.keys import KeyRing, load_ring


def test_create_stores_only_the_digest(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "l.db")
    key, rec = store.create("alpha", "ci")
    assert key.startswith(KEY_PREFIX) and len(key) > 40
    assert rec.digest == digest(key) and key.startswith(rec.prefix)
    with sqlite3.connect(tmp_path / "l.db") as c:
        rows = c.execute("SELECT * FROM api_keys").fetchall()
    assert len(rows) == 1 and not any(key in str(v) for v in rows[0])
    assert store.list()[0].public()["active"] is True
    assert "digest" not in store.list()[0].public()


def test_ring_finds_active_keys_only(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "l.db")
    a, _ = store.create("alpha")
    b, rb = store.create("beta")
    ring = load_ring(store)
    assert len(ring) == 2 and ring.revision == store.revision() == 2
    found = ring.find(a.encode())
    assert found is not None and found.team == "alpha"
    assert ring.find(b"nmk-unknown") is None and ring.find(a[:-1].encode()) is None
    store.disable(rb.key_id)
    assert store.revision() == 3
    ring = load_ring(store)
    assert ring.find(b.encode()) is None and ring.find(a.encode()) is not None
    with pytest.raises(KeyNotFound):
        store.disable("key_nope")


def test_rotate_now_and_with_grace(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "l.db")
    old, rec = store.create("alpha", "svc")
    new, new_rec = store.rotate(rec.key_id)
    assert (new_rec.team, new_rec.name) == ("alpha", "svc")
    ring = load_ring(store)
    assert ring.find(old.encode()) is None and ring.find(new.encode()) is not None
    assert store.get(rec.key_id).replaced_by == new_rec.key_id
    with pytest.raises(ValueError, match="disabled"):
        store.rotate(rec.key_id)
    newer, _ = store.rotate(new_rec.key_id, grace_s=30)
    ring = load_ring(store)
    assert ring.find(new.encode()) is not None and ring.find(newer.encode()) is not None
    expires = store.get(new_rec.key_id).expires
    assert expires is not None and expires > time.time()


def test_expired_key_is_refused_without_a_reload() -> None:
    from gateway.ledger.keystore import KeyRecord

    key = "nmk-test"
    rec = KeyRecord("key_1", "n", "t", digest(key), "nmk-te", 0.0, expires=time.time() - 1)
    assert KeyRing([rec]).find(key.encode()) is None
    assert KeyRing([KeyRecord("key_1", "n", "t", digest(key), "nmk-te", 0.0)]).find(key.encode()) is not None
