"""The HTTP/1.1 connection: uvicorn's httptools protocol with what one connection may cost bounded.

Before a request reaches the application (so before any key is checked) a client could otherwise
make the gateway spend unbounded CPU and file descriptors: httptools joins the pieces of a header
value as they arrive (quadratic in its size: a 64 MiB header cost 8 s of event loop), uvicorn
limits neither the head's size nor its number of headers, has no timeout before the first request
of a connection, and no cap on connections. This subclass of ``HttpToolsProtocol`` adds:

- a head limit (request line and headers, ``server.max_header_bytes``; a longer URL alone: 414)
  and a header-count limit (``server.max_headers``): 431, decided while the head is arriving.
  The first piece of a head goes to the parser at once (a one-packet request costs nothing more);
  the rest is gathered here (linear) and parsed in one go when the blank line that ends the head
  arrives, so the parser sees at most two pieces of any header;
- a head deadline (``server.header_timeout_s``): a head must be complete that long after its
  first byte (408, slowloris), and a new connection must start its first request within it (a
  silent close; between requests, uvicorn's keep-alive timeout closes idle connections);
- a body silence limit (``server.body_timeout_s``): 408, and the application sees a disconnect;
- a connection cap (``server.max_connections``, by default half of what the open-files limit
  leaves after a reserve): at the cap the longest-idle connection (no request in progress) is
  closed to admit the new one; with none idle the newcomer gets 503. So idle connections can
  never starve the file descriptors that requests, the ledger and upstreams need;
- OpenAI-shaped JSON for every answer the protocol itself gives (uvicorn's are ``text/plain``):
  the refusals above, malformed HTTP (400), and the last-resort 500 should the application raise
  before answering;
- no protocol upgrade (no websockets here): an ``Upgrade`` request is served as plain HTTP with
  no body (the parser stops at its head), and the connection closes after the answer.

The timers are one sweep per server, a few times a second over its connections, not a timer per
request. A refused connection is half-closed after the answer and drained for ``_LINGER_S``, so
the client reads the answer instead of a reset.

Tested against uvicorn 0.54 (``tests/unit/gateway/http/test_protocol.py`` pins the hooks used).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from gateway import errors
from gateway.settings import ServerSettings

log = logging.getLogger("nometer.http")

FD_RESERVE = 128  # file descriptors kept for the ledger, logs, the meter process, health checks
_END_OF_HEAD = b"\r\n\r\n"  # llhttp accepts no bare-LF heads, so this is the only way one ends
_LINGER_S = 2.0  # how long a refused connection is drained before it is closed
_HEAD, _BODY = 0, 1


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ConnectionLimits:
        cap = server.max_connections
        if cap is None:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            cap = max(16, (soft - FD_RESERVE) // 2)
        return cls(
            server.max_header_bytes, server.max_headers, server.header_timeout_s, server.body_timeout_s, cap
        )

    @property
    def sweep_s(self) -> float:
        return max(0.05, min(1.0, self.header_timeout_s / 4, self.body_timeout_s / 4))


def raise_open_files_limit() -> int:
    """Raise this process's soft open-files limit to its hard limit (systemd's default soft limit
    is 1024); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    return soft


def _why(exc: Exception, cause: BaseException | None) -> str:
    if isinstance(exc, httptools.HttpParserCallbackError):  # uvicorn could not read the request line
        if isinstance(cause, UnicodeError):
            return "the request target must be ASCII (percent-encode it)"
        return "the request target is not a path"
    return str(exc) or "malformed request"


