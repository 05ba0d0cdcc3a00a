"""The savings dashboard in a real headless Chromium, and the Grafana dashboard against a real scrape.

One gateway (keys mode, three teams, tagged traffic, a hosted fallback) serves every test here. Its
ledger rows are then spread over the last 30 days (``ts``/``day`` rewritten) so the chart has a
month to draw; every figure the page shows is compared with the JSON report of that same ledger.

``NOMETER_SCREENSHOT=docs/dashboard.png`` makes the browser test write the README screenshot there
(otherwise it goes to the test's tmp dir).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.ledger.chain import Sealer
from gateway.ledger.events import CHAIN_COLUMNS, EVENT_COLUMNS, SHADOW_COLUMNS
from gateway.ledger.keystore import KeyStore
from gateway.ledger.reader import open_reader
from gateway.meter.audit import Auditor, record
from gateway.meter.rows import LedgerBatch
from tests.support.dashboard import (
    ADMIN_KEY,
    World,
    chromium,
    expect_money,
    expect_table,
    open_dashboard,
    text,
    wait_ready,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana" / "nometer-dashboard.json"
ADMIN_ENV = "NOMETER_TEST_DASHBOARD_ADMIN_KEY"
HOSTED_ENV = "NOMETER_TEST_DASHBOARD_HOSTED_KEY"
DEMO_PER_WEEKDAY = 2000  # ledger copies per weekday (see replay): a month of a busy small team
WORDS = [
    "the",
    "gateway",
    "relays",
    "every",
    "token",
    "as",
    "it",
    "arrives",
    "while",
    "the",
    "meter",
    "counts",
    "what",
    "a",
    "cloud",
    "model",
    "would",
    "have",
    "billed",
    "for",
    "the",
    "same",
    "request",
    "and",
    "the",
    "box",
    "keeps",
    "the",
    "difference",
]

# (team, tag, prompt words, completion tokens, stream): a small org's month, in request order
TRAFFIC: list[tuple[str, str | None, int, int, bool]] = [
    (team, tag, words, out, i % 3 == 0)
    for i, (team, tag, words, out) in enumerate(
        [
            ("research", "agent-run-1842", 2600, 420),
            ("platform", "nightly-summaries", 1400, 160),
            ("research", "eval-mmlu-v3", 900, 12),
            ("support-bot", None, 350, 90),
            ("research", "agent-run-1842", 3100, 380),
            ("platform", "codegen-sweep", 1800, 640),
            ("support-bot", "ticket-triage", 500, 60),
            ("research", "exp-rag-chunking", 2200, 300),
            ("platform", "nightly-summaries", 1500, 150),
            ("research", "eval-mmlu-v3", 950, 10),
            ("support-bot", "ticket-triage", 420, 70),
            ("research", "agent-run-1907", 2800, 510),
            ("platform", "codegen-sweep", 2100, 700),
            ("research", "exp-rag-chunking", 2500, 280),
            ("support-bot", None, 300, 80),
            ("research", "agent-run-1907", 3300, 560),
            ("platform", "nightly-summaries", 1600, 170),
            ("research", "eval-mmlu-v3", 1000, 14),
            ("support-bot", "ticket-triage", 480, 75),
            ("research", "agent-run-1955", 3600, 600),
            ("platform", "codegen-sweep", 2300, 760),
            ("research", "exp-rag-chunking", 2700, 320),
            ("support-bot", "ticket-triage", 520, 66),
            ("research", "agent-run-1955", 3900, 640),
        ]
    )
]


def prompt(n: int, seed: int) -> str:
    return " ".join(WORDS[(seed + i * 7) % len(WORDS)] for i in range(n))


def replay(db: Path, per_weekday: int) -> int:
    """Fill the last 30 days with copies of the ledger's real rows, so the chart has a month to draw.

    Each copy is a whole metered row (its event and its shadow costs, every amount unchanged) with a
    new id, uid and time, sealed into a hash chain of its own (as a second gateway would write it):
    ``per_weekday`` copies on a weekday at the end of the month, fewer earlier and at weekends.
    Deterministic but for the time of day the test runs. Returns the rows added."""
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        events = [dict(r) for r in c.execute("SELECT * FROM usage_events ORDER BY id")]
        shadows: dict[str, list[dict[str, Any]]] = {}
        for s in c.execute("SELECT * FROM shadow_costs ORDER BY id"):
            shadows.setdefault(s["event_uid"], []).append(dict(s))
        now = dt.datetime.now(dt.UTC)
        batch = LedgerBatch()
        for back in range(30):
            weekend = (now - dt.timedelta(days=back)).weekday() >= 5
            n = round(
                per_weekday
                * (0.35 if weekend else 1.0)
                * (0.45 + 0.55 * (29 - back) / 29)
                * (0.3 if back == 0 else 1)
            )
            for k in range(n):
                e = dict(events[(k * 7 + back) % len(events)])
                if e["route"] == "hosted" and k % 5:  # fallback stays the exception
                    e = dict(events[k % len(TRAFFIC)])
                e["ts"] = e["ts"] - back * 86400 - (k * 7919 % 21600)
                e["day"] = dt.datetime.fromtimestamp(e["ts"], dt.UTC).date().isoformat()
                uid = f"{e['uid']}-{back}-{k}"
                for sh in shadows.get(e["uid"], []):
                    batch.shadows.append(
                        tuple(uid if col == "event_uid" else sh[col] for col in SHADOW_COLUMNS)
                    )
                e["uid"], e["request_id"] = uid, f"{e['request_id']}-{back}-{k}"
                batch.events.append(tuple(e[col] for col in EVENT_COLUMNS))
        Sealer().seal(batch)
        for table, cols, rows in (
            ("usage_events", EVENT_COLUMNS, batch.events),
            ("shadow_costs", SHADOW_COLUMNS, batch.shadows),
        ):
            names = (*cols, *CHAIN_COLUMNS)
            c.executemany(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", rows
            )
        return len(batch.events)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp, FakeUpstream() as fake:
        mp.setenv(ADMIN_ENV, ADMIN_KEY)
        mp.setenv(HOSTED_ENV, "sk-fake-hosted")
        keys = {
            team: KeyStore(tmp / "ledger.db").create(team)[0]
            for team in ("research", "platform", "support-bot")
        }
        hosted = {
            "models": {
                "openai/fake-model": {
                    "api_base": fake.base_url,
                    "api_key_env": HOSTED_ENV,
                    "price_as": "gpt-4.1-mini",
                }
            }
        }
        fallback = {"fallback": {"models": ["openai/fake-model"], "triggers": ["model_missing"]}}
        settings = gateway_settings(
            tmp,
            [fake.base_url],
            auth={"mode": "keys", "admin_key_env": ADMIN_ENV},
            aliases={"gpt-4o": "fake-model"},
            hosted=hosted,
            teams={"platform": fallback},
        )
        with GatewayServer(settings) as g:
            with httpx.Client(base_url=g.base_url, timeout=30) as client:
                for i, (team, tag, words, out, stream) in enumerate(TRAFFIC):
                    headers = {
                        "authorization": f"Bearer {keys[team]}",
                        **({"x-nometer-tag": tag} if tag else {}),
                    }
                    body = {
                        "model": "gpt-4o" if i % 4 == 1 else "fake-model",
                        "max_tokens": out,
                        "stream": stream,
                        "messages": [{"role": "user", "content": prompt(words, i)}],
                    }
                    r = client.post("/chat/completions", json=body, headers=headers)
                    assert r.status_code == 200, r.text
                # a model the box does not serve: the platform team falls back to the hosted model
                hosted_n = 2
                for i in range(hosted_n):
                    r = client.post(
                        "/chat/completions",
                        headers={
                            "authorization": f"Bearer {keys['platform']}",
                            "x-nometer-tag": "codegen-sweep",
                        },
                        json={
                            "model": "gpt-4.1-mini",
                            "max_tokens": 200,
                            "messages": [{"role": "user", "content": prompt(900, i)}],
                        },
                    )
                    assert r.status_code == 200 and r.headers["x-nometer-route"] == "hosted", r.text
            rows = g.wait_rows(len(TRAFFIC) + hosted_n)
            assert len(rows) == len(TRAFFIC) + hosted_n
            added = replay(g.db_path, DEMO_PER_WEEKDAY)
            reader = open_reader(str(g.db_path))  # what `nometer verify` does, and records
            try:
                audit = Auditor(reader, tmp / "prices").run()
                assert audit.clean, [f.line() for f in audit.findings]
                record(reader, audit)
            finally:
                reader.close()
            yield World(g, fake, keys, hosted_n, len(rows) + added)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def test_dashboard_is_self_contained_and_public(world: World) -> None:
    g = world.gateway
    r = httpx.get(g.url + "/dashboard")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    assert r.headers["x-request-id"]
    bodies = [r.text]
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        a = httpx.get(f"{g.url}/dashboard/{name}")
        assert a.status_code == 200 and a.headers["content-type"].startswith(kind)
        bodies.append(a.text)
    # nothing from a CDN: the only absolute URL is the SVG namespace name
    for body in bodies:
        assert set(re.findall(r"https?://[^\s'\"`)]+", body)) <= {"http://www.w3.org/2000/svg"}
    assert httpx.get(g.url + "/dashboard/secrets.txt").status_code == 404
    slash = httpx.get(g.url + "/dashboard/?since=7d")
    assert slash.status_code == 308 and httpx.URL(g.url + "/dashboard/").join(
        slash.headers["location"]
    ) == httpx.URL(g.url + "/dashboard?since=7d")
    # keys mode: the page is public (it holds no data), the data it reads is not
    assert httpx.get(g.url + "/v1/nometer/report").status_code == 401


@pytest.mark.chromium
def test_dashboard_equals_the_json_report(world: World, browser: Any, tmp_path: Path) -> None:
    day, team, model, tag = (world.report(by) for by in ("day", "team", "model", "tag"))
    ref = day["payback"]["reference"]
    assert ref == "gpt-4.1" and day["references"][:3] == ["gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-pro"]
    page, errors, urls = open_dashboard(browser, world, f"?key={ADMIN_KEY}")
    try:
        wait_ready(page)
        t = day["totals"]
        # the headline figures
        # all-in by default (what owning the box cost over the 30 days), marginal beside it
        assert day["basis"] == "all_in"
        expect_money(page, "[data-testid=kpi-savings]", t["all_in_savings_usd"][ref])
        expect_money(page, "[data-testid=kpi-cloud]", t["cloud_cost_usd"][ref])
        expect_money(page, "[data-testid=kpi-local]", t["all_in_cost_usd"]["total"])
        expect_money(page, "[data-testid=kpi-local-energy]", t["all_in_cost_usd"]["busy_energy"])
        expect_money(page, "[data-testid=kpi-local-idle]", t["all_in_cost_usd"]["idle_energy"])
        expect_money(page, "[data-testid=kpi-local-hardware]", t["all_in_cost_usd"]["hardware"])
        expect_money(page, "[data-testid=kpi-marginal]", t["local_cost_usd"]["total"])
        assert "marginal" in text(page, "[data-testid=kpi-savings-note]")
        expect_money(page, "[data-testid=kpi-hosted]", t["hosted_spend_usd"])
        assert Decimal(t["hosted_spend_usd"]) > 0 and t["hosted_requests"] >= world.hosted_requests
        assert text(page, "[data-testid=kpi-requests]") == f"{t['requests']:,}" == f"{world.requests:,}"
        assert text(page, "[data-testid=scope]") == "all teams"
        pb = day["payback"]
        assert float(page.get_attribute("[data-testid=payback-days]", "data-value")) == pb["days_to_payback"]
        assert (
            text(page, "[data-testid=payback-days]")
            == f"{pb['days_to_payback']:,.1f}".removesuffix(".0") + " days"
        )
        assert pb["payback_date"] is not None and pb["payback_date"] in text(
            page, "[data-testid=payback-note]"
        )
        # per team / model / tag, and the top tags ordered by savings
        for dim, rep in (("team", team), ("model", model), ("tag", tag)):
            expect_table(page, dim, rep, ref)
        shown = page.locator("[data-testid=table-tag] tbody tr").evaluate_all(
            "rs => rs.map(r => r.dataset.key)"
        )
        by_savings = sorted(
            (g for g in tag["groups"] if g["key"]), key=lambda g: -Decimal(g["savings_usd"][ref])
        )
        assert shown == [g["key"] for g in by_savings][:10]
        assert {g["key"] for g in team["groups"]} == {"research", "platform", "support-bot"}
        # estimates are marked; every reference is listed with its cloud cost
        for r in day["references"]:
            row = f'[data-testid=reference-row][data-ref="{r}"]'
            expect_money(page, f"{row} .rcost .money", t["cloud_cost_usd"][r])
            est = page.get_attribute(f"{row} .rcost .money", "data-estimated")
            assert (est == "true") == t["cloud_tokens"][r]["estimated"], r
        assert t["cloud_tokens"]["claude-sonnet-4-5"]["estimated"]
        # hosted spend by cause
        for cause, v in t["hosted_spend_by_cause"].items():
            row = f'[data-testid=hosted-causes] tr[data-key="{cause}"]'
            assert text(page, f"{row} [data-col=requests]") == f"{v['requests']:,}"
            expect_money(page, f"{row} [data-col=usd] .money", v["usd"])
        assert list(t["hosted_spend_by_cause"]) == ["model_missing"]
        # the chart: one slot per day of the period, a point for each day with traffic, equal to by=day
        svg = "[data-testid=chart-savings] svg"
        days = (dt.datetime.now(dt.UTC).date() - dt.date.fromisoformat(day["period"]["from"][:10])).days + 1
        assert page.get_attribute(svg, "data-points") == str(days)
        assert page.locator(f"{svg} rect.bar").count() == days
        for series in ("cloud", "local"):
            d = page.get_attribute(f'{svg} path[data-series="{series}"]', "d")
            assert d is not None and d.count("L") == days - 1
        points = page.locator(f"{svg} circle.pt").evaluate_all(
            "cs => cs.map(c => [c.dataset.day, c.dataset.value])"
        )
        assert points == [[g["key"], g["cloud_cost_usd"].get(ref) or ""] for g in day["groups"]]
        assert len(points) >= 20
        # backend health and the price table in use
        b = page.locator("[data-testid=backend]").first
        assert b.get_attribute("data-name") == "backend-0" and b.get_attribute("data-healthy") == "true"
        assert text(page, "[data-testid=backend] [data-testid=backend-state]") == "healthy"
        assert text(page, "[data-testid=price-tables]") == ", ".join(day["price_tables"]) != "\u2013"
        # the ledger proof: the verify state and chain heads of the period, as the report says
        proof = day["integrity"]
        assert proof["verify_state"] == "verified" and len(proof["chain_heads"]) == 2  # gateway + replay
        assert page.get_attribute("[data-testid=proof-state]", "data-state") == "verified"
        assert text(page, "[data-testid=proof-state]") == "verified"
        heads = page.locator("[data-testid=chain-head]").evaluate_all(
            "rs => rs.map(r => [r.dataset.chain, Number(r.dataset.seq), r.dataset.digest])"
        )
        assert heads == [[h["chain_id"], h["head_seq"], h["head_digest"]] for h in proof["chain_heads"]]
        assert not page.locator("[data-testid=proof-unchained]").is_visible()
        # the key left the address bar; nothing was fetched from anywhere but the gateway
        assert "key=" not in page.url
        assert all(u.startswith((world.gateway.url + "/", "data:")) for u in urls), urls
        assert errors == []
        # the cumulative view draws the running savings
        page.click("[data-mode=cumulative]")
        page.wait_for_selector(f'{svg}[data-mode=cumulative] path[data-series="savings"]')
        shot = Path(os.environ.get("NOMETER_SCREENSHOT") or tmp_path / "dashboard.png")
        page.click("[data-mode=daily]")
        page.wait_for_selector(f"{svg}[data-mode=daily]")
        page.mouse.move(0, 0)
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
    finally:
        page.context.close()


@pytest.mark.chromium
def test_a_loading_state_until_the_report_arrives(world: World, browser: Any, tmp_path: Path) -> None:
    """Before the data comes: grey bars where figures go and "Loading" where charts and tables go,
    never the dashes and empty boxes that read as "no data"."""
    held: list[Any] = []
    page, errors, _ = open_dashboard(browser, world, f"?key={ADMIN_KEY}", hold=held)
    try:
        page.wait_for_function("document.readyState === 'complete'")
        page.wait_for_timeout(300)  # the page has asked, and nothing has come back
        assert len(held) == 4 and page.get_attribute("body", "data-state") == "loading"
        assert page.get_attribute("main", "aria-busy") == "true"
        figures = page.locator("[data-testid=kpis] .big, [data-testid=kpis] .note b, .facts dd")
        assert figures.count() == 16
        assert figures.evaluate_all("es => es.map(e => e.innerText.trim())") == [""] * 16  # no dash
        assert figures.evaluate_all("es => es.every(e => e.querySelector('.skeleton'))")
        for box in ("chart-savings", "references", "table-team", "table-model", "table-tag", "hosted-causes"):
            assert text(page, f"[data-testid={box}]") == "Loading the report\u2026", box
        assert page.locator("[data-testid=chart-savings] svg").count() == 0
        page.screenshot(path=str(tmp_path / "dashboard-loading.png"), full_page=True)
        for route in held:
            route.continue_()
        wait_ready(page)
        assert page.locator(".skeleton, [data-testid=loading]").count() == 0
        assert page.get_attribute("main", "aria-busy") == "false"
        assert page.locator("[data-testid=chart-savings] svg").count() == 1
        assert errors == []
    finally:
        page.context.close()


@pytest.mark.chromium
@pytest.mark.parametrize("width", [1400, 1280])
def test_the_tables_fit_a_1400px_window(world: World, browser: Any, tmp_path: Path, width: int) -> None:
    """The by-team table (and the others) show every column without a scroll bar, and the page
    itself never scrolls sideways."""
    page, errors, _ = open_dashboard(browser, world, f"?key={ADMIN_KEY}", width=width)
    try:
        wait_ready(page)
        page.screenshot(path=str(tmp_path / f"dashboard-{width}.png"), full_page=True)
        for dim in ("team", "model", "tag"):
            box = page.locator(f"[data-testid=table-{dim}] .scroll")
            over = box.evaluate("e => e.scrollWidth - e.clientWidth")
            assert over <= 0, f"by-{dim} table is {over}px wider than its card at {width}px"
            cells = page.locator(f"[data-testid=table-{dim}] tbody tr:first-child td[data-col]")
            assert cells.evaluate_all("cs => cs.every(c => c.scrollWidth <= c.clientWidth + 1)"), dim
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert errors == []
    finally:
        page.context.close()


@pytest.mark.chromium
def test_a_team_key_sees_only_its_team(world: World, browser: Any) -> None:
    key = world.team_keys["support-bot"]
    rep = world.report("team", key=key)
    assert rep["team"] == "support-bot"
    page, errors, _ = open_dashboard(browser, world, f"?key={key}&since=30d")
    try:
        wait_ready(page)
        assert text(page, "[data-testid=scope]") == "team support-bot"
        keys = page.locator("[data-testid=table-team] tbody tr").evaluate_all(
            "rs => rs.map(r => r.dataset.key)"
        )
        assert keys == ["support-bot"]
        ref = rep["payback"]["reference"]
        expect_money(page, "[data-testid=kpi-savings]", rep["totals"]["all_in_savings_usd"][ref])
        assert text(page, "[data-testid=kpi-requests]") == f"{rep['totals']['requests']:,}"
        assert errors == []
    finally:
        page.context.close()


@pytest.mark.chromium
def test_without_a_key_the_page_asks_for_one(world: World, browser: Any) -> None:
    page, _, _ = open_dashboard(browser, world)
    try:
        page.wait_for_selector("body[data-state=need-key]", timeout=15_000)
        assert page.locator("[data-testid=key-form]").is_visible()
        page.fill("[data-testid=key-form] input", "sk-nometer-wrong")
        page.click("[data-testid=key-form] button")
        page.wait_for_selector("[data-testid=message]:has-text('refused')", timeout=15_000)
        page.fill("[data-testid=key-form] input", ADMIN_KEY)
        page.click("[data-testid=key-form] button")
        wait_ready(page)
        assert not page.locator("[data-testid=key-form]").is_visible()
        assert text(page, "[data-testid=scope]") == "all teams"
    finally:
        page.context.close()


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers not followed by '(' (functions), not
    label names inside {...} or by (...), and not keywords."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("(") or m.group() in {"bool", "offset", "and", "or", "unless", "inf", "nan"}:
            continue
        if re.fullmatch(r"\d.*|e\d+", m.group()):
            continue
        names.add(m.group())
    return names


def test_grafana_dashboard_queries_real_metrics(world: World) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    board = json.loads(GRAFANA.read_text())
    scrape = httpx.get(world.gateway.url + "/metrics").text
    samples = {s.name for fam in text_string_to_metric_families(scrape) for s in fam.samples}
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 12
    used = set().union(*(promql_metric_names(e) for e in exprs))
    # every metric family the gateway exports has a panel
    families = {fam.name for fam in text_string_to_metric_families(scrape)}
    # a panel's metric is exported: a sample now, or a family with none yet (the vLLM gauges of a
    # backend that is not vLLM are absent, not zero)
    exported = samples | families | {f + "_total" for f in families}
    assert used and used <= exported, sorted(used - exported)
    plain = {n.removesuffix("_total") for n in used} | {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert families - plain <= {"nometer_ledger_written_events"}, sorted(families - plain)
    # the variables are real labels
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            assert (
                promql_metric_names(re.sub(r"label_values\((.*),\s*\w+\)", r"\1", v["query"]["query"]))
                <= samples
            )
    assert board["uid"] == "nometer" and board["title"]
