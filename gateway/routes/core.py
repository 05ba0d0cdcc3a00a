"""Control-plane routes: health, readiness, and the model list (OpenAI's list shape)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import errors
from gateway.policy.auth import identity
from gateway.runtime import Runtime, json_response

_CREATED = int(time.time())


def _backend_view(rt: Runtime) -> list[dict[str, object]]:
    now = time.monotonic()
    return [
        {
            "name": b.name,
            "healthy": b.healthy,
            "models": sorted(b.models),
            "outstanding": b.outstanding,
            "managed": b.managed,
            "error": b.last_error,
            # from the backend's /metrics (None: not read, or not vLLM)
            "running": b.running,
            "waiting": b.waiting,
            "kv_cache_usage": b.kv_cache_usage,
            "prefix_hit_rate": b.hit_rate,
            "ejected_s": round(b.ejected_until - now, 1) if b.ejected_until > now else 0,
        }
        for b in rt.router.backends
    ]


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready: some backend is healthy and, in keys mode, the API keys are being re-read (a
    replica that cannot re-read them may be honouring a revoked key, or refusing every key).
    ``ledger`` tells where usage records stand: queue depth, the spool (batches waiting for the
    store, overflowed requests, bytes) and whether a replay is pending."""
    rt: Runtime = request.app.state.runtime
    backends = _backend_view(rt)
    keys = rt.governance.keys_health()
    reason = None
    if not any(b.healthy for b in rt.router.backends):
        reason = "no backend configured" if not backends else "no healthy backend"
    elif not keys["fresh"] and rt.governance.auth.mode == "keys":
        reason = "API keys cannot be re-read from the ledger database"
    ledger = rt.recorder.state()  # detail only: a store outage is spooled, requests still served
    if reason is None:
        return json_response({"status": "ready", "backends": backends, "keys": keys, "ledger": ledger})
    return json_response(
        {"status": "unavailable", "reason": reason, "backends": backends, "keys": keys, "ledger": ledger},
        status=503,
        headers={"retry-after": "5"},
    )


def _model_entries(rt: Runtime) -> list[dict[str, object]]:
    """Each served model's entry as its first backend lists it (vLLM's ``max_model_len``, ``root``,
    ``parent``, ``permission``, ``owned_by`` kept), then one entry per alias."""
    owners: dict[str, str] = {}
    cards: dict[str, dict[str, object]] = {}
    for b in rt.router.backends:
        for m in b.models:
            owners.setdefault(m, b.name)
            if m in b.cards:
                cards.setdefault(m, b.cards[m])
    out: list[dict[str, object]] = [
        cards.get(m) or {"id": m, "object": "model", "created": _CREATED, "owned_by": owner}
        for m, owner in sorted(owners.items())
    ]
    for alias, target in sorted(rt.router.aliases.items()):
        if target in owners and alias not in owners:
            out.append(
                {"id": alias, "object": "model", "created": _CREATED, "owned_by": "nometer", "root": target}
            )
    return out


def _visible(request: Request, entries: list[dict[str, object]]) -> list[dict[str, object]]:
    """A team key sees only the models its team's policy allows (admin and open mode: all)."""
    rt: Runtime = request.app.state.runtime
    ident = identity(request)
    if ident is None or ident.is_admin:
        return entries
    rules = rt.governance.gate.book.rules(ident.team)
    return [m for m in entries if rules.allows(str(m["id"]))]


async def list_models(request: Request) -> Response:
    entries = _visible(request, _model_entries(request.app.state.runtime))
    return json_response({"object": "list", "data": entries})


async def get_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    for m in _visible(request, _model_entries(request.app.state.runtime)):
        if m["id"] == model_id:
            return json_response(m)
    raise errors.ModelNotFound(f"The model `{model_id}` does not exist.", param="model")


async def metrics(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


routes = [
    Route("/metrics", metrics),
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/v1/models", list_models),
    Route("/v1/models/{model_id:path}", get_model),
]