class _Connections:
    """What the connections of one server share: which may be closed first, and the sweep."""

    def __init__(self, limits: ConnectionLimits):
        self.limits = limits
        self.live: set[GuardedHttpToolsProtocol] = set()
        self.idle: dict[GuardedHttpToolsProtocol, None] = {}  # no request in progress; oldest first
        self._timer: asyncio.TimerHandle | None = None
        self.evicted = 0

    def add(self, conn: GuardedHttpToolsProtocol) -> bool:
        """Admit a new connection; False when it must be refused (at the cap, nothing idle)."""
        self.live.add(conn)
        self.idle[conn] = None
        if self._timer is None:
            self._timer = conn.loop.call_later(self.limits.sweep_s, self._sweep, conn.loop)
        if len(self.live) <= self.limits.max_connections:
            return True
        for old in self.idle:
            if old is not conn:
                self.drop(old)
                old.transport.close()
                self.evicted += 1
                return True
        return False

    def drop(self, conn: GuardedHttpToolsProtocol) -> None:
        self.live.discard(conn)
        self.idle.pop(conn, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn in list(self.live):
            conn.check_deadlines(now, self.limits)
        self._timer = loop.call_later(self.limits.sweep_s, self._sweep, loop) if self.live else None


class _JsonCycle(RequestResponseCycle):
    async def send_500_response(self) -> None:
        body = errors.error_body("internal error in the gateway", "server_error", "internal_error")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Configured per server by ``protocol_class`` (the limits and the shared state are class
    attributes, since uvicorn builds one protocol per connection from the class alone)."""

    limits: ClassVar[ConnectionLimits]
    registry: ClassVar[_Connections]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._phase = _HEAD
        self._since = 0.0  # start of the current wait: for a head, or for the next body piece
        self._begun = False  # the parser is inside a head
        self._pending: bytearray | None = None  # the rest of a head arriving in pieces
        self._tail = b""  # the last bytes parsed before _pending
        self._parsed = 0  # bytes of the current head already parsed (before _pending)
        self._head_bytes = 0  # headers parsed so far, as the parser reported them
        self._header_count = 0
        self._completed = False  # a message completed during the current feed
        self._lingering = False
        self._served = False  # a response was completed on this connection

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        if not self.registry.add(self):
            busy = errors.TooManyConnections("The gateway is at its connection limit; retry shortly.")
            self._refuse(busy, linger=False)  # a flood of these must not hold descriptors

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.drop(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # a refused connection: drained, never parsed
        self._unset_keepalive_if_required()
        pending = self._pending
        if pending is not None:
            seen = len(pending)
            pending += data
            if pending.find(_END_OF_HEAD, max(seen - 3, 0)) < 0 and (
                seen >= 3 or (self._tail + pending[:3]).find(_END_OF_HEAD) < 0
            ):
                if self._parsed + len(pending) > self.limits.max_header_bytes:
                    self._too_large()
                return
            self._pending = None
            data = bytes(pending)
        self._completed = False
        self._feed(data)
        if self._phase == _HEAD and self._begun and not self._lingering and not self.transport.is_closing():
            # a head is still incomplete: its first piece was parsed; gather the rest here
            self._parsed = 0 if self._completed else len(data)
            if self._parsed > self.limits.max_header_bytes:
                self._too_large()
            else:
                self._pending = bytearray()
                self._tail = data[-3:]  # so a blank line split across two pieces is still found

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._no_upgrade()
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, errors.GatewayError):  # one of the limits below, from a callback
                self._refuse(cause)
            else:
                log.debug("malformed request: %s (%r)", exc, cause)
                self._refuse(errors.InvalidRequest(f"Invalid HTTP request: {_why(exc, cause)}"))

    def _no_upgrade(self) -> None:
        cycle = self.cycle
        self._phase, self._begun = _HEAD, False
        if cycle is None or cycle.response_complete:
            return
        cycle.keep_alive = False  # the parser will read nothing more on this connection
        cycle.more_body = False
        cycle.message_event.set()

    def _too_large(self) -> None:
        limit = self.limits.max_header_bytes
        self._refuse(errors.HeadersTooLarge(f"The request head exceeds the limit of {limit} bytes."))

    def _refuse(self, exc: errors.GatewayError, *, linger: bool = True) -> None:
        """Answer with the OpenAI envelope, half-close, and drain until the client leaves (or
        ``_LINGER_S``): closing at once with unread data would reset the connection, and the
        client might never read the answer."""
        transport = self.transport
        if self._lingering or transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # the application is answering: closing is all that is left
                transport.close()
                return
            cycle.disconnected = True  # whatever the application still sends goes nowhere
            cycle.message_event.set()
        body = exc.body()
        head = [STATUS_LINE[exc.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        transport.write(b"".join(head) + body)
        self._pending = None
        if not linger or not transport.can_write_eof():
            self.registry.drop(self)
            transport.close()
            return
        self._lingering, self._since = True, self.loop.time()
        self.registry.idle.pop(self, None)
        self.registry.idle[self] = None  # the first to go should the cap be reached
        self.flow.resume_reading()
        transport.write_eof()

    def check_deadlines(self, now: float, limits: ConnectionLimits) -> None:
        """Called by the sweep: close what has waited too long."""
        if self._lingering:
            if now - self._since > _LINGER_S:
                self.transport.close()
        elif self._phase == _BODY:
            if not self.flow.read_paused and now - self._since > limits.body_timeout_s:
                self._refuse(
                    errors.RequestTimedOut(f"No part of the request body came for {limits.body_timeout_s} s.")
                )
        elif (
            self.cycle is None or self.cycle.response_complete
        ) and now - self._since > limits.header_timeout_s:
            if self._begun or self._pending is not None:
                self._refuse(
                    errors.RequestTimedOut(
                        f"The request head did not arrive within {limits.header_timeout_s} s."
                    )
                )
            elif not self._served:  # an idle keep-alive connection is uvicorn's timer's to close
                self.registry.drop(self)
                self.transport.close()

    # -- parser callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun, self._since = True, self.loop.time()  # the head's deadline runs from its first byte
        self._head_bytes = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_header_bytes:
            raise errors.UriTooLong(f"The request URL exceeds {self.limits.max_header_bytes} bytes.")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._header_count > self.limits.max_headers:
            raise errors.HeadersTooLarge(f"The request has more than {self.limits.max_headers} headers.")
        if self._head_bytes + len(self.url) > self.limits.max_header_bytes:
            raise errors.HeadersTooLarge(
                f"The request head exceeds the limit of {self.limits.max_header_bytes} bytes."
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._phase, self._begun = _BODY, False
        self._since = self.loop.time()
        self.registry.idle.pop(self, None)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._since = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._phase, self._completed = _HEAD, True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        idle = not self.pipeline
        super().on_response_complete()
        self._served = True
        if idle and not self.transport.is_closing():
            self._since = self.loop.time()
            self.registry.idle[self] = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        cycle.__class__ = _JsonCycle  # the same cycle, with a JSON last-resort 500
        super()._start_asgi_task(cycle, app)


def protocol_class(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for one server: its limits, and its own connection registry."""

    class Protocol(GuardedHttpToolsProtocol):
        pass

    Protocol.limits = limits
    Protocol.registry = _Connections(limits)
    return Protocol


def server_options(server: ServerSettings) -> dict[str, Any]:
    """The uvicorn settings that go with this protocol (for ``uvicorn.run`` / ``uvicorn.Config``)."""
    return {
        "http": protocol_class(ConnectionLimits.from_settings(server)),
        "ws": "none",
        "timeout_keep_alive": server.keepalive_timeout_s,
    }
