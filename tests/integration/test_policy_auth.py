"""Keys and teams: auth modes, the admin API and CLI, disabling and rotating keys, identity in the
ledger, and team isolation of usage, reports and receipts. Real gateway, real SQLite ledger."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.settings import load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.teams import ADMIN_ENV, ADMIN_KEY, MSG, admin, client, create_key, use_env


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def gw(tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayServer]:
    use_env(monkeypatch)
    s = gateway_settings(
        tmp_path,
        [fake.base_url],
        auth={"mode": "keys", "admin_key_env": ADMIN_ENV},
        aliases={"gpt-4.1": "fake-model"},
    )
    g = GatewayServer(s).start()
    yield g
    g.stop()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "keys", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keys_mode_needs_a_key_bearer_or_azure_header(gw: GatewayServer) -> None:
    key, key_id = create_key(gw, "alpha", "ci")
    assert key.startswith("nmk-")
    with pytest.raises(openai.AuthenticationError) as exc:
        client(gw, "not-a-key").chat.completions.create(model="fake-model", messages=MSG)
    assert exc.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    r = httpx.post(gw.base_url + "/chat/completions", json={"model": "fake-model", "messages": MSG})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    raw = client(gw, key).chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=MSG, extra_headers={"x-nometer-tag": "nightly"}
    )
    r = httpx.post(
        gw.base_url + "/chat/completions",
        headers={"api-key": key},  # Azure OpenAI clients
        json={"model": "fake-model", "messages": MSG},
    )
    assert r.status_code == 200
    assert client(gw, key).models.list().data
    assert httpx.get(gw.base_url + "/models").status_code == 401
    assert httpx.get(gw.url + "/healthz").status_code == 200  # probes need no key
    row = gw.row(raw.headers["x-request-id"])
    assert (row["key_id"], row["team"], row["tag"]) == (key_id, "alpha", "nightly")
    rows = gw.wait_rows(2)
    assert all(r["key_id"] == key_id and r["team"] == "alpha" for r in rows)
    assert len(rows) == 2  # refused without a valid key: no usage event


def test_key_is_stored_only_as_a_digest(gw: GatewayServer) -> None:
    key, key_id = create_key(gw, "alpha")
    data = gw.db_path.read_bytes() + (
        gw.db_path.with_name(gw.db_path.name + "-wal").read_bytes()
        if gw.db_path.with_name(gw.db_path.name + "-wal").exists()
        else b""
    )
    assert key.encode() not in data and key[4:].encode() not in data
    with admin(gw) as c:
        listed = c.get("/v1/nometer/admin/keys", params={"team": "alpha"}).json()["data"]
    assert [k["key_id"] for k in listed] == [key_id]
    assert "key" not in listed[0] and "digest" not in listed[0] and key.startswith(listed[0]["prefix"])


def test_disabled_key_stops_working_at_once(gw: GatewayServer) -> None:
    key, key_id = create_key(gw, "alpha")
    c = client(gw, key)
    assert c.chat.completions.create(model="fake-model", messages=MSG).choices
    with admin(gw) as a:
        assert a.post(f"/v1/nometer/admin/keys/{key_id}/disable").json()["active"] is False
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="fake-model", messages=MSG)
    with pytest.raises(openai.AuthenticationError):  # mid-conversation streams too
        list(c.chat.completions.create(model="fake-model", messages=MSG, stream=True))


def test_cli_create_list_disable_against_a_running_gateway(gw: GatewayServer) -> None:
    db = str(gw.db_path)
    out = cli("create", "--team", "beta", "--name", "batch", "--db", db)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("nmk-") and "not shown again" in out.stderr
    deadline = time.monotonic() + 5
    while True:  # the gateway re-reads keys every auth.refresh_s (1 s)
        r = httpx.post(
            gw.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "fake-model", "messages": MSG},
        )
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 200
    listing = cli("list", "--db", db, "--format", "json")
    assert listing.returncode == 0 and '"team":"beta"' in listing.stdout and key not in listing.stdout
    key_id = (
        next(line for line in listing.stdout.splitlines() if '"beta"' in line)
        .split('"key_id":"')[1]
        .split('"')[0]
    )
    assert cli("disable", key_id, "--db", db).returncode == 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:
        r = httpx.post(
            gw.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "fake-model", "messages": MSG},
        )
        if r.status_code == 401:
            break
        time.sleep(0.05)
    assert r.status_code == 401  # within the loop's 5 s: auth.refresh_s (1 s) plus the poll
    assert "disabled" in cli("list", "--db", db).stdout


def test_rotation_replaces_the_key(gw: GatewayServer) -> None:
    old, old_id = create_key(gw, "alpha", "svc")
    with admin(gw) as a:
        r = a.post(f"/v1/nometer/admin/keys/{old_id}/rotate", json={})
    assert r.status_code == 201
    new = r.json()["key"]
    assert (r.json()["team"], r.json()["name"]) == ("alpha", "svc")
    assert client(gw, new).chat.completions.create(model="fake-model", messages=MSG).choices
    with pytest.raises(openai.AuthenticationError):
        client(gw, old).chat.completions.create(model="fake-model", messages=MSG)
    with admin(gw) as a:  # with a grace period the old key keeps working until it ends
        r = a.post(f"/v1/nometer/admin/keys/{r.json()['key_id']}/rotate", json={"grace_s": 60})
    assert client(gw, new).chat.completions.create(model="fake-model", messages=MSG).choices
    assert client(gw, r.json()["key"]).chat.completions.create(model="fake-model", messages=MSG).choices


def test_admin_api_needs_the_admin_key(gw: GatewayServer) -> None:
    key, key_id = create_key(gw, "alpha")
    team_key = {"authorization": f"Bearer {key}"}
    for method, path in (
        ("GET", "/v1/nometer/admin/keys"),
        ("POST", "/v1/nometer/admin/keys"),
        ("POST", f"/v1/nometer/admin/keys/{key_id}/disable"),
        ("POST", "/v1/nometer/admin/reload"),
        ("GET", "/v1/nometer/admin/teams"),
    ):
        assert httpx.request(method, gw.url + path).status_code == 401
        r = httpx.request(method, gw.url + path, headers=team_key)
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert client(gw, key).chat.completions.create(model="fake-model", messages=MSG).choices


def test_team_cannot_read_another_teams_usage_report_or_receipts(gw: GatewayServer) -> None:
    ka, _ = create_key(gw, "a")
    kb, _ = create_key(gw, "b")
    ra = client(gw, ka).chat.completions.with_raw_response.create(model="fake-model", messages=MSG)
    rb = client(gw, kb).chat.completions.with_raw_response.create(model="fake-model", messages=MSG)
    id_a, id_b = ra.headers["x-request-id"], rb.headers["x-request-id"]
    gw.row(id_a), gw.row(id_b)
    ha = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ka}"})
    # usage: only the caller's team
    usage = ha.get("/v1/nometer/usage").json()
    assert usage["team"] == "a" and [r["request_id"] for r in usage["data"]] == [id_a]
    assert ha.get("/v1/nometer/usage", params={"team": "b"}).status_code == 403
    # report: scoped to the caller's team; asking for another is refused
    report = ha.get("/v1/nometer/report").json()
    assert report["team"] == "a" and report["totals"]["requests"] == 1
    assert ha.get("/v1/nometer/report", params={"team": "b"}).status_code == 403
    # receipts: another team's request does not exist for this caller
    assert ha.get(f"/v1/nometer/receipts/{id_a}").status_code == 200
    r = ha.get(f"/v1/nometer/receipts/{id_b}")
    assert r.status_code == 404 and id_b in r.json()["error"]["message"]
    # without a key nothing is readable; the admin reads everything
    assert httpx.get(gw.url + "/v1/nometer/report").status_code == 401
    assert httpx.get(gw.url + f"/v1/nometer/receipts/{id_a}").status_code == 401
    with admin(gw) as a:
        assert a.get("/v1/nometer/report").json()["totals"]["requests"] == 2
        assert a.get(f"/v1/nometer/receipts/{id_b}").status_code == 200
        assert len(a.get("/v1/nometer/usage").json()["data"]) == 2
    ha.close()


def test_open_mode_still_attributes_known_keys(
    tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_env(monkeypatch)
    with GatewayServer(gateway_settings(tmp_path, [fake.base_url], auth={"admin_key_env": ADMIN_ENV})) as g:
        assert g.runtime.governance.auth.mode == "open"  # the default on 127.0.0.1
        key, key_id = create_key(g, "alpha")
        client(g, "whatever").chat.completions.create(model="fake-model", messages=MSG)
        client(g, key).chat.completions.create(model="fake-model", messages=MSG)
        rows = g.wait_rows(2)
        assert [(r["team"], r["key_id"]) for r in rows] == [(None, None), ("alpha", key_id)]
        assert httpx.get(g.url + "/v1/nometer/report").status_code == 200  # open: no key needed


def test_refuses_to_start_open_on_a_public_address(tmp_path: Path) -> None:
    ledger = {"path": str(tmp_path / "l.db")}
    with pytest.raises(ValueError, match="not loopback"):
        create_app(
            load_settings(
                env={}, overrides={"server": {"host": "0.0.0.0"}, "auth": {"mode": "open"}, "ledger": ledger}
            )
        )
    app = create_app(load_settings(env={}, overrides={"server": {"host": "0.0.0.0"}, "ledger": ledger}))
    assert app.runtime.governance.auth.mode == "keys"  # the default off loopback
    forced = {"mode": "open", "allow_open_non_loopback": True}
    app = create_app(
        load_settings(env={}, overrides={"server": {"host": "0.0.0.0"}, "auth": forced, "ledger": ledger})
    )
    assert app.runtime.governance.auth.mode == "open"
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--host", "0.0.0.0", "--db", ledger["path"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"NOMETER_AUTH__MODE": "open", "PATH": ""},
    )
    assert out.returncode == 2 and "not loopback" in out.stderr


def test_admin_key_is_never_a_team(gw: GatewayServer) -> None:
    r = httpx.post(
        gw.base_url + "/chat/completions",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        json={"model": "fake-model", "messages": MSG},
    )
    assert r.status_code == 200
    row = gw.row(r.headers["x-request-id"])
    assert (row["key_id"], row["team"]) == ("admin", None)
