"""Real Python clients, unchanged, through nometer and straight to vLLM: the same answers.

Each scenario sends the same request both ways (greedy decoding: ``temperature=0``, so the tiny
model's gibberish is the same text both times), compares what the client library hands its
caller (ids and clocks aside), then checks the ledger row and the receipt. Clients: the OpenAI
SDK (sync, async, streams, tools, structured outputs, Responses with retrieve and cancel), the
Anthropic SDK (messages, stream, tools, count_tokens, errors, a Claude Code-shaped request priced
as claude-sonnet-4-5 with cache reads at the cache-read rate) and LangChain's ``ChatOpenAI``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.relay_compare import coalesce
from tests.support.vllm import VllmServer

MODEL = "tiny-llama"
CLAUDE = "claude-sonnet-4-5"
MSG = [{"role": "user", "content": "Tell me about lighthouses."}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        # an enum keeps the forced JSON short: the tiny model would otherwise babble inside the string
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
            "required": ["city"],
        },
    },
}
_VOLATILE = frozenset({"id", "created", "created_at", "completed_at", "item_id", "call_id", "tool_use_id"})

# The SDK warns that claude-sonnet-4-5 reaches end-of-life; it is still the name Claude Code sends.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


def scrub(value: Any) -> Any:
    """A client object (or its dump) without per-request ids and clocks."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        return {k: "X" if k in _VOLATILE else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def agree(direct: Callable[[], Any], through: Callable[[], Any], attempts: int = 3) -> Any:
    """``through()`` equals ``direct()``. A stream may be retried, because vLLM itself sometimes
    sends two tokens in one delta when they are ready together (a timing matter: the same request
    sent twice straight to vLLM differs the same way); if no attempt agrees exactly, the last is
    compared with adjacent text deltas merged (``relay_compare.coalesce``)."""
    for _ in range(attempts):
        a, b = direct(), through()
        if a == b:
            return b
    if isinstance(a, list):
        assert coalesce(b) == coalesce(a)
    else:
        assert b == a
    return b


@pytest.fixture(scope="module")
def gw(vllm_chat: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    settings = gateway_settings(
        tmp_path_factory.mktemp("clients"),
        [vllm_chat.base_url],
        aliases={"gpt-4.1": MODEL, CLAUDE: MODEL},
        timeouts={"connect_s": 2, "read_s": 120},
    )
    with GatewayServer(settings) as g:
        yield g


def both(gw: GatewayServer, vllm: VllmServer) -> tuple[openai.OpenAI, openai.OpenAI]:
    return (
        openai.OpenAI(base_url=vllm.base_url, api_key="unused", max_retries=0),
        openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0),
    )


def receipt(gw: GatewayServer, request_id: str) -> dict[str, Any]:
    gw.row(request_id)
    r = httpx.get(gw.url + f"/v1/nometer/receipts/{request_id}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


# -- OpenAI SDK --------------------------------------------------------------------------------


def test_openai_sync_chat_and_stream(gw: GatewayServer, vllm_chat: VllmServer) -> None:
    direct, through = both(gw, vllm_chat)
    args: dict[str, Any] = {"model": MODEL, "messages": MSG, "max_tokens": 6, "temperature": 0}
    direct.chat.completions.create(**args)  # warm the prefix cache: both see the same cached tokens
    a, raw = direct.chat.completions.create(**args), through.chat.completions.with_raw_response.create(**args)
    b = raw.parse()
    assert scrub(b) == scrub(a) and b.usage is not None and b.system_fingerprint == a.system_fingerprint
    row = gw.row(raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        b.usage.prompt_tokens,
        b.usage.completion_tokens,
    )
    assert receipt(gw, raw.headers["x-request-id"])["references"][0]["priced"]

    def stream(client: openai.OpenAI, extra: dict[str, Any]) -> list[Any]:
        return [scrub(c) for c in client.chat.completions.create(**args, stream=True, **extra)]

    for extra in ({}, {"stream_options": {"include_usage": True}}):
        sb = agree(functools.partial(stream, direct, extra), functools.partial(stream, through, extra))
        assert sb[-1]["system_fingerprint"] is not None


def test_openai_async_chat_and_stream(gw: GatewayServer, vllm_chat: VllmServer) -> None:
    async def run(base: str) -> tuple[Any, list[Any]]:
        client = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)
        args: dict[str, Any] = {"model": MODEL, "messages": MSG, "max_tokens": 5, "temperature": 0}
        full = scrub(await client.chat.completions.create(**args))
        chunks = [scrub(c) async for c in await client.chat.completions.create(**args, stream=True)]
        await client.close()
        return full, chunks

    agree(lambda: asyncio.run(run(vllm_chat.base_url)), lambda: asyncio.run(run(gw.base_url)))


