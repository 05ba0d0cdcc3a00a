"""Receipts cannot be shadowed: request ids are the client's and need not be unique, so a
receipt is also reachable by the server's own id (``x-nometer-receipt-id``), a team key only
ever matches its own team's rows, and an ambiguous id lists its matches instead of picking one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.teams import ADMIN_ENV, MSG, admin, create_key, use_env


def chat(g: GatewayServer, key: str, rid: str) -> httpx.Response:
    r = httpx.post(
        g.base_url + "/chat/completions",
        json={"model": "fake-model", "messages": MSG},
        headers={"authorization": f"Bearer {key}", "x-request-id": rid},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


def test_a_reused_request_id_never_hides_another_teams_receipt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_env(monkeypatch)
    with FakeUpstream() as fake:
        s = gateway_settings(tmp_path, [fake.base_url], auth={"mode": "keys", "admin_key_env": ADMIN_ENV})
        with GatewayServer(s) as g:
            ka, _ = create_key(g, "a")
            kb, _ = create_key(g, "b")
            rb = chat(g, kb, "shared-1")  # B first ...
            ra = chat(g, ka, "shared-1")  # ... then A reuses B's id (its row is the newest)
            receipt_b, receipt_a = rb.headers["x-nometer-receipt-id"], ra.headers["x-nometer-receipt-id"]
            assert receipt_a != receipt_b and len(receipt_a) == 32
            g.wait_rows(2)
            hb = httpx.Client(base_url=g.url, headers={"authorization": f"Bearer {kb}"})
            ha = httpx.Client(base_url=g.url, headers={"authorization": f"Bearer {ka}"})
            for h, team, own, other in ((hb, "b", receipt_b, receipt_a), (ha, "a", receipt_a, receipt_b)):
                by_request = h.get("/v1/nometer/receipts/shared-1")
                assert by_request.status_code == 200, by_request.text
                assert (by_request.json()["team"], by_request.json()["receipt_id"]) == (team, own)
                by_receipt = h.get(f"/v1/nometer/receipts/{own}")
                assert by_receipt.status_code == 200 and by_receipt.json()["request_id"] == "shared-1"
                assert h.get(f"/v1/nometer/receipts/{other}").status_code == 404  # not this team's
            usage = hb.get("/v1/nometer/usage").json()["data"]
            assert [(r["request_id"], r["receipt_id"]) for r in usage] == [("shared-1", receipt_b)]

            with admin(g) as adm:  # the admin sees both: listed, not one picked
                both = adm.get("/v1/nometer/receipts/shared-1")
                assert both.status_code == 300
                listed = {(m["team"], m["receipt_id"]) for m in both.json()["data"]}
                assert listed == {("a", receipt_a), ("b", receipt_b)}
                assert all(m["url"] == f"/v1/nometer/receipts/{m['receipt_id']}" for m in both.json()["data"])
                assert adm.get(f"/v1/nometer/receipts/{receipt_b}").json()["team"] == "b"

            chat(g, ka, "shared-1")  # a team reusing its own id: its two rows are listed
            g.wait_rows(3)
            mine = ha.get("/v1/nometer/receipts/shared-1")
            assert mine.status_code == 300 and {m["team"] for m in mine.json()["data"]} == {"a"}
            assert len(mine.json()["data"]) == 2
            ha.close()
            hb.close()


def test_streams_carry_the_receipt_id(tmp_path: Path) -> None:
    with FakeUpstream() as fake, GatewayServer(gateway_settings(tmp_path, [fake.base_url])) as g:
        body = {"model": "fake-model", "messages": MSG, "stream": True}
        with httpx.stream("POST", g.base_url + "/chat/completions", json=body) as r:
            receipt_id = r.headers["x-nometer-receipt-id"]
            r.read()
        row = g.wait_rows(1)[0]
        assert row["uid"] == receipt_id
        receipt = httpx.get(f"{g.url}/v1/nometer/receipts/{receipt_id}")
        assert receipt.status_code == 200 and receipt.json()["request_id"] == row["request_id"]
