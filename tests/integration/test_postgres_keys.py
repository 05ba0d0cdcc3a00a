"""API keys across a PostgreSQL outage: the gateway reaches the shared PostgreSQL through a
fault-injecting TCP proxy (``tests.support.chaos_proxy``), cut for 10 s like a restart, then
restored. The server itself is never touched.

What must hold: while it cannot re-read keys, the replica says so in ``/readyz`` and its log,
and after ``auth.keys_max_stale_s`` it refuses keys (a revocation it cannot see must not keep
working); once the database is back, a key disabled there stops working and a key created
there is accepted, within the refresh bound, without a restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.ledger.keystore import PostgresKeyStore
from tests.support.chaos_proxy import ChaosProxy
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.postgres import PG_PORT, fresh_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
ADMIN_ENV = "NOMETER_TEST_PG_KEYS_ADMIN"
REFRESH_S = 0.2
MAX_STALE_S = 3.0
CUT_S = 10.0
# a change made in the database reaches the replica within: one refresh period, plus a
# reconnect after the outage (bounded by the key store's timeouts), plus slack for a loaded machine
BOUND_S = REFRESH_S + PostgresKeyStore.TIMEOUT_S + 5.0
MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as name:
        yield name


def wait_for(check: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def chat(g: GatewayServer, key: str) -> httpx.Response:
    return httpx.post(
        g.base_url + "/chat/completions",
        json={"model": "fake-model", "messages": MSG},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_keys_revoke_after_a_postgres_restart(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ADMIN_ENV, "admin-secret-pg")
    direct = PostgresKeyStore(f"postgresql://127.0.0.1:{PG_PORT}/{database}")  # the CLI's view
    with FakeUpstream() as fake, ChaosProxy(PG_PORT) as fault:
        s = gateway_settings(
            tmp_path,
            [fake.base_url],
            auth={
                "mode": "keys",
                "admin_key_env": ADMIN_ENV,
                "refresh_s": REFRESH_S,
                "keys_max_stale_s": MAX_STALE_S,
            },
            ledger={"url": f"postgresql://127.0.0.1:{fault.port}/{database}", "path": str(tmp_path / "x.db")},
        )
        old, old_rec = direct.create("research")
        with GatewayServer(s) as g, caplog.at_level(logging.ERROR, "nometer.policy"):
            wait_for(lambda: chat(g, old).status_code == 200, BOUND_S, "the first key was never accepted")
            assert httpx.get(g.url + "/readyz").json()["keys"]["fresh"] is True

            fault.set_mode("down")  # the database "restarts": connections reset, new ones reset at once
            cut = time.monotonic()
            wait_for(
                lambda: httpx.get(g.url + "/readyz").status_code == 503, BOUND_S, "readyz did not notice"
            )
            ready = httpx.get(g.url + "/readyz").json()
            assert ready["reason"] == "API keys cannot be re-read from the ledger database"
            assert ready["keys"]["fresh"] is False and ready["keys"]["error"]
            assert any("could not re-read API keys" in r.getMessage() for r in caplog.records)
            # past keys_max_stale_s no key is honoured: it might have been revoked meanwhile
            wait_for(
                lambda: chat(g, old).status_code == 503, MAX_STALE_S + BOUND_S, "stale keys still honoured"
            )
            r = chat(g, old)
            assert r.json()["error"]["code"] == "keys_unavailable" and r.headers["retry-after"] == "5"
            admin = httpx.get(
                g.url + "/v1/nometer/admin/teams", headers={"authorization": "Bearer admin-secret-pg"}
            )
            assert admin.status_code == 200  # the admin key comes from the environment: still works

            time.sleep(max(0.0, CUT_S - (time.monotonic() - cut)))
            fault.set_mode("pass")  # the database is back; the key changes are made there now
            direct.disable(old_rec.key_id)
            new, _ = direct.create("research")
            wait_for(lambda: chat(g, new).status_code == 200, BOUND_S, "a new key was never accepted")
            assert chat(g, old).status_code == 401  # the disabled key is refused
            wait_for(lambda: httpx.get(g.url + "/readyz").status_code == 200, BOUND_S, "readyz stayed 503")
            assert httpx.get(g.url + "/readyz").json()["keys"]["fresh"] is True
    direct.close()


def test_open_mode_ignores_stale_keys(tmp_path: Path, database: str) -> None:
    """In open mode a key only names a team; once keys are stale, callers are anonymous (the
    team's policy, which a revoked key must not keep, no longer applies) and still served."""
    direct = PostgresKeyStore(f"postgresql://127.0.0.1:{PG_PORT}/{database}")
    with FakeUpstream() as fake, ChaosProxy(PG_PORT) as fault:
        s = gateway_settings(
            tmp_path,
            [fake.base_url],
            auth={"mode": "open", "refresh_s": REFRESH_S, "keys_max_stale_s": MAX_STALE_S},
            ledger={"url": f"postgresql://127.0.0.1:{fault.port}/{database}", "path": str(tmp_path / "x.db")},
            teams={"research": {"models": ["nothing-here"]}},  # the team may not use fake-model
        )
        key, _ = direct.create("research")
        with GatewayServer(s) as g:
            wait_for(lambda: chat(g, key).status_code == 403, BOUND_S, "the key never named its team")
            fault.set_mode("down")
            wait_for(
                lambda: chat(g, key).status_code == 200, MAX_STALE_S + BOUND_S, "stale key still applied"
            )
            assert httpx.get(g.url + "/readyz").status_code == 200  # open mode: keys are optional
            assert httpx.get(g.url + "/readyz").json()["keys"]["refused"] is True
            fault.set_mode("pass")
            wait_for(lambda: chat(g, key).status_code == 403, BOUND_S, "the key never came back")
    direct.close()
