"""The live parts of one gateway process, wired once by ``create_app`` and shared by the routes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response

from gateway.backends.managed import ManagedServer
from gateway.backends.pool import BackendPool
from gateway.backends.routing import Router
from gateway.http.proxy import Proxy
from gateway.ledger.recorder import Recorder
from gateway.ledger.store import Store
from gateway.meter.shadow import ShadowMeter
from gateway.metrics import Metrics
from gateway.policy.governance import Governance
from gateway.settings import Settings
from pricing.store import PriceStore


@dataclass
class Runtime:
    settings: Settings
    router: Router
    pool: BackendPool
    store: Store
    recorder: Recorder
    proxy: Proxy
    meter: ShadowMeter
    prices: PriceStore
    metrics: Metrics
    governance: Governance  # teams, keys and policy
    managed: list[ManagedServer] = field(default_factory=list)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")
