"""``nometer serve``: run the gateway."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.cli import demo
from gateway.cli.options import CONFIG_HELP, DB_HELP, Refusal, command
from gateway.settings import Settings, ledger_override, load_settings


def alias(value: str) -> tuple[str, str]:
    """``--alias NAME=MODEL``."""
    name, sep, model = value.partition("=")
    if not sep or not name.strip() or not model.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL (e.g. gpt-4.1=qwen3-32b), not {value!r}")
    return name.strip(), model.strip()


def register(sub: Any) -> None:
    s = command(sub, "serve", "run the gateway")
    s.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    s.add_argument(
        "--backend",
        action="append",
        metavar="URL",
        help="an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1; repeat for several "
        "(default: the config's backends, or $NOMETER_BACKENDS)",
    )
    s.add_argument(
        "--alias",
        action="append",
        type=alias,
        metavar="NAME=MODEL",
        help="answer requests for NAME with MODEL, e.g. gpt-4.1=qwen3-32b; repeat for several "
        "(default: the config's aliases; these are added to them)",
    )
    s.add_argument("--host", help="address to bind (default: server.host of the config, 127.0.0.1)")
    s.add_argument("--port", type=int, help="port to bind (default: server.port of the config, 7878)")
    s.add_argument("--db", metavar="PATH|URL", help=DB_HELP)
    s.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        help="json: one JSON object per line; text: readable lines; auto: text on a terminal, "
        "else json (default: server.log_format of the config, auto)",
    )
    s.add_argument(
        "--demo",
        action="store_true",
        help="when no backend is configured, launch the CPU build of vLLM with a tiny generated model "
        f"served as {demo.NAME} (gibberish: it only demonstrates the gateway), aliased as "
        f"{', '.join(demo.ALIASES)}; installs it into $NOMETER_CACHE on first use (needs a source "
        "checkout). What ./scripts/serve.sh runs",
    )
    s.add_argument(
        "--managed-model",
        metavar="DIR",
        help="launch and supervise a vLLM serving this model, a directory or Hugging Face id "
        "(default: the config's managed: list, else none)",
    )
    s.add_argument(
        "--managed-port",
        type=int,
        metavar="PORT",
        help=f"port of the managed vLLM (default: {demo.PORT}; with --demo, a free port if {demo.PORT} "
        "is taken)",
    )
    s.add_argument(
        "--managed-python",
        metavar="PATH",
        help="python of the vLLM venv (default: $NOMETER_CACHE/vllm-venv/bin/python)",
    )
    s.add_argument(
        "--managed-name",
        metavar="NAME",
        help="model name clients send to the managed vLLM (default: the model's name)",
    )
    s.add_argument(
        "--managed-cpu-defaults",
        action="store_true",
        help="small-machine vLLM flags for the managed vLLM: eager, 2k context, 256 MiB KV cache",
    )
    s.set_defaults(func=serve)


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    server = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("log_format", args.log_format))
        if v is not None
    }
    if server:
        overrides["server"] = server
    if args.db:
        overrides["ledger"] = ledger_override(args.db)
    if args.backend:
        overrides["backends"] = [{"url": u} for u in args.backend]
    if args.alias:
        overrides["aliases"] = dict(args.alias)
    if args.managed_model:
        from gateway.backends.cpu_vllm import SERVE_ARGS

        overrides["managed"] = [
            {
                "model": args.managed_model,
                "port": args.managed_port or demo.PORT,
                "python": args.managed_python,
                "served_name": args.managed_name,
                "args": list(SERVE_ARGS) if args.managed_cpu_defaults else [],
            }
        ]
    return overrides


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def prepare(args: argparse.Namespace) -> Settings:
    """The settings ``serve`` runs with; raises ``Refusal`` when it must not start."""
    from gateway.backends import listeners

    overrides = _flag_overrides(args)
    try:
        settings = load_settings(args.config, overrides=overrides)
        if args.demo and (extra := demo.overrides(settings, args.managed_port)) is not None:
            settings = load_settings(args.config, overrides=_merge(overrides, extra))
    except (ValueError, OSError) as exc:
        raise Refusal(f"bad configuration: {exc}") from None
    for m in settings.managed:
        if not listeners.port_free(m.port):
            raise Refusal(
                f"port {m.port} of the managed vLLM is already in use by {listeners.who_holds(m.port)}; "
                "stop it or choose another port (--managed-port, or managed[].port in the config)"
            )
    return settings


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway import logs
    from gateway.app import create_app

    try:
        settings = prepare(args)
    except Refusal as exc:
        print(f"nometer: refusing to start: {exc}", file=sys.stderr)
        return exc.code
    logs.setup(settings.server.log_level, settings.server.log_format)
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
