"""A real nometer gateway on 127.0.0.1 for integration tests: uvicorn in a thread.

Like httpx's own tests, the network is real (a socket, uvicorn's HTTP parser, streaming and
disconnects behave as in production); only the process is shared with the test. The ledger is
a real SQLite file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from gateway.app import NometerApp, create_app
from gateway.http.protocol import server_options
from gateway.settings import Settings, load_settings
from tests.support.ports import free_port


class GatewayServer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.app: NometerApp = create_app(settings)
        self.port = settings.server.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self.db_path = Path(settings.ledger.path)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",
            **server_options(settings.server),
            lifespan="on",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"gateway-{self.port}")

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    @property
    def runtime(self) -> Any:
        return self.app.runtime

    def start(self, timeout: float = 60) -> GatewayServer:
        """Start serving (once: a server that already runs is returned as is, so helpers may
        return a started server and tests still write ``with helper(...) as g:``)."""
        if self._thread.is_alive():
            return self
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def rows(self, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if not self.db_path.exists():
            return []
        with sqlite3.connect(self.db_path) as c:
            c.row_factory = sqlite3.Row
            return [dict(r) for r in c.execute(f"SELECT * FROM usage_events {where} ORDER BY id", params)]

    def wait_rows(
        self, n: int, where: str = "", params: tuple[Any, ...] = (), timeout: float = 10
    ) -> list[dict[str, Any]]:
        """Wait until the recorder has written at least ``n`` matching rows."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(where, params)
            if len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def row(self, request_id: str, timeout: float = 10) -> dict[str, Any]:
        rows = self.wait_rows(1, "WHERE request_id = ?", (request_id,), timeout)
        assert len(rows) == 1, f"expected exactly one ledger row for {request_id}, got {len(rows)}"
        return rows[0]


def gateway_settings(tmp_path: Path, backends: list[str], **over: Any) -> Settings:
    data: dict[str, Any] = {
        "server": {"port": free_port()},
        "backends": [{"url": u} for u in backends],
        "ledger": {"path": str(tmp_path / "ledger.db"), "flush_interval_ms": 20},
        "routing": {"health_interval_s": 0.5},
        "timeouts": {"connect_s": 2, "read_s": 5},
    }
    for k, v in over.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    return load_settings(env={}, overrides=data)
