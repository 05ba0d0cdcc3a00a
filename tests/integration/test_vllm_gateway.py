"""End to end through nometer to a REAL vLLM (CPU build, tiny model generated offline), with the
official openai SDK as the client and a real SQLite ledger. The tiny model's text is gibberish;
only the wire behaviour and the token accounting matter here."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.vllm import VllmServer

MSG: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a Python function that adds two numbers."}
]


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, vllm_chat: VllmServer, vllm_embed: VllmServer
) -> Iterator[GatewayServer]:
    tmp = tmp_path_factory.mktemp("gw")
    s = gateway_settings(
        tmp,
        [vllm_chat.base_url, vllm_embed.base_url],
        timeouts={"read_s": 120},
        aliases={"gpt-4.1": "tiny-llama"},
    )
    g = GatewayServer(s).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def client(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=120)


def test_models_union_and_alias(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny-embed", "tiny-llama", "gpt-4.1"]


def test_chat_non_stream(gw: GatewayServer, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-llama", messages=MSG, max_tokens=8, temperature=0
    )
    r = raw.parse()
    assert r.usage and r.usage.completion_tokens == 8 and r.choices[0].finish_reason == "length"
    row = gw.row(raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        r.usage.prompt_tokens,
        8,
        r.usage.total_tokens,
    )
    assert (row["usage_source"], row["outcome"], row["served_model"]) == ("upstream", "ok", "tiny-llama")


def test_chat_stream_without_usage_is_stripped_but_recorded(gw: GatewayServer, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=MSG, max_tokens=8, temperature=0, stream=True
    )
    chunks = list(raw.parse())
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    row = gw.row(raw.headers["x-request-id"])
    assert (row["completion_tokens"], row["usage_source"], row["stream"]) == (8, "upstream", 1)
    assert row["requested_model"] == "gpt-4.1" and row["ttft_ms"] > 0


def test_chat_stream_with_usage(gw: GatewayServer, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-llama",
        messages=MSG,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens == 6
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=6, temperature=0)
    assert text == plain.choices[0].message.content
    row = gw.row(raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (last.usage.prompt_tokens, 6)


def test_completions(gw: GatewayServer, client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(
        model="tiny-llama", prompt="def main(", max_tokens=5, temperature=0
    )
    assert raw.parse().usage.completion_tokens == 5  # type: ignore[union-attr]
    chunks = list(
        client.completions.create(model="tiny-llama", prompt="def main(", max_tokens=5, stream=True)
    )
    assert chunks and all(c.usage is None for c in chunks)
    assert gw.row(raw.headers["x-request-id"])["completion_tokens"] == 5


def test_responses_api(gw: GatewayServer, client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="tiny-llama", input="Say hi", max_output_tokens=6, temperature=0
    )
    r = raw.parse()
    assert r.usage is not None and r.usage.output_tokens == 6
    row = gw.row(raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (r.usage.input_tokens, 6)
    events = list(
        client.responses.create(model="tiny-llama", input="Say hi", max_output_tokens=6, stream=True)
    )
    done = [e for e in events if e.type == "response.completed"]
    assert done and done[0].response.usage is not None
    rows = gw.wait_rows(1, "WHERE endpoint = '/v1/responses' AND stream = 1")
    assert rows[-1]["completion_tokens"] == done[0].response.usage.output_tokens


def test_embeddings(gw: GatewayServer, client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="tiny-embed", input=["hello world", "def f(): pass"]
    )
    e = raw.parse()
    assert len(e.data) == 2 and len(e.data[0].embedding) > 0
    row = gw.row(raw.headers["x-request-id"])
    assert row["prompt_tokens"] == e.usage.prompt_tokens and row["backend"] == "backend-1"


def test_error_classes(gw: GatewayServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-5", messages=MSG)
    with pytest.raises(openai.BadRequestError) as exc:  # vLLM's own 400 passes through unchanged
        client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=100_000)
    assert exc.value.status_code == 400
    rows = gw.wait_rows(1, "WHERE status = 400")
    assert rows[-1]["outcome"] == "upstream_error" and rows[-1]["completion_tokens"] is None


def test_other_vllm_routes_are_forwarded(gw: GatewayServer) -> None:
    r = httpx.post(gw.url + "/tokenize", json={"model": "tiny-llama", "prompt": "hello world"})
    assert r.status_code == 200 and r.json()["count"] > 0
    tokens = r.json()["tokens"]
    r = httpx.post(gw.url + "/detokenize", json={"model": "tiny-llama", "tokens": tokens})
    assert r.status_code == 200 and r.json()["prompt"] == "hello world"
    r = httpx.post(gw.url + "/tokenize", json={"model": "tiny-embed", "prompt": "hello"})
    assert r.status_code == 200  # routed by the body's model, to the embeddings server


def _metric(vllm: VllmServer, name: str) -> float:
    text = httpx.get(vllm.url + "/metrics").text
    return sum(
        float(m.group(1))
        for m in re.finditer(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.MULTILINE)
    )


def test_client_disconnect_aborts_vllm(gw: GatewayServer, vllm_chat: VllmServer) -> None:
    """Hang up mid-stream: nometer must drop the upstream request so vLLM stops generating.
    (vLLM 0.32 does not count client aborts in request_success_total{finished_reason="abort"};
    the generated-token counter stopping far short of max_tokens is the evidence.)"""
    before = _metric(vllm_chat, "vllm:generation_tokens_total")
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        timeout=60,
        headers={"x-request-id": "gone-1"},
        json={"model": "tiny-llama", "messages": MSG, "max_tokens": 2000, "stream": True},
    ) as r:
        for n, _ in enumerate(r.iter_raw(), 1):
            if n == 3:
                break
    deadline = time.monotonic() + 30
    while _metric(vllm_chat, "vllm:num_requests_running") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    generated = _metric(vllm_chat, "vllm:generation_tokens_total") - before
    time.sleep(1.0)
    assert _metric(vllm_chat, "vllm:generation_tokens_total") - before == generated  # it stopped
    assert generated < 2000
    row = gw.row("gone-1")
    assert row["outcome"] == "client_gone" and row["usage_source"] == "estimated"
    assert 0 < row["completion_tokens"] < 2000 and row["prompt_tokens"] > 0


def test_usage_cli_json(gw: GatewayServer, tmp_path: Path) -> None:
    import subprocess
    import sys

    import orjson

    gw.wait_rows(3)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "usage",
            "--db",
            str(gw.db_path),
            "--format",
            "json",
            "--limit",
            "1000",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert {r["request_id"] for r in lines} == {r["request_id"] for r in gw.rows()}
    assert all({"request_id", "prompt_tokens", "completion_tokens"} <= set(r) for r in lines)
    table = subprocess.run(
        [sys.executable, "-m", "gateway", "usage", "--db", str(gw.db_path)],
        capture_output=True,
        check=True,
        timeout=60,
        text=True,
    ).stdout
    assert "requests in the ledger" in table


def test_prefix_cache_is_metered_and_report_matches_ledger(gw: GatewayServer, client: openai.OpenAI) -> None:
    """vLLM reports cached prompt tokens (--enable-prompt-tokens-details); in conservative mode the
    cloud reference is assumed to have cached the same share. Then the report, computed by SQL,
    must equal a plain-Python sum over the ledger, and every receipt must verify."""
    from decimal import Decimal

    from tests.integration.test_meter import independent_totals, nometer

    long: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "def add(a, b): return a + b\n" * 120}
    ]
    client.chat.completions.create(model="tiny-llama", messages=long, max_tokens=2)
    raw = client.chat.completions.with_raw_response.create(model="tiny-llama", messages=long, max_tokens=2)
    usage = raw.parse().usage
    assert usage and usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens
    rid = raw.headers["x-request-id"]
    assert gw.row(rid)["cached_tokens"] == usage.prompt_tokens_details.cached_tokens
    receipt = httpx.get(f"{gw.url}/v1/nometer/receipts/{rid}").json()
    gpt = receipt["references"][0]
    assert gpt["model"] == "gpt-4.1" and 0 < gpt["tokens"]["cached"] <= gpt["tokens"]["input"]
    assert {t["kind"]: t["rate_field"] for t in gpt["terms"]}["cache_read"] == "cache_read_input_token_cost"

    rep = httpx.get(gw.url + "/v1/nometer/report", params={"by": "model"}).json()
    want = independent_totals(gw.db_path)
    for ref in rep["references"]:
        assert Decimal(rep["totals"]["cloud_cost_usd"][ref]) == want[ref]["cloud"]
        assert Decimal(rep["totals"]["savings_usd"][ref]) == want[ref]["savings"]
    assert {g["key"] for g in rep["groups"]} >= {"tiny-llama", "tiny-embed"}
    assert rep["totals"]["requests"] == len(gw.rows())
    out = nometer("verify", "--db", str(gw.db_path))
    assert out.returncode == 0 and out.stdout.startswith("CLEAN: "), out.stdout
