"""Cloud-token counting: how many tokens a cloud model would have billed for a request.

OpenAI models are counted exactly with their own tiktoken encodings: `o200k_base` for gpt-4o,
gpt-4.1, gpt-4.5, gpt-5, chatgpt-4o and the o-series; `cl100k_base` for gpt-4 and gpt-3.5. Chat
framing follows OpenAI's cookbook "How to count tokens with tiktoken" (3 tokens per message, +1
per `name`, +3 to prime the reply; tool definitions by its function-calling rules). The cookbook
calls its own counts estimates; they match the API on its published examples, which the tests pin.

Anthropic and Google do not publish their current tokenizers, so Claude and Gemini counts are
`o200k_base` counts times a per-family factor, flagged `estimated=True`:

* Claude (`CLAUDE_FACTOR = 1.15`): the same inputs sent to Claude 3.5 Sonnet and GPT-4o came back
  with about 16% more input tokens for English prose, 21% for math and 30% for Python code
  (a widely reproduced 2024 comparison, "Hidden costs in AI deployment"). We take just under the
  lowest of those: an inflated count would inflate the claimed savings, an undercount only
  understates them.
* Gemini (`GEMINI_FACTOR = 1.05`): Gemini's SentencePiece vocabulary is tuned for multilingual
  balance; published comparisons put English at roughly 5-10% more tokens than `o200k_base`
  (and fewer for CJK). Google's own rule of thumb (about 4 characters per token) matches OpenAI's.
  Again the low end, for the same reason.

Any other model counts with `o200k_base`, factor 1, `estimated=True`. Factors scale the whole
raw count once, rounded half-up to an integer.

Not counted: image, audio and file content parts (OpenAI bills images by tile size, which the
request text does not determine). Leaving them out undercounts, the safe direction for savings.

Encodings load from the tiktoken cache files shipped in `pricing/bpe/`: `TIKTOKEN_CACHE_DIR` is
pointed there (unless the operator set it) before first use, so nothing is fetched at run time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache, lru_cache
from pathlib import Path
from typing import Final, Literal

import orjson
import tiktoken

BPE_DIR: Final = Path(__file__).with_name("bpe")
O200K: Final = "o200k_base"
CL100K: Final = "cl100k_base"
CLAUDE_FACTOR: Final = Decimal("1.15")
GEMINI_FACTOR: Final = Decimal("1.05")

Family = Literal["openai", "claude", "gemini", "unknown"]

TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
REPLY_PRIMING: Final = 3  # every reply is primed with <|start|>assistant<|message|>

_O200K_MODEL: Final = re.compile(r"(chatgpt-4o|gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o\d+(?=-|$))")
_CL100K_MODEL: Final = re.compile(r"(gpt-4|gpt-3\.5|gpt-35|text-embedding-)")
_REASONING_MODEL: Final = re.compile(r"(o\d+(?=-|$)|gpt-5(?!-chat)(?=-|\.|$))")


@dataclass(frozen=True, slots=True)
class TokenizerSpec:
    """How to count one cloud model's tokens. `name` is what receipts record."""

    name: str
    encoding: str
    factor: Decimal
    estimated: bool
    family: Family


@dataclass(frozen=True, slots=True)
class _ToolOverhead:
    """The cookbook's function-calling constants (tokens); `enum_init` is negative on purpose."""

    func_init: int
    prop_init: int
    prop_key: int
    enum_init: int
    enum_item: int
    func_end: int


# The cookbook measured these for gpt-3.5-turbo/gpt-4 (cl100k) and gpt-4o/gpt-4o-mini (o200k).
# Later o200k models and the estimated families reuse the o200k set.
_TOOL_OVERHEAD: Final[Mapping[str, _ToolOverhead]] = {
    CL100K: _ToolOverhead(func_init=10, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12),
    O200K: _ToolOverhead(func_init=7, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12),
}


