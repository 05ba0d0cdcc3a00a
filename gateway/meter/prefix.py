"""Gateway-side prefix tracking: what a cloud prompt cache would have served when vLLM says nothing."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import orjson

from gateway.ledger.events import RequestRecord

_CHAT = "/v1/chat/completions"

CACHE_MIN_TOKENS = 1024  # OpenAI caches prompts of at least 1,024 tokens ...
CACHE_INCREMENT = 128  # ... in increments of 128 tokens


def cacheable(prompt: int, prefix: int) -> int:
    """Tokens a cloud prompt cache would serve for a prompt whose first ``prefix`` tokens were seen."""
    if prompt < CACHE_MIN_TOKENS or prefix < CACHE_MIN_TOKENS:
        return 0
    return min(prompt, prefix - prefix % CACHE_INCREMENT)


class PrefixTracker:
    """Which chat prefixes were sent recently, for conservative caching when vLLM reports no
    cached tokens. A request whose first k messages repeat an earlier request's (within the TTL)
    would have hit the cloud's prompt cache for those messages. Used from the recorder thread, and
    from the request path's pricing thread when answers carry their cost (hence the lock).
    """

    def __init__(self, ttl_s: float = 300.0, max_entries: int = 100_000):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._seen: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def seen_prefix(self, rec: RequestRecord) -> list[Any] | None:
        req = rec.request or {}
        messages = req.get("messages")
        if rec.endpoint != _CHAT or not isinstance(messages, list) or len(messages) < 2:
            return None
        h = hashlib.sha256(orjson.dumps(req.get("tools")) + str(rec.served_model).encode())
        now = rec.started
        keys = []
        for m in messages:
            h.update(orjson.dumps(m, option=orjson.OPT_SORT_KEYS))
            keys.append(h.copy().digest())
        best = 0
        with self._lock:
            for k, key in enumerate(keys, 1):
                t = self._seen.get(key)
                if t is not None and now - t <= self.ttl_s and k < len(messages):
                    best = k
            for key in keys:
                self._seen[key] = now
            if len(self._seen) > self.max_entries:
                cutoff = now - self.ttl_s
                self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}
        return messages[:best] if best else None
