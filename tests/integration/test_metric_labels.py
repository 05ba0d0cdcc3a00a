"""/metrics on a live gateway stays the same size after a flood of refused requests with random
model names: labels are only ever served or configured names (the rest is ``other``)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings

MSG = [{"role": "user", "content": "hi"}]


def scrape_after(g: GatewayServer, written: int, within_s: float = 60) -> str:
    """/metrics once the recorder has fed it ``written`` events (it does so after each write)."""
    deadline = time.monotonic() + within_s
    while True:
        text = httpx.get(g.url + "/metrics").text
        if f"nometer_ledger_written_events_total {float(written)}" in text:
            return text
        assert time.monotonic() < deadline, "the metrics never counted every request"
        time.sleep(0.1)


def test_random_model_names_do_not_grow_metrics(tmp_path: Path) -> None:
    with FakeUpstream() as fake:
        s = gateway_settings(
            tmp_path, [fake.base_url], policy={"models": ["fake-model"]}, aliases={"gpt-4.1": "fake-model"}
        )
        with GatewayServer(s) as g, httpx.Client(base_url=g.base_url, timeout=30) as c:
            for model in ("fake-model", "gpt-4.1", "not-allowed"):
                c.post("/chat/completions", json={"model": model, "messages": MSG})
            before = scrape_after(g, 3)
            names = [f"rnd-{uuid.uuid4().hex}" for _ in range(1000)]
            for name in names:
                r = c.post(
                    "/chat/completions",
                    json={"model": name, "messages": MSG},
                    headers={"x-nometer-tag": name},
                )
                assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
            after = scrape_after(g, 1003)
        assert not any(n in after for n in names)
        assert (
            'model="other"' in after
            and 'model="fake-model"' in after
            and 'gen_ai_request_model="gpt-4.1"' in after
        )

        def series(text: str) -> set[str]:
            return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}

        assert series(after) == series(before), sorted(
            series(after) ^ series(before)
        )  # counts grew, not series
