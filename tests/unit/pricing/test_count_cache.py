"""The per-message count cache: hits on a resent history, counts equal to the uncached ones
exactly, bounded memory."""

from __future__ import annotations

from typing import Any

import pytest

from pricing.count_cache import CountCache
from pricing.tokens import count_chat_prompt, tokenizer_for

TOOLS = [{"type": "function", "function": {"name": "ls", "description": "List files.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string", "enum": [".", "src"]}}}}}]  # fmt: skip


def history(steps: int) -> list[dict[str, Any]]:
    """An agent transcript: every shape a message takes (name, parts, tool calls, tool results)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": "You are a coding agent.", "name": "sys"}]
    for i in range(steps):
        out.append(
            {"role": "user", "content": [{"type": "text", "text": f"step {i}: fix the bug in file_{i}.py"}]}
        )
        call = {"name": "ls", "arguments": f'{{"path": "src/{i}"}}'}
        out.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": f"c{i}", "type": "function", "function": call}],
            }
        )
        out.append(
            {"role": "tool", "tool_call_id": f"c{i}", "content": f"file_{i}.py\ntest_{i}.py " * (i + 1)}
        )
    return out


@pytest.mark.parametrize("model", ["gpt-4.1", "gpt-4", "claude-sonnet-4-5", "gemini-2.5-pro"])
def test_cached_counts_equal_uncached_counts_step_by_step(model: str) -> None:
    spec = tokenizer_for(model)
    cache = CountCache()
    for step in range(1, 30):
        messages = history(step)
        assert cache.chat_prompt(messages, TOOLS, spec) == count_chat_prompt(messages, TOOLS, spec)
        cache.end_request()
    assert cache.chat_prompt([], None, spec) == count_chat_prompt([], None, spec)


def test_a_resent_history_is_a_hit_and_only_new_messages_are_counted() -> None:
    spec = tokenizer_for("gpt-4.1")
    cache = CountCache()
    cache.chat_prompt(history(10), TOOLS, spec)
    cache.end_request()
    misses = cache.misses
    grown = history(11)  # a new step: three new messages (a copy, as a new request body would be)
    cache.hits = 0
    assert cache.chat_prompt(grown, TOOLS, spec) == count_chat_prompt(grown, TOOLS, spec)
    assert cache.misses - misses == 3  # only the new messages were tokenized
    assert cache.hits == len(grown) - 3 + 1  # every earlier message and the tools


def test_an_edited_message_is_counted_again() -> None:
    spec = tokenizer_for("gpt-4.1")
    cache = CountCache()
    messages = history(3)
    cache.chat_prompt(messages, None, spec)
    cache.end_request()
    edited = [*messages[:-1], {**messages[-1], "content": "something else entirely"}]
    assert cache.chat_prompt(edited, None, spec) == count_chat_prompt(edited, None, spec)


def test_the_cache_is_bounded_lru() -> None:
    spec = tokenizer_for("gpt-4.1")
    cache = CountCache(max_entries=5)
    messages = [{"role": "user", "content": f"message {i}"} for i in range(20)]
    assert cache.chat_prompt(messages, None, spec) == count_chat_prompt(messages, None, spec)
    assert len(cache) == 5
    cache.end_request()
    cache.hits = 0
    cache.chat_prompt(messages[-5:], None, spec)  # the most recent survive
    assert cache.hits == 5
    with pytest.raises(ValueError):
        CountCache(0)
