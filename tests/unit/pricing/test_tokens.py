"""Token counts, pinned to the OpenAI cookbook "How to count tokens with tiktoken" examples.

The cookbook reports the OpenAI API's own `usage.prompt_tokens` for these exact requests:
129 (gpt-3.5-turbo, gpt-4) / 124 (gpt-4o, gpt-4o-mini) for the message example, and
105 / 101 for the function-calling example.
"""

from __future__ import annotations

import os
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from pricing.tokens import (
    BPE_DIR,
    CL100K,
    CLAUDE_FACTOR,
    GEMINI_FACTOR,
    O200K,
    TokenizerSpec,
    count_chat_prompt,
    count_completion,
    count_text,
    encoding,
    tokenizer_for,
)

COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]

COOKBOOK_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]

COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 129), ("gpt-4-0613", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)],
)
def test_cookbook_message_example(model: str, expected: int) -> None:
    assert count_chat_prompt(COOKBOOK_MESSAGES, None, tokenizer_for(model)) == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_cookbook_function_calling_example(model: str, expected: int) -> None:
    assert count_chat_prompt(COOKBOOK_TOOL_MESSAGES, COOKBOOK_TOOLS, tokenizer_for(model)) == expected


def test_cookbook_function_overhead_by_hand() -> None:
    """The o200k tools count, term by term, as the cookbook's `num_tokens_for_tools` adds it."""
    spec = tokenizer_for("gpt-4o")
    enc = encoding(O200K)

    def n(text: str) -> int:
        return len(enc.encode(text))

    expected = (
        7  # func_init
        + n("get_current_weather:Get the current weather in a given location")
        + 3  # prop_init
        + 3  # prop_key (location)
        + n("location:string:The city and state, e.g. San Francisco, CA")
        + 3  # prop_key (unit)
        - 3  # enum_init
        + 3
        + n("celsius")
        + 3
        + n("fahrenheit")
        + n("unit:string:The unit of temperature to return")
        + 12  # func_end
    )
    with_tools = count_chat_prompt(COOKBOOK_TOOL_MESSAGES, COOKBOOK_TOOLS, spec)
    assert with_tools - count_chat_prompt(COOKBOOK_TOOL_MESSAGES, None, spec) == expected


@pytest.mark.parametrize(
    ("model", "encoding_name", "estimated", "family"),
    [
        ("gpt-4o", O200K, False, "openai"),
        ("gpt-4o-mini-2024-07-18", O200K, False, "openai"),
        ("chatgpt-4o-latest", O200K, False, "openai"),
        ("gpt-4.1-nano", O200K, False, "openai"),
        ("openai/gpt-5", O200K, False, "openai"),
        ("gpt-5-mini", O200K, False, "openai"),
        ("o1", O200K, False, "openai"),
        ("o3-mini", O200K, False, "openai"),
        ("o4-mini-2025-04-16", O200K, False, "openai"),
        ("ft:gpt-4o-mini:acme::abc123", O200K, False, "openai"),
        ("gpt-4", CL100K, False, "openai"),
        ("gpt-4-turbo", CL100K, False, "openai"),
        ("gpt-4-32k-0613", CL100K, False, "openai"),
        ("gpt-3.5-turbo", CL100K, False, "openai"),
        ("azure/gpt-35-turbo", CL100K, False, "openai"),
        ("claude-sonnet-4-5", O200K, True, "claude"),
        ("anthropic/claude-3-5-haiku-20241022", O200K, True, "claude"),
        ("bedrock/us.anthropic.claude-opus-4-1-20250805-v1:0", O200K, True, "claude"),
        ("gemini/gemini-2.5-pro", O200K, True, "gemini"),
        ("vertex_ai/gemini-2.0-flash", O200K, True, "gemini"),
        ("omni-moderation-latest", O200K, True, "unknown"),
        ("llama-3.1-8b-instruct", O200K, True, "unknown"),
    ],
)
def test_tokenizer_for(model: str, encoding_name: str, estimated: bool, family: str) -> None:
    spec = tokenizer_for(model)
    assert (spec.encoding, spec.estimated, spec.family) == (encoding_name, estimated, family)


def test_estimated_families_name_their_factor() -> None:
    assert tokenizer_for("claude-sonnet-4-5") == TokenizerSpec(
        "o200k_base*1.15", O200K, CLAUDE_FACTOR, True, "claude"
    )
    assert tokenizer_for("gemini-2.5-pro") == TokenizerSpec(
        "o200k_base*1.05", O200K, GEMINI_FACTOR, True, "gemini"
    )
    unknown = tokenizer_for("qwen3-32b")
    assert (unknown.name, unknown.factor) == (O200K, Decimal(1))


