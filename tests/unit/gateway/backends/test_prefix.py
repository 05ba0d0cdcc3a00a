from __future__ import annotations

from typing import Any

from gateway.backends.backend import Backend
from gateway.backends.prefix import CHUNK, PrefixTable, prefix_keys, session_key

SYSTEM = {"role": "system", "content": "You are the support agent of ACME. " * 200}
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {}}} for n in ("search", "open")]


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), **extra}


def test_conversations_of_one_tenant_share_key_0_and_diverge_after() -> None:
    a = prefix_keys(chat(SYSTEM, {"role": "user", "content": "my order is late"}))
    b = prefix_keys(chat(SYSTEM, {"role": "user", "content": "reset my password"}))
    assert len(a) == len(b) == 2
    assert a[0] == b[0] and a[1] != b[1]
    other = prefix_keys(chat({**SYSTEM, "content": "Another tenant"}, {"role": "user", "content": "x"}))
    assert other[0] != a[0]


def test_the_next_turn_extends_the_chain() -> None:
    turn1 = [SYSTEM, {"role": "user", "content": "hi"}]
    turn2 = [*turn1, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]
    k1, k2 = prefix_keys(chat(*turn1)), prefix_keys(chat(*turn2))
    assert k2[: len(k1)] == k1 and len(k2) == 4
    assert len(prefix_keys(chat(*turn2), depth=1)) == 2  # depth bounds the chain


def test_tools_and_instructions_are_part_of_key_0() -> None:
    user = {"role": "user", "content": "q"}
    plain = prefix_keys(chat(user))
    tooled = prefix_keys(chat(user, tools=TOOLS))
    assert len(plain) == 1 and len(tooled) == 2 and tooled[1] != plain[0]
    renamed = [{"type": "function", "function": {"name": "other", "parameters": {}}}, TOOLS[1]]
    assert prefix_keys(chat(user, tools=renamed))[0] != tooled[0]
    responses = prefix_keys({"model": "m", "instructions": "be brief", "input": "hello"})
    assert len(responses) == 2
    assert prefix_keys({"model": "m", "input": "hello"}) == prefix_keys(chat("hello"))  # type: ignore[arg-type]


def test_long_strings_cost_head_tail_length_and_a_sample() -> None:
    head, tail, middle = "h" * CHUNK, "t" * CHUNK, "x" * CHUNK * 40
    a = prefix_keys(chat({"role": "system", "content": head + middle + tail}))
    assert prefix_keys(chat({"role": "system", "content": head + "y" * len(middle) + tail})) != a
    assert prefix_keys(chat({"role": "system", "content": head + middle + "u" + tail[1:]})) != a
    assert prefix_keys(chat({"role": "system", "content": head + middle + "x" + tail})) != a
    # the documented trade: one character off the sample, in the middle, is not seen
    odd = head + middle[:7] + "z" + middle[8:] + tail
    assert prefix_keys(chat({"role": "system", "content": odd})) == a


def test_completion_prompts_chain_by_chunk_and_no_prompt_gives_no_key() -> None:
    shared = "p" * CHUNK * 2
    a = prefix_keys({"model": "m", "prompt": shared + "alpha"})
    b = prefix_keys({"model": "m", "prompt": shared + "beta"})
    assert a[:2] == b[:2] and a[2] != b[2]
    assert prefix_keys({"model": "m"}) == []
    assert prefix_keys(chat({"role": "user", "content": [{"type": "text", "text": "hi"}]})) != []


def test_session_keys_differ_from_prompt_keys() -> None:
    assert session_key("s1") != session_key("s2")
    assert session_key("s1") == session_key("s1")


def test_table_forgets_least_recently_used() -> None:
    up: Any = object()
    a, b = Backend("a", up), Backend("b", up)
    t = PrefixTable(max_entries=3)
    t.remember([1, 2], a)
    t.remember([3], b)
    t.remember([1], b)  # 1 is now the newest, and moved to b
    t.remember([4], a)
    assert len(t) == 3 and t.get(2) is None and t.get(1) is b and t.get(4) is a
