"""Server-sent events on the hot path: relay bytes as they come, touch JSON as little as possible.

vLLM (like OpenAI) frames each event as ``data: {...}\\n\\n`` and, when asked for
``stream_options.include_usage``, sends the usage in one last chunk whose ``choices`` is empty.
The gateway always asks for it (the ledger needs it) and removes that chunk for clients that did
not ask: they would otherwise see an unexpected chunk, and some double-count it.

Asking changes one more thing: vLLM then stamps ``system_fingerprint`` on the usage chunk instead
of on the terminal chunks (those with a ``finish_reason``). So the filter holds back the events
from the first terminal chunk on (a few bytes, for the moment between the last token and the usage
chunk) and, when it drops the usage chunk, appends its ``system_fingerprint`` to each terminal
event, where vLLM would have put it: the client gets the very bytes it would have got directly.
With ``n`` > 1 choices it holds from the n-th terminal chunk only (holding from the first would
delay the other choices' tokens), so the earlier choices' terminal chunks go without it.
"""

from __future__ import annotations

import orjson

_USAGE = b'"usage":{'
_EMPTY_CHOICES = b'"choices":[]'
_FINISHED = b'"finish_reason":"'  # vLLM omits a null finish_reason from stream chunks
_FINGERPRINT = b'"system_fingerprint":'
DONE = b"data: [DONE]\n\n"


def _is_usage_only(event: bytes) -> bool:
    return _USAGE in event and _EMPTY_CHOICES in event


def _fingerprint(usage_event: bytes) -> bytes | None:
    """``,"system_fingerprint":"..."`` of a usage-only event, as it would end a terminal chunk."""
    at = usage_event.find(_FINGERPRINT)
    if at < 0:
        return None
    try:
        value = orjson.loads(usage_event[usage_event.index(b"{") :]).get("system_fingerprint")
    except (orjson.JSONDecodeError, ValueError, AttributeError):
        return None
    return b"," + _FINGERPRINT + orjson.dumps(value) if isinstance(value, str) else None


def _stamp(event: bytes, fingerprint: bytes) -> bytes:
    if _FINISHED not in event or _FINGERPRINT in event or not event.endswith(b"}"):
        return event
    return event[:-1] + fingerprint + b"}"


class UsageChunkFilter:
    """Drops usage-only events from an SSE byte stream, moving their fingerprint (module docstring).

    Holds back at most one incomplete trailing event (bytes after the last blank line), and only
    until its end arrives, and the events from the first terminal chunk to the usage chunk; a chunk
    that ends on an event boundary and carries neither passes through as the very same bytes object.
    """

    __slots__ = ("_held", "_tail", "_waiting")

    def __init__(self, choices: int = 1) -> None:
        self._tail = b""
        self._held: list[bytes] | None = None  # events since the last choice's terminal chunk
        self._waiting = max(1, choices)  # terminal chunks still to come before holding starts

    def feed(self, data: bytes) -> bytes:
        if self._tail:
            data = self._tail + data
            self._tail = b""
        if data.endswith(b"\n\n"):
            if self._held is None and _USAGE not in data and _FINISHED not in data:
                return data
            complete = data
        else:
            cut = data.rfind(b"\n\n")
            if cut < 0:
                self._tail = data
                return b""
            complete, self._tail = data[: cut + 2], data[cut + 2 :]
            if self._held is None and _USAGE not in complete and _FINISHED not in complete:
                return complete
        out: list[bytes] = []
        for event in complete.split(b"\n\n"):
            if not event:
                continue
            if _is_usage_only(event):
                fingerprint = _fingerprint(event)
                held, self._held = self._held or [], None
                out.extend(held if fingerprint is None else [_stamp(e, fingerprint) for e in held])
            elif self._held is not None:
                self._held.append(event)
            elif _FINISHED in event and self._waiting <= 1:
                self._held = [event]
            else:
                if _FINISHED in event:
                    self._waiting -= 1
                out.append(event)
        return b"\n\n".join(out) + b"\n\n" if out else b""

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        held, self._held = self._held or [], None
        if tail and not _is_usage_only(tail):
            held.append(tail)
        return b"\n\n".join(held) + (b"\n\n" if held and not tail else b"") if held else b""


# The last event of a complete stream: chat/completions, Responses, Anthropic Messages.
_TERMINAL = (b"data: [DONE]", b'"type":"response.completed"', b"event: message_stop")


def finished(chunks: list[bytes]) -> bool:
    """Did the relayed stream end with its terminal event? (Read once, when a client leaves.)"""
    tail = b"".join(chunks[-3:])[-4096:]
    last = tail.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    return any(mark in last for mark in _TERMINAL)


def error_event(message: str, type_: str, code: str | None) -> bytes:
    """An error after the stream started is reported in-band, then the stream is closed."""
    payload = orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    return b"data: " + payload + b"\n\n" + DONE


def anthropic_error_event(message: str) -> bytes:
    """The same, on the Anthropic routes: Anthropic's ``error`` event (its streams have no [DONE])."""
    payload = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": message}})
    return b"event: error\ndata: " + payload + b"\n\n"
