"""One adapter for vLLM and any other OpenAI-compatible server, on aiohttp.

aiohttp was chosen over httpx by measurement (see docs/benchmarks.md): on one pinned core it costs a
fraction of httpx's CPU per relayed request. One ``ClientSession`` per upstream keeps connections
alive; the body is relayed chunk by chunk as the socket yields it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from adapters.base import (
    Headers,
    UpstreamBrokenStream,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)

# Request headers never forwarded: hop-by-hop, framing (recomputed), the client's gateway
# credentials (the upstream gets its own key), and cookies.
_DROP_REQUEST = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-connection",
        b"content-length",
        b"authorization",
        b"api-key",
        b"x-api-key",
        b"cookie",
        b"accept-encoding",
        b"expect",
    }
)
# Response headers the gateway sets itself (framing, server identity), and CORS: whether a web
# page may read an answer is the gateway's decision (``server.cors_origins``), never the
# upstream's (vLLM answers ``access-control-allow-origin: *`` by default).
_DROP_RESPONSE = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "date",
        "server",
        "x-request-id",
    }
)


@dataclass(frozen=True)
class CompatConfig:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    name: str
    api_key: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 600.0
    # connections to this upstream at once; a request beyond waits for a free one (within the
    # connect timeout), so a burst can never take every file descriptor of the gateway
    max_connections: int = 1024


@contextmanager
def map_exceptions(what: str, *, started: bool = False) -> Iterator[None]:
    """Translate aiohttp's exceptions into the adapters' tree, here at the boundary (as httpx's
    ``map_httpcore_exceptions`` does), so the gateway decides retries and statuses by class.

    Before the response started (``started=False``), a refused/reset connection or a connect
    timeout is ``UpstreamConnectError`` (nothing reached the client: safe to retry elsewhere) and
    silence past the read timeout is ``UpstreamTimeout``. Once the response started, silence is
    still ``UpstreamTimeout`` and any other failure ``UpstreamBrokenStream``."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        if isinstance(exc, aiohttp.ConnectionTimeoutError) and not started:
            raise UpstreamConnectError(f"{what}: connect timed out") from exc
        raise UpstreamTimeout(f"{what}: timed out ({exc or 'no data within the read timeout'})") from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
        lost: type[UpstreamError] = UpstreamBrokenStream if started else UpstreamConnectError
        raise lost(f"{what}: {exc or type(exc).__name__}") from exc
    except aiohttp.ClientError as exc:
        other: type[UpstreamError] = UpstreamBrokenStream if started else UpstreamError
        raise other(f"{what}: {exc or type(exc).__name__}") from exc


def _root(base_url: str) -> str:
    """Server root: the client's path (/v1/...) and vLLM's own (/health, /tokenize) hang off it."""
    base = base_url.rstrip("/")
    return base.removesuffix("/v1")


class CompatResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse):
        self._resp = resp
        self.status = resp.status
        self.headers = [
            (name.encode("latin-1"), v.encode("latin-1"))
            for k, v in resp.headers.items()
            if (name := k.lower()) not in _DROP_RESPONSE and not name.startswith("access-control-")
        ]

    async def read(self) -> bytes:
        try:
            with map_exceptions("upstream body", started=True):
                return await self._resp.read()
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        try:
            with map_exceptions("upstream stream", started=True):
                while True:
                    data = await content.readany()
                    if not data:
                        break
                    yield data
        finally:
            self._resp.release()

    def close(self) -> None:
        self._resp.close()  # closes the connection: vLLM sees the disconnect and aborts


class OpenAICompatUpstream:
    def __init__(self, config: CompatConfig):
        self.name = config.name
        self.config = config
        self._root = _root(config.base_url)
        self._auth = (b"authorization", f"Bearer {config.api_key}".encode()) if config.api_key else None
        self._session: aiohttp.ClientSession | None = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.config.max_connections, ttl_dns_cache=300, keepalive_timeout=60
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.config.connect_timeout_s, sock_read=self.config.read_timeout_s
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def send(self, method: str, path: str, body: bytes, headers: Headers) -> CompatResponse:
        out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k not in _DROP_REQUEST]
        if self._auth:
            out.append((self._auth[0].decode(), self._auth[1].decode()))
        with map_exceptions(self.name):
            resp = await self._sess().request(
                method, self._root + path, data=body, headers=out, allow_redirects=False
            )
        return CompatResponse(resp)

    async def _get(self, path: str, timeout_s: float) -> tuple[int, bytes]:
        with map_exceptions(f"{self.name}: GET {path}"):
            async with self._sess().get(
                self._root + path,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                headers=[self._auth_header()] if self._auth else None,
            ) as r:
                return r.status, await r.read()

    def _auth_header(self) -> tuple[str, str]:
        assert self._auth
        return self._auth[0].decode(), self._auth[1].decode()

    async def get_json(self, path: str, timeout_s: float) -> Any:
        status, body = await self._get(path, timeout_s)
        if status != 200:
            raise UpstreamError(f"{self.name}: GET {path} -> {status}")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{self.name}: GET {path}: not JSON") from exc

    async def get_text(self, path: str, timeout_s: float) -> str:
        status, body = await self._get(path, timeout_s)
        if status != 200:
            raise UpstreamError(f"{self.name}: GET {path} -> {status}")
        return body.decode("utf-8", "replace")

    async def probe(self, path: str, timeout_s: float) -> int:
        return (await self._get(path, timeout_s))[0]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
