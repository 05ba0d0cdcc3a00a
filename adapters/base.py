"""The contract between the gateway and an upstream model server.

An adapter moves bytes; it knows nothing of money, ledgers or HTTP status policy. Foreign client
exceptions (aiohttp, litellm) are translated here, at the boundary, into this small tree, so the
gateway decides retries and status codes by class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol


class UpstreamError(Exception):
    """Base of every failure to talk to an upstream."""


class UpstreamConnectError(UpstreamError):
    """No response byte was received: connection refused, reset or dropped before the status line.

    Safe to retry on another backend: nothing reached the client yet."""


class UpstreamTimeout(UpstreamError):
    """The upstream stayed silent longer than the read timeout."""


class UpstreamBrokenStream(UpstreamError):
    """The upstream failed after the response had started (reset mid-stream)."""


Headers = Sequence[tuple[bytes, bytes]]


class UpstreamResponse(Protocol):
    status: int
    headers: list[tuple[bytes, bytes]]  # already filtered for relaying to a client

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (no re-framing); raises UpstreamTimeout/UpstreamBrokenStream."""
        ...

    def close(self) -> None:
        """Drop the connection, so the server stops generating (used when the client left)."""
        ...


class Upstream(Protocol):
    name: str

    async def send(self, method: str, path: str, body: bytes, headers: Headers) -> UpstreamResponse:
        """Send one request; ``path`` is the client's path (``/v1/chat/completions``)."""
        ...

    async def get_json(self, path: str, timeout_s: float) -> Any:
        """Small control-plane GET (``/v1/models``); raises UpstreamError."""
        ...

    async def probe(self, path: str, timeout_s: float) -> int:
        """Status code of a GET (``/health``); raises UpstreamError."""
        ...

    async def get_text(self, path: str, timeout_s: float) -> str: ...

    async def aclose(self) -> None: ...