def test_openai_tools_and_structured_outputs(gw: GatewayServer, vllm_chat: VllmServer) -> None:
    direct, through = both(gw, vllm_chat)
    named = {"type": "function", "function": {"name": "get_weather"}}
    args: dict[str, Any] = {
        "model": MODEL,
        "messages": MSG,
        "temperature": 0,
        "tools": [TOOL],
        "tool_choice": named,
    }
    a, raw = direct.chat.completions.create(**args), through.chat.completions.with_raw_response.create(**args)
    b = raw.parse()
    assert scrub(b) == scrub(a)
    # vLLM forces the hermes frame and the function's name; inside `arguments` the random model
    # babbles until max_tokens, so no call completes (nor would it straight to vLLM)
    assert (b.choices[0].message.content or "").startswith('<tool_call>{"name": "get_weather"')
    row = gw.row(raw.headers["x-request-id"])
    assert row["completion_tokens"] == b.usage.completion_tokens
    agree(
        lambda: [scrub(c) for c in direct.chat.completions.create(**args, stream=True)],
        lambda: [scrub(c) for c in through.chat.completions.create(**args, stream=True)],
    )
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema}}
    sa = direct.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=12, temperature=0, response_format=fmt
    )  # type: ignore[call-overload]
    sb = through.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=12, temperature=0, response_format=fmt
    )  # type: ignore[call-overload]
    assert scrub(sb) == scrub(sa) and sb.choices[0].message.content.startswith("{")


def test_openai_responses_create_stream_retrieve_cancel(gw: GatewayServer, vllm_chat: VllmServer) -> None:
    direct, through = both(gw, vllm_chat)
    args: dict[str, Any] = {"model": MODEL, "input": "Hello there", "max_output_tokens": 5, "temperature": 0}
    direct.responses.create(**args)
    a, b = direct.responses.create(**args), through.responses.create(**args)
    assert scrub(b) == scrub(a) and b.usage is not None
    assert scrub(through.responses.retrieve(b.id)) == scrub(b)
    follow = through.responses.create(**{**args, "input": "And then?"}, previous_response_id=b.id)
    assert follow.previous_response_id == b.id
    sb = agree(
        lambda: [scrub(e) for e in direct.responses.create(**args, stream=True)],
        lambda: [scrub(e) for e in through.responses.create(**args, stream=True)],
    )
    assert sb[-1]["type"] == "response.completed"
    background = through.responses.create(**{**args, "max_output_tokens": 1500}, background=True)
    try:
        cancelled = through.responses.cancel(background.id)
        assert cancelled.id == background.id and cancelled.status == "cancelled"
    except openai.BadRequestError as exc:  # vLLM's answer when it finished first: it reached vLLM
        assert "Cannot cancel" in str(exc.message)
    rows = gw.wait_rows(1, "WHERE endpoint = ?", (f"/v1/responses/{background.id}/cancel",))
    assert rows[0]["status"] in (200, 400) and rows[0]["backend"] == "backend-0"


# -- Anthropic SDK -----------------------------------------------------------------------------


def claude_code_request(**extra: Any) -> dict[str, Any]:
    """The shape of a Claude Code turn: system blocks with cache_control, tools, metadata."""
    system = "You are Claude Code, Anthropic's official CLI for Claude. " * 40
    return {
        "model": CLAUDE,
        "max_tokens": 8,
        "extra_body": {"temperature": 0},
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "List the files here."}]}],
        "tools": [
            {
                "name": "Bash",
                "description": "Run a shell command",
                "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
            }
        ],
        "metadata": {"user_id": "user_test_session_1"},
        **extra,
    }


def anthropic_pair(gw: GatewayServer, vllm: VllmServer) -> tuple[anthropic.Anthropic, anthropic.Anthropic]:
    return (
        anthropic.Anthropic(base_url=vllm.url, api_key="unused", max_retries=0),
        anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0),
    )