@lru_cache(maxsize=4096)  # pure in `model`; the meter asks for the same few names per request
def tokenizer_for(model: str) -> TokenizerSpec:
    """The counting rule for a cloud model name (provider prefixes and `ft:` are ignored)."""
    bare = model.lower().rsplit("/", 1)[-1].removeprefix("ft:")
    if _O200K_MODEL.match(bare):
        return TokenizerSpec(O200K, O200K, Decimal(1), False, "openai")
    if _CL100K_MODEL.match(bare):
        return TokenizerSpec(CL100K, CL100K, Decimal(1), False, "openai")
    if "claude" in bare:
        return TokenizerSpec(f"{O200K}*{CLAUDE_FACTOR}", O200K, CLAUDE_FACTOR, True, "claude")
    if "gemini" in bare:
        return TokenizerSpec(f"{O200K}*{GEMINI_FACTOR}", O200K, GEMINI_FACTOR, True, "gemini")
    return TokenizerSpec(O200K, O200K, Decimal(1), True, "unknown")


@lru_cache(maxsize=4096)
def is_reasoning_model(model: str) -> bool:
    """Whether a cloud model bills hidden reasoning tokens (OpenAI's o-series and gpt-5 reasoning
    models; not `gpt-5-chat`): its receipts say whether that reasoning was modelled."""
    return _REASONING_MODEL.match(model.lower().rsplit("/", 1)[-1].removeprefix("ft:")) is not None


@cache
def encoding(name: str) -> tiktoken.Encoding:
    """A tiktoken encoding, loaded once per process from the shipped cache files."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(BPE_DIR))
    return tiktoken.get_encoding(name)


def count_text(text: str, spec: TokenizerSpec) -> int:
    """Tokens of plain text (special-token markers in it count as ordinary text)."""
    return _scaled(_raw(text, encoding(spec.encoding)), spec)


def count_chat_prompt(
    messages: Sequence[object],
    tools: Sequence[object] | None,
    spec: TokenizerSpec,
) -> int:
    """Prompt tokens of a chat completion request: messages plus tool definitions.

    Each message costs `TOKENS_PER_MESSAGE` plus its values' tokens (+`TOKENS_PER_NAME` for
    `name`); the reply priming adds `REPLY_PRIMING`. `content` may be a string or a list of parts
    (text parts counted); assistant `tool_calls` count their function names and arguments.
    A message or tool that is not an object counts nothing (the provider would refuse it).
    """
    enc = encoding(spec.encoding)
    total = REPLY_PRIMING
    for message in messages:
        if isinstance(message, Mapping):
            total += message_tokens(message, enc)
    total += tools_tokens(tools or (), spec)
    return _scaled(total, spec)


def message_tokens(message: Mapping[str, object], enc: tiktoken.Encoding) -> int:
    """One chat message's raw tokens with its framing: what `count_chat_prompt` adds per message
    (a pure function of the message, so a cache may keep it by content)."""
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        total += _value_tokens(key, value, enc)
        if key == "name":
            total += TOKENS_PER_NAME
    return total


def tools_tokens(tools: Sequence[object], spec: TokenizerSpec) -> int:
    """Raw tokens of a request's tool definitions (unscaled)."""
    return _tools_tokens(
        tools, encoding(spec.encoding), _TOOL_OVERHEAD.get(spec.encoding, _TOOL_OVERHEAD[O200K])
    )


def count_completion(
    text: str | None,
    tool_calls: Sequence[Mapping[str, object]] | None,
    spec: TokenizerSpec,
) -> int:
    """Completion tokens: the generated text plus each tool call's function name and arguments.

    Providers add a few framing tokens per tool call that no public rule describes; they are
    not counted (an undercount).
    """
    enc = encoding(spec.encoding)
    total = _raw(text or "", enc) + _tool_calls_tokens(tool_calls or (), enc)
    return _scaled(total, spec)


def _raw(text: str, enc: tiktoken.Encoding) -> int:
    return len(enc.encode_ordinary(text)) if text else 0


@lru_cache(maxsize=256)
def unscaled(spec: TokenizerSpec) -> TokenizerSpec:
    """The same encoding with factor 1: count once with it, then `scale` for each family.

    `scale(count_x(..., unscaled(spec)), spec) == count_x(..., spec)` for every `count_*`, since
    each scales its raw total exactly once."""
    return TokenizerSpec(spec.encoding, spec.encoding, Decimal(1), spec.estimated, spec.family)


