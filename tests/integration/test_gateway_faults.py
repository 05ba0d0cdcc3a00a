"""The gateway against a FAKE upstream (a real server on 127.0.0.1), for what a real vLLM cannot
be made to do on demand: 5xx, slow first byte, reset mid-stream, hang, dropped connections.
The client is the official openai SDK (or httpx where the SDK hides the wire)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "say something nice"}]


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def gw(tmp_path: Path, fake: FakeUpstream) -> Iterator[GatewayServer]:
    s = gateway_settings(
        tmp_path,
        [fake.base_url],
        timeouts={"read_s": 1.0},
        aliases={"gpt-4.1": "fake-model"},
        server={"max_body_bytes": 4096},
    )
    g = GatewayServer(s).start()
    yield g
    g.stop()


def client(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=10)


def test_chat_roundtrip_and_ledger_row(gw: GatewayServer, fake: FakeUpstream) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(
        model="fake-model", messages=MSG, extra_headers={"x-nometer-tag": "agent-run-7"}
    )
    r = raw.parse()
    rid = raw.headers["x-request-id"]
    assert r.usage and r.usage.prompt_tokens > 0
    row = gw.row(rid)
    assert row["prompt_tokens"] == r.usage.prompt_tokens
    assert row["completion_tokens"] == r.usage.completion_tokens
    assert (row["outcome"], row["status"], row["stream"], row["usage_source"]) == ("ok", 200, 0, "upstream")
    assert (row["tag"], row["backend"], row["served_model"], row["endpoint"]) == (
        "agent-run-7",
        "backend-0",
        "fake-model",
        "/v1/chat/completions",
    )
    assert row["latency_ms"] > 0


def test_client_request_id_is_echoed_and_recorded(gw: GatewayServer) -> None:
    r = httpx.post(
        gw.base_url + "/chat/completions",
        json={"model": "fake-model", "messages": MSG},
        headers={"x-request-id": "my-id-123"},
    )
    assert r.headers["x-request-id"] == "my-id-123"
    assert gw.row("my-id-123")["status"] == 200
    assert httpx.get(gw.url + "/healthz", headers={"x-request-id": "h1"}).headers["x-request-id"] == "h1"
    assert httpx.get(gw.url + "/v1/models").headers["x-request-id"]


def test_stream_without_include_usage_strips_the_usage_chunk(gw: GatewayServer, fake: FakeUpstream) -> None:
    chunks = list(client(gw).chat.completions.create(model="fake-model", messages=MSG, stream=True))
    assert chunks and all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    sent = fake.requests_to("/v1/chat/completions")[-1].body
    assert sent["stream_options"] == {"include_usage": True}  # the gateway always asks
    rows = gw.wait_rows(1)
    assert rows[-1]["completion_tokens"] == fake.config.chunks and rows[-1]["usage_source"] == "upstream"
    assert rows[-1]["ttft_ms"] is not None and rows[-1]["stream"] == 1


def test_stream_with_include_usage_keeps_it(gw: GatewayServer) -> None:
    chunks = list(
        client(gw).chat.completions.create(
            model="fake-model", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert gw.wait_rows(1)[-1]["completion_tokens"] == chunks[-1].usage.completion_tokens


def test_alias_is_rewritten_upstream(gw: GatewayServer, fake: FakeUpstream) -> None:
    r = client(gw).chat.completions.create(model="gpt-4.1", messages=MSG)
    assert fake.requests_to("/v1/chat/completions")[-1].body["model"] == "fake-model"
    assert r.model == "fake-model"  # response_model: served (default)
    row = gw.wait_rows(1)[-1]
    assert (row["requested_model"], row["served_model"]) == ("gpt-4.1", "fake-model")
    ids = [m.id for m in client(gw).models.list().data]
    assert "gpt-4.1" in ids and "fake-model" in ids


def test_alias_response_model_requested(tmp_path: Path, fake: FakeUpstream) -> None:
    s = gateway_settings(
        tmp_path, [fake.base_url], aliases={"gpt-4.1": "fake-model"}, routing={"response_model": "requested"}
    )
    with GatewayServer(s) as g:
        c = client(g)
        assert c.chat.completions.create(model="gpt-4.1", messages=MSG).model == "gpt-4.1"
        models = {ch.model for ch in c.chat.completions.create(model="gpt-4.1", messages=MSG, stream=True)}
        assert models == {"gpt-4.1"}


def test_upstream_5xx_and_429_pass_through(gw: GatewayServer) -> None:
    with pytest.raises(openai.InternalServerError) as e500:
        client(gw).chat.completions.create(model="fault-500", messages=MSG)
    assert e500.value.status_code == 500
    with pytest.raises(openai.RateLimitError) as e429:
        client(gw).chat.completions.create(model="fault-429", messages=MSG)
    assert e429.value.response.headers.get("retry-after") == "1"
    rows = gw.wait_rows(2)
    assert [(r["outcome"], r["status"]) for r in rows] == [("upstream_error", 500), ("upstream_error", 429)]


def test_slow_first_byte_times_out_with_504(gw: GatewayServer) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client(gw).chat.completions.create(
            model="fault-slow", messages=MSG, extra_headers={"x-fake-delay-ms": "3000"}
        )
    assert exc.value.status_code == 504
    assert exc.value.body["code"] == "upstream_timeout"  # type: ignore[index]
    assert gw.wait_rows(1)[-1]["outcome"] == "timeout"


def test_hang_times_out_with_504(gw: GatewayServer) -> None:
    r = httpx.post(
        gw.base_url + "/chat/completions", json={"model": "fault-hang", "messages": MSG}, timeout=10
    )
    assert r.status_code == 504 and r.json()["error"]["type"] == "upstream_error"


def test_reset_mid_stream_is_reported_in_band(gw: GatewayServer) -> None:
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        timeout=10,
        json={"model": "fault-reset", "messages": MSG, "stream": True},
    ) as r:
        assert r.status_code == 200
        body = r.read()
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    err = orjson.loads(events[-2][len(b"data: ") :])
    assert err["error"]["code"] == "upstream_stream_broken"
    with pytest.raises(openai.APIError):
        list(client(gw).chat.completions.create(model="fault-reset", messages=MSG, stream=True))
    row = gw.wait_rows(2)[0]
    assert row["outcome"] == "upstream_error" and row["usage_source"] == "estimated"
    assert row["completion_tokens"] == 3


def test_client_disconnect_mid_stream_closes_upstream(gw: GatewayServer, fake: FakeUpstream) -> None:
    fake.config.chunks, fake.config.chunk_delay_s = 200, 0.02
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        timeout=10,
        json={"model": "fake-model", "messages": MSG, "stream": True},
    ) as r:
        for _ in r.iter_raw():
            break  # read one chunk, then hang up
    fake.wait_for_disconnects(1, timeout=5)
    row = gw.wait_rows(1)[-1]
    assert row["outcome"] == "client_gone" and row["usage_source"] == "estimated"
    assert row["completion_tokens"] < 200


def test_connection_drop_with_one_backend_is_502(gw: GatewayServer) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client(gw).chat.completions.create(model="fault-drop", messages=MSG)
    assert exc.value.status_code == 502
    assert gw.wait_rows(1)[-1]["outcome"] == "unreachable"


def test_connection_failure_retried_on_another_backend(tmp_path: Path) -> None:
    with FakeUpstream() as a, FakeUpstream() as b:
        s = gateway_settings(tmp_path, [a.base_url, b.base_url], routing={"health_interval_s": 60})
        with GatewayServer(s) as g:
            a.stop()  # still believed healthy: the next requests find out on connect
            for _ in range(3):
                assert client(g).chat.completions.create(model="fake-model", messages=MSG).choices
            rows = g.wait_rows(3)
            assert {r["backend"] for r in rows} == {"backend-1"} and all(r["outcome"] == "ok" for r in rows)
            assert not g.runtime.router.backends[0].healthy


def test_gateway_errors_are_openai_shaped(gw: GatewayServer) -> None:
    c = client(gw)
    with pytest.raises(openai.NotFoundError) as nf:
        c.chat.completions.create(model="no-such-model", messages=MSG)
    assert nf.value.body["code"] == "model_not_found" and "fake-model" in nf.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        c.chat.completions.create(messages=MSG, model=None)  # type: ignore[call-overload]
    assert bad.value.body["code"] == "missing_model"  # type: ignore[index]
    r = httpx.post(
        gw.base_url + "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(
        gw.base_url + "/chat/completions", content=b"[1,2]", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    with pytest.raises(openai.APIStatusError) as big:
        c.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x" * 5000}])
    assert big.value.status_code == 413 and big.value.body["code"] == "request_too_large"  # type: ignore[index]
    r = httpx.get(gw.url + "/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.delete(gw.base_url + "/models")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    assert gw.rows() == []  # refused before routing: no usage event


def test_no_healthy_backend_is_503_and_readyz_says_why(gw: GatewayServer, fake: FakeUpstream) -> None:
    assert httpx.get(gw.url + "/readyz").status_code == 200
    fake.stop()
    deadline = time.monotonic() + 5
    while httpx.get(gw.url + "/readyz").status_code != 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    r = httpx.get(gw.url + "/readyz")
    assert r.status_code == 503 and r.json()["reason"] == "no healthy backend"
    with pytest.raises(openai.InternalServerError) as exc:
        client(gw).chat.completions.create(model="fake-model", messages=MSG)
    assert exc.value.status_code == 503 and exc.value.response.headers["retry-after"]
    assert gw.wait_rows(1)[-1]["outcome"] == "unreachable"


def test_graceful_stop_flushes_every_event(tmp_path: Path, fake: FakeUpstream) -> None:
    s = gateway_settings(tmp_path, [fake.base_url], ledger={"flush_interval_ms": 100})
    g = GatewayServer(s).start()
    c = client(g)
    for _ in range(25):
        c.chat.completions.create(model="fake-model", messages=MSG)
    g.stop()  # before the last window was written
    assert len(g.rows()) == 25


def test_embeddings_and_completions(gw: GatewayServer) -> None:
    c = client(gw)
    e = c.embeddings.create(model="fake-model", input=["a b c", "d"])
    assert len(e.data) == 2 and e.usage.prompt_tokens > 0
    t = c.completions.create(model="fake-model", prompt="once upon", max_tokens=4)
    assert t.usage and t.usage.completion_tokens == 4
    rows = gw.wait_rows(2)
    assert [r["endpoint"] for r in rows] == ["/v1/embeddings", "/v1/completions"]
    assert rows[0]["prompt_tokens"] == e.usage.prompt_tokens and rows[1]["completion_tokens"] == 4


def test_a_client_closing_right_after_done_is_not_client_gone(gw: GatewayServer, fake: FakeUpstream) -> None:
    """The upstream keeps the connection open a while after [DONE]; the client has all it wants and
    leaves. That request finished: outcome ok, with the upstream's usage, never a failed request."""
    body = {"model": "fake-model", "messages": MSG, "stream": True, "max_tokens": 3}
    with (
        httpx.Client(timeout=10) as c,
        c.stream(
            "POST", gw.base_url + "/chat/completions", json=body, headers={"x-fake-tail-delay-ms": "700"}
        ) as r,
    ):
        rid = r.headers["x-request-id"]
        seen = b""
        for chunk in r.iter_raw():
            seen += chunk
            if b"data: [DONE]" in seen:
                break
    row = gw.row(rid)
    assert (row["outcome"], row["error"], row["completion_tokens"], row["usage_source"]) == (
        "ok",
        None,
        3,
        "upstream",
    )
    fake.wait_for_disconnects()  # and the upstream connection was still closed, not left hanging
