"""The hot path's last line of defence: whatever escapes the proxy still gets an OpenAI-shaped
answer and exactly one ledger row.

The proxy handles every failure it knows (refusals, upstream errors and timeouts, a client that
left). ``ErrorBoundary`` wraps it and catches the rest: a bug, or a foreign exception nobody
translated. The client never sees a plain-text 500 or a traceback:

* nothing sent yet: the error's envelope (a ``GatewayError`` that escaped keeps its own status;
  anything else is 500 ``internal_error``), with ``x-request-id``; Anthropic's envelope on the
  Anthropic routes;
* an event stream already started: ``data: {"error": ...}`` then ``data: [DONE]``, in-band (an
  ``event: error`` on the Anthropic routes);
* another body already started: the body is ended there (the client sees it cut short).

The failure is logged with the request id and the traceback. The ledger: the proxy hands its
record to the callback made by ``hold``, which, inside a boundary, keeps it until the request ends;
the boundary then passes it on, marked ``outcome=gateway_error`` when the request failed here.
When the failure came before the proxy made a record, the boundary makes one (request id,
endpoint, the caller's key and team, and the body's model when it can be read).

Cost per request: one context variable set and reset, and a small closure around ``send`` and
``receive`` (an attribute test per message); nothing is parsed unless a request failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextvars import ContextVar

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import errors
from gateway.http.sse import anthropic_error_event, error_event
from gateway.ids import new_id
from gateway.ledger import events as ev
from gateway.ledger.events import RequestRecord
from gateway.logs import REQUEST_ID
from gateway.policy.auth import Identity

Record = Callable[[RequestRecord], None]

log = logging.getLogger("nometer.proxy")
_MESSAGE = "The gateway failed while handling this request (internal error, logged under its x-request-id)."


class ResponseAlreadyStarted(RuntimeError):
    """The app tried to start a second response (an error after the first byte was sent)."""


class _Held:
    """One request's state as the boundary sees it (a plain class: cheaper to make than a dataclass)."""

    __slots__ = ("body", "ended", "rec", "sse", "started", "status")

    def __init__(self) -> None:
        self.rec: RequestRecord | None = None
        self.started = self.ended = self.sse = False
        self.status = 0
        self.body: list[bytes] = []  # references to the request body's chunks


_HELD: ContextVar[_Held | None] = ContextVar("nometer_boundary", default=None)


def hold(record: Record) -> Record:
    """The proxy's record callback: inside a boundary the record waits for the request's end
    (so a failure can still mark it); outside one (a proxy used on its own) it goes at once."""

    def held(rec: RequestRecord) -> None:
        h = _HELD.get()
        if h is None:
            record(rec)
        else:
            h.rec = rec

    return held


class ErrorBoundary:
    def __init__(
        self, app: ASGIApp, record: Record, identify: Callable[[list[tuple[bytes, bytes]]], Identity | None]
    ):
        self.app = app
        self._record = record
        self._identify = identify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        h = _Held()
        token = _HELD.set(h)
        t0 = time.perf_counter()

        async def tracked_receive() -> Message:
            msg = await receive()
            chunk = msg.get("body")
            if chunk:
                h.body.append(chunk)
            return msg

        async def tracked_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                if h.started:
                    raise ResponseAlreadyStarted("a second http.response.start after the response began")
                h.started, h.status = True, msg["status"]
                for k, v in msg.get("headers", ()):
                    if k == b"content-type":
                        h.sse = v.startswith(b"text/event-stream")
            elif not msg.get("more_body", False):
                h.ended = True
            await send(msg)

        try:
            await self.app(scope, tracked_receive, tracked_send)
        except Exception as exc:  # the boundary: nothing escapes to the server as a plain 500
            await self._fail(scope, h, exc, send, t0)
        finally:
            _HELD.reset(token)
            if h.rec is not None:
                self._record(h.rec)

    async def _fail(self, scope: Scope, h: _Held, exc: Exception, send: Send, t0: float) -> None:
        rec = h.rec or self._new_record(scope, h, t0)
        err = exc if isinstance(exc, errors.GatewayError) else errors.GatewayError(_MESSAGE)
        log.error(
            "gateway error on %s %s: %s: %s",
            scope.get("method"),
            scope.get("path"),
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra={"request_id": rec.request_id},
        )
        rec.outcome = ev.GATEWAY_ERROR
        rec.status = h.status if h.started else err.status
        rec.error = f"gateway error: {type(exc).__name__}: {exc}"[:1000]
        if rec.latency_s is None:
            rec.latency_s = time.perf_counter() - t0
        h.rec = rec
        anthropic = errors.is_anthropic(scope.get("path", ""))
        try:
            if not h.started:
                await _send_envelope(send, err, rec.request_id, anthropic)
            elif not h.ended:
                tail = b""
                if h.sse:
                    tail = (
                        anthropic_error_event(err.message)
                        if anthropic
                        else error_event(err.message, err.type, err.code)
                    )
                await send({"type": "http.response.body", "body": tail, "more_body": False})
        except Exception:  # the client is gone as well: nothing more to tell it
            pass

    def _new_record(self, scope: Scope, h: _Held, t0: float) -> RequestRecord:
        """The failure came before the proxy made its record: make one from what is known."""
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        rid = REQUEST_ID.get() or next(
            (v.decode("latin-1") for k, v in headers if k == b"x-request-id"), None
        )
        ident: Identity | None = None
        try:
            ident = self._identify(headers)
        except Exception:  # no valid key (or worse): the row has no team
            pass
        elapsed = time.perf_counter() - t0
        return RequestRecord(
            rid or new_id(),
            scope.get("path", ""),
            _model_of(h.body),
            time.time() - elapsed,
            t0,
            key_id=ident.key_id if ident else None,
            team=ident.team if ident else None,
        )


def _model_of(chunks: list[bytes]) -> str:
    """The body's ``model``, best effort (only ever called for a failed request)."""
    try:
        payload = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        return ""
    model = payload.get("model") if isinstance(payload, dict) else None
    return model[:200] if isinstance(model, str) else ""


async def _send_envelope(send: Send, err: errors.GatewayError, request_id: str, anthropic: bool) -> None:
    body = err.anthropic_body() if anthropic else err.body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode("latin-1", "replace")),
        *((k.encode(), v.encode()) for k, v in err.headers.items()),
    ]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
