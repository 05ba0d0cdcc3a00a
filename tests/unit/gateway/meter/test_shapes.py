"""Every request and answer shape is re-counted (issue 9): each shape's count equals the count of
its chat equivalent, or the tokenizer's own count of its parts, never 0 by omission."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.ledger.events import RequestRecord
from gateway.meter.answer import answer_of
from gateway.meter.rows import LedgerBatch, estimate_prompt_tokens, make_finalizer
from gateway.meter.shadow import Shadow, ShadowMeter
from gateway.meter.usage import ESTIMATED, extract
from gateway.settings import MeterSettings
from pricing.receipt import ReferenceTokens
from pricing.tables import shipped_table
from pricing.tokens import count_chat_prompt, count_completion, count_text, is_reasoning_model, tokenizer_for

O200K = tokenizer_for("gpt-4.1")
USAGE = {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}
RESP_USAGE = {"input_tokens": 40, "output_tokens": 9, "total_tokens": 49}
TOOL = {"name": "get_weather", "description": "Weather in a city.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "description": "City name"}}}}  # fmt: skip


def meter(**settings: Any) -> ShadowMeter:
    return ShadowMeter(MeterSettings(references=("gpt-4.1",), **settings), shipped_table(), {})


def record(
    endpoint: str, request: dict[str, Any], response: Any = None, chunks: list[Any] | None = None
) -> RequestRecord:
    rec = RequestRecord(
        "r", endpoint, "local-model", 1_767_000_000.0, 0.0, served_model="local-model", backend="b"
    )
    rec.status, rec.busy_s, rec.request = 200, 0.01, request
    if response is not None:
        rec.response = orjson.dumps(response)
    for c in chunks or ():
        rec.chunks.append(b"data: " + orjson.dumps(c) + b"\n\n")
    rec.stream = bool(chunks)
    return rec


def measure(rec: RequestRecord, m: ShadowMeter | None = None) -> Shadow:
    m = m or meter()
    usage, events = extract(rec, estimate_prompt_tokens)
    shadow = m.measure(rec, usage, answer_of(rec, events))
    assert shadow is not None
    return shadow


def ref(rec: RequestRecord, m: ShadowMeter | None = None, model: str = "gpt-4.1") -> ReferenceTokens:
    return next(r for r in measure(rec, m).inputs.references if r.model == model)


def chat_count(messages: list[Any], tools: list[Any] | None = None) -> int:
    return count_chat_prompt(messages, tools, O200K)


# -- the Responses API ---------------------------------------------------------------------------


def test_responses_flat_tools_count_as_function_definitions() -> None:
    with_tools = record(
        "/v1/responses",
        {"input": "weather in Paris?", "tools": [{"type": "function", **TOOL}]},
        {"output": [], "usage": RESP_USAGE},
    )
    bare = record("/v1/responses", {"input": "weather in Paris?"}, {"output": [], "usage": RESP_USAGE})
    want = chat_count(
        [{"role": "user", "content": "weather in Paris?"}], [{"type": "function", "function": TOOL}]
    )
    assert ref(with_tools).usage.input_tokens == want > ref(bare).usage.input_tokens


def test_responses_function_call_items_count_as_the_chat_turns_they_are() -> None:
    items = [
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "c1", "output": '{"temp_c": 18}'},
    ]
    rec = record("/v1/responses", {"input": items}, {"output": [], "usage": RESP_USAGE})
    want = chat_count(
        [
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}],
            },
            {"role": "tool", "content": '{"temp_c": 18}'},
        ]
    )
    got = ref(rec).usage.input_tokens
    assert got == want and got > chat_count([{"role": "user", "content": "weather in Paris?"}])


def test_instructions_are_a_system_message() -> None:
    rec = record(
        "/v1/responses", {"instructions": "Be terse.", "input": "hi"}, {"output": [], "usage": RESP_USAGE}
    )
    want = chat_count([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}])
    assert ref(rec).usage.input_tokens == want


CALL = {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'}
CALL_TOKENS = count_completion(
    None, [{"function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}], O200K
)


def test_responses_output_function_calls_are_counted() -> None:
    body = {
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "Checking."}]}, CALL],
        "usage": RESP_USAGE,
    }
    rec = record("/v1/responses", {"input": "weather?"}, body)
    assert (
        ref(rec).usage.output_tokens
        == count_text("Checking.", O200K) + CALL_TOKENS
        > count_text("Checking.", O200K)
    )


def test_streamed_responses_function_calls_are_counted_once() -> None:
    chunks = [
        {"type": "response.function_call_arguments.delta", "delta": '{"city":'},
        {"type": "response.function_call_arguments.delta", "delta": '"Paris"}'},
        {"type": "response.output_item.done", "item": CALL},
        {"type": "response.completed", "response": {"output": [CALL], "usage": RESP_USAGE}},
    ]
    rec = record("/v1/responses", {"input": "weather?", "stream": True}, chunks=chunks)
    assert ref(rec).usage.output_tokens == CALL_TOKENS > 0


# -- token-id inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "field", "ids", "count"),
    [
        ("/v1/embeddings", "input", [[101, 2023, 2003], [101, 102]], 5),
        ("/v1/embeddings", "input", [5, 6, 7, 8], 4),
        ("/v1/completions", "prompt", [1, 2, 3, 4, 5, 6, 7], 7),
    ],
)
def test_token_ids_count_as_their_id_count_and_are_priced(
    endpoint: str, field: str, ids: list[Any], count: int
) -> None:
    model = "text-embedding-3-small" if endpoint == "/v1/embeddings" else "gpt-4.1"
    m = ShadowMeter(MeterSettings(references=(model,), embedding_references=(model,)), shipped_table(), {})
    body: dict[str, Any] = {"data": [], "usage": {"prompt_tokens": 9, "total_tokens": 9}}
    if endpoint == "/v1/completions":
        body = {"choices": [{"index": 0, "text": ""}], "usage": USAGE}
    shadow = measure(record(endpoint, {field: ids}, body), m)
    (tokens,) = shadow.inputs.references
    assert tokens.usage.input_tokens == count and tokens.estimated  # the local model's ids: an estimate
    (_, cost, _), = shadow.costs  # fmt: skip
    assert cost.priced and cost.total is not None and cost.total > 0  # never a silent $0


# -- n > 1 ---------------------------------------------------------------------------------------


def test_each_choice_is_counted_alone_and_summed() -> None:
    texts = ["Hello wor", "ld"]
    body = {
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}} for i, t in enumerate(texts)
        ],
        "usage": USAGE,
    }
    rec = record(
        "/v1/chat/completions", {"messages": [{"role": "user", "content": "capital?"}], "n": 2}, body
    )
    want = sum(count_text(t, O200K) for t in texts)
    assert want != count_text("".join(texts), O200K)  # joining would merge tokens across the boundary
    assert ref(rec).usage.output_tokens == want


def test_streamed_choices_are_grouped_by_index() -> None:
    parts = [(0, "Paris is"), (1, "of "), (0, " the capital"), (1, "France.")]
    chunks: list[Any] = [{"choices": [{"index": i, "delta": {"content": t}}]} for i, t in parts]
    chunks.append({"choices": [], "usage": USAGE})
    rec = record(
        "/v1/chat/completions", {"messages": [{"role": "user", "content": "capital?"}], "n": 2}, chunks=chunks
    )
    want = count_text("Paris is the capital", O200K) + count_text("of France.", O200K)
    assert ref(rec).usage.output_tokens == want


# -- a 200 without usage -------------------------------------------------------------------------


def test_a_non_streamed_answer_without_usage_is_estimated_and_labelled() -> None:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there."}}]}
    rec = record("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, body)
    batch: LedgerBatch = make_finalizer(estimate_prompt_tokens, meter())([rec])
    (row,) = batch.events
    usage, _ = extract(rec, estimate_prompt_tokens)
    assert usage.source == ESTIMATED and usage.completion_tokens == count_text("Hello there.", O200K)
    assert row[18] == ESTIMATED  # usage_source
    (cost_row,) = batch.shadows
    assert cost_row[11] is not None and cost_row[11] > 0  # cloud cost: priced


def test_an_error_body_without_usage_is_not_estimated() -> None:
    rec = record(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}]},
        {"error": {"message": "bad"}},
    )
    rec.status = 400
    usage, _ = extract(rec, estimate_prompt_tokens)
    assert usage.prompt_tokens is None


# -- reasoning references ------------------------------------------------------------------------


REASONING = [("o3", True), ("o4-mini", True), ("o1", True), ("gpt-5", True), ("gpt-5-mini", True)]
REASONING.append(("openai/o3-pro", True))
NOT_REASONING = [("gpt-5-chat-latest", False), ("gpt-4.1", False), ("gpt-4o", False)]


@pytest.mark.parametrize(("model", "reasoning"), [*REASONING, *NOT_REASONING, ("claude-sonnet-4-5", False)])
def test_reasoning_models(model: str, reasoning: bool) -> None:
    assert is_reasoning_model(model) is reasoning


def _reasoning_record() -> RequestRecord:
    usage = {**USAGE, "completion_tokens_details": {"reasoning_tokens": 50}}
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}}], "usage": usage}
    return record("/v1/chat/completions", {"messages": [{"role": "user", "content": "answer?"}]}, body)


def test_a_reasoning_reference_says_hidden_reasoning_was_not_modelled() -> None:
    m = ShadowMeter(MeterSettings(references=("gpt-4.1", "o3")), shipped_table(), {})
    shadow = measure(_reasoning_record(), m)
    gpt, o3 = shadow.inputs.references
    assert gpt.hidden_reasoning is None and o3.hidden_reasoning == "not_modelled"
    assert o3.usage.reasoning_tokens == 0 and o3.usage.output_tokens == count_text("42", O200K)


def test_the_local_option_models_it_from_the_local_reasoning_tokens() -> None:
    m = ShadowMeter(
        MeterSettings(references=("gpt-4.1", "o3"), hidden_reasoning="local"), shipped_table(), {}
    )
    gpt, o3 = measure(_reasoning_record(), m).inputs.references
    assert o3.hidden_reasoning == "local"
    assert o3.usage.reasoning_tokens == 50 and o3.usage.output_tokens == count_text("42", O200K) + 50
    assert gpt.usage.reasoning_tokens == 0  # a non-reasoning reference bills no hidden reasoning
