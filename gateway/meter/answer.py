"""The generated text of a finished request, for re-counting in cloud tokens (never stored).

Every shape the meter prices: chat and completions choices (each choice apart: `n>1` answers are
counted per choice and summed, never joined into one string, which would merge tokens across
their boundary), stream deltas grouped by their choice `index`, and the Responses API's output
(text, reasoning, and `function_call` items, in a body or as `response.output_item.done` events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.ledger.events import RequestRecord


@dataclass(frozen=True, slots=True)
class Answer:
    """What the model produced, as text, for re-counting (never stored).

    `choices` holds one `Answer` per choice when there were several (`n>1`); the top-level fields
    are then their concatenation, for readers that want the text, not for counting."""

    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()
    choices: tuple[Answer, ...] = ()

    def each(self) -> tuple[Answer, ...]:
        """The answers to count one by one: the choices, or this answer alone."""
        return self.choices or (self,)


class _Choice:
    __slots__ = ("calls", "content", "reasoning")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}


def answer_of(rec: RequestRecord, events: list[dict[str, Any]] | None) -> Answer:
    """The generated text of a finished request, from its stream events or its JSON body."""
    if events is not None:
        return _from_events(events)
    body = response_json(rec)
    if body is None:
        return Answer()
    choices: dict[int, _Choice] = {}
    for i, ch in enumerate(body.get("choices") or ()):
        if not isinstance(ch, dict):
            continue
        c = choices.setdefault(_index(ch, i), _Choice())
        msg = ch.get("message")
        if isinstance(msg, dict):
            _collect(msg, c.content, c.reasoning)
            for j, tc in enumerate(msg.get("tool_calls") or ()):
                if isinstance(tc, dict) and isinstance(fn := tc.get("function"), dict):
                    c.calls[j] = {"name": str(fn.get("name") or ""), "arguments": _text(fn.get("arguments"))}
        elif isinstance(ch.get("text"), str):
            c.content.append(ch["text"])
    output = body.get("output")
    if isinstance(output, list):  # Responses API
        c = choices.setdefault(0, _Choice())
        for item in output:
            _output_item(item, c)
    return _answer(choices)


def _from_events(events: list[dict[str, Any]]) -> Answer:
    choices: dict[int, _Choice] = {}
    for ev in events:
        for i, ch in enumerate(ev.get("choices") or ()):
            if not isinstance(ch, dict):
                continue
            c = choices.setdefault(_index(ch, i), _Choice())
            d = ch.get("delta")
            if isinstance(d, dict):
                _collect(d, c.content, c.reasoning)
                for tc in d.get("tool_calls") or ():
                    if isinstance(tc, dict):
                        slot = c.calls.setdefault(_index(tc, 0), {"name": "", "arguments": ""})
                        fn = tc.get("function") or {}
                        slot["name"] += fn.get("name") or ""
                        slot["arguments"] += fn.get("arguments") or ""
            elif isinstance(ch.get("text"), str):
                c.content.append(ch["text"])
        kind = ev.get("type")
        if kind == "response.output_text.delta" and isinstance(ev.get("delta"), str):
            choices.setdefault(0, _Choice()).content.append(ev["delta"])
        elif kind == "response.reasoning_text.delta" and isinstance(ev.get("delta"), str):
            choices.setdefault(0, _Choice()).reasoning.append(ev["delta"])
        elif kind == "response.output_item.done" and isinstance(item := ev.get("item"), dict):
            if item.get("type") == "function_call":  # its text came as deltas of arguments only
                _output_item(item, choices.setdefault(0, _Choice()))
    return _answer(choices)


def _output_item(item: object, c: _Choice) -> None:
    """One Responses output item: message text, reasoning text, or a function call."""
    if not isinstance(item, dict):
        return
    if item.get("type") == "function_call":
        c.calls[len(c.calls)] = {
            "name": str(item.get("name") or ""),
            "arguments": _text(item.get("arguments")),
        }
        return
    for part in item.get("content") or ():
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            (c.reasoning if item.get("type") == "reasoning" else c.content).append(part["text"])


def _answer(choices: dict[int, _Choice]) -> Answer:
    each = tuple(
        Answer(
            "".join(c.content),
            "".join(c.reasoning),
            tuple({"type": "function", "function": call} for _, call in sorted(c.calls.items())),
        )
        for _, c in sorted(choices.items())
    )
    if not each:
        return Answer()
    if len(each) == 1:
        return each[0]
    return Answer(
        "".join(a.content for a in each),
        "".join(a.reasoning for a in each),
        tuple(tc for a in each for tc in a.tool_calls),
        each,
    )


def _index(obj: dict[str, Any], default: int) -> int:
    i = obj.get("index")
    return i if isinstance(i, int) and not isinstance(i, bool) else default


def _text(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


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
