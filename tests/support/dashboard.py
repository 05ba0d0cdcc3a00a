"""Helpers of the dashboard's browser tests (tests/integration/test_dashboard*.py): a headless
Chromium, a page on /dashboard, and how the page writes the report's figures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_KEY = "sk-nometer-admin-dashboard-test"


def usd(value: str | None) -> str:
    """How the page writes a report amount (the same rule as `nometer report`)."""
    if value is None:
        return "unpriced"
    d = Decimal(value)
    if d == 0:
        return "$0.00"
    a = abs(d)
    q = Decimal("0.01") if a >= 1 else Decimal("0.0001") if a >= Decimal("0.01") else Decimal("0.000001")
    r = a.quantize(q, rounding=ROUND_HALF_UP)
    return ("-" if d < 0 else "") + (f"${r:,}" if r else "<$0.000001")


@dataclass
class World:
    gateway: GatewayServer
    fake: FakeUpstream
    team_keys: dict[str, str]
    hosted_requests: int
    requests: int  # in the ledger, copies included

    def report(self, by: str, key: str = ADMIN_KEY, since: str | None = "30d") -> dict[str, Any]:
        params = {"by": by, **({"since": since} if since else {})}
        r = httpx.get(
            self.gateway.url + "/v1/nometer/report", params=params, headers={"authorization": f"Bearer {key}"}
        )
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data


def open_dashboard(
    browser: Any, world: World, query: str = "", width: int = 1440, hold: list[Any] | None = None
) -> tuple[Any, list[str], list[str]]:
    """A fresh page on /dashboard (its own session storage), with console errors and every URL it
    asked for. With ``hold``, report requests wait there (Playwright routes) until the test lets
    them go with ``route.continue_()``."""
    ctx = browser.new_context(
        viewport={"width": width, "height": 1000},
        device_scale_factor=1,
        color_scheme="light",
        timezone_id="UTC",
        locale="en-US",
    )
    page = ctx.new_page()
    errors: list[str] = []
    urls: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: urls.append(r.url))
    if hold is not None:
        page.route("**/v1/nometer/report?*", lambda route: hold.append(route))
    page.goto(f"{world.gateway.url}/dashboard{query}")
    return page, errors, urls


def wait_ready(page: Any) -> None:
    page.wait_for_selector("body[data-state=ready]", timeout=15_000)
    page.wait_for_selector("[data-testid=backend]", timeout=15_000)


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.inner_text()).strip()


def money_at(page: Any, selector: str) -> tuple[str, str]:
    """(data-value, the figure as written) of a money element."""
    loc = page.locator(selector).first
    return loc.get_attribute("data-value"), str(loc.locator(".v").inner_text()).strip()


def expect_money(page: Any, selector: str, value: str | None) -> None:
    assert money_at(page, selector) == (value or "", usd(value)), selector


def expect_ref_money(page: Any, selector: str, amounts: dict[str, str | None], ref: str) -> None:
    """A group with no figure for ``ref`` (only hosted requests) shows a dash, not "unpriced"."""
    if ref in amounts:
        expect_money(page, selector, amounts[ref])
    else:
        assert money_at(page, selector) == ("", "\u2013"), selector


def expect_table(page: Any, dim: str, rep: dict[str, Any], ref: str) -> None:
    for g in rep["groups"]:
        if g["key"] is None and dim == "tag":
            continue
        row = f'[data-testid=table-{dim}] tr[data-key="{g["key"] or ""}"]'
        assert text(page, f"{row} [data-col=requests]") == f"{g['requests']:,}"
        expect_money(page, f"{row} [data-col=local] .money", g["local_cost_usd"]["total"])
        expect_ref_money(page, f"{row} [data-col=cloud] .money", g["cloud_cost_usd"], ref)
        expect_ref_money(page, f"{row} [data-col=savings] .money", g["savings_usd"], ref)


@contextmanager
def chromium() -> Iterator[Any]:
    """The machine's Chromium (Debian's; scripts/test.sh installs it), headless, through Playwright."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