def scale(count: int, spec: TokenizerSpec) -> int:
    """A raw count of `spec.encoding` in `spec`'s units (its family factor, rounded half-up)."""
    return _scaled(count, spec)


def _scaled(count: int, spec: TokenizerSpec) -> int:
    if spec.factor == 1:
        return count
    return int((count * spec.factor).to_integral_value(rounding=ROUND_HALF_UP))


def _json_text(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _value_tokens(key: str, value: object, enc: tiktoken.Encoding) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return _raw(value, enc)
    if key == "content" and isinstance(value, list):
        return sum(_raw(text, enc) for part in value if (text := _part_text(part)) is not None)
    if key == "tool_calls" and isinstance(value, list):
        return _tool_calls_tokens(value, enc)
    if key == "function_call" and isinstance(value, Mapping):
        return _function_call_tokens(value, enc)
    return _raw(_json_text(value), enc)  # other structured values: count their JSON text


def _part_text(part: object) -> str | None:
    """Text of a content part (`text`, `input_text`, `output_text`, `refusal`), else `None`."""
    if isinstance(part, str):
        return part
    if not isinstance(part, Mapping):
        return None
    kind = part.get("type")
    text = part.get("refusal" if kind == "refusal" else "text")
    if kind in ("text", "input_text", "output_text", "refusal") and isinstance(text, str):
        return text
    return None


def _tool_calls_tokens(calls: Sequence[object], enc: tiktoken.Encoding) -> int:
    total = 0
    for call in calls:
        if isinstance(call, Mapping) and isinstance(function := call.get("function"), Mapping):
            total += _function_call_tokens(function, enc)
    return total


def _function_call_tokens(function: Mapping[str, object], enc: tiktoken.Encoding) -> int:
    name, arguments = function.get("name"), function.get("arguments")
    return sum(_raw(_json_text(part), enc) for part in (name, arguments) if part is not None)


def _tools_tokens(tools: Sequence[object], enc: tiktoken.Encoding, cost: _ToolOverhead) -> int:
    """The cookbook's `num_tokens_for_tools`, minus the messages.

    Per function: `func_init` + tokens of `"name:description"`; if it has properties,
    `prop_init` and, per property, `prop_key` + tokens of `"name:type:description"`, and for an
    enum `enum_init` + per item `enum_item` + its tokens. One `func_end` closes the list. A single
    trailing "." is dropped from descriptions. Accepts `{"type": "function", "function": {...}}`
    tools, the Responses API's flat `{"type": "function", "name": ..., "parameters": ...}` and bare
    legacy `functions`; other tool types are skipped. Nested object properties are
    not walked (the cookbook does not either).
    """
    functions = [_function_of(tool) for tool in tools]
    total = 0
    for function in (f for f in functions if f is not None):
        total += cost.func_init
        description = _text_field(function, "description").removesuffix(".")
        total += _raw(f"{_text_field(function, 'name')}:{description}", enc)
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        if not isinstance(properties, Mapping) or not properties:
            continue
        total += cost.prop_init
        for key, prop in properties.items():
            total += cost.prop_key
            prop = prop if isinstance(prop, Mapping) else {}
            enum = prop.get("enum")
            if isinstance(enum, list):
                total += cost.enum_init
                total += sum(cost.enum_item + _raw(_json_text(item), enc) for item in enum)
            p_type = _json_text(prop.get("type", ""))
            p_description = _text_field(prop, "description").removesuffix(".")
            total += _raw(f"{key}:{p_type}:{p_description}", enc)
    if any(f is not None for f in functions):
        total += cost.func_end
    return total


def _function_of(tool: object) -> Mapping[str, object] | None:
    if not isinstance(tool, Mapping):
        return None
    if tool.get("type") == "function":
        function = tool.get("function")
        if isinstance(function, Mapping):
            return function
        return tool if "name" in tool else None  # the Responses API's flat tool: name, parameters
    return tool if "type" not in tool and "name" in tool else None


def _text_field(obj: Mapping[str, object], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""
