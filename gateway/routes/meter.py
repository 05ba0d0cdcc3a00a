"""Shadow-meter routes: the savings report as JSON (or CSV), per-request receipts, agent runs.

Admin callers see everything; a team key sees only its own team (the identity, when keys are on,
is put in the scope as ``nometer.identity`` by the auth step)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import errors
from gateway.ledger import allin, integrity, runs
from gateway.ledger.period import parse_period
from gateway.ledger.report import DIMENSIONS, ReportQuery, build, queries
from gateway.ledger.report_format import to_csv
from gateway.meter import receipts
from gateway.runtime import Runtime, json_response


def caller_team(request: Request) -> tuple[bool, str | None]:
    """(is_admin, team) of the caller; no identity (auth mode open) means admin on loopback."""
    ident = request.scope.get("nometer.identity")
    if ident is None:
        return True, None
    return bool(getattr(ident, "is_admin", False)), getattr(ident, "team", None)


def hardware_usd(rt: Runtime) -> Decimal:
    meter = rt.settings.meter
    boxes = [
        meter.backend_box.get(b.name, meter.box) for b in rt.router.backends if b.name in meter.backend_box
    ]
    return sum((b.hardware_usd for b in boxes), Decimal(0)) or meter.box.hardware_usd


async def run_report(rt: Runtime, q: ReportQuery, *, proof: bool = True) -> dict[str, Any]:
    results = {
        name: await rt.store.fetch(sql, params)
        for name, (sql, params) in queries(q, rt.store.placeholder).items()
    }
    primary = (
        q.compare[0]
        if q.compare
        else (rt.settings.meter.references[0] if rt.settings.meter.references else None)
    )
    data = build(
        q,
        results,
        hardware_usd=hardware_usd(rt),
        primary=primary,
        now=time.time(),
        order=rt.settings.meter.references,
        boxes=allin.plan(rt.settings.meter, [b.name for b in rt.router.backends]),
    )
    if proof:
        data["integrity"] = await report_integrity(rt, q)
    return data


async def report_integrity(rt: Runtime, q: ReportQuery) -> dict[str, Any]:
    """Chain heads, unchained rows and verify state of the report's period (gateway.ledger.integrity)."""
    ph = rt.store.placeholder
    results = {
        name: await rt.store.fetch(sql, params) for name, (sql, params) in integrity.queries(q, ph).items()
    }
    digests = {}
    for chain_id, seq in integrity.heads_wanted(results):
        rows = await rt.store.fetch(integrity.digest_sql(ph), integrity.digest_params(ph, chain_id, seq))
        digests[(chain_id, seq)] = rows[0]["chain_digest"] if rows else None
    return integrity.summary(q, results, digests)


def parse_query(request: Request) -> ReportQuery:
    p = request.query_params
    now = time.time()
    try:
        lo, hi = parse_period(p.get("since"), p.get("from"), p.get("to"), now)
    except ValueError as exc:
        raise errors.InvalidRequest(str(exc), param="since") from None
    by = p.get("by")
    if by is not None and by not in DIMENSIONS:
        raise errors.InvalidRequest(f"`by` must be one of {', '.join(DIMENSIONS)}", param="by")
    compare = tuple(m.strip() for m in p.get("compare", "").split(",") if m.strip())
    is_admin, team = caller_team(request)
    wanted = p.get("team")
    if not is_admin:
        if wanted not in (None, team):
            raise errors.PermissionDenied("a team key can only read its own team's report", param="team")
        wanted = team
    return ReportQuery(since=lo, until=hi, by=by, compare=compare, team=wanted, now=now)


async def report(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    # ?integrity=0 leaves the proof block out (the dashboard asks for it with one of its four reports)
    data = await run_report(rt, parse_query(request), proof=request.query_params.get("integrity") != "0")
    if request.query_params.get("format") == "csv":
        return Response(to_csv(data), media_type="text/csv")
    return json_response(data)


async def receipt(request: Request) -> Response:
    """One request's receipt, by its receipt id (``x-nometer-receipt-id``) or its request id.

    Request ids are the client's and need not be unique: a team key only ever matches its own
    team's rows (another team's reuse of an id cannot hide them), and when several visible rows
    share the id the answer is 300 with the list (each with its ``receipt_id``) instead of a guess."""
    rt: Runtime = request.app.state.runtime
    rid = request.path_params["request_id"]
    pg = rt.store.placeholder != "?"
    is_admin, team = caller_team(request)
    scope = "" if is_admin else f" AND team = {'$3' if pg else '?'}"
    sql = receipts.EVENT_SQL.format(p1="$1" if pg else "?", p2="$2" if pg else "?", team=scope)
    rows = await rt.store.fetch(sql, [rid, rid] if is_admin else [rid, rid, team])
    exact = [r for r in rows if r["uid"] == rid]  # a receipt id names one row
    if exact:
        rows = exact
    if not rows:
        raise errors.RouteNotFound(f"No receipt for request `{rid}`.", param="request_id")
    if len(rows) > 1:
        return json_response(
            {
                "object": "list",
                "message": f"{len(rows)} requests have the id `{rid}`: ask for one by its receipt_id.",
                "data": [_match(r) for r in rows],
            },
            status=300,
        )
    event = rows[0]
    if event["price_table_id"] is None:
        raise errors.RouteNotFound(
            f"Request `{rid}` was not metered (outcome {event['outcome']}, "
            f"route {event['route']}): it has no receipt.",
            param="request_id",
        )
    shadows = await rt.store.fetch(receipts.SHADOW_SQL.format(p="$1" if pg else "?"), [event["uid"]])
    data = receipts.recompute(event, shadows, rt.prices)
    return json_response(receipts.view(event, data))


def _match(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "receipt_id": event["uid"],
        "request_id": event["request_id"],
        "created": event["ts"],
        "team": event["team"],
        "key_id": event["key_id"],
        "endpoint": event["endpoint"],
        "requested_model": event["requested_model"],
        "outcome": event["outcome"],
        "metered": event["price_table_id"] is not None,
        "url": f"/v1/nometer/receipts/{event['uid']}",
    }


async def run_totals(request: Request) -> Response:
    """Live totals of one agent run (``X-Nometer-Run``); a team key sees its own team's requests."""
    rt: Runtime = request.app.state.runtime
    run_id = request.path_params["run_id"]
    is_admin, team = caller_team(request)
    (events_sql, shadows_sql), params = runs.queries(
        rt.store.placeholder, run_id=run_id, team=None if is_admin else team
    )
    data = runs.build(await rt.store.fetch(events_sql, params), await rt.store.fetch(shadows_sql, params))
    if not data:
        raise errors.RouteNotFound(f"No requests recorded for run `{run_id}`.", param="run_id")
    return json_response(data[0])


routes = [
    Route("/v1/nometer/report", report),
    Route("/v1/nometer/runs/{run_id:path}", run_totals),
    Route("/v1/nometer/receipts/{request_id:path}", receipt),
]
