"""Open mode's defence against web pages, and CORS: pure ASGI, in front of every route.

Open mode asks no one who is calling: whatever reaches the port is trusted, meant to be the
programs of this machine. A web page open in a browser on the same machine reaches the port too:
a cross-site ``text/plain`` or form POST needs no CORS preflight, and a page whose DNS name
rebinds to 127.0.0.1 is, to the browser, same-origin with the gateway. So in open mode the guard
refuses what only a browser acting for another site sends:

- a ``Host`` that is neither a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``, any port),
  an IP address, nor listed in ``server.allowed_hosts`` (``"*"`` lifts the check): 403
  ``host_not_allowed`` (DNS rebinding: the page's own name comes as the Host);
- an ``Origin`` other than the gateway's own (``http://`` + the Host) and not listed in
  ``server.cors_origins``, and ``Sec-Fetch-Site: cross-site`` / ``same-site``: 403
  ``origin_not_allowed`` (browsers send ``Origin`` on every cross-origin request and every POST);
- a POST with a body that is not ``application/json`` (``multipart/form-data`` on the audio
  routes that take it): 415 ``unsupported_media_type``.

A request without ``Host`` or ``Origin`` (an HTTP/1.0 client, a script) is not a browser's and
passes. CORS: none, unless ``server.cors_origins`` lists the request's origin; then a preflight
(``OPTIONS`` with ``Access-Control-Request-Method``) gets 204 and every answer carries
``access-control-allow-origin`` with that origin (upstream CORS headers are dropped by the
adapter, so vLLM's default ``*`` never reaches a browser). In keys mode a page has no key to
send (keys are not ambient like cookies), so there the guard only does CORS, and is not installed
at all when no origin is listed.

Per request: one pass over the headers and a few set lookups; nothing is parsed but the Host's
port suffix, and an IP literal is checked once per distinct value (cached).
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import errors
from gateway.http.proxy import send_error
from gateway.ids import new_id
from gateway.settings import ServerSettings

LOOPBACK_HOSTS = frozenset({b"localhost", b"127.0.0.1", b"[::1]"})
MULTIPART_PATHS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations"})
_JSON = b"application/json"
_MULTIPART = b"multipart/form-data"
_CROSS = frozenset({b"cross-site", b"same-site"})
_ALLOW_METHODS = b"GET, POST, OPTIONS"
_EXPOSE = b"x-request-id, retry-after"
_IP_CACHE_MAX = 256


def host_name(host: bytes) -> bytes:
    """``Host`` without its port, lower-cased, without a trailing dot (``[::1]`` keeps brackets)."""
    host = host.strip().lower()
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    name, colon, _port = host.rpartition(b":")
    return (name if colon else host).rstrip(b".")


class BrowserGuard:
    def __init__(self, app: ASGIApp, server: ServerSettings, *, open_mode: bool):
        self.app = app
        self.open_mode = open_mode
        hosts = {h.strip().lower().encode() for h in server.allowed_hosts}
        self.any_host = b"*" in hosts
        self.hosts = set(LOOPBACK_HOSTS | hosts)  # grows with IP literals seen (bounded)
        self.cors = frozenset(o.rstrip("/").encode() for o in server.cors_origins)

    def _host_ok(self, host: bytes) -> bool:
        name = host_name(host)
        if name in self.hosts:
            return True
        try:
            ipaddress.ip_address(name.strip(b"[]").decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return False
        if len(self.hosts) < _IP_CACHE_MAX:
            self.hosts.add(name)  # an IP address cannot be rebound: no web page is behind it
        return True

    def _refusal(self, scope: Scope) -> errors.GatewayError | None:
        host = origin = ctype = fetch_site = None
        body = False
        for k, v in scope["headers"]:
            if k == b"host":
                host = v
            elif k == b"origin":
                origin = v
            elif k == b"content-type":
                ctype = v
            elif k == b"sec-fetch-site":
                fetch_site = v
            elif k == b"content-length":
                body = body or v.strip() not in (b"0", b"")
            elif k == b"transfer-encoding":
                body = True
        if host is not None and not self.any_host and not self._host_ok(host):
            return errors.HostNotAllowed(
                f"Host `{host.decode('latin-1')}` is not served in open mode: use 127.0.0.1 or localhost, "
                "or list the name in server.allowed_hosts (or use auth.mode: keys)."
            )
        if origin is not None and origin not in self.cors and origin[origin.find(b"//") + 2 :] != host:
            return errors.OriginNotAllowed(
                f"Requests from web pages of another origin (`{origin.decode('latin-1')}`) are refused "
                "in open mode; list the origin in server.cors_origins to allow it."
            )
        if fetch_site in _CROSS and origin not in self.cors:
            return errors.OriginNotAllowed(
                "Requests from web pages of another site are refused in open mode."
            )
        if body and scope["method"] == "POST":
            kind = (ctype or b"").partition(b";")[0].strip().lower()
            if kind != _JSON and not (kind == _MULTIPART and scope["path"] in MULTIPART_PATHS):
                return errors.UnsupportedMediaType(
                    "In open mode a POST body must be sent as `Content-Type: application/json`"
                    + (" (or multipart/form-data)" if scope["path"] in MULTIPART_PATHS else "")
                    + f", not `{(ctype or b'none').decode('latin-1')}`."
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.open_mode and (refusal := self._refusal(scope)) is not None:
            rid = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
            await send_error(
                send, refusal, rid.decode("latin-1") or new_id(), errors.is_anthropic(scope["path"])
            )
            return
        if self.cors:
            origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
            if origin is not None and origin in self.cors:
                await self._cors(scope, receive, send, origin)
                return
        await self.app(scope, receive, send)

    async def _cors(self, scope: Scope, receive: Receive, send: Send, origin: bytes) -> None:
        allow = [(b"access-control-allow-origin", origin), (b"vary", b"origin")]
        headers = dict(scope["headers"])
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            allow += [
                (b"access-control-allow-methods", _ALLOW_METHODS),
                (b"access-control-allow-headers", headers.get(b"access-control-request-headers", b"")),
                (b"access-control-max-age", b"600"),
                (b"content-length", b"0"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": allow})
            await send({"type": "http.response.body", "body": b""})
            return
        allow.append((b"access-control-expose-headers", _EXPOSE))

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *allow]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def browser_guard(app: ASGIApp, server: ServerSettings, mode: str) -> ASGIApp:
    """``app`` behind the guard where it has work: open mode, or CORS origins configured."""
    if mode != "open" and not server.cors_origins:
        return app
    return BrowserGuard(app, server, open_mode=mode == "open")
