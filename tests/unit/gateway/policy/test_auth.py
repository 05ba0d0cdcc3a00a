from __future__ import annotations

import pytest

from gateway import errors
from gateway.ledger.keystore import KeyRecord, digest
from gateway.policy.auth import (
    ADMIN,
    Authenticator,
    Identity,
    is_loopback,
    presented_key,
    resolve_mode,
    visible_team,
)
from gateway.policy.keys import KeyRing
from gateway.settings import AuthSettings, ServerSettings

KEY = "nmk-secret"
RING = KeyRing([KeyRecord("key_1", "ci", "alpha", digest(KEY), "nmk-se", 0.0)], 1)


def h(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]


def test_presented_key_bearer_then_api_key() -> None:
    assert presented_key(h(authorization="Bearer abc")) == b"abc"
    assert presented_key(h(authorization="bearer  abc ")) == b"abc"
    assert presented_key(h(api_key="azure")) == b"azure"
    assert presented_key(h(api_key="azure", authorization="Bearer abc")) == b"abc"
    assert presented_key(h(authorization="Basic x")) is None
    assert presented_key([]) is None


@pytest.mark.parametrize(
    ("host", "loop"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_mode_defaults_and_the_open_refusal() -> None:
    assert resolve_mode(AuthSettings(), ServerSettings()) == "open"
    assert resolve_mode(AuthSettings(), ServerSettings(host="0.0.0.0")) == "keys"
    with pytest.raises(ValueError, match="not loopback"):
        resolve_mode(AuthSettings(mode="open"), ServerSettings(host="0.0.0.0"))
    assert (
        resolve_mode(AuthSettings(mode="open", allow_open_non_loopback=True), ServerSettings(host="0.0.0.0"))
        == "open"
    )
    assert resolve_mode(AuthSettings(mode="keys"), ServerSettings()) == "keys"


def test_keys_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADM", "adm-key")
    auth = Authenticator("keys", "ADM", RING)
    ident = auth.identify(h(authorization=f"Bearer {KEY}"))
    assert ident is not None and (ident.key_id, ident.team, ident.is_admin) == ("key_1", "alpha", False)
    assert auth.identify(h(authorization="Bearer adm-key")) == ADMIN
    with pytest.raises(errors.MissingApiKey):
        auth.identify([])
    with pytest.raises(errors.AuthenticationFailed):
        auth.identify(h(authorization="Bearer wrong"))


def test_open_mode_ignores_unknown_keys() -> None:
    auth = Authenticator("open", None, RING)
    assert auth.identify([]) is None
    assert auth.identify(h(authorization="Bearer sk-dummy")) is None
    ident = auth.identify(h(api_key=KEY))
    assert ident is not None and ident.team == "alpha"
    assert Authenticator("open", "UNSET_ENV_VAR_X", KeyRing()).identify(h(authorization="Bearer x")) is None


def test_visible_team() -> None:
    team = {"nometer.identity": Identity("key_1", "ci", "alpha")}
    assert visible_team(team) == "alpha"
    with pytest.raises(errors.PermissionDenied):
        visible_team(team, "beta")
    assert visible_team({}, "beta") == "beta"  # open mode, no key: everything
    assert visible_team({"nometer.identity": ADMIN}, "beta") == "beta"


def test_stale_keys_are_refused_in_keys_mode_and_ignored_in_open_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOMETER_TEST_ADMIN_STALE", "adm")
    for mode in ("keys", "open"):
        auth = Authenticator(mode, "NOMETER_TEST_ADMIN_STALE", RING)
        assert auth.identify(h(authorization=f"Bearer {KEY}")) == Identity("key_1", "ci", "alpha")
        auth.trusted_until = 0.0  # no successful re-read for longer than keys_max_stale_s
        assert auth.identify(h(authorization="Bearer adm")) == ADMIN  # the admin key is from the env
        if mode == "keys":
            with pytest.raises(errors.KeysUnavailable) as exc:
                auth.identify(h(authorization=f"Bearer {KEY}"))
            assert exc.value.status == 503 and exc.value.headers["retry-after"] == "5"
        else:
            assert auth.identify(h(authorization=f"Bearer {KEY}")) is None  # anonymous


def test_anthropic_clients_key_header() -> None:
    from gateway.policy.auth import presented_key

    assert presented_key([(b"x-api-key", b" nmk-1 ")]) == b"nmk-1"
    assert presented_key([(b"x-api-key", b"nmk-1"), (b"authorization", b"Bearer nmk-2")]) == b"nmk-2"
