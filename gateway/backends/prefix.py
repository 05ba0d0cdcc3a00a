"""Prefix keys: a cheap fingerprint of the stable start of a prompt, and who served it last.

vLLM skips the prefill of a prompt's leading blocks only on the server whose KV cache holds
them, so requests that start alike should land on the same backend. The router cannot tokenize
on the hot path; it hashes the request's parsed fields instead, as a chain (each key covers
everything before it, like vLLM's block hashes):

* key 0: the tool definitions (names and count), ``system`` / ``instructions``, and the leading
  ``system`` / ``developer`` messages: what every conversation of one tenant or agent shares;
* key 1..depth: one more message each (the conversation so far), so turn N+1 of a conversation
  matches the keys turn N left.

``/v1/completions`` prompts (strings) are chained by ``CHUNK``-character pieces instead. Strings
longer than ``2 * CHUNK`` are fingerprinted by their head, tail, length and ``_SAMPLE`` characters
taken at even steps across the middle, so a key costs a few microseconds whatever the prompt's
size; two prompts equal there but different elsewhere in the middle share a key, which costs
cache locality, never correctness. Hashing is Python's own (``hash`` of tuples of str: SipHash,
about 3x faster here than ``zlib.crc32``), so keys mean something only inside one process.

``PrefixTable`` is the approximate map from key to the backend that most recently served a
request with that key: bounded, least recently used keys forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from gateway.backends.backend import Backend

CHUNK = 512  # characters hashed from each end of a long string
_SAMPLE = 256  # characters sampled across the middle of a long string
_LEADING_ROLES = frozenset({"system", "developer"})


def _feed(h: int, s: str) -> int:
    n = len(s)
    if n <= 2 * CHUNK:
        return hash((h, s))
    return hash((h, s[:CHUNK], s[-CHUNK:], s[CHUNK : n - CHUNK : max((n - 2 * CHUNK) // _SAMPLE, 1)], n))


def _feed_content(h: int, content: Any) -> int:
    if isinstance(content, str):
        return _feed(h, content)
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                for field in ("text", "image_url", "input_text", "content"):
                    value = part.get(field)
                    if isinstance(value, str):
                        h = _feed(h, value)
                    elif isinstance(value, dict) and isinstance(value.get("url"), str):
                        h = _feed(h, value["url"])
            elif isinstance(part, str):
                h = _feed(h, part)
    return h


def _feed_message(h: int, m: Any) -> int:
    if not isinstance(m, dict):
        return _feed_content(h, m)
    role = m.get("role")
    return _feed_content(hash((h, role if isinstance(role, str) else "?")), m.get("content"))


def _feed_tools(h: int, tools: list[Any]) -> int:
    names: list[str] = []
    for t in tools:
        if isinstance(t, dict):
            fn = t.get("function")
            name = fn.get("name") if isinstance(fn, dict) else t.get("name")
            if isinstance(name, str):
                names.append(name)
    return hash((h, len(tools), *names))


def prefix_keys(payload: dict[str, Any], depth: int = 4) -> list[int]:
    """The request's key chain, shallowest first (empty: nothing to key on)."""
    keys: list[int] = []
    h = 1
    base = False
    tools = payload.get("tools")
    if isinstance(tools, list) and tools:
        h, base = _feed_tools(h, tools), True
    for field in ("system", "instructions"):
        value = payload.get(field)
        if value:
            h, base = _feed_content(h, value), True
    messages = payload.get("messages")
    if messages is None:
        messages = payload.get("input")
    if isinstance(messages, str):
        messages = [messages]
    if isinstance(messages, list):
        i, n = 0, len(messages)
        while i < n:  # the leading system/developer messages belong to key 0
            m = messages[i]
            if not (isinstance(m, dict) and m.get("role") in _LEADING_ROLES):
                break
            h, base = _feed_message(h, m), True
            i += 1
        if base:
            keys.append(h)
        for m in messages[i : i + depth]:
            h = _feed_message(h, m)
            keys.append(h)
        return keys
    prompt = payload.get("prompt")
    if isinstance(prompt, str) and prompt:
        if base:
            keys.append(h)
        for start in range(0, min(len(prompt), CHUNK * depth), CHUNK):
            h = hash((h, prompt[start : start + CHUNK]))
            keys.append(h)
        return keys
    return [h] if base else keys


def session_key(session: str) -> int:
    """The key of an ``X-Nometer-Session`` (kept apart from prompt keys by its seed)."""
    return hash(("x-nometer-session", session))


class PrefixTable:
    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._held: OrderedDict[int, Backend] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def get(self, key: int) -> Backend | None:
        return self._held.get(key)

    def fill(self, keys: Sequence[int], backend: Backend) -> None:
        """Remember ``backend`` under those of ``keys`` that have no backend yet."""
        missing = [k for k in keys if k not in self._held]
        if missing:
            self.remember(missing, backend)

    def remember(self, keys: Sequence[int], backend: Backend) -> None:
        held = self._held
        for k in keys:
            held[k] = backend
            held.move_to_end(k)
        while len(held) > self.max_entries:
            held.popitem(last=False)
