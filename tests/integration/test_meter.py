"""The shadow meter end to end on a real SQLite ledger: reports equal independent sums of the
ledger, receipts are recomputable, a price update leaves old receipts alone, and `verify` catches
tampering. The upstream is the fake (its answers are deterministic); test_vllm_meter.py repeats the
report check through a real vLLM."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.ledger.report import PICO
from pricing.tables import SHIPPED_SNAPSHOT
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.traffic import wait_until

MSG: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "name three prime numbers"},
]


def nometer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120, check=False
    )


def scrape(g: GatewayServer, events: int, timeout: float = 10) -> str:
    """/metrics once the recorder has fed it ``events`` events (metrics follow the ledger write)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(g.url + "/metrics").text
        line = next(
            (x for x in text.splitlines() if x.startswith("nometer_ledger_written_events_total ")), "x 0"
        )
        if float(line.rsplit(" ", 1)[1]) >= events or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def independent_totals(db: Path) -> dict[str, dict[str, Decimal]]:
    """Sum the ledger with plain Python, not the report's SQL."""
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        events = {r["uid"]: dict(r) for r in c.execute("SELECT * FROM usage_events")}
        out: dict[str, dict[str, Decimal]] = {}
        for s in c.execute("SELECT * FROM shadow_costs"):
            acc = out.setdefault(
                s["ref_model"], {"cloud": Decimal(0), "savings": Decimal(0), "input": Decimal(0)}
            )
            acc["cloud"] += Decimal(s["cloud_pusd"]) / PICO
            acc["savings"] += Decimal(s["savings_pusd"]) / PICO
            acc["input"] += s["input_tokens"]
        local = (
            sum(
                Decimal(e["local_energy_pusd"] + e["local_hardware_pusd"])
                for e in events.values()
                if e["local_energy_pusd"] is not None
            )
            / PICO
        )
        out["_local"] = {"total": local}
        return out


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


def start(tmp_path: Path, fake: FakeUpstream, **over: Any) -> GatewayServer:
    return GatewayServer(
        gateway_settings(tmp_path, [fake.base_url], aliases={"gpt-4o": "fake-model"}, **over)
    ).start()