def test_anthropic_messages_stream_tools_and_count_tokens(gw: GatewayServer, vllm_chat: VllmServer) -> None:
    direct, through = anthropic_pair(gw, vllm_chat)
    # anthropic 2.x takes no `temperature` argument: sent as an extra body field (greedy decoding)
    args: dict[str, Any] = {"max_tokens": 6, "extra_body": {"temperature": 0}, "messages": MSG}
    direct.messages.create(model=MODEL, **args)
    a, b = direct.messages.create(model=MODEL, **args), through.messages.create(model=MODEL, **args)
    assert scrub(b) == scrub(a) and b.usage.output_tokens == 6

    def events(client: anthropic.Anthropic) -> list[Any]:
        with client.messages.stream(model=MODEL, **args) as s:
            return [scrub(e) for e in s] + [scrub(s.get_final_message().usage)]

    db = agree(lambda: events(direct), lambda: events(through))
    assert db[-2]["type"] == "message_stop" and db[-1]["output_tokens"] == 6
    tool: dict[str, Any] = {
        "name": "get_weather",
        "description": "Weather",
        "input_schema": TOOL["function"]["parameters"],  # type: ignore[index]
    }
    tool_args: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 24,
        "extra_body": {"temperature": 0},
        "messages": MSG,
        "tools": [tool],
        "tool_choice": {"type": "tool", "name": "get_weather"},
    }
    ta, tb = direct.messages.create(**tool_args), through.messages.create(**tool_args)
    assert scrub(tb) == scrub(ta)
    ca = direct.messages.count_tokens(model=MODEL, messages=MSG)  # type: ignore[arg-type]
    cb = through.messages.count_tokens(model=MODEL, messages=MSG)  # type: ignore[arg-type]
    assert cb.input_tokens == ca.input_tokens > 0
    count_row = gw.wait_rows(1, "WHERE endpoint = '/v1/messages/count_tokens'")[-1]
    assert count_row["outcome"] == "ok" and count_row["price_table_id"] is None  # recorded, never billed
    with pytest.raises(anthropic.NotFoundError) as nf:
        through.messages.create(model="claude-unknown-1", **args)
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_claude_code_shaped_request_is_priced_as_claude(
    gw: GatewayServer, vllm_chat: VllmServer, stream: bool
) -> None:
    _, through = anthropic_pair(gw, vllm_chat)
    body = claude_code_request()
    through.messages.create(**body)  # the first turn writes the prompt cache, the second reads it
    if stream:
        with through.messages.stream(**body) as s:
            list(s)
            message = s.get_final_message()
            rid = s.response.headers["x-request-id"]
    else:
        raw = through.messages.with_raw_response.create(**body)
        message, rid = raw.parse(), raw.headers["x-request-id"]
    usage = message.usage
    assert usage.cache_read_input_tokens and usage.cache_read_input_tokens > 0
    row = gw.row(rid)
    prompt = usage.input_tokens + usage.cache_read_input_tokens + (usage.cache_creation_input_tokens or 0)
    assert (row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"]) == (
        prompt,
        usage.cache_read_input_tokens,
        usage.output_tokens,
    )
    data = receipt(gw, rid)
    first = data["references"][0]
    assert first["model"] == CLAUDE and first["priced"] and data["endpoint"] == "/v1/messages"
    terms = {t["kind"]: t for t in first["terms"]}
    table = gw.runtime.meter.table.models[first["price_key"]]
    assert terms["cache_read"]["tokens"] > 0 and Decimal(terms["cache_read"]["rate"]) == table.cache_read
    assert terms["cache_read"]["rate_field"] == "cache_read_input_token_cost"
    assert Decimal(terms["input"]["rate"]) == table.input


# -- LangChain ---------------------------------------------------------------------------------


def test_langchain_chat_openai_invoke_and_stream(gw: GatewayServer, vllm_chat: VllmServer) -> None:
    def run(base: str) -> tuple[Any, Any, list[Any]]:
        options: dict[str, Any] = {"api_key": "unused", "temperature": 0, "max_tokens": 6, "max_retries": 0}
        llm = ChatOpenAI(base_url=base, model="gpt-4.1" if base == gw.base_url else MODEL, **options)
        msg = llm.invoke("Tell me about lighthouses.")
        return msg.content, msg.usage_metadata, [c.content for c in llm.stream("Tell me about lighthouses.")]

    run(vllm_chat.base_url)
    agree(lambda: run(vllm_chat.base_url), lambda: run(gw.base_url))
    row = gw.wait_rows(1, "WHERE requested_model = 'gpt-4.1' AND stream = 1")[-1]
    assert row["served_model"] == MODEL and row["outcome"] == "ok" and row["completion_tokens"] == 6
