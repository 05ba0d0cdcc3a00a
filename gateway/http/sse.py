"""Server-sent events on the hot path: relay bytes as they come, touch JSON as little as possible.

vLLM (like OpenAI) frames each event as ``data: {...}\\n\\n`` and, when asked for
``stream_options.include_usage``, sends the usage in one last chunk whose ``choices`` is empty.
The gateway always asks for it (the ledger needs it) and removes that chunk for clients that did
not ask: they would otherwise see an unexpected chunk, and some double-count it.
"""

from __future__ import annotations

import orjson

_USAGE = b'"usage":{'
_EMPTY_CHOICES = b'"choices":[]'
DONE = b"data: [DONE]\n\n"


def _is_usage_only(event: bytes) -> bool:
    return _USAGE in event and _EMPTY_CHOICES in event


class UsageChunkFilter:
    """Drops usage-only events from an SSE byte stream.

    Holds back at most one incomplete trailing event (bytes after the last blank line), and only
    until its end arrives; a chunk that ends on an event boundary and carries no usage object passes
    through as the very same bytes object.
    """

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        if self._tail:
            data = self._tail + data
            self._tail = b""
        if data.endswith(b"\n\n"):
            if _USAGE not in data:
                return data
            complete = data
        else:
            cut = data.rfind(b"\n\n")
            if cut < 0:
                self._tail = data
                return b""
            complete, self._tail = data[: cut + 2], data[cut + 2 :]
            if _USAGE not in complete:
                return complete
        kept = [e for e in complete.split(b"\n\n") if e and not _is_usage_only(e)]
        return b"\n\n".join(kept) + b"\n\n" if kept else b""

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return b"" if _is_usage_only(tail) else tail


def error_event(message: str, type_: str, code: str | None) -> bytes:
    """An error after the stream started is reported in-band, then the stream is closed."""
    payload = orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    return b"data: " + payload + b"\n\n" + DONE
