"""The savings dashboard before any traffic, with a reference the price table lacks, and with a
row written outside the hash chain: a real headless Chromium against a real gateway."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.ledger.events import CHAIN_COLUMNS
from tests.support.dashboard import World, chromium, money_at, open_dashboard, text, wait_ready
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.mark.chromium
def test_empty_ledger_and_unpriced_reference(tmp_path: Path, browser: Any) -> None:
    """Before any traffic the page says so; a reference the price table lacks reads "unpriced", never $0."""
    with FakeUpstream() as fake:
        with GatewayServer(
            gateway_settings(tmp_path, [fake.base_url], meter={"references": ["gpt-4.1", "acme-private-llm"]})
        ) as g:
            w = World(g, fake, {}, 0, 0)
            page, errors, _ = open_dashboard(browser, w)
            try:
                wait_ready(page)
                assert text(page, "[data-testid=kpi-savings]") == "\u2013"
                assert text(page, "[data-testid=kpi-requests]") == "0"
                assert "No requests" in text(page, "[data-testid=table-team]")
                assert page.get_attribute("[data-testid=chart-savings] svg", "data-points") == "31"
                httpx.post(
                    g.base_url + "/chat/completions",
                    headers={"x-nometer-tag": "t1"},
                    json={"model": "fake-model", "messages": [{"role": "user", "content": "hello there"}]},
                )
                g.wait_rows(1)
                page.reload()
                wait_ready(page)
                page.select_option("[data-testid=reference-select]", "acme-private-llm")
                page.wait_for_selector("[data-testid=kpi-savings] .unpriced")
                rep = httpx.get(g.url + "/v1/nometer/report", params={"by": "tag", "since": "30d"}).json()
                assert rep["totals"]["savings_usd"]["acme-private-llm"] is None
                for sel in (
                    "[data-testid=kpi-savings]",
                    "[data-testid=kpi-cloud]",
                    '[data-testid=table-tag] tr[data-key="t1"] [data-col=savings] .money',
                    '[data-testid=reference-row][data-ref="acme-private-llm"] .rcost .money',
                ):
                    assert money_at(page, sel) == ("", "unpriced"), sel
                assert "ref=acme-private-llm" in page.url
                assert page.get_attribute("[data-testid=proof-state]", "data-state") == "unverified"
                # a row written outside the hash chain is flagged, never summed silently
                with sqlite3.connect(g.db_path) as c:
                    c.row_factory = sqlite3.Row
                    e = dict(c.execute("SELECT * FROM usage_events").fetchone())
                    row = {k: v for k, v in e.items() if k not in ("id", *CHAIN_COLUMNS)}
                    row |= {"uid": "forged", "request_id": "forged-1"}
                    c.execute(
                        f"INSERT INTO usage_events ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                        list(row.values()),
                    )
                page.reload()
                wait_ready(page)
                warn = page.locator("[data-testid=proof-unchained]")
                assert warn.is_visible() and warn.get_attribute("data-requests") == "1"
                assert "1 requests outside the hash chain" in warn.inner_text()
                assert text(page, "[data-testid=kpi-requests]") == "2"  # summed, but flagged
                assert errors == []
            finally:
                page.context.close()
