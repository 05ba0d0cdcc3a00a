"""Pure-ASGI middleware for the control routes (never on the proxied hot path)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.ids import new_id
from gateway.logs import REQUEST_ID


class RequestIdMiddleware:
    """Pure ASGI: echo the client's x-request-id (or a new one) on every control-plane response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = next((v for k, v in scope["headers"] if k == b"x-request-id"), None) or new_id().encode()
        REQUEST_ID.set(rid.decode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        await self.app(scope, receive, send_with_id)
