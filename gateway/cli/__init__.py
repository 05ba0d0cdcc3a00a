"""The ``nometer`` command: ``serve`` runs the gateway, ``usage``/``report``/``runs`` read the ledger."""

from __future__ import annotations

import argparse
import sys

from gateway.cli import audit, keys, meter, runs, usage
from gateway.cli.serve import serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nometer", description="OpenAI-compatible gateway with a shadow meter")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", help="YAML config file (or NOMETER_CONFIG)")
    s.add_argument(
        "--backend", action="append", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    )
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--db", help="SQLite ledger path")
    s.add_argument("--managed-model", help="launch and supervise a CPU/GPU vLLM serving this model dir")
    s.add_argument("--managed-port", type=int, default=8011)
    s.add_argument("--managed-python", help="python of the vLLM venv")
    s.add_argument("--managed-name", help="served model name")
    s.add_argument(
        "--managed-cpu-defaults",
        action="store_true",
        help="small-machine vLLM flags (eager, 2k context, 256 MiB KV cache)",
    )
    s.set_defaults(func=serve)
    usage.register(sub)
    meter.register(sub)
    runs.register(sub)
    audit.register(sub)
    keys.register(sub)
    args = p.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
