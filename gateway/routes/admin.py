"""Admin API (admin key only): keys and policy reload. And ``/v1/nometer/usage`` for any caller.

GET  /v1/nometer/admin/keys[?team=T]          list keys (never the key itself)
POST /v1/nometer/admin/keys                   {"team": T, "name": N} -> the key, shown once
POST /v1/nometer/admin/keys/{id}/disable      stops working at once
POST /v1/nometer/admin/keys/{id}/rotate       {"grace_s": 0} -> a new key; the old one stops
POST /v1/nometer/admin/reload                 re-read the config file's policy
GET  /v1/nometer/admin/teams                  policy and budget state per team
GET  /v1/nometer/usage[?limit=&team=]         the caller's team's recent ledger rows
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import errors
from gateway.http.request import json_object
from gateway.ledger.keystore import KeyNotFound
from gateway.policy.auth import identity, require_admin, visible_team
from gateway.policy.governance import Governance
from gateway.runtime import Runtime, json_response

_MAX_GRACE_S = 366 * 86400  # a rotated key's old secret works at most a year more

_USAGE_COLUMNS = (
    "request_id",
    "uid AS receipt_id",
    "ts",
    "endpoint",
    "requested_model",
    "served_model",
    "route",
    "provider",
    "fallback_cause",
    "outcome",
    "status",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "usage_source",
    "latency_ms",
    "key_id",
    "team",
    "tag",
    "hosted_cost_pusd",
)


def _gov(request: Request) -> Governance:
    rt: Runtime = request.app.state.runtime
    return rt.governance


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    return json_object(raw)


async def list_keys(request: Request) -> Response:
    require_admin(request)
    team = request.query_params.get("team")
    keys = await asyncio.to_thread(_gov(request).keys.list, team)
    return json_response({"object": "list", "data": [k.public() for k in keys]})


async def create_key(request: Request) -> Response:
    require_admin(request)
    body = await _body(request)
    team, name = body.get("team"), body.get("name")
    if not isinstance(team, str) or not team:
        raise errors.InvalidRequest("`team` is required", param="team")
    if name is not None and not isinstance(name, str):
        raise errors.InvalidRequest("`name` must be a string", param="name")
    gov = _gov(request)
    secret, rec = await asyncio.to_thread(gov.keys.create, team, name)
    await gov.refresh_keys()
    return json_response({"key": secret, **rec.public()}, status=201)


async def disable_key(request: Request) -> Response:
    require_admin(request)
    gov = _gov(request)
    try:
        rec = await asyncio.to_thread(gov.keys.disable, request.path_params["key_id"])
    except KeyNotFound:
        raise errors.RouteNotFound(f"No key `{request.path_params['key_id']}`.") from None
    await gov.refresh_keys()  # before answering: the key stops working at once
    return json_response(rec.public())


async def rotate_key(request: Request) -> Response:
    require_admin(request)
    grace = (await _body(request)).get("grace_s", 0)
    if not isinstance(grace, int | float) or isinstance(grace, bool) or not 0 <= grace <= _MAX_GRACE_S:
        raise errors.InvalidRequest(
            f"`grace_s` must be a number of seconds from 0 to {_MAX_GRACE_S}", param="grace_s"
        )
    gov = _gov(request)
    try:
        secret, rec = await asyncio.to_thread(gov.keys.rotate, request.path_params["key_id"], float(grace))
    except KeyNotFound:
        raise errors.RouteNotFound(f"No key `{request.path_params['key_id']}`.") from None
    except ValueError as exc:
        raise errors.InvalidRequest(str(exc)) from None
    await gov.refresh_keys()
    return json_response({"key": secret, **rec.public()}, status=201)


async def reload_policy(request: Request) -> Response:
    require_admin(request)
    try:
        summary = await _gov(request).reload()
    except (ValueError, OSError) as exc:
        raise errors.InvalidRequest(f"The configuration was not reloaded: {exc}") from None
    return json_response({"object": "nometer.reload", **summary})


async def teams(request: Request) -> Response:
    require_admin(request)
    gov = _gov(request)
    book = gov.book
    out = {}
    for name, rules in [(None, book.default), *book.teams.items()]:
        p = rules.policy
        out[name or "*"] = {
            "policy": p.model_dump(mode="json"),
            "budget": await gov.budgets.spent(name, p.budget),
        }
    return json_response({"object": "nometer.teams", "auth_mode": gov.auth.mode, "teams": out})


async def usage(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    team = visible_team(request, request.query_params.get("team"))
    try:
        limit = max(1, min(int(request.query_params.get("limit", "50")), 1000))
    except ValueError:
        raise errors.InvalidRequest("`limit` must be an integer", param="limit") from None
    ph = "?" if rt.store.placeholder == "?" else "$"
    cols = ", ".join(_USAGE_COLUMNS)
    if team is None:
        rows = await rt.store.fetch(f"SELECT {cols} FROM usage_events ORDER BY id DESC LIMIT {limit}")
    else:
        p = "?" if ph == "?" else "$1"
        rows = await rt.store.fetch(
            f"SELECT {cols} FROM usage_events WHERE team = {p} ORDER BY id DESC LIMIT {limit}", [team]
        )
    ident = identity(request)
    gov = _gov(request)
    budget = await gov.budgets.spent(team, gov.book.rules(team).policy.budget) if team is not None else {}
    return json_response(
        {
            "object": "list",
            "team": team,
            "key_id": ident.key_id if ident else None,
            "budget": budget,
            "data": rows[::-1],
        }
    )


routes = [
    Route("/v1/nometer/admin/keys", list_keys, methods=["GET"]),
    Route("/v1/nometer/admin/keys", create_key, methods=["POST"]),
    Route("/v1/nometer/admin/keys/{key_id}/disable", disable_key, methods=["POST"]),
    Route("/v1/nometer/admin/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
    Route("/v1/nometer/admin/reload", reload_policy, methods=["POST"]),
    Route("/v1/nometer/admin/teams", teams, methods=["GET"]),
    Route("/v1/nometer/usage", usage, methods=["GET"]),
]
