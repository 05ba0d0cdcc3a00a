"""The same request straight to vLLM and through nometer gives the same bytes (real CPU vLLM).

Status, the headers that matter, the body and the SSE framing, apart from per-request ids, clock
fields and ``x-request-id`` (``tests.support.relay_compare``). Each case is one the gateway used
to change: the system_fingerprint lost when it forced ``include_usage``, usage injected into every
chunk with ``continuous_usage_stats`` alone, GET routes and body-less POSTs answered 404/400,
``/tokenize`` without ``model`` refused once an alias existed, and ``/v1/models`` rewritten.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.relay_compare import same
from tests.support.vllm import VllmServer

MODEL = "tiny-llama"
MSG = [{"role": "user", "content": "Say something about the sea."}]


@pytest.fixture(scope="module")
def gw(vllm_chat: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    tmp = tmp_path_factory.mktemp("relay")
    settings = gateway_settings(
        tmp, [vllm_chat.base_url], aliases={"gpt-4.1": MODEL}, timeouts={"connect_s": 2, "read_s": 120}
    )
    with GatewayServer(settings) as g:
        yield g


def _chat(**extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": MSG, "max_tokens": 5, "temperature": 0, **extra}


@pytest.mark.parametrize(
    "stream_options",
    [
        None,
        {"include_usage": True},
        {"continuous_usage_stats": True},
        {"include_usage": True, "continuous_usage_stats": True},
    ],
    ids=["no-usage", "include_usage", "continuous-only", "both"],
)
def test_chat_stream_is_byte_identical(
    gw: GatewayServer, vllm_chat: VllmServer, stream_options: object
) -> None:
    body = _chat(stream=True) if stream_options is None else _chat(stream=True, stream_options=stream_options)
    through = same(vllm_chat.url, gw.url, "POST", "/v1/chat/completions", json=body)
    assert through.headers["content-type"].startswith("text/event-stream")
    assert b"data: [DONE]" in through.body
    wants_usage = isinstance(stream_options, dict) and stream_options.get("include_usage")
    assert (b'"usage":{' in through.body) == bool(wants_usage)
    if not wants_usage:  # the fingerprint vLLM puts on the terminal chunk when nobody asked for usage
        assert (
            b'"finish_reason":"length","stop_reason":null,"token_ids":null}],"system_fingerprint":"'
            in through.body
        )
    row = gw.wait_rows(1, "WHERE stream = 1")[-1]
    assert row["prompt_tokens"] and row["completion_tokens"] == 5 and row["usage_source"] == "upstream"


def test_completions_stream_and_json_answers_are_byte_identical(
    gw: GatewayServer, vllm_chat: VllmServer
) -> None:
    prompt = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}
    same(vllm_chat.url, gw.url, "POST", "/v1/completions", json={**prompt, "stream": True})
    same(vllm_chat.url, gw.url, "POST", "/v1/completions", json=prompt)
    same(vllm_chat.url, gw.url, "POST", "/v1/chat/completions", json=_chat())


@pytest.mark.parametrize("path", ["/version", "/ping", "/load", "/health"])
def test_get_routes_are_forwarded(gw: GatewayServer, vllm_chat: VllmServer, path: str) -> None:
    answer = same(vllm_chat.url, gw.url, "GET", path, warm=False)
    assert answer.status == 200
    time.sleep(0.3)  # the recorder flushes every 20 ms here
    assert gw.rows("WHERE endpoint = ?", (path,)) == []  # probes: relayed, not usage


def test_tokenize_without_model_while_an_alias_exists(gw: GatewayServer, vllm_chat: VllmServer) -> None:
    answer = same(vllm_chat.url, gw.url, "POST", "/tokenize", json={"prompt": "hello world"}, warm=False)
    assert answer.status == 200 and orjson.loads(answer.body)["count"] > 0


def test_models_keep_vllms_fields(gw: GatewayServer, vllm_chat: VllmServer) -> None:
    direct = httpx.get(vllm_chat.base_url + "/models").json()["data"][0]
    entries = {m["id"]: m for m in httpx.get(gw.base_url + "/models").json()["data"]}
    served = entries[MODEL]
    for key in ("object", "owned_by", "root", "parent", "max_model_len"):
        assert served[key] == direct[key], key
    assert [p["object"] for p in served["permission"]] == [p["object"] for p in direct["permission"]]
    assert entries["gpt-4.1"]["root"] == MODEL  # the alias, documented as nometer's own entry


def test_responses_create_retrieve_and_cancel(gw: GatewayServer, vllm_chat: VllmServer) -> None:
    create = {"model": MODEL, "input": "Hello", "max_output_tokens": 4, "temperature": 0}
    same(vllm_chat.url, gw.url, "POST", "/v1/responses", json=create)
    same(vllm_chat.url, gw.url, "POST", "/v1/responses", json={**create, "stream": True})
    made = httpx.post(gw.base_url + "/responses", json=create, timeout=60).json()
    got = httpx.get(gw.base_url + f"/responses/{made['id']}")
    assert got.status_code == 200 and got.json()["id"] == made["id"]
    direct = httpx.get(vllm_chat.base_url + f"/responses/{made['id']}")
    assert got.content == direct.content
    long = {**create, "background": True, "max_output_tokens": 1500}  # likely still running when cancelled
    background = httpx.post(gw.base_url + "/responses", json=long, timeout=60).json()
    cancel = httpx.post(gw.base_url + f"/responses/{background['id']}/cancel")  # no body, as the SDK sends it
    assert (
        cancel.status_code in (200, 400) and "could not parse" not in cancel.text
    )  # vLLM's answer, not ours
    # cancelling it again (or a finished one) gives vLLM's own 400, the same both ways
    same(vllm_chat.url, gw.url, "POST", f"/v1/responses/{background['id']}/cancel", warm=False)
    missing = same(vllm_chat.url, gw.url, "GET", "/v1/responses/resp_doesnotexist", warm=False)
    assert missing.status == 404
    rows = gw.wait_rows(1, "WHERE endpoint = ?", (f"/v1/responses/{made['id']}",))
    assert rows[0]["outcome"] == "ok" and rows[0]["price_table_id"] is None  # recorded, never metered


def test_streams_that_finished_are_never_client_gone(gw: GatewayServer, tmp_path: Path) -> None:
    """Each client closes the connection the moment it has the terminal event."""
    cases = [
        ("/v1/chat/completions", _chat(stream=True), b"data: [DONE]"),
        (
            "/v1/responses",
            {"model": MODEL, "input": "hi", "max_output_tokens": 3, "stream": True},
            b"response.completed",
        ),
        ("/v1/messages", {"model": MODEL, "messages": MSG, "max_tokens": 3, "stream": True}, b"message_stop"),
    ]
    ids = []
    for path, body, terminal in cases * 4:
        with httpx.Client(timeout=60) as client, client.stream("POST", gw.url + path, json=body) as r:
            ids.append(r.headers["x-request-id"])
            seen = b""
            for chunk in r.iter_raw():
                seen += chunk
                if terminal in seen:
                    break  # and the connection closes with the client
    for rid in ids:
        assert gw.row(rid)["outcome"] == "ok"


def test_responses_reach_the_backend_that_holds_them(vllm_chat: VllmServer, tmp_path: Path) -> None:
    """Two backends for the model, only one of which can hold responses (the fake stands in for a
    second vLLM that does not have them): retrieve, cancel and previous_response_id follow the id."""
    from tests.support.fake_upstream import FakeUpstream

    with FakeUpstream() as fake:
        settings = gateway_settings(
            tmp_path, [vllm_chat.base_url, fake.base_url], timeouts={"connect_s": 2, "read_s": 120}
        )
        second = settings.backends[1].model_copy(update={"models": (MODEL,)})  # it claims the model
        settings = settings.model_copy(update={"backends": (settings.backends[0], second)})
        with GatewayServer(settings) as gw, httpx.Client(base_url=gw.base_url, timeout=60) as c:
            create = {"model": MODEL, "input": "Hello", "max_output_tokens": 3}
            made = [c.post("/responses", json=create) for _ in range(6)]
            held = [r.json()["id"] for r in made if r.status_code == 200]
            assert held and len(held) < 6  # the router spread them: the fake refused its share
            for rid in held:
                got = c.get(f"/responses/{rid}")
                assert (
                    got.status_code == 200 and gw.row(got.headers["x-request-id"])["backend"] == "backend-0"
                )
                follow = c.post("/responses", json={**create, "previous_response_id": rid})
                assert follow.status_code == 200, follow.text
                assert gw.row(follow.headers["x-request-id"])["backend"] == "backend-0"
            assert not any(r.path.startswith("/v1/responses/") for r in fake.requests)
