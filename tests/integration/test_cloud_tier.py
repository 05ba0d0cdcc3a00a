"""`X-Nometer-Cloud-Tier`: a batch or flex request is compared with the table's batch/flex rates,
stored per row, shown on its receipt and recomputed by `verify`; a bad value is a 400 in the
caller's envelope and leaves no usage record. The upstream is the fake (deterministic answers)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.ledger.report import PICO
from pricing.tables import shipped_table
from tests.integration.test_meter import nometer
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "name three prime numbers"}]}


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


def _costs(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [
            dict(r)
            for r in c.execute(
                "SELECT e.request_id, e.cloud_tier, s.* FROM shadow_costs s JOIN usage_events e"
                " ON e.uid = s.event_uid WHERE s.ref_model = 'gpt-4.1' ORDER BY e.id"
            )
        ]


def test_batch_and_flex_are_priced_at_their_rates(tmp_path: Path, fake: FakeUpstream) -> None:
    s = gateway_settings(tmp_path, [fake.base_url], meter={"references": ["gpt-4.1", "o3"]})
    with GatewayServer(s) as g:
        for tier in (None, "batch", "FLEX"):
            headers = {"x-request-id": f"r-{tier}"} | ({"x-nometer-cloud-tier": tier} if tier else {})
            assert httpx.post(g.url + "/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
        g.wait_rows(3)
        batch_receipt = httpx.get(g.url + "/v1/nometer/receipts/r-batch").json()
    rows = _costs(g.db_path)
    assert [r["cloud_tier"] for r in rows] == ["standard", "batch", "flex"]
    standard, batch, _ = rows
    assert (batch["input_tokens"], batch["output_tokens"]) == (
        standard["input_tokens"],
        standard["output_tokens"],
    )
    price = shipped_table().lookup("gpt-4.1")
    assert price is not None
    rates = price.for_service("batch")
    assert rates is not None and rates.input is not None and rates.output is not None
    by_hand = batch["input_tokens"] * rates.input + batch["output_tokens"] * rates.output
    assert Decimal(batch["cloud_pusd"]) / PICO == by_hand < Decimal(standard["cloud_pusd"]) / PICO
    # the receipt names the tier, the suffixed fields, and says the hidden reasoning of o3 was not modelled
    assert batch_receipt["cloud_tier"] == "batch"
    gpt41, o3 = batch_receipt["references"]
    assert gpt41["priced_tier"] == "batch" and gpt41["hidden_reasoning"] is None
    assert {t["rate_field"] for t in gpt41["terms"] if t["kind"] == "input"} == {
        "input_cost_per_token_batches"
    }
    assert o3["hidden_reasoning"] == "not_modelled"
    ok = nometer("verify", "--db", str(g.db_path))
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.parametrize("value", ["priority", "", "batch,flex"])
def test_a_bad_tier_is_a_400_without_a_usage_record(tmp_path: Path, fake: FakeUpstream, value: str) -> None:
    with GatewayServer(gateway_settings(tmp_path, [fake.base_url])) as g:
        r = httpx.post(g.url + "/v1/chat/completions", json=CHAT, headers={"x-nometer-cloud-tier": value})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["param"] == "x-nometer-cloud-tier" and "standard, batch, flex" in err["message"]
        m = httpx.post(
            g.url + "/v1/messages",
            json={"model": "fake-model", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-nometer-cloud-tier": value},
        )
        assert m.status_code == 400
        assert m.json()["type"] == "error" and m.json()["error"]["type"] == "invalid_request_error"
        # a good request after them is the only row
        assert httpx.post(g.url + "/v1/chat/completions", json=CHAT).status_code == 200
        g.wait_rows(1)
        assert len(g.rows()) == 1
