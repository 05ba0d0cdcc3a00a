"""``create_app(settings)``: the ASGI application, built by a factory, never at import.

Proxied POSTs go straight to the pure-ASGI ``Proxy`` (the hot path: no framework routing or
middleware in between). Everything else (health, models, reports, admin) is a small Starlette app
behind one pure-ASGI middleware that adds ``x-request-id``. The lifespan opens the store, starts
the recorder, managed vLLM servers and the health watcher, and on shutdown drains the recorder.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway import errors
from gateway.accounting.recorder import Recorder
from gateway.accounting.rows import make_finalizer
from gateway.accounting.store import Store, open_store
from gateway.backends import BackendPool, build_backends
from gateway.managed import ManagedServer
from gateway.meter import ShadowMeter
from gateway.metrics import Metrics
from gateway.proxy import Proxy, Receive, Scope, Send
from gateway.routes import core, meter
from gateway.routing import Router
from gateway.runtime import Runtime
from gateway.settings import Settings
from pricing.overrides import apply_overrides
from pricing.store import PriceStore

log = logging.getLogger("nometer")


def _estimate_tokens(text: str) -> int:
    from pricing.tokens import count_text, tokenizer_for

    return count_text(text, tokenizer_for("gpt-4o"))


def price_store(settings: Settings) -> PriceStore:
    directory = settings.meter.price_dir or Path(settings.ledger.path).resolve().parent / "prices"
    return PriceStore(Path(directory))


def build_meter(settings: Settings, prices: PriceStore) -> ShadowMeter:
    """Price with the newest installed table plus config overrides, pinned so receipts can find it."""
    table = prices.current()
    if settings.meter.price_overrides:
        table = apply_overrides(table, settings.meter.price_overrides)
    prices.pin(table)
    return ShadowMeter(settings.meter, table, settings.aliases)


def build_runtime(settings: Settings) -> Runtime:
    router = Router(build_backends(settings), settings.aliases)
    pool = BackendPool(router, settings)
    store: Store = open_store(settings.ledger.path, settings.ledger.url)
    prices = price_store(settings)
    meter = build_meter(settings, prices)
    recorder = Recorder(store, settings.ledger, make_finalizer(_estimate_tokens, meter))
    proxy = Proxy(router, pool, recorder.record, settings)
    log_dir = Path(settings.ledger.path).resolve().parent / "logs"
    managed = [ManagedServer(m, log_dir) for m in settings.managed]
    rt = Runtime(settings, router, pool, store, recorder, proxy, managed, meter, prices)
    rt.metrics = Metrics(lambda: {"inflight": proxy.inflight, "queue_depth": recorder.depth,
                                  "dropped": recorder.dropped, "backends": router.backends})
    recorder.listeners.append(rt.metrics.observe)
    return rt


def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.GatewayError)
    return Response(exc.body(), status_code=exc.status, headers=exc.headers, media_type="application/json")


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    cls = {404: errors.RouteNotFound, 405: errors.MethodNotAllowed}.get(exc.status_code)
    if cls is not None:
        err = cls(f"{request.method} {request.url.path}: {exc.detail}")
        return _gateway_error(request, err)
    return Response(errors.error_body(str(exc.detail), "invalid_request_error", None), status_code=exc.status_code,
                    media_type="application/json")


def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(errors.error_body("internal error in the gateway", "server_error", "internal_error"),
                    status_code=500, media_type="application/json")


class RequestIdMiddleware:
    """Pure ASGI: echo the client's x-request-id (or a new one) on every control-plane response."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = next((v for k, v in scope["headers"] if k == b"x-request-id"), None) or uuid.uuid4().hex.encode()

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class NometerApp:
    """Top-level dispatcher: proxied POSTs to the hot path, the rest to the control app."""

    def __init__(self, runtime: Runtime, control: Starlette):
        self.runtime = runtime
        self.control = control
        self._control = RequestIdMiddleware(control)
        self.proxy = runtime.proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope["path"].startswith("/v1/nometer/"):
            await self.proxy(scope, receive, send)
        else:
            await self._control(scope, receive, send)


def create_app(settings: Settings) -> NometerApp:
    rt = build_runtime(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await rt.store.open()
        rt.recorder.start()
        for m in rt.managed:
            m.start()
        await rt.pool.refresh_all()
        rt.pool.start()
        log.info("nometer ready on %s:%d; backends: %s", settings.server.host, settings.server.port,
                 ", ".join(f"{b.name}({'up' if b.healthy else 'down'})" for b in rt.router.backends) or "none")
        try:
            yield
        finally:
            await rt.pool.stop()
            for m in rt.managed:
                await m.stop()
            await rt.recorder.stop()
            await rt.store.close()
            log.info("nometer stopped; ledger: %d written, %d dropped", rt.recorder.written, rt.recorder.dropped)

    control = Starlette(routes=[*core.routes, *meter.routes], lifespan=lifespan, exception_handlers={
        errors.GatewayError: _gateway_error, HTTPException: _http_error, Exception: _server_error,
    })
    control.state.runtime = rt
    return NometerApp(rt, control)
