"""The hot path: one pure-ASGI handler for every proxied request (POSTs and vLLM's GET routes).

Per request: identify the caller, read the body (bounded), decode its JSON once, admit it (team
policy: a plan that is the local route, or a hosted model and the cause; see ``admission``), pick
a backend, forward, relay the answer as it arrives, and hand exactly one record to the recorder at
the end, whatever the end (done, upstream error, timeout, client gone). Nothing here awaits the
ledger. A hosted plan, or a local connect failure the policy allows to fall back (before any byte
reached the client), is served by ``gateway.http.hosted``.

Requests that name no model (``GET /v1/responses/{id}``, ``POST /v1/responses/{id}/cancel`` with no
body, ``/version``, ``/tokenize`` without ``model``) go to the backend that holds the response
(``gateway.backends.affinity``), else to the backend of the only served model, else (no body at
all) to one of the first served model's backends. On the Anthropic routes (``/v1/messages``...)
the gateway's own errors use Anthropic's envelope.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from adapters.base import UpstreamBrokenStream, UpstreamConnectError, UpstreamResponse, UpstreamTimeout
from gateway import errors
from gateway.backends.affinity import ResponseAffinity, response_id_in, response_id_of_path
from gateway.backends.backend import Backend
from gateway.backends.outlier import EjectionPolicy, RetryBudget
from gateway.backends.pool import BackendPool
from gateway.backends.prefix import prefix_keys, session_key
from gateway.backends.routing import Route, Router
from gateway.http import cost
from gateway.http.request import read_body, request_model
from gateway.http.sse import DONE, UsageChunkFilter, anthropic_error_event, error_event, finished
from gateway.ids import new_id
from gateway.ledger import events as ev
from gateway.ledger.events import RequestRecord
from gateway.logs import REQUEST_ID
from gateway.policy.admission import Gate, Plan
from gateway.settings import FallbackCause, RoutingSettings

log = logging.getLogger("nometer.proxy")

# Endpoints whose streams carry usage only when asked through stream_options.
_STREAM_OPTIONS = frozenset({"/v1/chat/completions", "/v1/completions"})
# Endpoints where a missing `model` is a client error (OpenAI and Anthropic require it).
_MODEL_REQUIRED = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
    }
)
_RESPONSES = "/v1/responses"
_JSON = (b"content-type", b"application/json")
_RECEIPT_ID = b"x-nometer-receipt-id"  # the server's id of the ledger row (request ids are the client's)
# vLLM's GET routes that the gateway forwards (everything else GET is the control app's). These
# server-level ones are probes, not usage: relayed, never recorded. GET /v1/responses/{id} is.
FORWARDED_GET = frozenset({"/version", "/load", "/ping", "/health"})


def forwards_get(path: str) -> bool:
    return path in FORWARDED_GET or path.startswith(_RESPONSES + "/")


def is_probe(scope: Scope) -> bool:
    """A server-level GET (health, version, load): relayed, never recorded, so it gets no receipt id."""
    return scope["method"] == "GET" and scope["path"] in FORWARDED_GET


class ClientGone(Exception):
    """The client disconnected; the relay stops and the upstream connection is dropped."""


@dataclass
class _Watch:
    finished: bool = False
    gone: bool = False


class Proxy:
    def __init__(
        self,
        router: Router,
        pool: BackendPool,
        gate: Gate,
        record: Callable[[RequestRecord], None],
        routing: RoutingSettings,
        max_body_bytes: int,
        *,
        price: cost.Price | None = None,
        response_cost: bool = False,
    ):
        self.router = router
        self.gate = gate
        self.pool = pool
        self.record = record
        self.max_body = max_body_bytes
        self.rename_response = routing.response_model == "requested"
        self.retry = routing.retry_other_backend
        self.affinity = ResponseAffinity()
        self.retry_budget = RetryBudget(routing.retry_budget)
        e = routing.ejection
        self.ejection = EjectionPolicy(e.consecutive_failures, e.base_s, e.max_s)
        self.price = price  # prices a record in-line, for usage.nometer (gateway/http/cost.py)
        self.response_cost = response_cost  # meter.response_cost: answers carry their cost by default
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        rid = tag = run = session = tier = None
        cost_choice: bytes | None = None
        for k, v in headers:
            if k == b"x-request-id":
                rid = v.decode("latin-1")
            elif k.startswith(b"x-nometer-"):
                if k == b"x-nometer-tag":
                    tag = v.decode("latin-1")
                elif k == b"x-nometer-run":
                    run = v.decode("latin-1")[:200] or None
                elif k == b"x-nometer-session":
                    session = v.decode("latin-1")[:200] or None
                elif k == b"x-nometer-cloud-tier":
                    tier = v
                elif k == cost.HEADER:
                    cost_choice = v
        if not rid:
            rid = new_id()
        REQUEST_ID.set(rid)  # log lines from this request carry its id
        path: str = scope["path"]
        anthropic = errors.is_anthropic(path)
        started, t0 = time.time(), time.perf_counter()
        payload: dict[str, Any] | None = None
        ident = None
        model = ""
        pinned: Backend | None = None
        try:
            priced = cost.wanted(cost_choice, self.response_cost) and self.price is not None
            ident = self.gate.identify(headers)  # 401 before the body is even read
            cloud_tier = cloud_tier_of(tier)
            body = await read_body(scope, receive, self.gate.body_limit(ident, self.max_body))
            payload, named = request_model(path, headers, body)
            if named is not None:
                model = named
                pinned = self._previous_response_backend(payload)
            else:
                model, pinned = self._modelless(path, bool(body))
            plan = await self.gate.admit(ident, path, payload, model, pinned)
        except errors.Refusal as exc:  # policy said no: the team's ledger shows it
            rec = RequestRecord(
                rid,
                path,
                model,
                started,
                t0,
                tag=tag,
                run=run,
                session=session,
                request=payload,
                status=exc.status,
                outcome=ev.REFUSED,
                error=exc.message,
                key_id=ident.key_id if ident else None,
                team=ident.team if ident else None,
            )
            await send_error(send, exc, rid, anthropic)
            rec.latency_s = time.perf_counter() - t0
            self.record(rec)
            return
        except errors.GatewayError as exc:
            await send_error(send, exc, rid, anthropic)
            return
        rec = RequestRecord(
            rid,
            path,
            model,
            started,
            t0,
            tag=tag,
            run=run,
            session=session,
            request=payload,
            team=plan.rules.team,
            key_id=ident.key_id if ident else None,
            cloud_tier=cloud_tier,
        )
        self.inflight += 1
        try:
            await self._serve(scope, receive, send, rec, plan, body, payload, pinned, priced)
        finally:
            self.inflight -= 1
            rec.latency_s = time.perf_counter() - t0
            if not is_probe(scope):  # probes are not usage
                self.record(rec)
            if plan.ticket is not None:
                await self.gate.finish(plan, rec)

    def _modelless(self, path: str, has_body: bool) -> tuple[str, Backend | None]:
        """The model (and maybe the backend) for a request that names none (module docstring)."""
        if path in _MODEL_REQUIRED:
            raise errors.MissingModel("you must provide a model parameter", param="model")
        response_id = response_id_of_path(path)
        held = self.affinity.holder(response_id) if response_id else None
        if held is not None:
            return held.served, held.backend
        names = self.router.served_names()
        if len(names) == 1 or (names and not has_body):
            return names[0], None
        if not names:
            raise errors.NoHealthyBackend(
                "No backend serves any model right now.", headers={"retry-after": "5"}
            )
        raise errors.MissingModel("this endpoint needs a `model` to choose a backend", param="model")

    def _previous_response_backend(self, payload: dict[str, Any] | None) -> Backend | None:
        prev = payload.get("previous_response_id") if payload is not None else None
        held = self.affinity.holder(prev) if isinstance(prev, str) else None
        return held.backend if held is not None else None

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rec: RequestRecord,
        plan: Plan,
        body: bytes,
        payload: dict[str, Any] | None,
        pinned: Backend | None,
        priced: bool,
    ) -> None:
        route = plan.route
        client_payload = payload
        rec.served_model = route.served if route is not None else None
        forward_headers: list[tuple[bytes, bytes]] = scope["headers"]
        if payload is not None:
            changed = False
            if route is not None and route.alias:
                payload = {**payload, "model": route.served}
                changed = True
            if payload.get("stream") is True:
                rec.stream = True
                if scope["path"] in _STREAM_OPTIONS:
                    opts = payload.get("stream_options")
                    rec.client_wants_usage = isinstance(opts, dict) and opts.get("include_usage") is True
                    if not rec.client_wants_usage:
                        # ask for the usage chunk only: continuous_usage_stats without include_usage
                        # gives no usage directly, so it must not give usage on every chunk here
                        opts = (
                            {k: v for k, v in opts.items() if k != "continuous_usage_stats"}
                            if isinstance(opts, dict)
                            else {}
                        )
                        opts["include_usage"] = True
                        payload = {**payload, "stream_options": opts}
                        changed = True
                        n = payload.get("n")  # the filter holds the last choice's terminal chunk
                        rec.forced_usage = (
                            n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
                        )
                else:
                    rec.client_wants_usage = True
            if changed:
                body = orjson.dumps(payload)
        watch = _Watch()
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(_watch_disconnect(receive, task, watch))
        resp: UpstreamResponse | None = None
        try:
            if plan.cause is not None or route is None:  # the admit step chose a hosted model
                assert plan.cause is not None and client_payload is not None
                return await self._hosted(send, rec, plan, plan.cause, client_payload, watch)
            try:
                resp, backend, clocks = await self._connect(scope, rec, route, body, forward_headers, pinned)
            except (errors.NoHealthyBackend, errors.UpstreamUnreachable, errors.UpstreamTimedOut):
                # nothing reached the client yet: the policy may still send it to a hosted model
                if client_payload is None or not plan.fallback_after("unavailable", scope["path"]):
                    raise
                return await self._hosted(send, rec, plan, "unavailable", client_payload, watch)
            failed = resp.status >= 500  # for passive ejection (gateway.backends.outlier)
            stamp: cost.CostStamp | None = None
            try:
                rec.status = resp.status
                if resp.status >= 400:
                    rec.outcome = ev.UPSTREAM_ERROR
                rename = (route.requested, route.served) if (route.alias and self.rename_response) else None
                ctype = next((v for k, v in resp.headers if k == b"content-type"), b"")
                remember = (
                    (backend, route.served)
                    if scope["path"] == _RESPONSES and resp.status < 400 and len(self.router.backends) > 1
                    else None
                )
                ids = [(b"x-request-id", rec.request_id.encode())]
                if not is_probe(scope):
                    ids.append((_RECEIPT_ID, rec.uid.encode()))
                if priced and self.price is not None and resp.status < 400 and rec.endpoint in cost.COSTED:

                    def freeze() -> None:  # the busy share the in-line price (and so the row) uses
                        share, energy = backend.snapshot()
                        rec.busy_s = share - clocks[0]
                        if backend.power_w is not None:
                            rec.joules = energy - clocks[1]

                    stamp = cost.CostStamp(rec, self.price, freeze)
                if ctype.startswith(b"text/event-stream"):
                    rec.stream = True
                    await self._relay_stream(send, resp, rec, ids, rename, watch, remember, stamp)
                    failed = failed or rec.outcome == ev.TIMEOUT
                else:
                    await self._relay_body(send, resp, rec, ids, rename, watch, remember, stamp)
            except errors.UpstreamTimedOut:
                failed = True
                raise
            finally:
                if failed:
                    self._failed(backend)
                elif not watch.gone:
                    self.ejection.succeeded(backend)
                share, energy = backend.release()
                if stamp is None or not stamp.done:
                    rec.busy_s = share - clocks[0]
                    if backend.power_w is not None:
                        rec.joules = energy - clocks[1]
        except errors.GatewayError as exc:
            rec.status, rec.error = exc.status, exc.message
            rec.outcome = ev.TIMEOUT if isinstance(exc, errors.UpstreamTimedOut) else ev.UNREACHABLE
            if isinstance(exc, errors.Refusal):
                rec.outcome = ev.REFUSED
            await send_error(send, exc, rec.request_id, errors.is_anthropic(rec.endpoint))
        except asyncio.CancelledError:
            if not watch.gone:
                raise  # server shutdown, not the client
            task.uncancel()
            if resp is not None:
                resp.close()  # drop the upstream connection: vLLM aborts the generation
            # A client that closes right after the last event ([DONE], response.completed,
            # message_stop) while the relay still waits for the upstream's end got everything.
            if not (rec.chunks and finished(rec.chunks)):
                rec.outcome, rec.error = ev.CLIENT_GONE, "client disconnected"
        finally:
            watch.finished = True
            watcher.cancel()

    async def _hosted(
        self,
        send: Send,
        rec: RequestRecord,
        plan: Plan,
        cause: FallbackCause,
        payload: dict[str, Any],
        watch: _Watch,
    ) -> None:
        hosted = self.gate.hosted
        if hosted is None:
            raise errors.FallbackUnavailable("Hosted fallback is not enabled in this gateway.")

        async def send_watched(msg: Message) -> None:
            if msg["type"] == "http.response.body" and not msg.get("more_body", False):
                watch.finished = True  # a client leaving now does not interrupt the settlement
            await send(msg)

        await hosted.serve(send_watched, rec, plan.rules, cause, payload)

    async def _connect(
        self,
        scope: Scope,
        rec: RequestRecord,
        route: Route,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        pinned: Backend | None = None,
    ) -> tuple[UpstreamResponse, Backend, tuple[float, float]]:
        """Send to the least-busy healthy backend (or the one holding the response the request
        names); on a connection failure try the next one."""
        tried: set[Backend] = set()
        path = scope["path"]
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        if pinned is not None and not (pinned.healthy and route.served in pinned.models):
            pinned = None
        keys: list[int] = []
        if pinned is None and self.router.wants_keys(route.served):
            if rec.request is not None:
                keys = prefix_keys(rec.request, self.router.tuning.depth)
            if rec.session is not None:
                keys.append(session_key(rec.session))  # deepest: the session's own backend
        self.retry_budget.request()
        while True:
            if pinned is not None and not tried:
                backend = pinned
            else:
                backend = self.router.pick(route.served, tried, keys)
            rec.backend = backend.name
            clocks = backend.acquire()
            try:
                return await backend.upstream.send(scope["method"], path, body, headers), backend, clocks
            except UpstreamConnectError as exc:
                backend.release()
                self.pool.mark_failed(backend, str(exc))
                self._failed(backend)
                tried.add(backend)
                if (
                    not self.retry
                    or not any(b.healthy and b not in tried for b in self.router.served_by(route.served))
                    or not self.retry_budget.try_retry()
                ):
                    raise errors.UpstreamUnreachable(
                        f"Could not reach a backend for `{route.served}`: {exc}"
                    ) from exc
            except UpstreamTimeout as exc:
                backend.release()
                self._failed(backend)
                raise errors.UpstreamTimedOut(f"Upstream {backend.name} timed out: {exc}") from exc
            except BaseException:
                backend.release()
                raise

    def _failed(self, backend: Backend) -> None:
        if self.ejection.failed(backend):
            log.warning(
                "backend %s ejected for %.0f s after %d failed answers in a row",
                backend.name,
                backend.ejected_until - time.monotonic(),
                self.ejection.consecutive_failures,
            )

    async def _relay_body(
        self,
        send: Send,
        resp: UpstreamResponse,
        rec: RequestRecord,
        ids: list[tuple[bytes, bytes]],  # x-request-id, and x-nometer-receipt-id unless a probe
        rename: tuple[str, str] | None,
        watch: _Watch,
        remember: tuple[Backend, str] | None,
        stamp: cost.CostStamp | None,
    ) -> None:
        try:
            data = await resp.read()
        except UpstreamTimeout as exc:
            raise errors.UpstreamTimedOut(str(exc)) from exc
        except UpstreamBrokenStream as exc:
            raise errors.UpstreamUnreachable(f"upstream closed the connection: {exc}") from exc
        rec.ttft_s = time.perf_counter() - rec.t0
        rec.response = data
        if remember is not None and (response_id := response_id_in(data)) is not None:
            self.affinity.remember(response_id, *remember)
        if rename is not None:
            data = _rename_model(data, rename)
        if stamp is not None:
            data = await stamp.body(data)
        headers = [
            *resp.headers,
            (b"content-length", str(len(data)).encode()),
            *ids,
        ]
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        watch.finished = True
        await send({"type": "http.response.body", "body": data})

    async def _relay_stream(
        self,
        send: Send,
        resp: UpstreamResponse,
        rec: RequestRecord,
        ids: list[tuple[bytes, bytes]],  # x-request-id, and x-nometer-receipt-id unless a probe
        rename: tuple[str, str] | None,
        watch: _Watch,
        remember: tuple[Backend, str] | None,
        stamp: cost.CostStamp | None,
    ) -> None:
        headers = [*resp.headers, *ids]
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        chunks = rec.chunks
        strip = UsageChunkFilter(rec.forced_usage) if rec.forced_usage else None
        try:
            async for data in resp.chunks():
                if rec.ttft_s is None:
                    rec.ttft_s = time.perf_counter() - rec.t0
                    if remember is not None and (response_id := response_id_in(data)) is not None:
                        self.affinity.remember(response_id, *remember)
                chunks.append(data)
                if strip is not None:
                    data = strip.feed(data)
                    if not data:
                        continue
                if rename is not None:
                    data = _rename_model(data, rename)
                if stamp is not None:
                    data = await stamp.chunk(data)
                    if not data:
                        continue
                await send({"type": "http.response.body", "body": data, "more_body": True})
            tail = strip.flush() if strip is not None else b""
            if stamp is not None:
                tail = stamp.flush() + tail
        except (UpstreamTimeout, UpstreamBrokenStream) as exc:
            rec.outcome = ev.TIMEOUT if isinstance(exc, UpstreamTimeout) else ev.UPSTREAM_ERROR
            rec.error = f"upstream failed mid-stream: {exc}"
            code = "upstream_timeout" if isinstance(exc, UpstreamTimeout) else "upstream_stream_broken"
            if errors.is_anthropic(rec.endpoint):
                tail = anthropic_error_event(rec.error)
            else:
                tail = error_event(rec.error, "upstream_error", code)
            if chunks and chunks[-1].endswith(DONE):
                tail = b""
        watch.finished = True
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def _rename_model(data: bytes, rename: tuple[str, str]) -> bytes:
    requested, served = rename
    return data.replace(b'"model":' + orjson.dumps(served), b'"model":' + orjson.dumps(requested))


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], watch: _Watch) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            if not watch.finished:
                watch.gone = True
                task.cancel()
            return


CLOUD_TIERS = {b"standard": "standard", b"batch": "batch", b"flex": "flex"}


def cloud_tier_of(value: bytes | None) -> str:
    """``X-Nometer-Cloud-Tier``: which cloud service tier the shadow meter compares this request
    with (absent: standard). Anything else is the caller's mistake: a 400, before any usage record."""
    if value is None:
        return "standard"
    tier = CLOUD_TIERS.get(value.strip().lower())
    if tier is None:
        raise errors.InvalidRequest(
            "X-Nometer-Cloud-Tier must be one of standard, batch, flex", param="x-nometer-cloud-tier"
        )
    return tier


async def send_error(send: Send, exc: errors.GatewayError, request_id: str, anthropic: bool = False) -> None:
    body = exc.anthropic_body() if anthropic else exc.body()
    headers = [_JSON, (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id.encode())]
    headers += [(k.encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
