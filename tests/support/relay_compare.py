"""Direct-vs-through comparisons: the same request to vLLM and through nometer must match.

What may differ, and nothing else: per-request ids (``chatcmpl-…``, ``resp_…``, ``msg_…``), clock
fields (``created``, ``created_at``), the ``date`` header, ``x-request-id`` (nometer adds its
own) and ``x-nometer-receipt-id`` (nometer's id of the ledger row: present on every answer that is
usage, absent on the probes ``/health``, ``/ping``, ``/load``, ``/version``). Both answers are
normalised for exactly those and then compared as *bytes*: status, the headers that matter, the
body and the SSE framing (every ``event:``/``data:`` line and blank line).

The tiny model's text is random but deterministic under greedy decoding (``temperature: 0``), and
the prompt cache is warmed first so both requests see the same ``cached_tokens``.

One thing vLLM itself does not repeat: how many tokens go in one delta. When the engine has two
tokens ready before the server's output loop runs (a loaded machine), it sends them in one
delta; two requests straight to vLLM differ the same way. So a stream is compared as bytes up to
three times, and if no attempt agrees exactly, once more with adjacent text deltas merged
(``coalesce``): the same events, the same text, the same framing otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from gateway.http.proxy import FORWARDED_GET

_IDS = re.compile(rb'"(id|item_id|response_id|call_id|tool_use_id|previous_response_id)":"[^"]*"')
_CLOCK = re.compile(rb'"(created|created_at|completed_at)":\d+')
# headers whose value is per-connection or per-request, never compared
_VOLATILE = frozenset(
    {"date", "x-request-id", "content-length", "transfer-encoding", "connection", "keep-alive"}
)


def normalise(body: bytes) -> bytes:
    return _CLOCK.sub(rb'"\1":0', _IDS.sub(rb'"\1":"ID"', body))


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes  # normalised

    @property
    def framing(self) -> list[bytes]:
        """The SSE lines with their data replaced by its length: the shape of the stream."""
        return [line.split(b":", 1)[0] for line in self.body.split(b"\n")]


def _delta_text(ev: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, text) of an event that only adds text to the answer; None for any other event."""
    kind = ev.get("type")
    if kind == "response.output_text.delta" and isinstance(ev.get("delta"), str):
        return "responses", ev["delta"]
    if kind == "content_block_delta":
        d = ev.get("delta") or {}
        for key in ("text", "partial_json", "thinking"):
            if isinstance(d.get(key), str):
                return f"messages.{key}", d[key]
    choices = ev.get("choices")
    if isinstance(choices, list) and len(choices) == 1:
        ch = choices[0]
        raw = ch.get("delta")
        d = (
            {k: v for k, v in raw.items() if v is not None} if isinstance(raw, dict) else {}
        )  # SDK dumps: None
        if d and set(d) <= {"content", "tool_calls"}:
            calls = d.get("tool_calls") or []
            if isinstance(d.get("content"), str) and not calls:
                return "chat", d["content"]
            fn = calls[0].get("function") or {} if len(calls) == 1 else {}
            if fn and not fn.get("name") and "content" not in d:  # a continuation of the arguments
                return "chat.args", str(fn.get("arguments") or "")
    return None


def _with_text(ev: dict[str, Any], kind: str, text: str) -> dict[str, Any]:
    ev = orjson.loads(orjson.dumps(ev))
    if kind == "responses":
        ev["delta"] = text
    elif kind.startswith("messages."):
        ev["delta"][kind.split(".", 1)[1]] = text
    elif kind == "chat":
        ev["choices"][0]["delta"]["content"] = text
    else:
        ev["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] = text
    return ev


def coalesce(events: list[Any]) -> list[Any]:
    """Each run of adjacent text deltas of one kind as one event: the run's last event (its
    finish_reason, its cumulative usage) carrying the run's whole text; sequence numbers dropped."""
    out: list[Any] = []
    last: tuple[str, str] | None = None
    for ev in events:
        if isinstance(ev, dict):
            ev = {k: v for k, v in ev.items() if k not in ("sequence_number", "logprobs")}
        piece = _delta_text(ev) if isinstance(ev, dict) else None
        if piece is not None and last is not None and last[0] == piece[0]:
            last = (piece[0], last[1] + piece[1])
            out[-1] = _with_text(ev, *last)
            continue
        out.append(ev)
        last = piece
    return out


def sse_events(body: bytes) -> list[Any]:
    """An SSE body as its events: the ``event:`` name and the parsed ``data:`` of each."""
    out: list[Any] = []
    for block in body.split(b"\n\n"):
        name: str | None = None
        data: Any = None
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                raw = line[5:].strip()
                data = raw.decode() if raw == b"[DONE]" else orjson.loads(raw)
        if data is not None:
            out.append({"event": name, **data} if name is not None and isinstance(data, dict) else data)
    return out


def fetch(client: httpx.Client, method: str, url: str, **kw: Any) -> Answer:
    with client.stream(method, url, **kw) as r:
        body = b"".join(r.iter_raw())
        headers = {k.lower(): v for k, v in r.headers.items() if k.lower() not in _VOLATILE}
        return Answer(r.status_code, headers, normalise(body))


def same(
    direct_base: str, through_base: str, method: str, path: str, *, warm: bool = True, **kw: Any
) -> Answer:
    """Send the request direct (after one warm-up, so caches agree) and through; assert they match."""
    with httpx.Client(timeout=120) as client:
        if warm:
            fetch(client, method, direct_base + path, **kw)
        direct = fetch(client, method, direct_base + path, **kw)
        through = fetch(client, method, through_base + path, **kw)
    assert through.status == direct.status, (through.status, direct.status, through.body[:300])
    receipt = through.headers.pop("x-nometer-receipt-id", None)
    probe = method == "GET" and path in FORWARDED_GET
    assert (receipt is None) == probe, (path, receipt)
    assert through.headers == direct.headers, f"\ndirect:  {direct.headers}\nthrough: {through.headers}"
    if through.body != direct.body and direct.headers.get("content-type", "").startswith("text/event-stream"):
        a, b = coalesce(sse_events(direct.body)), coalesce(sse_events(through.body))
        assert b == a, f"\ndirect:  {a}\nthrough: {b}"
        return through
    assert through.body == direct.body, f"\ndirect:  {direct.body[:2000]!r}\nthrough: {through.body[:2000]!r}"
    return through
