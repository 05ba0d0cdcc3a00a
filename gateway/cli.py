"""The ``nometer`` command: ``serve`` runs the gateway, ``usage`` reads the ledger."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway import keys_cli, ledger_cli, meter_cli


def _serve(args: argparse.Namespace) -> int:
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
        from gateway.cpu_vllm import SERVE_ARGS

        overrides["managed"] = [{
            "model": args.managed_model, "port": args.managed_port, "python": args.managed_python,
            "served_name": args.managed_name,
            "args": list(SERVE_ARGS) if args.managed_cpu_defaults else [],
        }]
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
    uvicorn.run(app, host=settings.server.host, port=settings.server.port,
                loop="uvloop", http="httptools", lifespan="on", access_log=False, log_config=None,
                server_header=False, proxy_headers=False, timeout_graceful_shutdown=10)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nometer", description="OpenAI-compatible gateway with a shadow meter")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", help="YAML config file (or NOMETER_CONFIG)")
    s.add_argument("--backend", action="append", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--db", help="SQLite ledger path")
    s.add_argument("--managed-model", help="launch and supervise a CPU/GPU vLLM serving this model dir")
    s.add_argument("--managed-port", type=int, default=8011)
    s.add_argument("--managed-python", help="python of the vLLM venv")
    s.add_argument("--managed-name", help="served model name")
    s.add_argument("--managed-cpu-defaults", action="store_true",
                   help="small-machine vLLM flags (eager, 2k context, 256 MiB KV cache)")
    s.set_defaults(func=_serve)
    ledger_cli.register(sub)
    meter_cli.register(sub)
    keys_cli.register(sub)
    args = p.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
