"""The ``nometer`` command: ``serve`` runs the gateway; the others read and manage its ledger."""

from __future__ import annotations

import argparse
import sys

from gateway.cli import audit, keys, meter, runs, serve, usage
from gateway.cli.options import HelpFormatter


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nometer",
        description="OpenAI-compatible gateway for self-hosted vLLM, with a shadow meter",
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    serve.register(sub)
    usage.register(sub)
    meter.register(sub)
    runs.register(sub)
    audit.register(sub)
    keys.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
