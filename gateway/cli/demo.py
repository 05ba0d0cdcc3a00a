"""``nometer serve --demo``: with no backend configured, the CPU build of vLLM and a tiny model.

What ``./scripts/serve.sh`` runs on a machine without a GPU, so the README's examples work as
written: the model is served as ``tiny-llama`` and the cloud names the README uses are aliases of
it. The decision is taken on the merged settings (flags, env, ``--config``), so a config file
that names no backend still gets the demo, and one that names backends is told why it does not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import Any

from gateway.backends import listeners
from gateway.cli.options import Refusal
from gateway.settings import Settings

NAME = "tiny-llama"
ALIASES = {"gpt-4.1": NAME, "gpt-4.1-mini": NAME}  # the README's examples
PORT = 8011  # vLLM's own default is 8000: leave that to a vLLM started by hand


def has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and b"GPU" in done.stdout


def _os_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def pick_port(preferred: int | None) -> int:
    """``preferred`` (default 8011) when it is free, else a free port the OS picks."""
    want = preferred or PORT
    if listeners.port_free(want):
        return want
    port = _os_port()
    print(
        f"nometer: port {want} is in use by {listeners.who_holds(want)}; the demo vLLM uses port {port}",
        file=sys.stderr,
    )
    return port


def overrides(settings: Settings, port: int | None) -> dict[str, Any] | None:
    """The settings the demo adds (a managed CPU vLLM and the demo aliases), or None when the
    configuration already names a backend. Installs the CPU vLLM and the model on first use."""
    named = [b.name or b.url for b in settings.backends] + [f"managed {m.model}" for m in settings.managed]
    if named:
        print(f"nometer: --demo: no CPU demo, backends are configured: {', '.join(named)}", file=sys.stderr)
        return None
    if has_gpu():
        raise Refusal(
            "a GPU is present: start vLLM yourself (vllm serve MODEL) and pass --backend "
            "http://127.0.0.1:8000/v1, or list it under 'managed:' in a config "
            "(see deploy/nometer.example.yaml)"
        )
    from gateway.backends import cpu_vllm

    try:
        cpu_vllm.require_recipe()
    except cpu_vllm.VllmError as exc:
        raise Refusal(str(exc), code=1) from None
    print(
        "nometer: no backend configured and no GPU: serving a tiny generated model on the CPU build of vLLM\n"
        "nometer: (its answers are gibberish; it only demonstrates the gateway)",
        file=sys.stderr,
    )
    try:
        python = cpu_vllm.ensure_venv()
        model = cpu_vllm.ensure_model(python)
    except cpu_vllm.VllmError as exc:
        raise Refusal(str(exc), code=1) from None
    managed = {
        "model": str(model),
        "port": pick_port(port),
        "python": str(python),
        "served_name": NAME,
        "args": list(cpu_vllm.SERVE_ARGS),
    }
    return {"managed": [managed], "aliases": {a: t for a, t in ALIASES.items() if a not in settings.aliases}}
