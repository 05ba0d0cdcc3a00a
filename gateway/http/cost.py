"""The cost of an answer inside the answer: ``usage.nometer`` (opt-in, off by default).

With ``meter.response_cost: true``, or per request ``X-Nometer-Cost: include`` (``omit`` turns it
off for one request when it is on), the final usage object of a local answer carries what the
request cost and what the cloud would have billed, as OpenRouter's ``usage.cost`` does::

    "usage": {"prompt_tokens": 31, ..., "nometer": {
        "receipt_id": "…", "basis": "marginal", "local_cost_usd": "0.0000021",
        "reference": "gpt-4.1", "cloud_cost_usd": "0.000094", "savings_usd": "0.0000919"}}

The final usage object is the answer's ``usage`` (non-streamed), the usage chunk of a chat or
completions stream (only when the client asked for it with ``stream_options.include_usage``), the
``response.completed`` event of a Responses stream, and ``message_delta`` of a Messages stream.

The figures are the receipt's (``GET /v1/nometer/receipts/{receipt_id}``), not an estimate of it:
when the final usage object arrives the request's busy share is frozen (``freeze``), the record is
priced once with the meter's own functions (``price``, in a worker thread, so a long context does
not stall the event loop), and the ledger row is later built from exactly those inputs
(``RequestRecord.priced_inline``). This costs a re-count of the request on the request path, which
is why it is opt-in; everything else is metered off the request path as always.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson

from gateway import errors
from gateway.ledger.events import RequestRecord
from gateway.meter.shadow import METERED

HEADER: Final = b"x-nometer-cost"
# The endpoints whose answers are priced (the shadow meter's), and so can carry their cost.
COSTED: Final = METERED

Price = Callable[[RequestRecord], Awaitable[dict[str, Any]]]


def wanted(value: bytes | None, default: bool) -> bool:
    """The request's choice (``X-Nometer-Cost``), else the gateway's default."""
    if value is None:
        return default
    v = value.strip().lower()
    if v == b"include":
        return True
    if v == b"omit":
        return False
    raise errors.InvalidRequest(
        f"X-Nometer-Cost must be 'include' or 'omit', not {value.decode('latin-1')[:40]!r}.",
        param="X-Nometer-Cost",
    )


def _final_usage(endpoint: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """The usage object of a stream event if it is the answer's final one, else None."""
    if endpoint == "/v1/responses":
        if event.get("type") == "response.completed":
            usage = (event.get("response") or {}).get("usage")
            return usage if isinstance(usage, dict) else None
        return None
    if endpoint == "/v1/messages":
        usage = event.get("usage") if event.get("type") == "message_delta" else None
        return usage if isinstance(usage, dict) else None
    usage = event.get("usage")
    if isinstance(usage, dict) and event.get("choices") == []:
        return usage
    return None


# bytes that every final usage event holds, per endpoint: other chunks pass untouched
_MARK: Final = {"/v1/responses": b"response.completed", "/v1/messages": b"message_delta"}


class CostStamp:
    """Puts ``usage.nometer`` on the final usage object of one answer (module docstring)."""

    __slots__ = ("_endpoint", "_freeze", "_mark", "_price", "_rec", "_tail", "done")

    def __init__(self, rec: RequestRecord, price: Price, freeze: Callable[[], None]):
        self._rec = rec
        self._price = price
        self._freeze = freeze
        self._endpoint = rec.endpoint
        self._mark = _MARK.get(rec.endpoint, b'"usage"')
        self._tail = b""
        self.done = False  # stamped once: the busy share was frozen and the record priced

    async def _cost(self) -> dict[str, Any]:
        self._freeze()
        self.done = True
        return await self._price(self._rec)

    async def body(self, data: bytes) -> bytes:
        """A non-streamed answer, with the cost in its ``usage`` (unchanged if it has none)."""
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        usage = answer.get("usage") if isinstance(answer, dict) else None
        if not isinstance(usage, dict):
            return data
        usage["nometer"] = await self._cost()
        return orjson.dumps(answer)

    async def chunk(self, data: bytes) -> bytes:
        """Stream bytes in, the same bytes out but for the final usage event. Bytes of an event
        whose end has not arrived yet wait for it (nothing else is held)."""
        if self.done:  # stamped: what follows passes untouched (after any bytes still held)
            data, self._tail = self._tail + data, b""
            return data
        data = self._tail + data
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._tail = data
            return b""
        complete, self._tail = data[: cut + 2], data[cut + 2 :]
        if self._mark not in complete:
            return complete
        events = complete.split(b"\n\n")
        for i, event in enumerate(events):
            if self._mark in event and (stamped := await self._stamp(event)) is not None:
                events[i] = stamped
                break
        return b"\n\n".join(events)

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail

    async def _stamp(self, event: bytes) -> bytes | None:
        lines = event.split(b"\n")
        for j, line in enumerate(lines):
            if not line.startswith(b"data:"):
                continue
            try:
                parsed = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return None
            usage = _final_usage(self._endpoint, parsed) if isinstance(parsed, dict) else None
            if usage is None:
                return None
            usage["nometer"] = await self._cost()
            lines[j] = b"data: " + orjson.dumps(parsed)
            return b"\n".join(lines)
        return None