def test_report_equals_independent_sums_and_groups(tmp_path: Path, fake: FakeUpstream) -> None:
    with start(tmp_path, fake) as g:
        c = openai.OpenAI(base_url=g.base_url, api_key="x", max_retries=0)
        for tag in ("a", "a", "b"):
            c.chat.completions.create(model="fake-model", messages=MSG, extra_headers={"x-nometer-tag": tag})
        list(
            c.chat.completions.create(
                model="gpt-4o", messages=MSG, stream=True, extra_headers={"x-nometer-tag": "b"}
            )
        )
        g.wait_rows(4)
        rep = httpx.get(g.url + "/v1/nometer/report", params={"by": "tag"}).json()
    want = independent_totals(g.db_path)
    # the aliased request asked for a cloud name: that name becomes a reference too
    assert rep["references"] == ["gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-pro", "gpt-4o"]
    for ref in ("gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-pro", "gpt-4o"):
        assert Decimal(rep["totals"]["cloud_cost_usd"][ref]) == want[ref]["cloud"] > 0
        assert Decimal(rep["totals"]["savings_usd"][ref]) == want[ref]["savings"]
        assert rep["totals"]["cloud_tokens"][ref]["input"] == want[ref]["input"]
    assert Decimal(rep["totals"]["local_cost_usd"]["total"]) == want["_local"]["total"] > 0
    assert [grp["key"] for grp in rep["groups"]] == ["a", "b"]
    assert [grp["requests"] for grp in rep["groups"]] == [2, 2]
    assert rep["totals"]["cloud_tokens"]["claude-sonnet-4-5"]["estimated"] is True
    assert rep["totals"]["cloud_tokens"]["gpt-4.1"]["estimated"] is False
    assert rep["cache_modes"] == ["conservative"] and len(rep["price_tables"]) == 1
    # the CLI prints the same figures
    out = nometer("report", "--db", str(g.db_path), "--by", "tag", "--format", "json")
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    assert cli["totals"]["cloud_cost_usd"] == rep["totals"]["cloud_cost_usd"]
    # the all-in figures run to "now", which moved between the two: the rest is identical
    assert [_marginal(x) for x in cli["groups"]] == [_marginal(x) for x in rep["groups"]]
    for grp in rep["groups"]:  # all-in = marginal's busy energy + a share of write-off and idle power
        assert Decimal(grp["all_in_cost_usd"]["busy_energy"]) == Decimal(grp["local_cost_usd"]["energy"])
        assert Decimal(grp["all_in_cost_usd"]["hardware"]) > 0
    csv_out = nometer("report", "--db", str(g.db_path), "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("group,requests") and csv_out[1].startswith("total,4,")
    table = nometer("report", "--db", str(g.db_path), "--compare", "gpt-4.1").stdout
    assert "savings vs gpt-4.1" in table and "payback" in table


def _marginal(group: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if not k.startswith("all_in")}


def test_openai_token_counts_follow_the_cookbook(tmp_path: Path, fake: FakeUpstream) -> None:
    with start(tmp_path, fake, meter={"references": ["gpt-4.1"]}) as g:
        raw = openai.OpenAI(base_url=g.base_url, api_key="x").chat.completions.with_raw_response.create(
            model="fake-model", messages=MSG
        )
        answer = raw.parse().choices[0].message.content or ""
        rid = raw.headers["x-request-id"]
        g.row(rid)
        receipt = httpx.get(f"{g.url}/v1/nometer/receipts/{rid}").json()
    from pricing.tokens import encoding

    enc = encoding("o200k_base")  # tiktoken from the shipped BPE files
    # 3 per message + role and content tokens, + 3 reply priming (OpenAI cookbook)
    want_in = sum(3 + len(enc.encode(m["role"])) + len(enc.encode(str(m["content"]))) for m in MSG) + 3
    ref = receipt["references"][0]
    assert ref["tokens"]["input"] == want_in
    assert ref["tokens"]["output"] == len(enc.encode(answer))
    assert ref["tokenizer"] == "o200k_base" and receipt["request_id"] == rid
    rates = {t["kind"]: t for t in ref["terms"]}
    assert rates["input"]["rate"] == "0.000002" and rates["output"]["rate"] == "0.000008"
    assert Decimal(ref["cloud_usd"]) == want_in * Decimal("0.000002") + ref["tokens"]["output"] * Decimal(
        "0.000008"
    )
    assert Decimal(ref["savings_usd"]) == Decimal(ref["cloud_usd"]) - Decimal(receipt["local"]["total_usd"])


def test_unpriced_reference_is_never_zero(tmp_path: Path, fake: FakeUpstream) -> None:
    with start(tmp_path, fake, meter={"references": ["gpt-4.1", "acme-private-llm"]}) as g:
        openai.OpenAI(base_url=g.base_url, api_key="x").chat.completions.create(
            model="fake-model", messages=MSG
        )
        g.wait_rows(1)
        rep = httpx.get(g.url + "/v1/nometer/report").json()
    assert rep["totals"]["cloud_cost_usd"]["acme-private-llm"] is None
    assert rep["totals"]["unpriced_requests"]["acme-private-llm"] == 1
    assert Decimal(rep["totals"]["cloud_cost_usd"]["gpt-4.1"]) > 0
    assert "unpriced" in nometer("report", "--db", str(g.db_path)).stdout


def test_price_update_keeps_old_receipts_and_verify_catches_tampering(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    c_args: dict[str, Any] = {"meter": {"references": ["gpt-4.1"]}}
    with start(tmp_path, fake, **c_args) as g:
        old = httpx.post(
            g.base_url + "/chat/completions",
            json={"model": "fake-model", "messages": MSG},
            headers={"x-request-id": "old-1"},
        )
        assert old.status_code == 200
        g.row("old-1")
        before = httpx.get(g.url + "/v1/nometer/receipts/old-1").json()
    # a newer price table doubles gpt-4.1's prices
    prices = orjson.loads(SHIPPED_SNAPSHOT.read_bytes())
    prices["gpt-4.1"]["input_cost_per_token"] = 4e-06
    prices["gpt-4.1"]["output_cost_per_token"] = 1.6e-05
    newer = tmp_path / "prices-new.json"
    newer.write_bytes(orjson.dumps(prices))
    out = nometer("prices", "update", "--from", str(newer), "--db", str(g.db_path))
    assert out.returncode == 0 and "installed price table" in out.stdout, out.stderr
    with GatewayServer(gateway_settings(tmp_path, [fake.base_url], **c_args)) as g2:
        httpx.post(
            g2.base_url + "/chat/completions",
            json={"model": "fake-model", "messages": MSG},
            headers={"x-request-id": "new-1"},
        )
        g2.row("new-1")
        after = httpx.get(g2.url + "/v1/nometer/receipts/old-1").json()
        new = httpx.get(g2.url + "/v1/nometer/receipts/new-1").json()
        assert httpx.get(g2.url + "/v1/nometer/receipts/nope").status_code == 404
    assert after == before  # the old receipt did not move
    assert new["price_table"] != before["price_table"]
    assert new["references"][0]["terms"][0]["rate"] == "0.000004"
    ok = nometer("verify", "--db", str(g.db_path))
    assert ok.returncode == 0 and "2 of 2 receipts recomputed identically" in ok.stdout, ok.stdout + ok.stderr
    with sqlite3.connect(g.db_path) as c:
        c.execute(
            "UPDATE shadow_costs SET output_tokens = output_tokens + 1 WHERE event_uid = "
            "(SELECT uid FROM usage_events WHERE request_id = 'old-1')"
        )
    bad = nometer("verify", "--db", str(g.db_path))
    assert bad.returncode == 1 and "FINDING(S): the ledger was altered" in bad.stdout, bad.stdout
    assert "CHANGED table=shadow_costs" in bad.stdout and "request=old-1" in bad.stdout
    with sqlite3.connect(g.db_path) as c:
        c.execute("UPDATE shadow_costs SET output_tokens = output_tokens - 1")  # undo
        c.execute(
            "UPDATE shadow_costs SET cloud_pusd = cloud_pusd * 2 WHERE event_uid = "
            "(SELECT uid FROM usage_events WHERE request_id = 'new-1')"
        )
    bad2 = nometer("verify", "--db", str(g.db_path))
    assert bad2.returncode == 1 and "request=new-1" in bad2.stdout and "request=old-1" not in bad2.stdout


def test_report_query_validation(tmp_path: Path, fake: FakeUpstream) -> None:
    with start(tmp_path, fake) as g:
        r = httpx.get(g.url + "/v1/nometer/report", params={"by": "colour"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "by"
        r = httpx.get(g.url + "/v1/nometer/report", params={"since": "yesterday-ish"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = httpx.get(g.url + "/v1/nometer/report", params={"since": "7d", "by": "day"})
        assert r.status_code == 200 and r.json()["groups"] == []
        assert r.json()["totals"]["local_cost_usd"]["total"] == "0"
    empty = nometer("report", "--db", str(g.db_path))  # an empty ledger prints a table, not a traceback
    assert empty.returncode == 0 and "total" in empty.stdout, empty.stderr
    assert nometer("report", "--db", str(tmp_path / "missing.db")).returncode != 0


def test_prometheus_metrics_follow_the_ledger(tmp_path: Path, fake: FakeUpstream) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with start(tmp_path, fake, meter={"references": ["gpt-4.1"]}) as g:
        c = openai.OpenAI(base_url=g.base_url, api_key="x", max_retries=0)
        c.chat.completions.create(model="fake-model", messages=MSG)
        list(c.chat.completions.create(model="fake-model", messages=MSG, stream=True))
        g.wait_rows(2)
        rep = httpx.get(g.url + "/v1/nometer/report").json()
        text = scrape(g, 2)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert (
        value(
            "nometer_requests_total",
            model="fake-model",
            team="",
            backend="backend-0",
            route="local",
            outcome="ok",
        )
        == 2
    )
    assert value(
        "nometer_cloud_equivalent_cost_usd_total", model="fake-model", team="", reference="gpt-4.1"
    ) == pytest.approx(float(rep["totals"]["cloud_cost_usd"]["gpt-4.1"]))
    assert value("nometer_savings_usd", model="fake-model", team="", reference="gpt-4.1") == pytest.approx(
        float(rep["totals"]["savings_usd"]["gpt-4.1"])
    )
    assert (
        value(
            "gen_ai_server_time_to_first_token_seconds_count",
            gen_ai_operation_name="chat",
            gen_ai_response_model="fake-model",
        )
        == 1
    )
    assert value("nometer_backend_healthy", backend="backend-0") == 1
    assert value("nometer_ledger_dropped_events") == 0


def test_meter_runs_in_its_own_process_and_survives_its_death(tmp_path: Path, fake: FakeUpstream) -> None:
    import os
    import signal as sig

    with start(tmp_path, fake, meter={"references": ["gpt-4.1"]}) as g:
        c = openai.OpenAI(base_url=g.base_url, api_key="x", max_retries=0)
        c.chat.completions.create(model="fake-model", messages=MSG)
        g.wait_rows(1)
        pool = g.runtime.recorder._pool
        assert pool is not None
        wait_until(lambda: pool.ready, 60)  # spawned in the background: up before we kill it
        pid = pool.pid  # the one spawned worker
        assert pid is not None and pid != os.getpid()
        os.kill(pid, sig.SIGKILL)
        for _ in range(3):
            c.chat.completions.create(model="fake-model", messages=MSG)
        rows = g.wait_rows(4)
    assert len(rows) == 4 and all(r["price_table_id"] for r in rows)  # metered, in a thread or a new worker
    assert pool.restarts >= 1
    assert nometer("verify", "--db", str(g.db_path)).returncode == 0


def test_negative_savings_are_metered_too(tmp_path: Path, fake: FakeUpstream) -> None:
    """An embedding can cost more on the box than at $0.02 per million tokens: savings < 0 is
    recorded as such (ledger, report, metrics), not dropped. The box is priced so that even the
    fastest answer (the fake upstream's, well under a millisecond on a quiet machine) costs more
    locally: at the default $3,999 that took over a millisecond of busy time, true only on a
    loaded machine."""
    box = {"hardware_usd": "40000000"}  # $1.27 per second of busy time over 3 years
    with start(tmp_path, fake, meter={"box": box}) as g:
        openai.OpenAI(base_url=g.base_url, api_key="x").embeddings.create(model="fake-model", input="a b c")
        g.wait_rows(1)
        rep = httpx.get(g.url + "/v1/nometer/report").json()
        text = scrape(g, 1)
    savings = Decimal(rep["totals"]["savings_usd"]["text-embedding-3-small"])
    assert savings < 0
    line = next(x for x in text.splitlines() if x.startswith("nometer_savings_usd{"))
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(float(savings))
