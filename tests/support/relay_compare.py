"""Direct-vs-through comparisons: the same request to vLLM and through nometer must match.

What may differ, and nothing else: per-request ids (``chatcmpl-…``, ``resp_…``, ``msg_…``), clock
fields (``created``, ``created_at``), the ``date`` header, and ``x-request-id`` (nometer adds its
own). Both answers are normalised for exactly those and then compared as *bytes*: status, the
headers that matter, the body and the SSE framing (every ``event:``/``data:`` line and blank line).

The tiny model's text is random but deterministic under greedy decoding (``temperature: 0``), and
the prompt cache is warmed first so both requests see the same ``cached_tokens``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

_IDS = re.compile(rb'"(id|item_id|response_id|call_id|tool_use_id|previous_response_id)":"[^"]*"')
_CLOCK = re.compile(rb'"(created|created_at|completed_at)":\d+')
# headers whose value is per-connection or per-request, never compared
_VOLATILE = frozenset(
    {"date", "x-request-id", "content-length", "transfer-encoding", "connection", "keep-alive"}
)


def normalise(body: bytes) -> bytes:
    return _CLOCK.sub(rb'"\1":0', _IDS.sub(rb'"\1":"ID"', body))


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes  # normalised

    @property
    def framing(self) -> list[bytes]:
        """The SSE lines with their data replaced by its length: the shape of the stream."""
        return [line.split(b":", 1)[0] for line in self.body.split(b"\n")]


def fetch(client: httpx.Client, method: str, url: str, **kw: Any) -> Answer:
    with client.stream(method, url, **kw) as r:
        body = b"".join(r.iter_raw())
        headers = {k.lower(): v for k, v in r.headers.items() if k.lower() not in _VOLATILE}
        return Answer(r.status_code, headers, normalise(body))


def same(
    direct_base: str, through_base: str, method: str, path: str, *, warm: bool = True, **kw: Any
) -> Answer:
    """Send the request direct (after one warm-up, so caches agree) and through; assert they match."""
    with httpx.Client(timeout=120) as client:
        if warm:
            fetch(client, method, direct_base + path, **kw)
        direct = fetch(client, method, direct_base + path, **kw)
        through = fetch(client, method, through_base + path, **kw)
    assert through.status == direct.status, (through.status, direct.status, through.body[:300])
    assert through.headers == direct.headers
    assert through.body == direct.body, f"\ndirect:  {direct.body[:2000]!r}\nthrough: {through.body[:2000]!r}"
    return through
