"""Gateway-side prefix tracking: what a cloud prompt cache would have served when vLLM says nothing."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
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

    def seen_prefix(
        self, rec: RequestRecord, digest: Callable[[object], bytes | None] | None = None
    ) -> list[Any] | None:
        """The longest run of first messages seen within the TTL (``None``: none). ``digest``, when
        given, is the meter's per-message content digest (``pricing.count_cache``): the chain is
        then hashed over digests, not over every message's JSON again."""
        req = rec.request or {}
        messages = req.get("messages")
        if rec.endpoint != _CHAT or not isinstance(messages, list) or len(messages) < 2:
            return None
        key = hashlib.blake2b(orjson.dumps(req.get("tools")) + str(rec.served_model).encode()).digest()
        now = rec.started
        keys = []
        for m in messages:
            d = digest(m) if digest is not None else None
            # each prefix's key chains the previous key with this message (its digest, or its JSON)
            part = d if d is not None else orjson.dumps(m, option=orjson.OPT_SORT_KEYS)
            key = hashlib.blake2b(key + part, digest_size=32).digest()
            keys.append(key)
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
