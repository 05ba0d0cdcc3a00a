"""``usage.nometer``: an answer that carries its own cost, equal to its receipt (real CPU vLLM).

Each shape the gateway prices (chat, completions, Responses, Messages; streamed and not) asked
with ``X-Nometer-Cost: include``: the final usage object holds the receipt id, the marginal local
cost, the first reference and its cloud cost; the receipt served later (built by the meter
process from the stored row) says exactly the same. Off by default; ``meter.response_cost`` turns
it on for every answer and ``omit`` off for one; a bad header value is the caller's 400, in its
API's envelope, and leaves no usage record.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.ledger.report import PICO
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.relay_compare import sse_events
from tests.support.vllm import VllmServer

MODEL = "tiny-llama"
INCLUDE = {"x-nometer-cost": "include"}
MSG = [{"role": "user", "content": "Tell me about rivers."}]

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": MSG, "max_tokens": 6}),
    "chat-stream": (
        "/v1/chat/completions",
        {"messages": MSG, "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}},
    ),
    "completions": ("/v1/completions", {"prompt": "Rivers are", "max_tokens": 5}),
    "completions-stream": (
        "/v1/completions",
        {"prompt": "Rivers are", "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}},
    ),
    "responses": ("/v1/responses", {"input": "Rivers?", "max_output_tokens": 5}),
    "responses-stream": ("/v1/responses", {"input": "Rivers?", "max_output_tokens": 5, "stream": True}),
    "messages": ("/v1/messages", {"messages": MSG, "max_tokens": 6}),
    "messages-stream": ("/v1/messages", {"messages": MSG, "max_tokens": 6, "stream": True}),
}


@pytest.fixture(scope="module")
def gw(vllm_chat: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    s = gateway_settings(
        tmp_path_factory.mktemp("cost"), [vllm_chat.base_url], timeouts={"connect_s": 2, "read_s": 120}
    )
    with GatewayServer(s) as g:
        yield g


def final_usage(path: str, r: httpx.Response) -> dict[str, Any] | None:
    """The answer's final usage object (gateway/http/cost.py says which one that is)."""
    if not r.headers["content-type"].startswith("text/event-stream"):
        usage = r.json().get("usage")
        return usage if isinstance(usage, dict) else None
    found = None
    for ev in sse_events(r.content):
        if not isinstance(ev, dict):
            continue
        if path == "/v1/responses" and ev.get("type") == "response.completed":
            found = ev["response"]["usage"]
        elif path == "/v1/messages" and ev.get("type") == "message_delta":
            found = ev["usage"]
        elif path not in ("/v1/responses", "/v1/messages") and ev.get("choices") == [] and ev.get("usage"):
            found = ev["usage"]
    return found


def post(g: GatewayServer, path: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    r = httpx.post(
        g.url + path, json={"model": MODEL, "temperature": 0, **body}, headers=headers, timeout=120
    )
    assert r.status_code == 200, r.text
    return r


@pytest.mark.parametrize("case", list(CASES))
def test_the_answer_carries_its_receipts_figures(gw: GatewayServer, case: str) -> None:
    path, body = CASES[case]
    r = post(gw, path, body, INCLUDE)
    usage = final_usage(path, r)
    assert usage is not None, r.text
    cost = usage["nometer"]
    assert cost["receipt_id"] == r.headers["x-nometer-receipt-id"]
    assert cost["basis"] == "marginal"
    assert cost["local_cost_usd"] is not None and cost["cloud_cost_usd"] is not None, cost
    gw.wait_rows(1, "WHERE uid = ?", (cost["receipt_id"],))
    receipt = httpx.get(gw.url + f"/v1/nometer/receipts/{cost['receipt_id']}").json()
    first = receipt["references"][0]
    assert cost["local_cost_usd"] == receipt["local"]["total_usd"]
    assert (cost["reference"], cost["cloud_cost_usd"], cost["savings_usd"]) == (
        first["model"],
        first["cloud_usd"],
        first["savings_usd"],
    )
    # ... and the amounts the ledger stored (what reports sum and `verify` recomputes)
    with sqlite3.connect(gw.db_path) as c:
        (energy, hardware), (cloud,) = (
            c.execute(
                "SELECT local_energy_pusd, local_hardware_pusd FROM usage_events WHERE uid = ?",
                (cost["receipt_id"],),
            ).fetchone(),
            c.execute(
                "SELECT cloud_pusd FROM shadow_costs WHERE event_uid = ? AND ref_index = 0",
                (cost["receipt_id"],),
            ).fetchone(),
        )
    assert Decimal(energy + hardware) / PICO == Decimal(cost["local_cost_usd"])
    assert Decimal(cloud) / PICO == Decimal(cost["cloud_cost_usd"])


def test_off_by_default_and_omit_wins(gw: GatewayServer) -> None:
    path, body = CASES["chat"]
    assert "nometer" not in (final_usage(path, post(gw, path, body, {})) or {})
    assert "nometer" not in (final_usage(path, post(gw, path, body, {"x-nometer-cost": "omit"})) or {})
    stream_path, stream_body = CASES["chat-stream"]
    plain = post(gw, stream_path, stream_body, {})
    assert b'"nometer"' not in plain.content


def test_meter_response_cost_turns_it_on_for_every_answer(vllm_chat: VllmServer, tmp_path: Path) -> None:
    s = gateway_settings(
        tmp_path,
        [vllm_chat.base_url],
        meter={"response_cost": True},
        timeouts={"connect_s": 2, "read_s": 120},
    )
    with GatewayServer(s) as g:
        path, body = CASES["responses"]
        assert "nometer" in (final_usage(path, post(g, path, body, {})) or {})
        assert "nometer" not in (final_usage(path, post(g, path, body, {"x-nometer-cost": "omit"})) or {})


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_bad_header_value_is_the_callers_400_and_no_usage(gw: GatewayServer, path: str) -> None:
    rid = f"bad-cost-{path.rsplit('/', 1)[-1]}"
    r = httpx.post(
        gw.url + path,
        json={"model": MODEL, "messages": MSG, "max_tokens": 2},
        headers={"x-nometer-cost": "yes please", "x-request-id": rid},
        timeout=30,
    )
    assert r.status_code == 400
    err = orjson.loads(r.content)
    if path == "/v1/messages":
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    else:
        assert err["error"]["param"] == "X-Nometer-Cost"
    post(gw, "/v1/chat/completions", {"messages": MSG, "max_tokens": 1}, {"x-request-id": rid + "-after"})
    gw.wait_rows(1, "WHERE request_id = ?", (rid + "-after",))
    assert gw.rows("WHERE request_id = ?", (rid,)) == []
