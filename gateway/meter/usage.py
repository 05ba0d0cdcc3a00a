"""Turn a finished request's raw response into token counts (runs in the recorder, not the proxy).

Upstream counts win: the ``usage`` object of a JSON body, the usage chunk of a chat/completions
stream, ``response.usage`` of a Responses ``response.completed`` event, or an Anthropic Messages
stream's ``message_start`` + ``message_delta`` usage (see ``gateway.meter.anthropic``). When upstream reported
nothing (client gone, stream broken) the counts are *estimated* and labelled so: completion tokens
from the number of content deltas relayed (vLLM sends one token per delta), prompt tokens from an
o200k count of the request text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.ledger.events import CLIENT_GONE, TIMEOUT, RequestRecord
from gateway.meter import anthropic

UPSTREAM = "upstream"
ESTIMATED = "estimated"
NONE = "none"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    source: str = NONE
    cache_write_tokens: int | None = None  # Anthropic's cache_creation_input_tokens


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def from_usage_object(u: Any) -> Usage | None:
    """Chat/completions/embeddings shape, or the Responses API shape."""
    if not isinstance(u, dict):
        return None
    if anthropic.is_anthropic_usage(u):  # input_tokens excludes cache reads and writes
        reads, writes = _int(u.get("cache_read_input_tokens")), _int(u.get("cache_creation_input_tokens"))
        p, c = _int(u.get("input_tokens")), _int(u.get("output_tokens"))
        if p is not None:
            p += (reads or 0) + (writes or 0)
        total = None if p is None else p + (c or 0)
        return Usage(p, c, total, reads, None, UPSTREAM, writes)
    if "input_tokens" in u or "output_tokens" in u:  # Responses API (or Anthropic without cache info)
        p, c = _int(u.get("input_tokens")), _int(u.get("output_tokens"))
        pd, cd = u.get("input_tokens_details") or {}, u.get("output_tokens_details") or {}
    else:
        p, c = _int(u.get("prompt_tokens")), _int(u.get("completion_tokens"))
        pd, cd = u.get("prompt_tokens_details") or {}, u.get("completion_tokens_details") or {}
    total = _int(u.get("total_tokens"))
    if total is None and p is not None:
        total = p + (c or 0)
    return Usage(
        p,
        c,
        total,
        _int(pd.get("cached_tokens")) if isinstance(pd, dict) else None,
        _int(cd.get("reasoning_tokens")) if isinstance(cd, dict) else None,
        UPSTREAM,
    )


def sse_payloads(chunks: list[bytes]) -> list[bytes]:
    """The ``data:`` payloads of an SSE byte stream, in order (``[DONE]`` excluded)."""
    out: list[bytes] = []
    for line in b"".join(chunks).split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload and payload != b"[DONE]":
                out.append(payload)
    return out


def stream_events(chunks: list[bytes]) -> list[dict[str, Any]]:
    events = []
    for p in sse_payloads(chunks):
        try:
            ev = orjson.loads(p)
        except orjson.JSONDecodeError:
            continue
        if isinstance(ev, dict):
            events.append(ev)
    return events


def _stream_usage(events: list[dict[str, Any]]) -> Usage | None:
    if events and events[0].get("type") == "message_start":  # Anthropic Messages
        return from_usage_object(anthropic.stream_usage(events))
    for ev in reversed(events):
        u = ev.get("usage")
        if u:
            return from_usage_object(u)
        resp = ev.get("response")
        if isinstance(resp, dict) and resp.get("usage"):
            return from_usage_object(resp["usage"])
    return None


def _content_deltas(events: list[dict[str, Any]]) -> int:
    n = 0
    for ev in events:
        for ch in ev.get("choices") or ():
            if isinstance(ch, dict):
                d = ch.get("delta")
                if (
                    isinstance(d, dict)
                    and (d.get("content") or d.get("reasoning_content") or d.get("tool_calls"))
                ) or ch.get("text"):
                    n += 1
        if ev.get("type") in ("response.output_text.delta", "content_block_delta"):
            n += 1
    return n


def request_text(req: dict[str, Any] | None) -> str:
    """The prompt text of a request body (messages, prompt, input), for estimates and re-counting."""
    if not req:
        return ""
    parts: list[str] = []
    # depth first, in document order, with a stack of its own: no recursion, however deep the body
    keys = ("instructions", "input", "prompt", "messages", "system")  # reversed: popped last-first
    stack: list[Any] = [req[key] for key in keys if key in req]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, list):
            stack.extend(reversed(v))
        elif isinstance(v, dict):
            stack.extend(v[k] for k in ("name", "arguments", "prompt", "input", "text", "content") if k in v)
    return "\n".join(parts)


def answer_text(body: dict[str, Any]) -> str:
    """The generated text of a non-stream body (every choice, Responses output, Anthropic
    content), for an estimate when the server reported no usage."""
    parts: list[str] = []
    for ch in body.get("choices") or ():
        if isinstance(ch, dict):
            msg = ch.get("message")
            source = msg if isinstance(msg, dict) else ch
            parts.extend(
                v for k in ("reasoning_content", "content", "text") if isinstance(v := source.get(k), str)
            )
            for tc in (source.get("tool_calls") or ()) if isinstance(source, dict) else ():
                fn = tc.get("function") if isinstance(tc, dict) else None
                if isinstance(fn, dict):
                    parts.extend(v for k in ("name", "arguments") if isinstance(v := fn.get(k), str))
    for item in body.get("output") or body.get("content") or ():
        if isinstance(item, dict):
            parts.extend(v for k in ("text", "name", "arguments") if isinstance(v := item.get(k), str))
            for part in item.get("content") or ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    parts.append(part["text"])
    return "\n".join(parts)


def extract(rec: RequestRecord, count_tokens: Any = None) -> tuple[Usage, list[dict[str, Any]] | None]:
    """Usage of a finished request, and its parsed stream events (reused by pricing).

    ``count_tokens(text) -> int`` estimates prompt tokens when upstream reported none.
    """
    events: list[dict[str, Any]] | None = None
    usage: Usage | None = None
    body: Any = None
    if rec.chunks:
        events = stream_events(rec.chunks)
        usage = _stream_usage(events)
    elif rec.response:
        try:
            body = orjson.loads(rec.response)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            usage = from_usage_object(body.get("usage"))
    if usage is not None and usage.prompt_tokens is not None:
        return usage, events
    if (
        isinstance(body, dict)
        and rec.status == 200
        and rec.served_model is not None
        and rec.request is not None
        and count_tokens is not None
        and "error" not in body
    ):
        # a non-streamed answer without a usage object (some servers omit it): the model did the
        # work, so estimate both sides from the texts, labelled estimated, rather than price nothing
        prompt = count_tokens(request_text(rec.request))
        completion = count_tokens(answer_text(body))
        return Usage(prompt, completion, prompt + completion, None, None, ESTIMATED), events
    # Estimate only where a model server did work that it could not report: the client left, the
    # upstream went silent, or a stream broke. A refused or failed request (4xx/5xx body) counts nothing.
    if (
        rec.served_model is None
        or rec.request is None
        or not (rec.chunks or rec.outcome in (CLIENT_GONE, TIMEOUT))
    ):
        return Usage(), events
    completion = _content_deltas(events) if events is not None else 0
    prompt = count_tokens(request_text(rec.request)) if count_tokens else None
    total = None if prompt is None else prompt + completion
    return Usage(prompt, completion, total, None, None, ESTIMATED), events
