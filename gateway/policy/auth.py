"""Who is calling: the caller's identity from its key, and the auth mode.

Modes: ``keys`` (every ``/v1/`` request needs a key) and ``open`` (no key needed; a valid key, when
presented, still names its team). Open is the default only while the gateway is bound to a
loopback address; on any other address it refuses to start open unless
``auth.allow_open_non_loopback`` forces it.

Keys arrive as ``Authorization: Bearer <key>``, ``api-key: <key>`` (Azure OpenAI clients) or
``x-api-key: <key>`` (Anthropic clients: the Anthropic SDK, Claude Code with ANTHROPIC_API_KEY). The
admin key (env var named by ``auth.admin_key_env``) is checked the same way, as a digest.

Control routes read the caller from the ASGI scope: the dispatcher stores the ``Identity`` under
``scope["nometer.identity"]`` when a key was presented (none in open mode without a key, which
sees everything, as before auth existed). ``visible_team`` / ``require_admin`` are the helpers the
report, receipt, usage and admin routes call.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

from gateway import errors
from gateway.ledger.keystore import digest
from gateway.policy.keys import KeyRing
from gateway.settings import AuthSettings, ServerSettings

SCOPE_KEY = "nometer.identity"
_BEARER = b"bearer "


@dataclass(frozen=True, slots=True)
class Identity:
    key_id: str | None
    key_name: str | None
    team: str | None
    is_admin: bool = False


ADMIN = Identity("admin", "admin", None, True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_mode(auth: AuthSettings, server: ServerSettings) -> Literal["open", "keys"]:
    """The effective mode; ValueError when open was asked for on a public address without the force."""
    if auth.mode is None:
        return "open" if is_loopback(server.host) else "keys"
    if auth.mode == "open" and not is_loopback(server.host) and not auth.allow_open_non_loopback:
        raise ValueError(
            f"auth.mode is open but the gateway binds {server.host}, which is not loopback: "
            "anyone who can reach it could use it. Use auth.mode: keys, bind 127.0.0.1, or set "
            "auth.allow_open_non_loopback: true to force it."
        )
    return auth.mode


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key of ``Authorization: Bearer`` or, failing that, of ``api-key`` or ``x-api-key``."""
    api_key = None
    for k, v in headers:
        if k == b"authorization":
            if v[:7].lower() == _BEARER:
                return v[7:].strip() or None
        elif k == b"api-key" or k == b"x-api-key":
            api_key = v.strip() or api_key
    return api_key


class Authenticator:
    def __init__(self, mode: Literal["open", "keys"], admin_key_env: str | None, ring: KeyRing | None = None):
        self.mode = mode
        self.ring = ring or KeyRing()
        admin = os.environ.get(admin_key_env) if admin_key_env else None
        self._admin = digest(admin) if admin else None
        # monotonic time after which the ring is too old to trust (``auth.keys_max_stale_s``
        # without a successful re-read); moved forward by every successful read
        self.trusted_until = math.inf

    @property
    def has_admin(self) -> bool:
        return self._admin is not None

    def identify(self, headers: list[tuple[bytes, bytes]]) -> Identity | None:
        """The caller, or None for an anonymous caller in open mode; AuthenticationFailed otherwise.

        In open mode an unknown key is ignored (clients must send *some* key; many send a dummy)."""
        if self.mode == "open" and not self.ring and self._admin is None:
            return None  # the default: nothing to look up
        key = presented_key(headers)
        if key is None:
            if self.mode == "open":
                return None
            raise errors.MissingApiKey(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>` "
                "(or `x-api-key: <key>`)."
            )
        if time.monotonic() > self.trusted_until:
            return self._stale(key)
        rec = self.ring.find(key)
        if rec is not None:
            return Identity(rec.key_id, rec.name, rec.team)
        if self._admin is not None and hmac.compare_digest(digest(key), self._admin):
            return ADMIN
        if self.mode == "open":
            return None
        raise errors.AuthenticationFailed("Incorrect API key provided (unknown, disabled or expired).")

    def _stale(self, key: bytes) -> Identity | None:
        """Keys could not be re-read for too long: a key may have been revoked meanwhile, so none
        is honoured. The admin key (from the environment, not the database) still works; in open
        mode the caller is anonymous, as with any unknown key."""
        if self._admin is not None and hmac.compare_digest(digest(key), self._admin):
            return ADMIN
        if self.mode == "open":
            return None
        raise errors.KeysUnavailable(
            "API keys cannot be checked right now: this gateway has not been able to re-read them "
            "from the ledger database. Try again shortly.",
            headers={"retry-after": "5"},
        )


def identity(request_or_scope: Any) -> Identity | None:
    scope = getattr(request_or_scope, "scope", request_or_scope)
    ident = scope.get(SCOPE_KEY)
    return ident if isinstance(ident, Identity) else None


def visible_team(request: Any, wanted: str | None = None) -> str | None:
    """The team whose data the caller may read: ``None`` means every team (admin, or open mode
    without a key). A team key asking for another team gets 403."""
    ident = identity(request)
    if ident is None or ident.is_admin:
        return wanted
    if wanted not in (None, ident.team):
        raise errors.PermissionDenied("A team key can only read its own team's data.", param="team")
    return ident.team


def require_admin(request: Any) -> Identity:
    ident = identity(request)
    if ident is None or not ident.is_admin:
        raise errors.PermissionDenied("This endpoint needs the admin key (auth.admin_key_env).")
    return ident
