"""The Anthropic Messages API (``/v1/messages``) for the shadow meter: usage, answer, prompt.

vLLM serves Anthropic's shape and reports Anthropic's usage fields: ``input_tokens`` (the prompt
*without* cache reads and writes), ``output_tokens``, ``cache_read_input_tokens`` and
``cache_creation_input_tokens`` (each present only when vLLM knows it). A stream reports usage in
``message_start`` (``message.usage``: the prompt) and in ``message_delta`` (``usage``: the final
counts; Anthropic's own API may send only ``output_tokens`` there), so the two are merged, the
later event winning. The ledger keeps OpenAI's convention (``prompt_tokens`` includes cached
tokens), so ``prompt = input + cache reads + cache writes``.

For re-counting, the request is read as the chat request it is: ``system`` (a string or text
blocks) as a system message, each message's text, ``tool_use`` (name and JSON input) and
``tool_result`` blocks, and the tools (``name``, ``description``, ``input_schema``) as function
definitions; then ``pricing.tokens.count_chat_prompt`` counts it like any chat prompt. Images and
documents are not counted (an undercount, the safe direction for savings).

``/v1/messages/count_tokens`` is recorded (a ledger row) but never metered: it generates nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.ledger.events import RequestRecord
from gateway.meter.answer import Answer, response_json
from pricing.tokens import TokenizerSpec, count_chat_prompt

MESSAGES = "/v1/messages"
_CACHE_KEYS = ("cache_read_input_tokens", "cache_creation_input_tokens")


def is_anthropic_usage(u: dict[str, Any]) -> bool:
    """Anthropic's usage object, told from the Responses API's (whose ``input_tokens`` includes
    cached tokens) by its cache fields; without them both shapes mean the same thing."""
    return any(k in u for k in _CACHE_KEYS)


def stream_usage(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The merged usage object of an Anthropic stream (``message_start``, then ``message_delta``)."""
    merged: dict[str, Any] = {}
    for ev in events:
        kind = ev.get("type")
        if kind == "message_start":
            msg = ev.get("message")
            u = msg.get("usage") if isinstance(msg, dict) else None
        elif kind == "message_delta":
            u = ev.get("usage")
        else:
            continue
        if isinstance(u, dict):
            merged.update({k: v for k, v in u.items() if v is not None})
    return merged or None


def answer_of(rec: RequestRecord, events: list[dict[str, Any]] | None) -> Answer:
    """What the model produced, from the stream's content blocks or the body's ``content``."""
    if events is not None:
        return _stream_answer(events)
    body = response_json(rec)
    blocks = body.get("content") if body is not None else None
    content: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks if isinstance(blocks, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            content.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            reasoning.append(block["thinking"])
        elif kind == "tool_use":
            calls.append(_call(block.get("name"), orjson.dumps(block.get("input", {})).decode()))
    return Answer("".join(content), "".join(reasoning), tuple(calls))


def _stream_answer(events: list[dict[str, Any]]) -> Answer:
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, list[str]] = {}  # block index -> [name, arguments]
    for ev in events:
        kind = ev.get("type")
        index = ev.get("index")
        if kind == "content_block_start" and isinstance(index, int):
            block = ev.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use":
                calls[index] = [str(block.get("name") or ""), ""]
        elif kind == "content_block_delta":
            d = ev.get("delta")
            if not isinstance(d, dict):
                continue
            if isinstance(d.get("text"), str):
                content.append(d["text"])
            elif isinstance(d.get("thinking"), str):
                reasoning.append(d["thinking"])
            elif isinstance(d.get("partial_json"), str) and isinstance(index, int):
                calls.setdefault(index, ["", ""])[1] += d["partial_json"]
    tool_calls = tuple(_call(name, args) for _, (name, args) in sorted(calls.items()))
    return Answer("".join(content), "".join(reasoning), tool_calls)


def _call(name: object, arguments: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name if isinstance(name, str) else "", "arguments": arguments},
    }


def prompt_tokens(
    req: dict[str, Any],
    spec: TokenizerSpec,
    chat: Callable[[list[Any], list[Any] | None, TokenizerSpec], int] = count_chat_prompt,
) -> int:
    """The request's prompt in ``spec``'s tokens, counted as the equivalent chat prompt (by
    ``chat``: the plain counter, or the meter's cached one)."""
    messages: list[dict[str, Any]] = []
    system = _text(req.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for m in req.get("messages") or ():
        if isinstance(m, dict):
            messages.append(_chat_message(m))
    tools = [
        {
            "type": "function",
            "function": {
                "name": t.get("name", ""),
                "description": t.get("description", ""),
                "parameters": t.get("input_schema"),
            },
        }
        for t in req.get("tools") or ()
        if isinstance(t, dict) and "name" in t
    ]
    return chat(list(messages), list(tools) or None, spec)


def _chat_message(m: dict[str, Any]) -> dict[str, Any]:
    role = m.get("role") if isinstance(m.get("role"), str) else "user"
    content = m.get("content")
    if not isinstance(content, list):
        return {"role": role, "content": _text(content)}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "tool_use":
            calls.append(_call(block.get("name"), orjson.dumps(block.get("input", {})).decode()))
        elif kind == "tool_result":
            texts.append(_text(block.get("content")))
        elif kind == "thinking":
            texts.append(_text(block.get("thinking")))
        else:
            texts.append(_text(block))
    out: dict[str, Any] = {"role": role, "content": "".join(texts)}
    if calls:
        out["tool_calls"] = calls
    return out


def _text(value: object) -> str:
    """Text of a string, a text block, or a list of them (other blocks: nothing)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value["text"] if value.get("type") == "text" and isinstance(value.get("text"), str) else ""
    if isinstance(value, list):
        return "".join(_text(v) for v in value)
    return ""
