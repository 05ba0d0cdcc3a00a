"""Per-message token counts kept by content, so an agent's resent history is counted once.

An agent resends its whole conversation every step; re-tokenizing a 60k-token history costs tens
of milliseconds of CPU per step, for messages counted identically the step before. A chat
prompt's count is a sum of per-message counts (`pricing.tokens.message_tokens`) plus the reply
priming and the tool definitions, so the cache keeps each message's raw count (unscaled) under
its encoding and a fingerprint of the message's canonical JSON (orjson, sorted keys): its length
and Python's 64-bit `hash` of it (SipHash-1-3, keyed with the process's random key).

* Exact: a hit returns the very number `message_tokens` returned for equal content; counts with
  and without the cache are equal (tests pin it). Two different messages would have to agree in
  length and in a keyed 64-bit hash to be confused: about 2^-64 for a pair by chance (2^-48 per
  lookup in a full cache), and not something a caller can aim at without the process's hash key
  (keep `PYTHONHASHSEED` unset, its default, so the key is random). A cryptographic digest
  (BLAKE2b-128) cost 0.7 ms more per 60k-token history than the whole cached lookup; a CRC-32
  beside the hash 0.25 ms: both were measured and left out.
* Bounded: at most `max_entries` entries (LRU; about 150 bytes each: 65,536 entries are ~10 MB);
  the message text itself is never kept.
* Fingerprints are computed once per message object per request (`digest`, memoised by object
  identity until `end_request`) and reused by the prefix tracker.

Thread-safe: the counts are shared under a lock (held for a dictionary operation, never while
tokenizing); the per-request fingerprint memo is per thread, so a request priced on the request
path (`usage.nometer`) and the recorder's thread can share one meter.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Final

import orjson

from pricing.tokens import REPLY_PRIMING, TokenizerSpec, encoding, message_tokens, scale, tools_tokens

DEFAULT_ENTRIES: Final = 65_536
_FINGERPRINT: Final = struct.Struct("<QQ")
_MASK64: Final = (1 << 64) - 1


class CountCache:
    def __init__(self, max_entries: int = DEFAULT_ENTRIES):
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._counts: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._counts)

    def digest(self, value: object) -> bytes | None:
        """The fingerprint of `value`'s canonical JSON (see the module docstring), once per object
        per request; `None` when it cannot be serialised (it is then counted uncached)."""
        memos = self._memo()
        memo = memos.get(id(value))
        if memo is not None and memo[0] is value:
            return memo[1]
        try:
            data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            d = None
        else:
            d = _FINGERPRINT.pack(len(data), hash(data) & _MASK64)  # 16 bytes, also a prefix-chain link
        memos[id(value)] = (value, d)  # keeps the object alive, so its id is not reused
        return d

    def _memo(self) -> dict[int, tuple[object, bytes | None]]:
        memo: dict[int, tuple[object, bytes | None]] | None = getattr(self._local, "digests", None)
        if memo is None:
            memo = self._local.digests = {}
        return memo

    def end_request(self) -> None:
        """Forget this thread's per-request fingerprint memo (the counts stay)."""
        self._memo().clear()

    def chat_prompt(
        self, messages: Sequence[object], tools: Sequence[object] | None, spec: TokenizerSpec
    ) -> int:
        """`pricing.tokens.count_chat_prompt(messages, tools, spec)`, from cached per-message counts."""
        total = REPLY_PRIMING + sum(self.message_counts(messages, spec))
        if tools:
            space = spec.encoding + "/tools"
            n = self._get(space, tools)
            total += n if n is not None else self._put(space, tools, tools_tokens(tools, spec))
        return scale(total, spec)

    def message_counts(self, messages: Sequence[object], spec: TokenizerSpec) -> list[int]:
        """Each message's raw (unscaled) tokens with its framing; 0 for a non-object."""
        enc = encoding(spec.encoding)
        out = []
        for message in messages:
            if not isinstance(message, Mapping):
                out.append(0)
                continue
            n = self._get(spec.encoding, message)
            out.append(
                n if n is not None else self._put(spec.encoding, message, message_tokens(message, enc))
            )
        return out

    def _get(self, space: str, value: object) -> int | None:
        d = self.digest(value)
        if d is None:
            self.misses += 1
            return None
        with self._lock:
            n = self._counts.get((space, d))
            if n is None:
                self.misses += 1
                return None
            self._counts.move_to_end((space, d))
            self.hits += 1
        return n

    def _put(self, space: str, value: object, n: int) -> int:
        d = self.digest(value)  # memoised: no second serialisation
        if d is not None:
            with self._lock:
                self._counts[(space, d)] = n
                if len(self._counts) > self.max_entries:
                    self._counts.popitem(last=False)
        return n