def test_factor_scales_the_whole_count_rounding_half_up() -> None:
    claude, gemini, gpt = (
        tokenizer_for("claude-sonnet-4-5"),
        tokenizer_for("gemini-2.5-pro"),
        tokenizer_for("gpt-4o"),
    )
    raw = count_chat_prompt(COOKBOOK_MESSAGES, None, gpt)  # 124
    assert count_chat_prompt(COOKBOOK_MESSAGES, None, claude) == 143  # 124 x 1.15 = 142.6
    assert count_chat_prompt(COOKBOOK_MESSAGES, None, gemini) == 130  # 124 x 1.05 = 130.2
    text = "tiktoken is great!" * 10
    expected = (count_text(text, gpt) * CLAUDE_FACTOR).to_integral_value(rounding=ROUND_HALF_UP)
    assert count_text(text, claude) == int(expected)
    assert raw == 124


def test_count_text_against_known_encodings() -> None:
    # The cookbook's encoding example: "tiktoken is great!" is 6 tokens in cl100k_base.
    assert count_text("tiktoken is great!", tokenizer_for("gpt-4")) == 6
    assert count_text("", tokenizer_for("gpt-4o")) == 0


def test_special_token_text_is_counted_as_plain_text() -> None:
    spec = tokenizer_for("gpt-4o")
    assert count_text("<|endoftext|>", spec) > 1


def test_name_adds_one_token_beyond_its_text() -> None:
    spec = tokenizer_for("gpt-4o")
    plain = count_chat_prompt([{"role": "user", "content": "hi"}], None, spec)
    named = count_chat_prompt([{"role": "user", "content": "hi", "name": "bob"}], None, spec)
    assert named - plain == count_text("bob", spec) + 1
    assert plain == 3 + count_text("user", spec) + count_text("hi", spec) + 3


def test_content_parts_count_text_and_skip_images() -> None:
    spec = tokenizer_for("gpt-4o")
    as_string = count_chat_prompt([{"role": "user", "content": "Describe this picture."}], None, spec)
    as_parts = count_chat_prompt(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this picture."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                ],
            }
        ],
        None,
        spec,
    )
    assert as_parts == as_string


def test_assistant_tool_calls_and_null_content() -> None:
    spec = tokenizer_for("gpt-4o")
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    expected = 3 + count_text("assistant", spec) + count_text("get_weather", spec)
    expected += count_text('{"city":"Paris"}', spec) + 3
    assert count_chat_prompt([message], None, spec) == expected
    tool_reply = {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
    assert (
        count_chat_prompt([tool_reply], None, spec)
        == 3 + sum(count_text(text, spec) for text in ("tool", "call_1", "18C")) + 3
    )


def test_tool_shapes() -> None:
    spec = tokenizer_for("gpt-4o")
    wrapped = count_chat_prompt(COOKBOOK_TOOL_MESSAGES, COOKBOOK_TOOLS, spec)
    legacy = [COOKBOOK_TOOLS[0]["function"]]  # the old `functions` parameter
    assert count_chat_prompt(COOKBOOK_TOOL_MESSAGES, legacy, spec) == wrapped
    only_builtin = [{"type": "web_search"}]
    assert count_chat_prompt(COOKBOOK_TOOL_MESSAGES, only_builtin, spec) == count_chat_prompt(
        COOKBOOK_TOOL_MESSAGES, [], spec
    )
    bare = [{"type": "function", "function": {"name": "ping"}}]
    # func_init 7 + "ping:" + func_end 12; no properties, so no prop_init.
    assert (
        count_chat_prompt([], bare, spec) - count_chat_prompt([], None, spec)
        == 7 + count_text("ping:", spec) + 12
    )


def test_count_completion() -> None:
    spec = tokenizer_for("gpt-4o")
    assert count_completion("Hello there.", None, spec) == count_text("Hello there.", spec)
    calls = [{"type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]
    assert count_completion(None, calls, spec) == count_text("f", spec) + count_text('{"x": 1}', spec)
    claude = tokenizer_for("claude-sonnet-4-5")
    raw = count_completion("Hello there.", calls, spec)
    assert count_completion("Hello there.", calls, claude) == int(
        (raw * CLAUDE_FACTOR).to_integral_value(rounding=ROUND_HALF_UP)
    )


def test_encodings_come_from_the_shipped_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    encoding.cache_clear()
    try:
        assert encoding(CL100K).name == CL100K
        assert os.environ["TIKTOKEN_CACHE_DIR"] == str(BPE_DIR)
    finally:
        encoding.cache_clear()
    assert (BPE_DIR / "9b5ad71b2ce5302211f9c61530b329a4922fc6a4").is_file()  # cl100k_base
    assert (BPE_DIR / "fb374d419588a4632f3f557e76b4b70aebbca790").is_file()  # o200k_base


def test_messages_and_tools_that_are_not_objects_count_nothing() -> None:
    spec = tokenizer_for("gpt-4o")
    good = [{"role": "user", "content": "hello"}]
    tool = {"type": "function", "function": {"name": "f", "description": "d"}}
    expected = count_chat_prompt(good, [tool], spec)
    junk: list[Any] = [1, "text", None, [], True]
    assert count_chat_prompt([*junk, *good], [*junk, tool], spec) == expected
