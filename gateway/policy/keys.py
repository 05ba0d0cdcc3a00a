"""The in-memory key index the hot path reads (keys are stored in ``gateway.ledger.keystore``)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable

from gateway.ledger.keystore import KeyRecord, KeyStore, digest


class KeyRing:
    """The in-memory index the hot path reads; replaced whole on reload, never mutated."""

    __slots__ = ("_by_digest", "revision", "teams")

    def __init__(self, records: Iterable[KeyRecord] = (), revision: int = 0):
        self._by_digest = {r.digest: r for r in records if r.disabled is None}
        self.revision = revision
        self.teams = frozenset(r.team for r in self._by_digest.values())  # the teams keys name

    def __len__(self) -> int:
        return len(self._by_digest)

    def find(self, key: bytes) -> KeyRecord | None:
        d = digest(key)
        rec = self._by_digest.get(d)
        if rec is None or not hmac.compare_digest(rec.digest, d) or not rec.active(time.time()):
            return None
        return rec


def load_ring(store: KeyStore) -> KeyRing:
    """Every active key of the store, and the revision they were read at."""
    rev = store.revision()  # read first: a write in between only makes the next poll reload
    return KeyRing(store.active(), rev)
