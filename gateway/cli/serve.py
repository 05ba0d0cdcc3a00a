"""``nometer serve``: run the gateway."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway import logs
    from gateway.app import create_app
    from gateway.settings import load_settings

    overrides: dict[str, Any] = {}
    server: dict[str, Any] = {}
    if args.host:
        server["host"] = args.host
    if args.port:
        server["port"] = args.port
    if server:
        overrides["server"] = server
    if args.db:
        overrides["ledger"] = {"path": args.db}
    if args.backend:
        overrides["backends"] = [{"url": u} for u in args.backend]
    if args.managed_model:
        from gateway.backends.cpu_vllm import SERVE_ARGS

        overrides["managed"] = [
            {
                "model": args.managed_model,
                "port": args.managed_port,
                "python": args.managed_python,
                "served_name": args.managed_name,
                "args": list(SERVE_ARGS) if args.managed_cpu_defaults else [],
            }
        ]
    try:
        settings = load_settings(args.config, overrides=overrides)
    except (ValueError, OSError) as exc:
        print(f"nometer: bad configuration: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.server.log_level)
    try:
        app = create_app(settings)
    except ValueError as exc:  # e.g. auth mode open on a public address
        print(f"nometer: refusing to start: {exc}", file=sys.stderr)
        return 2
    from gateway.http.protocol import raise_open_files_limit, server_options

    raise_open_files_limit()  # before the connection cap is derived from it
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        **server_options(settings.server),  # httptools, with bounded heads, timeouts, a connection cap
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    return 0
