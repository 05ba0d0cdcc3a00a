"""A request's prompt as a cloud model would count it, for every shape the meter prices.

* Chat: the messages and tools (``pricing.tokens.count_chat_prompt``).
* Responses API: ``instructions`` is a system message (the API puts it first, framed like one);
  ``input`` a string (a user message) or a list of items: messages (``role``), ``function_call``
  items (an assistant message calling the function: name and arguments) and
  ``function_call_output`` items (a tool message with the output); the flat tool definitions
  (``{"type": "function", "name", "description", "parameters"}``) count as function definitions.
* Anthropic Messages: ``gateway.meter.anthropic``.
* Completions and embeddings: text prompts are counted as text; **token-id** prompts
  (``[1, 2, 3]`` or ``[[1, 2], [3]]``) as their id count. Those ids are the local model's tokens,
  not the cloud model's: the count is marked *estimated*, never a silent 0 (and so never $0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.meter import anthropic
from pricing.tokens import TokenizerSpec, count_chat_prompt, count_text

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"

ChatCounter = Callable[[list[Any], list[Any] | None, TokenizerSpec], int]


@dataclass(frozen=True, slots=True)
class Prompt:
    tokens: int
    from_token_ids: bool = False  # counted as the local model's ids: an estimate


def prompt_tokens(
    endpoint: str, req: dict[str, Any], spec: TokenizerSpec, chat: ChatCounter = count_chat_prompt
) -> Prompt:
    """The prompt of ``req`` in ``spec``'s tokens (``chat`` counts chat-shaped prompts: the
    plain counter, or one with a per-message cache)."""
    if endpoint == CHAT:
        raw_messages, raw_tools = req.get("messages"), req.get("tools")
        messages = [m for m in raw_messages if isinstance(m, dict)] if isinstance(raw_messages, list) else []
        tools = [t for t in raw_tools if isinstance(t, dict)] if isinstance(raw_tools, list) else None
        return Prompt(chat(messages, tools, spec))
    if endpoint == RESPONSES:
        return Prompt(chat(*responses_messages(req), spec))
    if endpoint == anthropic.MESSAGES:
        return Prompt(anthropic.prompt_tokens(req, spec, chat))
    value = req.get("prompt", req.get("input"))  # completions: prompt; embeddings: input
    ids = token_ids(value)
    if ids is not None:
        return Prompt(ids, True)
    return Prompt(sum(count_text(t, spec) for t in _texts(value)))


def responses_messages(req: dict[str, Any]) -> tuple[list[Any], list[Any] | None]:
    """A Responses request as chat messages and tool definitions (see the module docstring)."""
    messages: list[Any] = []
    if isinstance(instructions := req.get("instructions"), str) and instructions:
        messages.append({"role": "system", "content": instructions})
    inp = req.get("input")
    if isinstance(inp, str):
        messages.append({"role": "user", "content": inp})
    elif isinstance(inp, list):
        for item in inp:
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "function_call":
                call = {"name": item.get("name"), "arguments": item.get("arguments")}
                messages.append({"role": "assistant", "tool_calls": [{"function": call}]})
            elif kind == "function_call_output":
                messages.append({"role": "tool", "content": _output_text(item.get("output"))})
            elif "role" in item:
                messages.append({k: v for k, v in item.items() if k in ("role", "content", "name")})
    raw_tools = req.get("tools")
    tools = [t for t in raw_tools if isinstance(t, dict)] if isinstance(raw_tools, list) else None
    return messages, tools


def _output_text(output: object) -> object:
    """A function_call_output's output: a string, or a list of content parts (kept as parts)."""
    return output if isinstance(output, (str, list)) else "" if output is None else str(output)


def token_ids(value: object) -> int | None:
    """The id count of a token-id prompt (a list of ints, or a list of such lists); else None."""
    if not isinstance(value, list) or not value:
        return None
    if all(_is_int(x) for x in value):
        return len(value)
    if all(isinstance(x, list) and all(_is_int(i) for i in x) for x in value):
        return sum(len(x) for x in value)
    return None


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _texts(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [x for x in v if isinstance(x, str)]
    return []
