"""Open mode and web pages (gateway/http/guard.py), over real sockets: what a page in a browser on
the same machine can send (a cross-site ``text/plain`` POST, a DNS-rebound Host) is refused
before it reaches the upstream or the ledger; keys mode serves any Host; no CORS header reaches a
browser unless an origin is configured, even when the upstream (vLLM's default) sends ``*``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.teams import ADMIN_ENV, create_key, use_env

CHAT = orjson.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def gw(tmp_path: Path, fake: FakeUpstream) -> Iterator[GatewayServer]:
    with GatewayServer(gateway_settings(tmp_path, [fake.base_url])) as g:
        yield g


def test_a_cross_site_text_plain_post_is_not_served(gw: GatewayServer, fake: FakeUpstream) -> None:
    # what <form enctype=text/plain> or fetch(..., {mode: "no-cors"}) sends: no preflight needed
    r = httpx.post(
        gw.base_url + "/chat/completions",
        content=CHAT,
        headers={
            "content-type": "text/plain;charset=UTF-8",
            "origin": "http://evil.example",
            "sec-fetch-site": "cross-site",
        },
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    r = httpx.post(gw.base_url + "/chat/completions", content=CHAT, headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    assert fake.requests_to("/v1/chat/completions") == []
    assert gw.wait_rows(1, timeout=0.5) == []  # refused before the proxy: nobody's row


def test_a_dns_rebound_page_cannot_read_the_report(gw: GatewayServer) -> None:
    for path in ("/v1/nometer/report?since=30d", "/v1/nometer/usage", "/v1/models", "/dashboard"):
        r = httpx.get(gw.url + path, headers={"host": "attacker.example:7878"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed", path
    assert httpx.get(gw.url + "/v1/nometer/report?since=30d").status_code == 200  # Host: 127.0.0.1


def test_the_dashboard_page_itself_still_works(gw: GatewayServer) -> None:
    own = {"origin": gw.url, "sec-fetch-site": "same-origin"}
    assert httpx.get(gw.url + "/v1/nometer/report", headers=own).status_code == 200
    r = httpx.post(
        gw.base_url + "/chat/completions", content=CHAT, headers={**own, "content-type": "application/json"}
    )
    assert r.status_code == 200


def test_no_cors_header_reaches_a_browser_unless_configured(
    tmp_path: Path, gw: GatewayServer, fake: FakeUpstream
) -> None:
    fake.config.response_headers = {
        "access-control-allow-origin": "*",
        "access-control-allow-credentials": "true",
    }
    r = httpx.post(
        gw.base_url + "/chat/completions", content=CHAT, headers={"content-type": "application/json"}
    )
    assert r.status_code == 200 and not [h for h in r.headers if h.startswith("access-control-")]
    pre = httpx.options(
        gw.base_url + "/chat/completions",
        headers={"origin": gw.url, "access-control-request-method": "POST"},
    )
    assert pre.status_code >= 400 and "access-control-allow-origin" not in pre.headers  # no preflight

    s = gateway_settings(tmp_path / "cors", [fake.base_url], server={"cors_origins": ["https://app.example"]})
    (tmp_path / "cors").mkdir()
    with GatewayServer(s) as cors:
        headers = {"origin": "https://app.example", "content-type": "application/json"}
        r = httpx.post(cors.base_url + "/chat/completions", content=CHAT, headers=headers)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        pre = httpx.options(
            cors.base_url + "/chat/completions",
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "https://app.example"


def test_keys_mode_serves_a_non_loopback_host(
    tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_env(monkeypatch)
    s = gateway_settings(tmp_path, [fake.base_url], auth={"mode": "keys", "admin_key_env": ADMIN_ENV})
    with GatewayServer(s) as gw:
        key, _ = create_key(gw, "alpha")
        r = httpx.post(
            gw.base_url + "/chat/completions",
            content=CHAT,
            headers={
                "host": "gateway.corp.example",
                "authorization": f"Bearer {key}",
                "content-type": "application/json",
            },
        )
        assert r.status_code == 200, r.text
        r = httpx.get(gw.url + "/v1/nometer/report", headers={"host": "gateway.corp.example"})
        assert r.status_code == 401  # no key: refused by keys mode, not by the Host
