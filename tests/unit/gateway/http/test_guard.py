"""The open-mode browser guard and CORS, as pure ASGI (no sockets)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.types import Receive, Scope, Send

from gateway.http.guard import BrowserGuard, browser_guard, host_name
from gateway.settings import ServerSettings

Message = dict[str, Any]


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"served"})


def scope(method: str = "GET", path: str = "/v1/models", **headers: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


async def call(app: Any, s: dict[str, Any]) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(s, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def guard(**server: Any) -> BrowserGuard:
    return BrowserGuard(_app, ServerSettings(**server), open_mode=True)


@pytest.mark.parametrize(
    ("host", "name"),
    [
        (b"127.0.0.1:7878", b"127.0.0.1"),
        (b"LocalHost", b"localhost"),
        (b"localhost.:80", b"localhost"),
        (b"[::1]:7878", b"[::1]"),
        (b"[::1]", b"[::1]"),
        (b"attacker.example:7878", b"attacker.example"),
    ],
)
def test_host_name(host: bytes, name: bytes) -> None:
    assert host_name(host) == name


@pytest.mark.parametrize(
    "host", ["127.0.0.1:7878", "localhost:7878", "[::1]:7878", "10.0.0.5:7878", "[fe80::1]", "LOCALHOST"]
)
async def test_loopback_names_and_ip_addresses_are_served(host: str) -> None:
    status, _, body = await call(guard(), scope(host=host))
    assert (status, body) == (200, b"served")


@pytest.mark.parametrize("host", ["attacker.example:7878", "localhost.attacker.example", "127.0.0.1.nip.io"])
async def test_a_rebound_dns_name_is_refused(host: str) -> None:
    status, headers, body = await call(guard(), scope(host=host))
    assert status == 403 and headers[b"content-type"] == b"application/json"
    assert orjson.loads(body)["error"]["code"] == "host_not_allowed"


async def test_allowed_hosts_and_the_wildcard() -> None:
    assert (await call(guard(allowed_hosts=("box.lan",)), scope(host="box.lan:7878")))[0] == 200
    assert (await call(guard(allowed_hosts=("*",)), scope(host="anything.example")))[0] == 200
    assert (await call(guard(), scope()))[0] == 200  # no Host at all: not a browser


async def test_another_origin_is_refused_and_the_own_origin_is_served() -> None:
    own = scope(host="127.0.0.1:7878", origin="http://127.0.0.1:7878")
    assert (await call(guard(), own))[0] == 200
    for origin in ("http://evil.example", "null", "http://localhost:3000", "http://127.0.0.1:7879"):
        status, _, body = await call(guard(), scope(host="127.0.0.1:7878", origin=origin))
        assert status == 403 and orjson.loads(body)["error"]["code"] == "origin_not_allowed", origin
    status, _, _ = await call(guard(), scope(host="127.0.0.1:7878", sec_fetch_site="cross-site"))
    assert status == 403


@pytest.mark.parametrize(
    ("ctype", "path", "status"),
    [
        ("text/plain", "/v1/chat/completions", 415),
        ("application/x-www-form-urlencoded", "/v1/chat/completions", 415),
        ("multipart/form-data; boundary=x", "/v1/chat/completions", 415),
        ("multipart/form-data; boundary=x", "/v1/audio/transcriptions", 200),
        ("application/json", "/v1/chat/completions", 200),
        ("Application/JSON; charset=utf-8", "/v1/chat/completions", 200),
    ],
)
async def test_a_post_body_must_be_json(ctype: str, path: str, status: int) -> None:
    s = scope("POST", path, host="127.0.0.1:7878", content_type=ctype, content_length="12")
    got, _, body = await call(guard(), s)
    assert got == status
    if status == 415:
        assert orjson.loads(body)["error"]["code"] == "unsupported_media_type"


async def test_a_post_without_a_body_or_content_type_needs_none() -> None:
    assert (await call(guard(), scope("POST", "/v1/nometer/admin/reload", content_length="0")))[0] == 200
    no_type = scope("POST", "/v1/chat/completions", transfer_encoding="chunked")
    assert (await call(guard(), no_type))[0] == 415


async def test_no_cors_unless_configured() -> None:
    _, headers, _ = await call(guard(), scope(host="127.0.0.1:7878", origin="http://127.0.0.1:7878"))
    assert not any(k.startswith(b"access-control-") for k in headers)
    cors = guard(cors_origins=("https://app.example",))
    _, headers, _ = await call(cors, scope(host="127.0.0.1:7878", origin="https://app.example"))
    assert headers[b"access-control-allow-origin"] == b"https://app.example"
    pre = scope(
        "OPTIONS",
        host="127.0.0.1:7878",
        origin="https://app.example",
        access_control_request_method="POST",
        access_control_request_headers="authorization, content-type",
    )
    status, headers, _ = await call(cors, pre)
    assert status == 204 and headers[b"access-control-allow-headers"] == b"authorization, content-type"


def test_keys_mode_has_no_guard_unless_cors_is_configured() -> None:
    server = ServerSettings()
    assert browser_guard(_app, server, "keys") is _app
    assert isinstance(browser_guard(_app, server, "open"), BrowserGuard)
    cors = browser_guard(_app, ServerSettings(cors_origins=("https://a.example",)), "keys")
    assert isinstance(cors, BrowserGuard) and not cors.open_mode


async def test_keys_mode_serves_any_host() -> None:
    keys = BrowserGuard(_app, ServerSettings(cors_origins=("https://a.example",)), open_mode=False)
    s = scope("POST", "/v1/chat/completions", host="gateway.corp:443", content_type="text/plain")
    assert (await call(keys, s))[0] == 200
