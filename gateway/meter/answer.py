"""The generated text of a finished request, for re-counting in cloud tokens (never stored)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.ledger.events import RequestRecord


@dataclass(frozen=True, slots=True)
class Answer:
    """What the model produced, as text, for re-counting (never stored)."""

    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()


def answer_of(rec: RequestRecord, events: list[dict[str, Any]] | None) -> Answer:
    """The generated text of a finished request, from its stream events or its JSON body."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    if events is not None:
        for ev in events:
            for ch in ev.get("choices") or ():
                if not isinstance(ch, dict):
                    continue
                d = ch.get("delta")
                if isinstance(d, dict):
                    _collect(d, content, reasoning)
                    for tc in d.get("tool_calls") or ():
                        if isinstance(tc, dict):
                            slot = calls.setdefault(int(tc.get("index", 0)), {"name": "", "arguments": ""})
                            fn = tc.get("function") or {}
                            slot["name"] += fn.get("name") or ""
                            slot["arguments"] += fn.get("arguments") or ""
                elif isinstance(ch.get("text"), str):
                    content.append(ch["text"])
            if ev.get("type") == "response.output_text.delta" and isinstance(ev.get("delta"), str):
                content.append(ev["delta"])
            elif ev.get("type") == "response.reasoning_text.delta" and isinstance(ev.get("delta"), str):
                reasoning.append(ev["delta"])
        tool_calls = tuple({"type": "function", "function": c} for _, c in sorted(calls.items()))
        return Answer("".join(content), "".join(reasoning), tool_calls)
    body = response_json(rec)
    if body is None:
        return Answer()
    tcs: list[dict[str, Any]] = []
    for ch in body.get("choices") or ():
        if not isinstance(ch, dict):
            continue
        msg = ch.get("message")
        if isinstance(msg, dict):
            _collect(msg, content, reasoning)
            tcs.extend(tc for tc in msg.get("tool_calls") or () if isinstance(tc, dict))
        elif isinstance(ch.get("text"), str):
            content.append(ch["text"])
    for item in body.get("output") or ():  # Responses API
        if not isinstance(item, dict):
            continue
        for part in item.get("content") or ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                (reasoning if item.get("type") == "reasoning" else content).append(part["text"])
    return Answer("".join(content), "".join(reasoning), tuple(tcs))


def response_json(rec: RequestRecord) -> dict[str, Any] | None:
    """The non-stream response body as a JSON object, or None."""
    if not rec.response:
        return None
    try:
        body = orjson.loads(rec.response)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _collect(d: dict[str, Any], content: list[str], reasoning: list[str]) -> None:
    if isinstance(d.get("content"), str):
        content.append(d["content"])
    for key in ("reasoning_content", "reasoning"):
        if isinstance(d.get(key), str):
            reasoning.append(d[key])
            break
