"""The vLLM servers one test session needs: started together, stopped together.

Each server takes about 30-40 s to become ready on a 2-core machine, most of it spent in one
process's imports, so the first fixture that asks for a server launches every server the session's
tests will use, and they start concurrently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.backends.cpu_vllm import VllmError, ensure_model, ensure_venv
from tests.support.vllm import (
    AGENT_ARGS,
    AGENT_NAME,
    CHAT_ARGS,
    CHAT_NAME,
    EMBED_ARGS,
    EMBED_NAME,
    VllmServer,
    launch_server,
)


@dataclass(frozen=True)
class ServerSpec:
    served_name: str
    extra_args: tuple[str, ...]


# Keyed by the name of the pytest fixture that hands the server out.
SPECS: Mapping[str, ServerSpec] = {
    "vllm_chat": ServerSpec(CHAT_NAME, CHAT_ARGS),
    "vllm_chat_b": ServerSpec(CHAT_NAME, CHAT_ARGS),  # a second box serving the same model (routing)
    "vllm_embed": ServerSpec(EMBED_NAME, EMBED_ARGS),
    "vllm_agent": ServerSpec(AGENT_NAME, AGENT_ARGS),
}


class VllmFleet:
    def __init__(self, specs: Mapping[str, ServerSpec] = SPECS) -> None:
        self._specs = specs
        self._servers: dict[str, VllmServer] = {}
        self._ready: set[str] = set()
        self._build_error: VllmError | None = None

    def get(self, name: str, wanted: Iterable[str] = ()) -> VllmServer:
        """Server ``name``, ready to serve; first launches each of ``wanted`` not launched yet.

        A failed install is remembered (not retried for every fixture); a server that failed
        to start is retried only by a new fleet.
        """
        self._build()
        for key in dict.fromkeys([name, *wanted]):
            if key not in self._servers:
                spec = self._specs[key]
                self._servers[key] = launch_server(served_name=spec.served_name, extra_args=spec.extra_args)
        server = self._servers[name]
        if name not in self._ready:
            server.wait_ready()
            self._ready.add(name)
        return server

    def _build(self) -> None:
        if self._build_error is not None:
            raise self._build_error
        try:
            ensure_model(ensure_venv())
        except VllmError as exc:
            self._build_error = exc
            raise

    def stop(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()
        self._ready.clear()
