"""``create_app(settings)``: the ASGI application, built by a factory, never at import.

Proxied POSTs go straight to the pure-ASGI ``Proxy`` (the hot path: no framework routing or
middleware in between). Everything else (health, models, reports, admin) is a small Starlette app
behind one pure-ASGI middleware that adds ``x-request-id``. The lifespan opens the store, starts
the recorder, managed vLLM servers and the health watcher, and on shutdown drains the recorder.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import errors
from gateway.backends.energy import EnergySampler, nvml_reader
from gateway.backends.managed import ManagedServer
from gateway.backends.pool import BackendPool, build_backends
from gateway.backends.routing import Router
from gateway.http.boundary import ErrorBoundary, hold
from gateway.http.guard import browser_guard
from gateway.http.middleware import RequestIdMiddleware
from gateway.http.proxy import Proxy, forwards_get, send_error
from gateway.ids import new_id
from gateway.ledger import signing
from gateway.ledger.events import RequestRecord
from gateway.ledger.factory import open_store
from gateway.ledger.recorder import Recorder
from gateway.meter.rows import estimate_prompt_tokens, make_finalizer, make_measure, make_pricer
from gateway.meter.shadow import ShadowMeter
from gateway.meter.tables import pinned_table, price_dir
from gateway.meter.worker import MeterConfig, MeterPool
from gateway.metrics import Metrics
from gateway.policy import auth
from gateway.policy.admission import HostedService
from gateway.policy.budget import Budgets
from gateway.policy.governance import Governance
from gateway.routes import admin, core, dashboard, meter
from gateway.runtime import Runtime
from gateway.settings import Settings
from pricing.store import PriceStore
from pricing.tables import PriceTable

log = logging.getLogger("nometer")


def hosted_path(budgets: Budgets, table: PriceTable) -> HostedService:
    """The hosted path, built when a policy first falls back (imported only then; litellm itself
    is imported later still, off the event loop, when the gateway starts)."""
    from adapters.hosted import HostedUpstream
    from gateway.http.hosted import HostedPath

    return HostedPath(HostedUpstream(), budgets, table)


def build_runtime(settings: Settings) -> Runtime:
    log_dir = Path(settings.ledger.path).resolve().parent / "logs"
    managed = [ManagedServer(m, log_dir) for m in settings.managed]
    backends = build_backends(
        settings.backends, managed, settings.timeouts, settings.routing.max_connections_per_backend
    )
    router = Router(backends, settings.aliases, settings.routing)
    pool = BackendPool(router, settings.timeouts, settings.routing)
    store = open_store(settings.ledger)
    prices = PriceStore(price_dir(settings.meter.price_dir, settings.ledger.path))
    meter = ShadowMeter(
        settings.meter, pinned_table(prices, settings.meter.price_overrides), settings.aliases
    )
    process = None
    if settings.ledger.meter_process:
        process = MeterPool(
            MeterConfig(
                settings.meter,
                settings.aliases,
                prices.directory,
                meter.table.id,
                settings.server.log_level,
                settings.server.access_log,
                settings.server.log_format,
            )
        )
    recorder = Recorder(
        store,
        settings.ledger,
        make_finalizer(estimate_prompt_tokens, meter),
        access_log=settings.server.access_log,
        pool=process,
    )
    governance = Governance(settings, router, pool, meter.table, hosted_path)
    pricer = make_pricer(make_measure(estimate_prompt_tokens, meter))

    async def price(rec: RequestRecord) -> dict[str, Any]:  # usage.nometer, off the event loop
        return await asyncio.to_thread(pricer, rec)

    proxy = Proxy(  # its records wait for the error boundary (NometerApp) to pass them on
        router,
        pool,
        governance.gate,
        hold(recorder.record),
        settings.routing,
        settings.server.max_body_bytes,
        price=price,
        response_cost=settings.meter.response_cost,
    )

    def label_names() -> tuple[set[str], frozenset[str]]:
        """What metrics may label with (read per written batch, in the recorder's thread; every
        structure read here is swapped whole on change, never mutated)."""
        book = governance.book
        models = set(router.model_names()) | set(router.aliases) | set(router.aliases.values())
        models.update(book.hosted.models)
        for rules in (book.default, *book.teams.values()):
            models.update(rules.policy.fallback.models)
        return models, frozenset(book.teams) | governance.auth.ring.teams

    metrics = Metrics(
        lambda: {
            "inflight": proxy.inflight,
            "ledger": recorder.state(),
            "backends": router.backends,
            "policy_failures": governance.failures(),
        },
        label_names,
    )
    recorder.listeners.append(metrics.observe)
    return Runtime(
        settings, router, pool, store, recorder, proxy, meter, prices, metrics, governance, managed
    )


def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.GatewayError)
    return Response(exc.body(), status_code=exc.status, headers=exc.headers, media_type="application/json")


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    cls = {404: errors.RouteNotFound, 405: errors.MethodNotAllowed}.get(exc.status_code)
    if cls is not None:
        err = cls(f"{request.method} {request.url.path}: {exc.detail}")
        return _gateway_error(request, err)
    return Response(
        errors.error_body(str(exc.detail), "invalid_request_error", None),
        status_code=exc.status_code,
        media_type="application/json",
    )


def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        errors.error_body("internal error in the gateway", "server_error", "internal_error"),
        status_code=500,
        media_type="application/json",
    )


class NometerApp:
    """Top-level dispatcher: proxied POSTs and vLLM's GET routes (``/v1/responses/{id}``,
    ``/version``, ``/load``, ``/ping``, ``/health``) to the hot path (which identifies its own
    callers), the rest to the control app, with the caller's identity in
    ``scope["nometer.identity"]`` for ``/v1/`` routes (401 in keys mode without a valid key; see
    ``gateway.policy.auth``)."""

    def __init__(self, runtime: Runtime, control: Starlette):
        self.runtime = runtime
        self.control = control
        self._control = RequestIdMiddleware(control)
        # the hot path, inside its error boundary: whatever escapes the proxy still gets an
        # OpenAI-shaped answer and one ledger row (gateway.http.boundary)
        self.proxy = ErrorBoundary(runtime.proxy, runtime.recorder.record, runtime.governance.gate.identify)
        self.auth = runtime.governance.auth
        self._entry = browser_guard(self._dispatch, runtime.settings.server, self.auth.mode)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] == "http"
            and path.startswith("/")  # origin-form only: "POST *" is the control app's 404, never relayed
            and (
                (scope["method"] == "POST" and not path.startswith("/v1/nometer/"))
                or (scope["method"] == "GET" and forwards_get(path))
            )
        ):
            await self.proxy(scope, receive, send)
        else:
            if scope["type"] == "http" and scope["path"].startswith("/v1/"):
                # the caller, for the control routes (reports, receipts, usage, admin): see gateway.policy.auth
                try:
                    ident = self.auth.identify(scope["headers"])
                except errors.GatewayError as exc:
                    await send_error(send, exc, new_id())
                    return
                if ident is not None:
                    scope[auth.SCOPE_KEY] = ident
            await self._control(scope, receive, send)


def _on_sighup(gov: Governance) -> None:
    """SIGHUP reloads the policy (only where signals can be handled: the main thread)."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()  # a reference per task, so none is collected mid-run

    def reload() -> None:
        async def run() -> None:
            try:
                await gov.reload()
            except (ValueError, OSError) as exc:
                log.error("policy NOT reloaded (the running policy stays): %s", exc)

        task = loop.create_task(run())
        pending.add(task)
        task.add_done_callback(pending.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        pass  # not the main thread (tests), or no SIGHUP (Windows): the admin API still reloads


async def _announce_ready(rt: Runtime) -> None:
    """Log "ready" when a backend can serve, not when the socket opens: a managed vLLM takes
    minutes to load, and until then every model request gets 503."""
    server = rt.settings.server
    where = f"http://{server.host}:{server.port}/v1"
    backends = rt.router.backends
    if not backends:
        log.warning(
            "nometer on %s has no backend: every model request gets 503. Give --backend URL, "
            "list backends in the config, or run the CPU demo with --demo",
            where,
        )
        return
    if not rt.pool.serving.is_set():
        log.info(
            "nometer listening on %s; not ready until a backend is healthy: %s",
            where,
            "; ".join(f"{b.name}: {b.last_error or 'not checked yet'}" for b in backends),
        )
    await rt.pool.serving.wait()
    models = sorted({m for b in backends if b.healthy for m in b.models})
    aliases = sorted(f"{a} -> {t}" for a, t in rt.router.aliases.items() if t in models)
    log.info(
        "nometer ready on %s (the OpenAI base_url); models: %s%s",
        where,
        ", ".join(models) or "none yet",
        f"; aliases: {', '.join(aliases)}" if aliases else "",
    )


def create_app(settings: Settings) -> NometerApp:
    rt = build_runtime(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await rt.store.open()
        try:  # the key that signs `nometer statement`s, beside the ledger (made once)
            await asyncio.to_thread(signing.ensure_key, signing.key_path(settings.ledger))
        except (OSError, signing.SigningKeyError) as exc:
            log.error("no statement signing key (statements cannot be signed): %s", exc)
        await rt.governance.start(rt.store)
        _on_sighup(rt.governance)
        await rt.recorder.warm()  # tokenizers loaded before the first request, not after it
        rt.recorder.start()
        for m in rt.managed:
            m.start()
        await rt.pool.refresh_all()
        if rt.pool.scraping:
            await rt.pool.scrape_all()
        rt.pool.start()
        sampler = None
        local = [b for b in rt.router.backends if b.local]
        if settings.meter.box.nvml and local and (reader := nvml_reader()) is not None:
            sampler = EnergySampler(local, reader)
            sampler.start()
        announce = asyncio.create_task(_announce_ready(rt), name="nometer-ready")
        try:
            yield
        finally:
            try:
                announce.cancel()
                if sampler is not None:
                    await sampler.stop()
                await rt.pool.stop()
                for m in rt.managed:
                    await m.stop()
                await rt.recorder.stop()
                await rt.governance.stop()
            finally:  # even on a forced exit: aiosqlite's thread would keep the process alive
                await rt.store.close()
            log.info(
                "nometer stopped; ledger: %d written, %d still in the spool, %d dropped",
                rt.recorder.written,
                rt.recorder.state()["spool_batches"],
                rt.recorder.dropped,
            )

    control = Starlette(
        routes=[*core.routes, *meter.routes, *admin.routes, *dashboard.routes],
        lifespan=lifespan,
        exception_handlers={
            errors.GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    control.state.runtime = rt
    return NometerApp(rt, control)
